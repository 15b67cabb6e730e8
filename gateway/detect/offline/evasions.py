"""What an informed attacker does to an extraction operation to slip past the detector.

An evasion is a name; a *combination* is evasions joined by ``+`` (``"stream+paraphrase"``).
Two act while the requests are written (:class:`~gateway.detect.offline.real_traffic.Style`):
``paraphrase`` (reasoning cues reworded past the keyword list, templates rephrased per
request) and ``completions`` (the completions route, a plain document instead of chat
messages). The others rewrite the operation's accounts afterwards, in the order an attacker
would stack them (:data:`ORDER`): mix in real benign conversations as cover (``dilute25/50/75``:
that share of the account's requests is benign), pace requests like a person reading and typing
(``human_timing``), take parameters from real chat clients (``chat_params``), decode greedily
(``greedy``: temperature 0, one completion a request — deterministic answers are what supervised
distillation wants, and temperature 0 is what most benign automation sends), cap every answer
at 32-128 tokens (``short_answers``: many short answers instead of few long ones; the models
read answer sizes), cap every answer at 8-24 tokens and send the next request as soon as the
last answer is in, 2-50 ms later (``short_fast``: the regime of a live gateway in front of a
fast model asked for little, where window-v4 read a simulator harvest as benign), send three
benign-looking requests the gateway refuses after each real one
(``refused_padding``: a refusal costs no budget but lands in the window), stream everything
(``stream``), put a long real passage before every instruction so the head of the prompt — all
the features read — is innocent text (``head_camouflage``), and finally spread the operation
over fresh accounts on distinct networks with at most seven requests each, one under the first
scoring at eight (``sybil_split``). One changes no request: ``declared`` is an attacker who
obtained an evaluation declaration from the operator (:mod:`gateway.domain.workloads`); the
suite gives its accounts the allowance an honest harness gets.

:data:`PROBES` are evasions the suite measures but training does not teach (yet): the suite
reports what they cost the shipped model; teaching them is a new model's work, measured on the
full suite before it ships. ``nonce_prefix`` puts a random token in front of every prompt
(after any camouflage), so that no two of an account's prompts share a first word: what an
attacker sends against a detector that finds the head an account's prompts share as a prefix
(bench/adaptive_suite.md, phase 12). ``markup_header`` puts a line of markup that varies per
request (``### [golf] <123456> [id] <q> ---``) in front of every prompt: the templating signal
counts markup, and templated automation is benign in training (phase 13). ``label_header``
does the same with labelled lines (``Ref: golf-123456`` / ``Task: q`` / ``Format: plain``),
which the templating signal counts too: decoration of another kind than the one measured
when the defence against decoration was built (phase 14). ``warm_split`` spreads the operation
over fresh accounts that each buy a clean first scoring: eight real conversations replayed with
the script's parameters, then at most three of the operation's requests, too few to be scored
again on the ``score_every`` schedule (only once the account falls quiet, since phase 16). What
an attacker sends against campaign sweeps that leave out accounts whose own windows cleared
them (:func:`gateway.detect.campaign.uncleared`; phase 15). ``warm_switch`` is what an attacker
sends against per-client scoring once it reads a client only from three requests
(:data:`gateway.detect.clients.PART_FLOOR`): every account opens with six real conversations at
a person's own parameters, then takes two answers at the script's — another client of the key,
below the floor, so its first scoring reads the cover alone and the harvest not at all
(phase 17).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import pairwise
from typing import Final

from gateway.detect.clients import PART_FLOOR
from gateway.detect.offline.real_traffic import (
    COMPLETIONS,
    Gen,
    Request,
    Style,
    address,
    client_params,
    human_times,
    retime,
    user,
    with_params,
)
from gateway.detect.offline.simulate import Session

SINGLE: Final = ("stream", "chat_params", "greedy", "short_answers", "short_fast",
                 "refused_padding",
                 "dilute25", "dilute50", "dilute75",
                 "head_camouflage", "paraphrase", "human_timing", "completions", "sybil_split",
                 "declared")
PAIRS: Final = ("stream+chat_params", "stream+paraphrase", "chat_params+paraphrase",
                "head_camouflage+stream", "head_camouflage+paraphrase",
                "dilute50+human_timing", "human_timing+chat_params", "completions+chat_params",
                "sybil_split+paraphrase", "sybil_split+human_timing", "declared+greedy")
PROBES: Final = ("nonce_prefix", "nonce_prefix+greedy", "markup_header", "label_header",
                  "warm_split", "warm_switch")
DEFAULT: Final = ("none", *SINGLE, *PAIRS, *PROBES)
ORDER: Final = ("dilute25", "dilute50", "dilute75", "human_timing", "chat_params", "greedy",
                "short_answers", "short_fast", "refused_padding", "stream", "head_camouflage",
                "markup_header", "label_header", "nonce_prefix", "sybil_split", "warm_split",
                "warm_switch")
KNOWN: Final = frozenset({*SINGLE, "nonce_prefix", "markup_header", "label_header",
                          "warm_split", "warm_switch"})
WARM_REQUESTS: Final = 8
"""Cover requests before a ``warm_split`` account's harvest: the engine's first scoring sees
them alone (``min_requests``)."""
WARM_HARVEST: Final = 3
"""Harvested requests per ``warm_split`` account: fewer than ``score_every``, so none of them
is scored while the account is active."""
SWITCH_HARVEST: Final = PART_FLOOR - 1
"""Harvested requests per ``warm_switch`` account: a client too small to be read alone."""
ACCOUNT_ONLY: Final = frozenset({"declared"})
"""Evasions of the account, not of its traffic (nothing to teach a window classifier)."""
REFUSED_PER_REQUEST: Final = 3
"""Junk requests ``refused_padding`` sends after each real one."""
SHORT_ANSWER_TOKENS: Final = (32, 128)
"""The output cap of ``short_answers``, drawn once per account."""
SHORT_FAST_TOKENS: Final = (8, 24)
"""The output cap of ``short_fast``, drawn once per account."""
SHORT_FAST_GAP_S: Final = (0.002, 0.05)
"""Seconds between one request of ``short_fast`` and the next."""
WRITING: Final = frozenset({"paraphrase", "completions"})
SYBIL_MAX_REQUESTS: Final = 7
SYBIL_MIN_ACCOUNTS: Final = 10
CAMOUFLAGE_CHARS: Final = 2500
"""Longer than the 2,000 characters any feature reads."""


def parse(combo: str) -> tuple[str, ...]:
    """The evasions of a combination; ``"none"`` is the empty one."""
    names = tuple(n for n in combo.split("+") if n and n != "none")
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"unknown evasion(s): {', '.join(unknown)}")
    return names


def style(combo: str) -> Style:
    names = parse(combo)
    return Style(paraphrase="paraphrase" in names,
                 route=COMPLETIONS if "completions" in names else Style().route)


def apply(g: Gen, sessions: list[Session], combo: str) -> list[Session]:
    """The operation after the post-writing evasions of ``combo``, in :data:`ORDER`."""
    names = set(parse(combo))
    for name in ORDER:
        if name in names:
            sessions = TRANSFORMS[name](g, sessions)
    return sessions


def _each(fn: Callable[[Gen, Session], list[Request]]
          ) -> Callable[[Gen, list[Session]], list[Session]]:
    """An evasion applied to every account of the operation separately."""
    def run(g: Gen, sessions: list[Session]) -> list[Session]:
        return [replace(s, requests=list(fn(g, s))) for s in sessions]
    return run


def _reqs(s: Session) -> list[Request]:
    return [r for r in s.requests if isinstance(r, Request)]


def _stream(g: Gen, s: Session) -> list[Request]:
    return [replace(r, stream=True) for r in _reqs(s)]


def _chat_params(g: Gen, s: Session) -> list[Request]:
    p = client_params(g)
    return [with_params(r, stream=p.stream, temperature=p.temperature, max_tokens=p.max_tokens,
                        n=p.n) for r in _reqs(s)]


def _greedy(g: Gen, s: Session) -> list[Request]:
    return [with_params(r, temperature=0.0, n=1) for r in _reqs(s)]


def _short_answers(g: Gen, s: Session) -> list[Request]:
    cap = g.rng.randint(*SHORT_ANSWER_TOKENS)
    return [with_params(r, max_tokens=min(r.max_tokens or cap, cap)) for r in _reqs(s)]


def _short_fast(g: Gen, s: Session) -> list[Request]:
    cap = g.rng.randint(*SHORT_FAST_TOKENS)
    out: list[Request] = []
    t = s.requests[0].ts if s.requests else 0.0
    for r in _reqs(s):
        out.append(with_params(r, ts=t, max_tokens=min(r.max_tokens or cap, cap)))
        t += g.rng.uniform(*SHORT_FAST_GAP_S)
    return out


def _refused_padding(g: Gen, s: Session) -> list[Request]:
    """After each request, benign-looking ones the gateway refuses (``n`` over the tier's cap):
    free — a refusal costs no rate-limit budget — yet recorded and observed."""
    out: list[Request] = []
    for r in _reqs(s):
        out.append(r)
        t = r.ts
        for _ in range(REFUSED_PER_REQUEST):
            t += g.rng.uniform(0.05, 0.3)
            out.append(Request(t, g.take(g.pool.prompts).text, 0, n=64, harvest=False,
                               status=400))
    return out


def _head_camouflage(g: Gen, s: Session) -> list[Request]:
    return [replace(r, prompt=f"{g.passage(CAMOUFLAGE_CHARS)}\n\n{r.prompt}") for r in _reqs(s)]


NONCE_WORDS: Final = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _prefixed(header: Callable[[Gen], str]) -> Callable[[Gen, Session], list[Request]]:
    """Every prompt of the account after a header of its own, drawn per request."""
    def run(g: Gen, s: Session) -> list[Request]:
        return [replace(r, prompt=f"{header(g)}{r.prompt}") for r in _reqs(s)]
    return run


def _nonce(g: Gen) -> str:
    return f"[{g.rng.choice(NONCE_WORDS)}-{g.rng.randrange(10**6)}] "


def _markup(g: Gen) -> str:
    return f"### [{g.rng.choice(NONCE_WORDS)}] <{g.rng.randrange(10**6)}> [id] <q> ---\n"


def _labels(g: Gen) -> str:
    return f"Ref: {g.rng.choice(NONCE_WORDS)}-{g.rng.randrange(10**6)}\nTask: q\nFormat: plain\n"


def _human_timing(g: Gen, s: Session) -> list[Request]:
    reqs = _reqs(s)
    new, left = [], 0
    for _ in reqs:
        new.append(left == 0)
        left = g.rng.randint(3, 15) if left == 0 else left - 1
    return retime(reqs, human_times(g, reqs, new))


def _gaps(reqs: Sequence[Request]) -> list[float]:
    return [0.0] + [b.ts - a.ts for a, b in pairwise(reqs)]


def _dilute(share: float) -> Callable[[Gen, Session], list[Request]]:
    """Cover traffic: real conversations replayed by the same account, so ``share`` of its
    requests are benign; each kind keeps its own pacing between its requests."""
    def run(g: Gen, s: Session) -> list[Request]:
        attack = _reqs(s)
        count = math.ceil(len(attack) * share / (1 - share))
        cover = [replace(r, harvest=False) for r in _reqs(user(g, count)[0])] if count else []
        kinds = [True] * len(attack) + [False] * len(cover)
        g.rng.shuffle(kinds)
        sources = {True: iter(zip(attack, _gaps(attack), strict=True)),
                   False: iter(zip(cover, _gaps(cover), strict=True))}
        t = attack[0].ts if attack else 0.0
        out = []
        for kind in kinds:
            req, gap = next(sources[kind])
            t += gap
            out.append(replace(req, ts=t))
        return out
    return run


def _fresh_addresses(g: Gen, count: int) -> list[str]:
    """``count`` client addresses on pairwise distinct /24 networks."""
    out: dict[str, str] = {}
    while len(out) < count:
        addr = address(g.rng)
        out.setdefault(addr.rsplit(".", 1)[0], addr)
    return list(out.values())


def _in_time(sessions: list[Session]) -> list[Request]:
    return sorted((r for s in sessions for r in _reqs(s)), key=lambda r: r.ts)


def _accounts(requests: int, most: int) -> int:
    """Accounts a split of ``requests`` needs at ``most`` each (never fewer than
    :data:`SYBIL_MIN_ACCOUNTS`)."""
    return max(SYBIL_MIN_ACCOUNTS, math.ceil(requests / most))


def _dealt(g: Gen, merged: list[Request], most: int) -> list[tuple[str, list[Request]]]:
    """``merged`` dealt round-robin to fresh accounts, at most ``most`` each, one network each:
    (address, requests) of every account that got any."""
    accounts = _accounts(len(merged), most)
    return [(addr, merged[k::accounts]) for k, addr in enumerate(_fresh_addresses(g, accounts))
            if merged[k::accounts]]


def _sybil_split(g: Gen, sessions: list[Session]) -> list[Session]:
    """The operation's requests, in time order, dealt round-robin to fresh accounts: at most
    :data:`SYBIL_MAX_REQUESTS` each, at least :data:`SYBIL_MIN_ACCOUNTS`, one network each."""
    first = sessions[0]
    return [Session("", first.profile, first.label, addr, list(mine), first.campaign)
            for addr, mine in _dealt(g, _in_time(sessions), SYBIL_MAX_REQUESTS)]


def _warmed(covers: int, harvest: int, scripted: bool
            ) -> Callable[[Gen, list[Session]], list[Session]]:
    """As :func:`_sybil_split`, at most ``harvest`` requests each, every account opening with
    ``covers`` real conversations at the operation's pace: replayed with the script's
    parameters (``scripted``), else with the person's own."""
    def run(g: Gen, sessions: list[Session]) -> list[Session]:
        merged = _in_time(sessions)
        gaps = sorted(gap for gap in _gaps(merged)[1:] if gap > 0)
        pace = (gaps[len(gaps) // 2] if gaps else 60.0) * _accounts(len(merged), harvest)
        first = sessions[0]
        out = []
        for addr, mine in _dealt(g, merged, harvest):
            t = mine[0]
            script = {"max_tokens": t.max_tokens, "temperature": t.temperature, "n": t.n,
                      "stream": t.stream, "logprobs": t.logprobs,
                      "top_logprobs": t.top_logprobs, "route": t.route,
                      "logit_bias": t.logit_bias} if scripted else {}
            cover = [with_params(r, harvest=False, ts=t.ts - pace * (covers - i), **script)
                     for i, r in enumerate(_reqs(user(g, covers)[0])[:covers])]
            out.append(Session("", first.profile, first.label, addr, [*cover, *mine],
                               first.campaign))
        return out
    return run


_warm_split = _warmed(WARM_REQUESTS, WARM_HARVEST, scripted=True)
_warm_switch = _warmed(WARM_REQUESTS - SWITCH_HARVEST, SWITCH_HARVEST, scripted=False)


TRANSFORMS: Final[dict[str, Callable[[Gen, list[Session]], list[Session]]]] = {
    "stream": _each(_stream), "chat_params": _each(_chat_params), "greedy": _each(_greedy),
    "short_answers": _each(_short_answers), "short_fast": _each(_short_fast),
    "refused_padding": _each(_refused_padding),
    "head_camouflage": _each(_head_camouflage), "human_timing": _each(_human_timing),
    "dilute25": _each(_dilute(0.25)), "dilute50": _each(_dilute(0.5)),
    "dilute75": _each(_dilute(0.75)), "nonce_prefix": _each(_prefixed(_nonce)),
    "markup_header": _each(_prefixed(_markup)), "label_header": _each(_prefixed(_labels)),
    "sybil_split": _sybil_split, "warm_split": _warm_split, "warm_switch": _warm_switch,
}
