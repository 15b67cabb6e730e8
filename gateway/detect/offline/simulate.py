"""Labelled traffic: sessions of benign and extraction accounts, reproducible from a seed.

Only stdlib (+ the feature code when converted to records). Each profile composes prompts from word
banks (:mod:`gateway.detect.offline.vocab`) and several sentence structures, with its own timing,
parameters and output lengths. The split is by *generator*: every bank and every list of prompt
structures is halved, the ``train`` split drawing on one half and ``heldout`` on the other; the
``support`` (benign) and ``mimicry`` (attack) profiles appear only in ``heldout``. So held-out
accounts are new prompts, new phrasings and two behaviours the model never saw.

Hard benign profiles are deliberate: a RAG backend (templated, high volume), a nightly batch job
(perfectly regular timing), an evaluation harness (``max_tokens`` 1, logprobs, reasoning
prompts), a coding assistant (near-duplicate prompts as code is edited), a writing app and a
classification backend (one system prompt or frame for every request).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.detect.offline import vocab as v
from gateway.records import RequestRecord

BENIGN = ("chat", "coding", "rag", "batch", "eval", "writer", "classify", "support")
ATTACKS = ("distill", "self_instruct", "logit_steal", "prada", "low_slow", "campaign", "mimicry")
HELDOUT_ONLY = frozenset({"support", "mimicry"})
EPOCH = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
CAMPAIGN_SIZE = 8


@dataclass
class SimRequest:
    ts: float
    prompt: str
    completion_tokens: int
    max_tokens: int | None = None
    temperature: float | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    n: int = 1
    stream: bool = False


@dataclass
class Session:
    account: str
    profile: str
    label: int
    """1 for an extraction account."""
    client_addr: str
    requests: list[SimRequest] = field(default_factory=list)
    campaign: str | None = None


class Ctx:
    """A generator's random source and the word banks of its split."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng = rng
        self.split = split
        self.topics = v.family(v.TOPICS, split)
        self.everyday = v.family(v.EVERYDAY, split)
        self.languages = v.family(v.LANGUAGES, split)
        self.idents = v.family(v.IDENTIFIERS, split)
        self.errors = v.family(v.ERRORS, split)
        self.products = v.family(v.PRODUCTS, split)
        self.issues = v.family(v.ISSUES, split)
        self.subjects = v.family(v.SUBJECTS, split)
        self.adjectives = v.family(v.ADJECTIVES, split)
        self.docs = v.family(v.DOCUMENT_KINDS, split)
        self.filler = v.family(v.FILLER, split)

    def pick(self, bank: tuple[str, ...]) -> str:
        return self.rng.choice(bank)

    def structures(self, options: list[Callable[[], str]]) -> Callable[[], str]:
        """One of this split's half of ``options`` (even indices: train; odd: held-out)."""
        half = options[0::2] if self.split == "train" else options[1::2]
        return self.rng.choice(half or options)

    def lognormal(self, median: float, sigma: float = 0.6) -> float:
        return median * self.rng.lognormvariate(0.0, sigma)

    def tokens(self, median: float, sigma: float = 0.6, cap: int = 8192) -> int:
        return max(1, min(cap, int(self.lognormal(median, sigma))))

    def passage(self, sentences: int) -> str:
        return " ".join(self.pick(self.filler).capitalize() + "." for _ in range(sentences))


# --- prompt structures -------------------------------------------------------------------------


def _chat_prompt(c: Ctx) -> str:
    thing = c.pick(c.everyday)
    return c.structures([
        lambda: f"Can you help me with {thing}? Keep it {c.pick(c.adjectives)}.",
        lambda: f"hey, quick one about {thing} - any ideas?",
        lambda: f"I need something {c.pick(c.adjectives)} for {thing}. What would you suggest?",
        lambda: f"ok so {thing} is stressing me out. where do I even start",
        lambda: f"Write a short {c.pick(c.adjectives)} note about {thing}.",
        lambda: f"thanks! now make it shorter and mention {thing} again",
        lambda: f"What is a good way to think about {c.pick(c.topics)} for a beginner?",
        lambda: f"my friend says {c.pick(c.topics)} is overrated, is that fair?",
    ])()


def _code(c: Ctx) -> str:
    a, b = c.pick(c.idents), c.pick(c.idents)
    body = "\n".join(f"    {a}_{i} = {b}.get('{a}{i}')" for i in range(c.rng.randint(2, 12)))
    return f"def load_{a}({b}):\n{body}\n    return {a}_0\n"


