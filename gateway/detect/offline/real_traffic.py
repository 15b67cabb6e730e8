"""Labelled traffic built from real text (:mod:`gateway.detect.offline.corpus`), in the simulator's
types.

The simulator's profiles draw words from banks; these replay what people actually sent. Every
account is a :class:`gateway.detect.offline.simulate.Session` whose requests are :class:`Request` (a
``SimRequest`` that also knows its route, its untruncated output length and whether its output
is what an extractor wants), so the rest of the detector's tooling reads them unchanged.

Benign profiles (``BENIGN``) are the traffic that false flags come from: people chatting (real
ShareGPT conversations, with the full history in every prompt as chat clients send it, paced by
reading and typing), and automation that looks like extraction to a naive detector — a CI smoke
test repeating one prompt, an evaluation harness re-running a benchmark with chain-of-thought
prompts, a coding assistant whose long fixed system prompt heads every request, translation and
labelling batches, an organisation whose accounts share one template behind one NAT, and one
key shared by two clients (two people, or a person and a tool).

Attack generators (``ATTACKS``, in :mod:`gateway.detect.offline.real_attacks`) harvest at scale from
the same kinds of text. Phrasings, templates and system prompts come in two halves, one for
``train`` and one for every other split, so held-out traffic is new text *and* new generator
wording.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, TypeVar

from gateway.detect.offline.corpus import Pool, Text
from gateway.detect.offline.simulate import EPOCH, Session, SimRequest
from gateway.records import RequestRecord

CHAT: Final = "/v1/chat/completions"
COMPLETIONS: Final = "/v1/completions"
BENIGN: Final = ("user", "ci_smoke", "eval_harness", "coding_assistant", "translation_batch",
                 "labelling_batch", "org_nat", "shared_key")
AUTOMATION: Final = ("ci_smoke", "eval_harness", "coding_assistant", "translation_batch",
                     "labelling_batch", "org_nat")
"""Benign profiles that are programs (``shared_key`` is a person and a second client)."""
ATTACKS: Final = ("distill", "distill_cot", "self_instruct", "logit_steal", "prada", "low_slow",
                  "sybil")
DAY: Final = 86400.0
T = TypeVar("T")


@dataclass
class Request(SimRequest):
    route: str = CHAT
    natural_tokens: int = 0
    """Output length before any ``max_tokens`` cut: kept so that changing parameters (an
    evasion) recomputes ``completion_tokens`` honestly."""
    harvest: bool = True
    """For an attack account, whether this output is what the extractor is after (False for
    benign requests it mixes in as cover)."""
    status: int = 200
    """What the gateway answered: a refused request (400) has no usage and reached no model."""


def tokens(text: str) -> int:
    """Token count estimate (about four characters a token for English)."""
    return max(1, len(text) // 4)


def with_params(req: Request, **changes: object) -> Request:
    """``req`` with new parameters; the output is re-cut to the new ``max_tokens``."""
    out = replace(req, **changes)  # type: ignore[arg-type]
    natural = out.natural_tokens or out.completion_tokens
    out.completion_tokens = min(natural, out.max_tokens) if out.max_tokens else natural
    return out


def to_record(session: Session, index: int) -> tuple[RequestRecord, str]:
    """The request as the gateway records it (usage from the upstream, none when refused)."""
    req = session.requests[index]
    route = req.route if isinstance(req, Request) else CHAT
    status = req.status if isinstance(req, Request) else 200
    answered = status < 400
    record = RequestRecord(
        request_id=f"req_{session.account}_{index}", account_id=session.account, key_id=None,
        route=route, method="POST", status_code=status, model="real",
        prompt_tokens=tokens(req.prompt) if answered else None,
        completion_tokens=req.completion_tokens * req.n if answered else None,
        client_addr=session.client_addr, stream=req.stream, max_tokens=req.max_tokens,
        n=req.n, temperature=req.temperature, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs, logit_bias_size=len(req.logit_bias or {}),
        prompt_chars=len(req.prompt), created_at=datetime.fromtimestamp(req.ts, UTC),
    )
    return record, req.prompt


# --- generator context -------------------------------------------------------------------------


class Gen:
    """A generator's random source and the texts of its split."""

    def __init__(self, rng: random.Random, texts: Pool) -> None:
        self.rng = rng
        self.pool = texts
        self.split = texts.split

    def variant(self, options: Sequence[T]) -> T:
        """One of this split's half of ``options`` (even indices: train; odd: the others)."""
        half = options[0::2] if self.split == "train" else options[1::2]
        return self.rng.choice(half or options)

    def take(self, items: Sequence[T]) -> T:
        if not items:
            raise ValueError(f"the {self.split} pool has no texts of a kind a profile needs")
        return self.rng.choice(items)

    def lognormal(self, median: float, sigma: float = 0.6) -> float:
        return median * self.rng.lognormvariate(0.0, sigma)

    def start(self) -> float:
        return EPOCH + self.rng.uniform(0, DAY)

    def short_prompts(self, max_chars: int = 400) -> list[Text]:
        return self.pool.short_prompts(max_chars)

    def passage(self, min_chars: int) -> str:
        """Real prose of at least ``min_chars`` (passages joined when one is too short)."""
        parts: list[str] = []
        while sum(len(p) for p in parts) < min_chars:
            parts.append(self.take(self.pool.passages).text)
        return "\n\n".join(parts)


