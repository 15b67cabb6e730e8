"""Extraction generators over real prompts (:mod:`gateway.detect.offline.corpus`), at harvest scale.

Each generator is one *operation* — one actor — returned as its accounts (one, or many for a sybil
campaign) of :class:`gateway.detect.offline.simulate.Session` with label 1 and ``campaign`` set to
nothing yet (the caller names the operation). A :class:`~gateway.detect.offline.real_traffic.Style`
carries the choices an adaptive attacker makes while writing requests: reworded cues and per-request
templates (``paraphrase``), or the completions route. Everything an attacker can change *after*
writing (timing, parameters, dilution, head camouflage, account splitting) is an evasion in
:mod:`gateway.detect.offline.evasions`.

Cues and templates come in halves (train / other splits), like the benign profiles' wording.
:data:`PARAPHRASED_CUES` deliberately avoid every keyword of the detector's reasoning regex —
that is what an informed attacker does — and a test holds them to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from gateway.detect.offline.corpus import Text
from gateway.detect.offline.real_traffic import (
    COMPLETIONS,
    ClientParams,
    Gen,
    Request,
    Style,
    address,
    request,
    session,
    steady,
    tokens,
)
from gateway.detect.offline.simulate import Session

COT_CUES: Final = (
    "Let's think step by step.",
    "Explain your reasoning step by step before giving the final answer.",
    "Show your work and justify every step.",
    "Think carefully and walk me through your reasoning.",
    "Reason from first principles and show all intermediate steps.",
    "Give a detailed derivation, then the answer.",
    "Explain why each step follows from the previous one.",
    "Work out the solution step-by-step, explaining the logic.",
)
PARAPHRASED_CUES: Final = (
    "Before the final answer, lay out each intermediate stage of the solution on its own "
    "numbered line.",
    "Write down every calculation and the consideration behind it, then state the result.",
    "Go slowly: list what is given, each consequence you draw from it, and only then the "
    "conclusion.",
    "Make each stage of the solution visible, including ones that seem obvious, and finish "
    "with the answer.",
    "Narrate the full path from the question to the answer, one numbered stage at a time.",
    "Spell out the chain of calculations in order; the last line should hold the answer.",
    "Treat this like a worked example in a textbook: every stage written out, answer at the "
    "end.",
    "Lay bare how you get from the premises to the conclusion, one line per stage.",
)
SYSTEM_PROMPTS: Final = (
    "You are a helpful assistant.",
    "You are ChatGPT, a large language model trained by OpenAI. Answer as helpfully as "
    "possible.",
    "You are a knowledgeable assistant. Answer thoroughly and accurately.",
    "You are an expert assistant.",
)
COMPLETION_SUFFIXES: Final = ("Answer:", "Response:", "A:", "Detailed answer:")
SELF_INSTRUCT: Final = (
    "You are asked to come up with a set of {k} diverse task instructions. These task "
    "instructions will be given to a GPT model and we will evaluate the GPT model for "
    "completing the instructions.\n\nHere are the requirements:\n1. Try not to repeat the verb "
    "for each instruction to maximize diversity.\n2. The language used for the instruction "
    "also should be diverse.\n3. The type of instructions should be diverse.\n4. A GPT "
    "language model should be able to complete the instruction.\n5. The instructions should "
    "be in English.\n\nHere are some examples:\n{examples}\n\nList of {k} tasks:",
    "Below are example requests users sent to an assistant.\n{examples}\nWrite {k} new "
    "requests in the same spirit, each followed by a high-quality response.",
    "### Seed tasks\n{examples}\n### Instruction\nGenerate {k} novel instructions with inputs "
    "and outputs in the format above.\n### Output",
    "Here are some instructions people gave an assistant:\n{examples}\nInvent {k} more that "
    "cover different topics, then answer each one thoroughly.",
)
SELF_INSTRUCT_SLOTS: Final = (
    ("Some things people asked an assistant:", "A few real requests:", "Examples of asks:",
     "Seen recently:", "From our backlog:", "Typical questions:"),
    ("Come up with {k} fresh ones on other subjects", "Add {k} more in a similar vein",
     "Make {k} new requests unlike these", "Draft {k} further asks, varied in form",
     "Propose {k} new ones a user might send", "Write {k} more, each on a new topic"),
    ("and reply to each in full.", "plus a complete reply for every one.",
     "then respond to all of them carefully.", "each paired with a thorough answer.",
     "answering every one as an expert would.", "with a full response after each."),
)
SYBIL_TEMPLATES: Final = (
    "[TASK] {q}\n[FORMAT] numbered reasoning chain, then summary\n[LENGTH] as long as needed",
    "<q>{q}</q><style>exhaustive, stepwise, justify claims</style>",
    "As an expert, reason step by step about the following and give a detailed answer with "
    "all intermediate reasoning.\n\n{q}",
    "Produce a teacher-quality explanation: premises, derivation, conclusion.\n\nProblem: {q}",
)
SYBIL_MIN_ACCOUNTS: Final = 3
SYBIL_MAX_ACCOUNTS: Final = 12
FRAMES: Final = ("", "Problem: ", "Here is something I am stuck on. ", "Quick one: ",
                 "From my homework: ", "Can you help? ")


def _prompt(g: Gen, style: Style, user_text: str, system: str) -> str:
    """What the gateway sees: the flattened chat messages, or a completions document."""
    if style.route == COMPLETIONS:
        return f"{user_text}\n\n{g.variant(COMPLETION_SUFFIXES)}"
    return f"{system}\n{user_text}" if system else user_text


def _reqs(g: Gen, style: Style, texts: list[tuple[str, int]], params: ClientParams,
          times: list[float], **extra: object) -> list[Request]:
    system = g.variant(SYSTEM_PROMPTS) if g.rng.random() < 0.7 else ""
    return [request(t, _prompt(g, style, text, system), natural, params, route=style.route,
                    **extra)
            for t, (text, natural) in zip(times, texts, strict=True)]


def _one(g: Gen, profile: str, reqs: list[Request]) -> list[Session]:
    return [session(g, profile, 1, reqs)]


def _cue(g: Gen, style: Style) -> str:
    return g.rng.choice(PARAPHRASED_CUES) if style.paraphrase else g.variant(COT_CUES)


def _cot_output(g: Gen, q: Text) -> int:
    if q.source == "gpqa":
        return int(g.lognormal(1500, 0.4))
    if q.source == "aime":
        return int(g.lognormal(4000, 0.4))
    return int(tokens(q.answer or q.text) * g.rng.uniform(2.0, 4.0)) + 150


def distill(g: Gen, n: int, style: Style) -> list[Session]:
    """Vicuna's recipe: replay real users' prompts and keep the long answers."""
    params = ClientParams(False, g.rng.choice([None, 0.7, 1.0]),
                          g.rng.choice([None, 2048, 4096]), g.rng.choice([1, 1, 2]))
    texts = [(p.text, int(tokens(p.answer) * g.rng.uniform(1.0, 1.5)))
             for p in (g.take(g.pool.prompts) for _ in range(n))]
    times = list(steady(g, n, g.rng.uniform(0.5, 8.0), 0.8))
    return _one(g, "distill", _reqs(g, style, texts, params, times))


def _cot_texts(g: Gen, n: int, style: Style) -> list[tuple[str, int]]:
    fixed = _cue(g, style)
    out = []
    for _ in range(n):
        if g.pool.questions and g.rng.random() < 0.6:
            q = g.take(g.pool.questions)
        else:
            p = g.take(g.pool.prompts)
            q = Text(p.id, p.source, p.text, p.answer)
        cue = _cue(g, style) if style.paraphrase else fixed
        out.append((f"{q.text}\n\n{cue}", _cot_output(g, q)))
    return out


def distill_cot(g: Gen, n: int, style: Style, gap: tuple[float, float] = (0.5, 8.0),
                profile: str = "distill_cot") -> list[Session]:
    """Chain-of-thought distillation: real questions with a cue that elicits the reasoning."""
    params = ClientParams(False, g.rng.choice([None, 0.7, 1.0]),
                          g.rng.choice([None, 4096, 8192]), g.rng.choice([1, 1, 2, 4]))
    times = list(steady(g, n, g.rng.uniform(*gap), 0.8 if gap[1] < 60 else 0.6))
    return _one(g, profile, _reqs(g, style, _cot_texts(g, n, style), params, times))


def low_slow(g: Gen, n: int, style: Style) -> list[Session]:
    """Chain-of-thought distillation at one request every 5 to 30 minutes, for days."""
    return distill_cot(g, n, style, (300.0, 1800.0), "low_slow")


def _examples(g: Gen) -> str:
    picks = [g.take(g.short_prompts(300)).text.replace("\n", " ") for _ in range(3)]
    return "\n".join(f"{i}. {p}" for i, p in enumerate(picks, 1))


def _self_instruct_text(g: Gen, style: Style, fixed: str) -> str:
    k = g.rng.randint(5, 20)
    if style.paraphrase:
        head, ask, tail = (g.rng.choice(slot) for slot in SELF_INSTRUCT_SLOTS)
        return f"{head}\n{_examples(g)}\n{ask.format(k=k)}, {tail}"
    return fixed.format(k=k, examples=_examples(g))


def self_instruct(g: Gen, n: int, style: Style) -> list[Session]:
    """Self-instruct / Alpaca generation: real seed prompts in a generation template."""
    fixed = g.variant(SELF_INSTRUCT)
    params = ClientParams(False, 1.0, g.rng.choice([2048, 3072, 4096]), 1)
    texts = [(_self_instruct_text(g, style, fixed), int(g.lognormal(1500, 0.4)))
             for _ in range(n)]
    times = list(steady(g, n, g.rng.uniform(0.3, 6.0), 0.9))
    return _one(g, "self_instruct", _reqs(g, style, texts, params, times))


def logit_steal(g: Gen, n: int, style: Style) -> list[Session]:
    """Logit-vector recovery: ``logit_bias`` sweeps read through ``top_logprobs``, one token."""
    base = g.take(g.short_prompts(200)).text
    params = ClientParams(False, 0.0, 1, 1)
    texts = []
    for i in range(n):
        if style.paraphrase:
            texts.append((g.take(g.short_prompts(200)).text, 1))
        else:
            texts.append((base if g.rng.random() < 0.7 else f"{base} {i}", 1))
    times = list(steady(g, n, g.rng.uniform(0.1, 1.5), 0.3))
    reqs = _reqs(g, style, texts, params, times, logprobs=True,
                 top_logprobs=g.rng.choice([5, 20]))
    for r in reqs:
        r.logit_bias = {str(g.rng.randrange(100_000)): 100.0
                        for _ in range(g.rng.randint(1, 300))}
    return _one(g, "logit_steal", reqs)


def _perturb(g: Gen, text: str, edits: int, donors: list[str]) -> str:
    """PRADA's synthetic queries: a seed with a few word-level edits (typos, swaps, insertions
    of real words)."""
    words = text.split() or [text]
    for _ in range(edits):
        i = g.rng.randrange(len(words))
        op = g.rng.random()
        if op < 0.4:
            words[i] = g.rng.choice(donors)
        elif op < 0.7 and len(words[i]) > 3:
            w, j = words[i], g.rng.randrange(len(words[i]) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        else:
            words.insert(i, g.rng.choice(donors))
    return " ".join(words)


def prada(g: Gen, n: int, style: Style) -> list[Session]:
    """Functionality stealing by synthetic probing around a few real seed inputs."""
    seeds = [g.take(g.short_prompts(240)).text for _ in range(g.rng.randint(3, 10)
                                                             * (3 if style.paraphrase else 1))]
    donors = [w for s in (g.take(g.pool.prompts).text for _ in range(20)) for w in s.split()]
    edits = (3, 6) if style.paraphrase else (1, 3)
    params = ClientParams(False, 0.0, g.rng.choice([1, 4, 16]), 1)
    texts = [(_perturb(g, g.rng.choice(seeds), g.rng.randint(*edits), donors or ["the"]),
              g.rng.randint(1, 8)) for _ in range(n)]
    times = list(steady(g, n, g.rng.uniform(0.3, 3.0), 0.5))
    return _one(g, "prada", _reqs(g, style, texts, params, times))


def _sybil_text(g: Gen, style: Style, fixed: str) -> tuple[str, int]:
    q = g.take(g.pool.questions) if g.pool.questions else g.take(g.pool.prompts)
    if style.paraphrase:
        return f"{g.rng.choice(FRAMES)}{q.text}\n\n{g.rng.choice(PARAPHRASED_CUES)}", \
            _cot_output(g, q)
    return fixed.format(q=q.text), _cot_output(g, q)


def sybil(g: Gen, n: int, style: Style) -> list[Session]:
    """A campaign: accounts from one /24, one shared template, a synchronised modest rate;
    ``n`` requests in all, at least twelve per account (scored twice each), up to twelve
    accounts."""
    accounts = max(SYBIL_MIN_ACCOUNTS, min(SYBIL_MAX_ACCOUNTS, n // 12))
    per = max(1, math.ceil(n / accounts))
    net = (g.rng.randrange(1, 224), g.rng.randrange(256), g.rng.randrange(256))
    fixed = g.variant(SYBIL_TEMPLATES)
    params = ClientParams(False, 0.8, 4096, 1)
    gap, start = g.rng.uniform(60, 600), g.start()
    out = []
    for _ in range(accounts):
        texts = [_sybil_text(g, style, fixed) for _ in range(per)]
        times = list(steady(g, per, gap, 0.3, start + g.rng.uniform(0, 30)))
        out.append(session(g, "sybil", 1, _reqs(g, style, texts, params, times),
                           address(g.rng, net)))
    return out


ATTACK_FNS: Final[dict[str, Callable[[Gen, int, Style], list[Session]]]] = {
    "distill": distill, "distill_cot": distill_cot, "self_instruct": self_instruct,
    "logit_steal": logit_steal, "prada": prada, "low_slow": low_slow, "sybil": sybil,
}