def _coding_prompt(c: Ctx, code: str) -> str:
    lang = c.pick(c.languages)
    return c.structures([
        lambda: f"Why does this {lang} code fail with `{c.pick(c.errors)}`?\n```\n{code}```",
        lambda: f"```{lang}\n{code}```\nrefactor this so it handles missing {c.pick(c.idents)}",
        lambda: f"Add unit tests for this function:\n{code}",
        lambda: f"I get {c.pick(c.errors)} here, any idea?\n{code}",
        lambda: f"Review this {lang} snippet for bugs:\n{code}",
        lambda: f"convert to {lang} please\n{code}",
    ])()


def _rag_prompt(c: Ctx, frame: int) -> str:
    context = c.passage(c.rng.randint(3, 10))
    question = f"What does the document say about {c.pick(c.filler).split()[1]}?"
    frames = [
        f"Use only the context below to answer.\nContext: {context}\nQuestion: {question}\nAnswer:",
        f"### Retrieved passages\n{context}\n### Query\n{question}\n### Response (cite passages)",
        f"<context>{context}</context>\nAnswer the user's question from the context. "
        f"If unsure, say so.\nUser: {question}",
        f"[DOCS]\n{context}\n[QUESTION]\n{question}\nRespond in one paragraph.",
    ]
    half = frames[0::2] if c.split == "train" else frames[1::2]
    return half[frame % len(half)]


def _batch_prompt(c: Ctx, frame: int) -> str:
    doc = c.passage(c.rng.randint(8, 25))
    kind = c.pick(c.docs)
    frames = [
        f"Summarize the following {kind} in three bullet points.\n\n{doc}",
        f"TL;DR this {kind} for the nightly digest:\n{doc}",
        f"Summary request ({kind}). Text:\n{doc}\nReturn a {c.pick(c.adjectives)} summary.",
        f"Extract the key decisions and owners from this {kind}:\n{doc}",
    ]
    half = frames[0::2] if c.split == "train" else frames[1::2]
    return half[frame % len(half)]


def _eval_prompt(c: Ctx, cot: bool) -> str:
    subject = c.pick(c.subjects)
    options = "\n".join(f"{letter}. {c.pick(c.filler)}" for letter in "ABCD")
    question = f"Which statement about {c.pick(c.topics)} is correct in {subject}?"
    if cot:
        return c.structures([
            lambda: f"{question}\n{options}\nLet's think step by step, then give the letter.",
            lambda: f"Q: {question}\n{options}\nReason it out before answering with A-D.",
        ])()
    return c.structures([
        lambda: f"The following is a multiple choice question about {subject}.\n{question}\n"
                f"{options}\nAnswer:",
        lambda: f"{question}\n{options}\nRespond with a single letter.",
    ])()


def _support_prompt(c: Ctx, product: str) -> str:
    issue = c.pick(c.issues)
    return c.structures([
        lambda: f"You are a support agent for {product}. Customer message: \"{issue}\". "
                "Reply politely and offer next steps.",
        lambda: f"System: assist customers of {product}.\nCustomer: {issue}\nAgent:",
        lambda: f"Draft a {c.pick(c.adjectives)} reply to a {product} customer who says: {issue}",
        lambda: f"Ticket #{c.rng.randint(1000, 99999)} ({product}): {issue}. Suggest a reply.",
    ])()


def _writer_prompt(c: Ctx, app: str) -> str:
    thing, tone = c.pick(c.everyday), c.pick(c.adjectives)
    return c.structures([
        lambda: f"You are {app}, a writing assistant. Write a {tone} message about {thing}.",
        lambda: f"[{app}] user request: {tone} text for {thing}. Keep the user's voice.",
        lambda: f"{app} system prompt: be {tone}.\nUser: help me with {thing}\nAssistant:",
        lambda: f"Role: {app}. Draft something {tone} about {thing} in under 200 words.",
    ])()


def _classify_prompt(c: Ctx, frame: int) -> str:
    text = f"{c.pick(c.filler)}, and {c.pick(c.filler)}; {c.pick(c.issues)} ({c.pick(c.products)})"
    frames = [
        f"Classify the intent of this message as billing, technical or other.\nMessage: {text}",
        f"Label: sentiment (positive/negative/neutral)\nText: {text}\nLabel:",
        f"Which department should handle this? Reply with one word. {text}",
        f"Tag this ticket with a priority from P1 to P4: {text}",
    ]
    half = frames[0::2] if c.split == "train" else frames[1::2]
    return half[frame % len(half)]