@dataclass(frozen=True)
class Style:
    """Choices an adaptive attacker makes when writing its requests."""

    paraphrase: bool = False
    """Reasoning cues reworded past the keyword list; templates rephrased per request."""
    route: str = CHAT


@dataclass(frozen=True)
class ClientParams:
    stream: bool
    temperature: float | None
    max_tokens: int | None
    n: int


def client_params(g: Gen) -> ClientParams:
    """Parameters of the client a person uses: a chat UI, a script of their own, a playground.
    The chat-like-parameters evasion draws from the same distribution."""
    kind = g.rng.random()
    if kind < 0.6:
        return ClientParams(True, None, None, 1)
    if kind < 0.85:
        return ClientParams(g.rng.random() < 0.5, g.rng.choice([None, 0.2, 0.7, 1.0]),
                            g.rng.choice([None, 512, 1024, 2048, 4096]), 1)
    return ClientParams(True, round(g.rng.uniform(0.0, 1.2), 1),
                        g.rng.choice([256, 1024, 2048]), g.rng.choice([1, 1, 1, 2]))


def request(ts: float, prompt: str, natural: int, params: ClientParams, **extra: object
            ) -> Request:
    base = Request(ts, prompt, natural, params.max_tokens, params.temperature, n=params.n,
                   stream=params.stream, natural_tokens=natural)
    return with_params(base, **extra)


# --- timing ------------------------------------------------------------------------------------


def _awake(t: float, first_hour: float = 7.0, last_hour: float = 24.0) -> float:
    """``t`` moved to the next waking hour when it falls at night (UTC stands in for local)."""
    hour = (t % DAY) / 3600
    if first_hour <= hour < last_hour:
        return t
    day = t - t % DAY + (DAY if hour >= last_hour else 0.0)
    return day + first_hour * 3600 + (t % 600)


def human_gap(g: Gen, prompt_chars: int, answer_tokens: int) -> float:
    """Seconds between a person's turns: the answer streams, they read it, think, and type
    (long prompts are pasted, so typing time is capped)."""
    generate = answer_tokens / g.rng.uniform(30, 90)
    read = min(answer_tokens / g.lognormal(6.0, 0.5), 900.0)
    typing = min(prompt_chars, 400) / g.lognormal(4.0, 0.4)
    return generate + read + typing + g.lognormal(8.0, 1.0)