def _distill_prompt(c: Ctx) -> str:
    t1, t2 = c.pick(c.topics), c.pick(c.topics)
    return c.structures([
        lambda: f"Explain step by step how {t1} works. Justify every step of your reasoning.",
        lambda: f"Walk me through the logic of {t1} from first principles, in full detail.",
        lambda: f"Think carefully, then answer: how does {t1} relate to {t2}? Show your work.",
        lambda: f"Write a comprehensive, expert-level treatment of {t1}, covering every aspect, "
                f"with worked examples and edge cases.",
        lambda: f"Solve this problem and show your full reasoning: a question combining {t1} "
                f"and {t2}.",
        lambda: f"Give a long, rigorous derivation of the key results of {t1}; number each step.",
        lambda: f"You are an expert tutor. Reason through {t1} in depth before the final answer.",
        lambda: f"Compare {t1} and {t2} exhaustively: mechanisms, history, open problems, and "
                f"a detailed conclusion.",
    ])()


def _self_instruct_prompt(c: Ctx) -> str:
    topic = c.pick(c.topics)
    # Plain and templated structures alternate so that each split gets both kinds.
    return c.structures([
        lambda: f"Generate {c.rng.randint(5, 40)} diverse instructions about {topic}, each "
                "with an input and an output.",
        lambda: f"Create a new task for a language model about {topic}. Then complete it.",
        lambda: f"Instruction: write a {c.pick(c.adjectives)} explanation of {topic}.\n"
                "Input: none\nOutput:",
        lambda: f"Task: {c.pick(c.adjectives)} question about {topic}\nInput: "
                f"{c.pick(c.filler)}\nResponse:",
        lambda: f"Brainstorm novel user requests involving {topic} and answer the hardest one.",
        lambda: f"### Instruction\nRewrite a fact about {topic} as a quiz\n### Response",
    ])()


def _perturb(c: Ctx, text: str) -> str:
    words = text.split()
    for _ in range(c.rng.randint(1, 3)):
        i = c.rng.randrange(len(words))
        op = c.rng.random()
        if op < 0.4:
            words[i] = c.pick(c.adjectives)
        elif op < 0.7 and len(words[i]) > 3:
            j = c.rng.randrange(len(words[i]) - 1)
            w = words[i]
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        else:
            words.insert(i, c.pick(c.adjectives))
    return " ".join(words)


# --- profiles ----------------------------------------------------------------------------------


def _bursts(c: Ctx, n: int, think_s: float, between_s: float, per_burst: tuple[int, int]
            ) -> Iterator[float]:
    t = EPOCH + c.rng.uniform(0, 86400)
    made = 0
    while made < n:
        for _ in range(c.rng.randint(*per_burst)):
            if made >= n:
                return
            yield t
            made += 1
            t += c.lognormal(think_s, 0.8)
        t += c.rng.expovariate(1 / between_s)


def _steady(c: Ctx, n: int, gap_s: float, jitter: float, start: float | None = None
            ) -> Iterator[float]:
    t = start if start is not None else EPOCH + c.rng.uniform(0, 86400)
    for _ in range(n):
        yield t
        t += max(0.01, gap_s * (1 + c.rng.uniform(-jitter, jitter)))


def _poisson(c: Ctx, n: int, rate: float) -> Iterator[float]:
    t = EPOCH + c.rng.uniform(0, 86400)
    for _ in range(n):
        yield t
        t += c.rng.expovariate(rate)


def chat(c: Ctx, n: int) -> list[SimRequest]:
    stream = c.rng.random() < 0.7
    temp = c.rng.choice([None, 0.7, 1.0])
    return [SimRequest(t, _chat_prompt(c), c.tokens(220), c.rng.choice([None, None, 512, 1024]),
                       temp, stream=stream)
            for t in _bursts(c, n, 45, 6 * 3600, (2, 12))]


def coding(c: Ctx, n: int) -> list[SimRequest]:
    out: list[SimRequest] = []
    code = _code(c)
    for t in _bursts(c, n, 60, 4 * 3600, (3, 20)):
        if c.rng.random() < 0.3:
            code = _code(c)
        elif c.rng.random() < 0.5:
            code = code.replace("get", c.rng.choice(["get", "pop", "fetch"]), 1)
        out.append(SimRequest(t, _coding_prompt(c, code), c.tokens(450), c.rng.choice(
            [None, 2048, 4096]), c.rng.choice([0.0, 0.2, None]), stream=True))
    return out


def rag(c: Ctx, n: int) -> list[SimRequest]:
    frame = c.rng.randrange(4)
    rate = c.rng.uniform(0.2, 3.0)
    return [SimRequest(t, _rag_prompt(c, frame), c.tokens(90), c.rng.choice([256, 512]), 0.0)
            for t in _poisson(c, n, rate)]


def batch(c: Ctx, n: int) -> list[SimRequest]:
    frame = c.rng.randrange(4)
    start = EPOCH + 2 * 3600 + c.rng.uniform(0, 600)
    return [SimRequest(t, _batch_prompt(c, frame), c.tokens(180, 0.3), 256, 0.0)
            for t in _steady(c, n, c.rng.uniform(0.5, 4.0), 0.05, start)]


def eval_harness(c: Ctx, n: int) -> list[SimRequest]:
    cot = c.rng.random() < 0.35
    logprobs = c.rng.random() < 0.5
    max_tokens = 512 if cot else c.rng.choice([1, 1, 5, 16])
    gap = c.rng.uniform(0.1, 2.0)
    return [SimRequest(t, _eval_prompt(c, cot), c.tokens(300) if cot else c.rng.randint(1, 3),
                       max_tokens, 0.0, logprobs=logprobs, top_logprobs=5 if logprobs else None)
            for t in _steady(c, n, gap, 0.5)]


def support(c: Ctx, n: int) -> list[SimRequest]:
    product = c.pick(c.products)
    return [SimRequest(t, _support_prompt(c, product), c.tokens(140), 400, 0.3)
            for t in _poisson(c, n, c.rng.uniform(0.005, 0.2))]


def writer(c: Ctx, n: int) -> list[SimRequest]:
    app = c.rng.choice(["Quillo", "DraftPal", "Inkwell", "WordSmith", "Penmate", "Scribo"])
    return [SimRequest(t, _writer_prompt(c, app), c.tokens(260), c.rng.choice([300, 600]), 0.7)
            for t in _poisson(c, n, c.rng.uniform(0.005, 0.5))]


def classify(c: Ctx, n: int) -> list[SimRequest]:
    frame = c.rng.randrange(4)
    return [SimRequest(t, _classify_prompt(c, frame), c.rng.randint(1, 4), 5, 0.0)
            for t in _poisson(c, n, c.rng.uniform(0.05, 5.0))]


def distill(c: Ctx, n: int, times: Iterator[float] | None = None) -> list[SimRequest]:
    times = times or _steady(c, n, c.rng.uniform(0.5, 12), 0.8)
    max_tokens = c.rng.choice([None, 2048, 4096, 8192])
    return [SimRequest(t, _distill_prompt(c), c.tokens(1400, 0.5), max_tokens,
                       c.rng.choice([None, 0.7, 1.0]), n=c.rng.choice([1, 1, 1, 2, 4]),
                       stream=c.rng.random() < 0.3)
            for t in times]


def self_instruct(c: Ctx, n: int) -> list[SimRequest]:
    return [SimRequest(t, _self_instruct_prompt(c), c.tokens(500), c.rng.choice([1024, 2048]),
                       1.0)
            for t in _steady(c, n, c.rng.uniform(0.3, 6), 0.9)]


def logit_steal(c: Ctx, n: int) -> list[SimRequest]:
    base = c.rng.choice([c.pick(c.topics), c.pick(c.everyday)])
    out = []
    for i, t in enumerate(_steady(c, n, c.rng.uniform(0.1, 1.5), 0.3)):
        bias = {str(c.rng.randrange(100_000)): 100.0 for _ in range(c.rng.randint(1, 300))}
        prompt = base if c.rng.random() < 0.7 else f"{base} {i}"
        out.append(SimRequest(t, prompt, 1, 1, 0.0, logprobs=True,
                              top_logprobs=c.rng.choice([5, 20]), logit_bias=bias))
    return out


def prada(c: Ctx, n: int) -> list[SimRequest]:
    seeds = [f"Classify the sentiment of: {c.pick(c.filler)} and {c.pick(c.filler)}"
             for _ in range(c.rng.randint(3, 10))]
    out = []
    for t in _steady(c, n, c.rng.uniform(0.3, 3), 0.5):
        text = _perturb(c, c.rng.choice(seeds))
        out.append(SimRequest(t, text, c.rng.randint(1, 8), c.rng.choice([1, 4, 16]), 0.0))
    return out


def low_slow(c: Ctx, n: int) -> list[SimRequest]:
    return distill(c, n, _steady(c, n, c.rng.uniform(300, 1800), 0.6))


def mimicry(c: Ctx, n: int) -> list[SimRequest]:
    benign = chat(c, n)
    attack = distill(c, n, iter([r.ts + c.rng.uniform(5, 60) for r in benign]))
    share = c.rng.uniform(0.3, 0.6)
    mixed = [a if c.rng.random() < share else b for a, b in zip(attack, benign, strict=True)]
    return sorted(mixed, key=lambda r: r.ts)