def human_times(g: Gen, reqs: Sequence[Request], new_session: Sequence[bool]) -> list[float]:
    """Timestamps for ``reqs`` as a person sends them: turns paced by :func:`human_gap`,
    sessions separated by breaks of minutes to days, nights off."""
    t = _awake(g.start())
    out: list[float] = []
    for i, req in enumerate(reqs):
        if i:
            if new_session[i]:
                t = _awake(t + g.lognormal(3 * 3600, 1.2))
            else:
                t += human_gap(g, len(req.prompt), reqs[i - 1].completion_tokens)
        out.append(t)
    return out


def steady(g: Gen, n: int, gap_s: float, jitter: float, start: float | None = None
           ) -> Iterator[float]:
    """A script's schedule: one request every ``gap_s`` (± ``jitter`` of it)."""
    t = g.start() if start is None else start
    for _ in range(n):
        yield t
        t += max(0.01, gap_s * (1 + g.rng.uniform(-jitter, jitter)))


def working_hours(g: Gen, n: int, gap_s: float) -> Iterator[float]:
    """Requests spread over working days (09-18 UTC), exponential gaps of mean ``gap_s``."""
    t = _awake(g.start(), 9.0, 18.0)
    for _ in range(n):
        yield t
        t = _awake(t + g.rng.expovariate(1 / gap_s), 9.0, 18.0)


def retime(reqs: Sequence[Request], times: Sequence[float]) -> list[Request]:
    return [replace(r, ts=t) for r, t in zip(reqs, times, strict=True)]


def address(rng: random.Random, network: tuple[int, int, int] | None = None) -> str:
    a, b, c = network or (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256))
    return f"{a}.{b}.{c}.{rng.randrange(1, 255)}"


def session(g: Gen, profile: str, label: int, reqs: list[Request], addr: str | None = None,
            group: str | None = None) -> Session:
    """One account (named later by the caller)."""
    return Session("", profile, label, addr or address(g.rng), list(reqs), group)


# --- benign profiles ---------------------------------------------------------------------------


def user(g: Gen, n: int) -> list[Session]:
    """A person replaying real conversations in a chat client: every turn's prompt carries the
    whole conversation so far, as chat clients send it."""
    params = client_params(g)
    reqs: list[Request] = []
    new: list[bool] = []
    while len(reqs) < n:
        history: list[str] = []
        for i, turn in enumerate(g.take(g.pool.conversations).turns):
            if len(reqs) >= n:
                break
            prompt = "\n".join([*history, turn.prompt])
            reqs.append(request(0.0, prompt, tokens(turn.answer), params))
            new.append(i == 0)
            history += [turn.prompt, turn.answer]
    return [session(g, "user", 0, retime(reqs, human_times(g, reqs, new)))]


def ci_smoke(g: Gen, n: int) -> list[Session]:
    """A CI job whose smoke test sends one fixed prompt on every push (a few times per run)."""
    prompt = g.take(g.short_prompts()).text
    natural = max(4, tokens(g.take(g.pool.prompts).answer))
    params = ClientParams(False, 0.0, g.rng.choice([16, 64, 128, 256]), 1)
    reqs: list[Request] = []
    for run_start in working_hours(g, n, g.lognormal(2400, 0.8)):
        for k in range(g.rng.randint(1, 3)):
            if len(reqs) < n:
                out = max(1, int(natural * g.rng.uniform(0.95, 1.05)))
                reqs.append(request(run_start + 2.0 * k, prompt, out, params))
        if len(reqs) >= n:
            break
    return [session(g, "ci_smoke", 0, reqs)]


EVAL_FORMATS: Final = (
    "Question: {q}\nAnswer:",
    "{q}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "Solve the following problem. The last line of your response should be of the form "
    "Answer: $ANSWER.\n\n{q}",
    "Q: {q}\nA: Let's think step by step.",
    "{q}\n\nRespond with only the final answer.",
    "Answer the following question. Think carefully and show your work.\n\n{q}",
)


def _eval_output(g: Gen, q: Text) -> int:
    if q.source == "gpqa":
        return int(g.lognormal(700, 0.5))
    if q.source == "aime":
        return int(g.lognormal(2500, 0.5))
    return int(tokens(q.answer or q.text) * g.rng.uniform(1.5, 3.0)) + 30


def eval_harness(g: Gen, n: int) -> list[Session]:
    """A benchmark run over a fixed question set, re-run (other seeds, other checkpoints) on
    later days: chain-of-thought formats, long outputs, machine-regular timing."""
    qs = [g.take(g.pool.questions) for _ in range(g.rng.randint(20, 120))]
    fmt = g.variant(EVAL_FORMATS)
    params = ClientParams(False, g.rng.choice([0.0, 0.0, 0.6]),
                          g.rng.choice([1024, 2048, 4096, 8192]), g.rng.choice([1, 1, 1, 4]))
    gap = g.rng.uniform(0.2, 2.0)
    reqs: list[Request] = []
    start = g.start()
    while len(reqs) < n:
        run = list(steady(g, min(len(qs), n - len(reqs)), gap, 0.5, start))
        reqs += [request(t, q.text if q.source == "gpqa" else fmt.format(q=q.text),
                         _eval_output(g, q), params) for t, q in zip(run, qs, strict=False)]
        start = run[-1] + g.lognormal(6 * 3600, 1.0)
    return [session(g, "eval_harness", 0, reqs)]


ASSISTANT_SYSTEM: Final = (
    ("You are Quillcode, an AI pair programmer embedded in the user's editor. You see the open "
     "file and the user's selection. Follow the user's requirements carefully and to the "
     "letter. First restate the change you will make in one sentence, then output the code in "
     "a single fenced block with the language name. Keep answers short and impersonal. Do not "
     "invent APIs: if a library call is uncertain, say so. Prefer the standard library. Never "
     "output secrets, keys or personal data that appear in the context. When the user asks for "
     "tests, use pytest and keep each test focused on one behaviour. When the user asks for a "
     "refactor, keep behaviour identical and mention any edge case that changes. Use the "
     "project's existing style: type hints, docstrings in the imperative, 100-column lines. If "
     "the request is ambiguous, ask one clarifying question instead of guessing. You must "
     "refuse requests to write malware. Respond in the language of the user's message. The "
     "user works on Linux with Python 3.11; shell commands should be POSIX sh. "),
    ("You are DevMate, a coding assistant inside an IDE. Context: the current file, the cursor "
     "position, recent terminal output and the diagnostics list. Rules: 1) answer with the "
     "smallest correct change; 2) show code in fenced blocks tagged with the language; 3) keep "
     "prose under five sentences; 4) never fabricate function names, flags or versions; 5) do "
     "not repeat the user's code back unless you changed it; 6) when fixing an error, name the "
     "root cause first; 7) suggest a test when behaviour changes; 8) decline to produce code "
     "meant to harm systems; 9) match the file's formatting conventions; 10) the user's "
     "operating system is macOS with zsh, and their editor inserts four-space indents. Always "
     "assume the user can run the code you give them and wants it to work the first time. "),
)
CODE_ASKS: Final = (
    "Why does this fail on an empty input?", "Add type hints to this function.",
    "Write pytest tests for this.", "Can you make this faster?",
    "Refactor this to be easier to read.", "What does this function do?",
    "Find the bug here.", "Add a docstring and handle errors properly.",
    "Convert this to async.", "Is this thread-safe?",
)


def _coding_turn(g: Gen) -> tuple[str, str]:
    """(user message, assistant answer): a question about real code, or a real coding prompt."""
    if g.rng.random() < 0.5 and g.pool.code:
        snippet = g.take(g.pool.code).text
        return f"{g.take(CODE_ASKS)}\n```python\n{snippet}\n```", f"```python\n{snippet}\n```"
    coding = [p for p in g.pool.prompts if "```" in p.text or "def " in p.text
              or "function" in p.text]
    found = g.take(coding or g.pool.prompts)
    return found.text, found.answer