PROFILE_FNS: dict[str, Callable[[Ctx, int], list[SimRequest]]] = {
    "chat": chat, "coding": coding, "rag": rag, "batch": batch, "eval": eval_harness,
    "support": support, "writer": writer, "classify": classify, "distill": distill,
    "self_instruct": self_instruct, "logit_steal": logit_steal, "prada": prada,
    "low_slow": low_slow, "mimicry": mimicry,
}


def _addr(rng: random.Random, network: tuple[int, int, int] | None = None) -> str:
    a, b, c = network or (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256))
    return f"{a}.{b}.{c}.{rng.randrange(1, 255)}"


def _campaign(c: Ctx, name: str, accounts: int, n: int) -> list[Session]:
    """Accounts that each look modest: one template, one network, synchronised low rate."""
    net = (c.rng.randrange(1, 224), c.rng.randrange(256), c.rng.randrange(256))
    frame = c.rng.randrange(2)
    start = EPOCH + c.rng.uniform(0, 86400)
    gap = c.rng.uniform(60, 600)
    sessions = []
    for i in range(accounts):
        reqs = []
        for t in _steady(c, n, gap, 0.3, start + c.rng.uniform(0, 30)):
            topic = c.pick(c.topics)
            frames = [  # plain (0, 1) and markup (2, 3): each split gets one of each
                f"As an expert, reason step by step about {topic} and give a detailed answer "
                f"with all intermediate reasoning. Topic id {c.rng.randrange(10**6)}.",
                f"Produce a teacher-quality explanation of {topic}: premises, derivation, "
                f"conclusion. Ref {c.rng.randrange(10**6)}.",
                f"[TASK] deep-dive: {topic}\n[FORMAT] numbered reasoning chain, then summary\n"
                f"[LENGTH] as long as needed",
                f"<q>{topic}</q><style>exhaustive, stepwise, justify claims</style>",
            ]
            half = frames[0::2] if c.split == "train" else frames[1::2]
            reqs.append(SimRequest(t, half[frame], c.tokens(1200, 0.5), 4096, 0.8))
        sessions.append(Session(f"{name}-{i}", "campaign", 1, _addr(c.rng, net), reqs, name))
    return sessions


def generate(seed: int, split: str = "train", accounts_per_profile: int = 40,
             requests: tuple[int, int] = (60, 240), profiles: tuple[str, ...] | None = None
             ) -> list[Session]:
    """Sessions of every profile allowed in ``split``, ``accounts_per_profile`` of each.

    ``requests`` bounds the length of a session; campaigns use a third of it per account.
    Deterministic for a given (seed, split, arguments).
    """
    if split not in ("train", "heldout"):
        raise ValueError("split is 'train' or 'heldout'")
    rng = random.Random(f"{seed}:{split}")
    chosen = profiles or tuple(
        p for p in BENIGN + ATTACKS if split == "heldout" or p not in HELDOUT_ONLY)
    sessions: list[Session] = []
    for profile in chosen:
        if profile == "campaign":
            groups = max(1, accounts_per_profile // CAMPAIGN_SIZE)
            for g in range(groups):
                c = Ctx(random.Random(rng.random()), split)
                n = max(12, c.rng.randint(*requests) // 3)
                sessions += _campaign(c, f"{split}-campaign{g}", CAMPAIGN_SIZE, n)
            continue
        for i in range(accounts_per_profile):
            c = Ctx(random.Random(rng.random()), split)
            n = c.rng.randint(*requests)
            label = int(profile in ATTACKS)
            sessions.append(Session(f"{split}-{profile}-{i}", profile, label, _addr(c.rng),
                                    PROFILE_FNS[profile](c, n)))
    return sessions


def to_record(session: Session, index: int) -> tuple[RequestRecord, str]:
    """The request as the gateway would have recorded it (status 200, usage known)."""
    req = session.requests[index]
    prompt_tokens = max(1, int(len(req.prompt.split()) * 1.3))
    record = RequestRecord(
        request_id=f"req_{session.account}_{index}", account_id=session.account, key_id=None,
        route="/v1/chat/completions", method="POST", status_code=200, model="sim",
        prompt_tokens=prompt_tokens, completion_tokens=req.completion_tokens * req.n,
        client_addr=session.client_addr, stream=req.stream, max_tokens=req.max_tokens,
        n=req.n, temperature=req.temperature, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs, logit_bias_size=len(req.logit_bias or {}),
        prompt_chars=len(req.prompt), created_at=datetime.fromtimestamp(req.ts, UTC),
    )
    return record, req.prompt