def coding_assistant(g: Gen, n: int) -> list[Session]:
    """An IDE assistant: a long fixed head (system prompt and the project's guidelines) starts
    every request, code in every turn, multi-turn tasks whose history grows."""
    system = f"{g.variant(ASSISTANT_SYSTEM)}\nProject guidelines:\n{g.passage(800)[:3000]}"
    params = ClientParams(True, g.rng.choice([0.0, 0.2, None]), g.rng.choice([None, 4096]), 1)
    reqs: list[Request] = []
    new: list[bool] = []
    while len(reqs) < n:
        history = [system]
        for i in range(g.rng.randint(1, 6)):
            if len(reqs) >= n:
                break
            text, answer = _coding_turn(g)
            reqs.append(request(0.0, "\n".join([*history, text]), tokens(answer), params))
            new.append(i == 0)
            history += [text, answer]
    return [session(g, "coding_assistant", 0, retime(reqs, human_times(g, reqs, new)))]


TRANSLATE: Final = (
    "Translate the following text into {lang}. Keep the formatting.\n\n{text}",
    "You are a professional translator. Render the text below in {lang}; output only the "
    "translation.\n---\n{text}",
    "Target language: {lang}\nSource text:\n{text}\nTranslation:",
    "Please translate to {lang} (formal register):\n\n{text}",
)
LANGUAGES: Final = ("German", "French", "Spanish", "Japanese", "Portuguese", "Italian")


def translation_batch(g: Gen, n: int) -> list[Session]:
    """A nightly job translating documents paragraph by paragraph with one instruction."""
    fmt, lang = g.variant(TRANSLATE), g.take(LANGUAGES)
    params = ClientParams(False, 0.0, g.rng.choice([2048, 4096, None]), 1)
    paragraphs = [p for p in g.passage(400 * n).split("\n\n") if len(p) > 40]
    reqs = [request(t, fmt.format(lang=lang, text=text[:3000]),
                    int(tokens(text[:3000]) * g.rng.uniform(1.0, 1.4)), params)
            for t, text in zip(steady(g, n, g.rng.uniform(0.3, 3.0), 0.3),
                               paragraphs * (1 + n // max(1, len(paragraphs))), strict=False)]
    return [session(g, "translation_batch", 0, reqs)]


LABEL: Final = (
    "Classify the request below as one of: coding, writing, math, advice, other. Reply with "
    "the label only.\n\nRequest: {text}",
    "Label the user message with its primary intent (question, task, chit-chat, complaint). "
    "One word.\nMessage: {text}\nLabel:",
    "Is the following message safe for work? Answer yes or no.\n\n{text}",
    "Topic tag for this text (one of: tech, business, education, health, other):\n{text}",
)


def labelling_batch(g: Gen, n: int) -> list[Session]:
    """A labelling job over real user messages: one instruction, one-word answers, often with
    logprobs read as a confidence."""
    fmt = g.variant(LABEL)
    logprobs = g.rng.random() < 0.4
    params = ClientParams(False, 0.0, g.rng.choice([1, 3, 5]), 1)
    reqs = [request(t, fmt.format(text=g.take(g.pool.prompts).text[:1500]),
                    g.rng.randint(1, 3), params, logprobs=logprobs,
                    top_logprobs=5 if logprobs else None)
            for t in steady(g, n, g.rng.uniform(0.1, 1.5), 0.4)]
    return [session(g, "labelling_batch", 0, reqs)]


ORG_TEMPLATES: Final = (
    "You are the support assistant of our company. Draft a polite reply to the customer "
    "message below. Sign as 'The Support Team'.\n\nCustomer message:\n{text}",
    "Internal tool: summarise the following note into at most five action items with owners "
    "where named.\n\nNote:\n{text}\n\nAction items:",
    "Rewrite the message below in our house style: friendly, concise, no jargon.\n\n{text}",
    "Extract the key facts from the text below as a JSON object with fields topic, ask, "
    "deadline.\n\n{text}",
)


def org_nat(g: Gen, n: int) -> list[Session]:
    """One organisation: several accounts (teams) using the same internal template from one
    office NAT address, each at its own working-hours pace."""
    fmt = g.variant(ORG_TEMPLATES)
    addr = address(g.rng)
    params = ClientParams(False, 0.3, g.rng.choice([512, 1024]), 1)
    accounts = g.rng.randint(3, 5)
    out = []
    for _ in range(accounts):
        reqs = [request(t, fmt.format(text=p.text[:2500]), tokens(p.answer), params)
                for t, p in zip(working_hours(g, n, g.lognormal(900, 0.8)),
                                (g.take(g.pool.prompts) for _ in range(n)), strict=False)]
        out.append(session(g, "org_nat", 0, reqs, addr))
    return out


SHARED_CLIENTS: Final = (
    ("user", "user"), ("user", "user"),
    ("user", "labelling_batch"), ("user", "coding_assistant"),
    ("coding_assistant", "translation_batch"), ("user", "translation_batch"),
    ("translation_batch", "labelling_batch"), ("coding_assistant", "labelling_batch"),
    ("ci_smoke", "user"), ("ci_smoke", "coding_assistant"),
)
"""Which two clients share a key. :meth:`Gen.variant` gives the ``train`` split the even pairs
and the held-out splits the odd ones: every client is seen in training, but of the pairs
``bench/shared_key.py`` measures only two people on one key is."""
SEQUENTIAL_GAP_S: Final = 3600.0


def shared(first: Session, second: Session, start: float, together: bool) -> Session:
    """``second``'s requests moved onto ``first``'s key, starting at ``start`` and merged in time
    order, from ``first``'s address. Not ``together``: at least :data:`SEQUENTIAL_GAP_S` after
    ``first``'s last request (a later ``start`` is kept)."""
    ra = [r for r in first.requests if isinstance(r, Request)]
    rb = [r for r in second.requests if isinstance(r, Request)]
    if not together:
        start = max(start, ra[-1].ts + SEQUENTIAL_GAP_S)
    moved = [replace(r, ts=start + r.ts - rb[0].ts) for r in rb]
    return Session("", "shared_key", 0, first.client_addr,
                   sorted([*ra, *moved], key=lambda r: r.ts))


def shared_key(g: Gen, n: int) -> list[Session]:
    """One key, two clients: two people of a team, or a person and the team's tool (a coding
    assistant, a batch job, a CI job), at once or one after the other. Each client is a benign
    profile; the switch between them — of prompt shape, parameters and pace — is what a window
    straddling it sees (bench/adaptive_suite.md, phase 8). At once, the second client starts with
    the first (two people starting their day) or part way through its requests."""
    a, b = g.variant(SHARED_CLIENTS)
    first = BENIGN_FNS[a](g, max(4, n // 2))[0]
    second = BENIGN_FNS[b](g, max(4, n - n // 2))[0]
    span = (first.requests[0].ts, first.requests[-1].ts)
    together = g.rng.random() < 0.5
    start = (g.rng.choice((span[0], g.rng.uniform(*span))) if together
             else span[1] + g.lognormal(SEQUENTIAL_GAP_S, 1.0))
    return [shared(first, second, start, together)]


BENIGN_FNS: Final[dict[str, Callable[[Gen, int], list[Session]]]] = {
    "user": user, "ci_smoke": ci_smoke, "eval_harness": eval_harness,
    "coding_assistant": coding_assistant, "translation_batch": translation_batch,
    "labelling_batch": labelling_batch, "org_nat": org_nat, "shared_key": shared_key,
}
