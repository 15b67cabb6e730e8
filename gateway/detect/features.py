"""Per-request features: cheap (tens of microseconds), computed in the gateway after the reply.

Only stdlib + numpy. Every hash here is stable across processes and machines (CRC32 and a
fixed 64-bit mixer, never Python's salted ``hash``), because windows and sketches written by one
replica are compared by another.

A request becomes a :class:`RequestFeatures`: a small float vector (sizes, parameters, logprob
and logit-bias use, reasoning-elicitation and templating signals, output/input ratio, status), a
64-bit SimHash of its word 3-shingles (PRADA-style distances, near-duplicates), a MinHash
signature of the same shingles (template reuse, campaign clustering) and an exact fingerprint of
the whole request (:mod:`gateway.detect.coverage`: has the account sent it before). The
fingerprint is not a model input: the artifact and its feature vector are unchanged.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.detect import coverage
from gateway.records import RequestRecord

MAX_PROMPT_CHARS: Final = 2000
"""At most this much of a prompt is read (its head and its tail): bounds the cost per request."""
MAX_SIGNAL_CHARS: Final = 1500
TAIL_CHARS: Final = MAX_PROMPT_CHARS // 2
"""Of a longer prompt, the last this many characters are kept beside the head: an instruction
placed after a long innocent passage (head camouflage) is still read."""
MINHASH_K: Final = 16
WORD_MEMO: Final = 1 << 15
FEATURE_NAMES: Final = (
    "prompt_chars_log",
    "prompt_words_log",
    "max_tokens_log",
    "max_tokens_one",
    "logprobs",
    "top_logprobs",
    "logit_bias_log",
    "n_log",
    "temperature",
    "stream",
    "reasoning",
    "templating",
    "question",
    "code",
    "completion_tokens_log",
    "output_input_ratio",
    "error",
    "rate_limited",
)
N_FEATURES: Final = len(FEATURE_NAMES)
FORGEABLE: Final = ("templating", "question", "code")
"""Cues a client raises for free by decorating its prompts (a line of markup, a label, a
question mark, a brace), whatever it asks: read from listed strings, they can only ever be
evidence that the prompt *was* decorated. Training can raise them at random in windows of both
classes (``TrainConfig.forged_cues``), so that decoration cannot move a score: what a header of
markup does to PRADA-style probing (bench/adaptive_suite.md, phases 13 and 14)."""

U64 = npt.NDArray[np.uint64]
F32 = npt.NDArray[np.float32]

_SEPARATORS: Final = bytes(c if chr(c).isascii() and (chr(c).isdigit() or "a" <= chr(c) <= "z")
                           else 0x20 for c in range(256))
"""Bytes -> themselves for ``[a-z0-9]``, a space for every other byte: words are the runs of
``[a-z0-9]`` (what ``re.findall(r"[a-z0-9]+")`` finds, at a fifth of its cost)."""
_word_memo: dict[bytes, int] = {}
"""Word -> its hash (:func:`_hash_words`); owned by this module, shared by its threads (single
dict operations are atomic, and a value is the same whoever computes it)."""
_REASONING: Final = re.compile(
    r"s(?:tep[- ]by[- ]step|how your|how all)|r(?:eason|ationale)|t(?:hink|hought)|explain"
    r"|justif|d(?:eriv|educ)|w(?:alk (?:me )?through|hy |ork out)|pro(?:of|ve)|logic|infer"
    r"|first principles")
"""Factored by first letter (a fraction fewer branches tried at each position). No cue is a
prefix of another, so at most one matches at a position and the order of branches changes no
match."""
_MARKUP: Final = ("###", "---", "{{", "}}", "</")
_MARKUP_CHARS: Final = "[<"
_CODE_WORDS: Final = ("def ", "return ", "import ", "function ")
_CODE_CHARS: Final = "{}(;="


def _constants(seed: int) -> npt.NDArray[np.uint64]:
    """MINHASH_K fixed odd 64-bit constants (splitmix64 stream): the same on every replica."""
    out, x = [], seed
    for _ in range(MINHASH_K):
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        out.append((z ^ (z >> 31)) | 1)
    return np.array(out, dtype=np.uint64)


_MULT: Final = _constants(1)
_ADD: Final = _constants(2)


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What the detector keeps of one request (no prompt text)."""

    request_id: str
    ts: float
    vector: F32
    simhash: int
    minhash: npt.NDArray[np.uint32]
    network: int
    """CRC32 of the client's /24 (IPv4) or /48 (IPv6); 0 when unknown."""
    fingerprint: int = 0
    """:func:`gateway.detect.coverage.fingerprint` of the whole request (0: unknown, i.e. always
    new to the account's coverage)."""


def bounded(prompt: str) -> str:
    """The part of a prompt the detector reads: all of it up to :data:`MAX_PROMPT_CHARS`, else
    its head and its tail, joined by a newline, exactly :data:`MAX_PROMPT_CHARS` long (so that
    bounding twice changes nothing: the runtime bounds on the reply path, features again)."""
    if len(prompt) <= MAX_PROMPT_CHARS:
        return prompt
    head = MAX_PROMPT_CHARS - TAIL_CHARS - 1
    return f"{prompt[:head]}\n{prompt[-TAIL_CHARS:]}"


def _occurrences(text: str, needles: Iterable[str]) -> int:
    """Non-overlapping occurrences of each needle, summed: what a regex alternation of them
    counts when no needle's end can begin another (true of the markup and code needles)."""
    return sum(text.count(needle) for needle in needles)


def _words(text: str) -> list[bytes]:
    """The ``[a-z0-9]`` runs of the bounded, lower-cased text, as ASCII bytes (lower-casing comes
    first, as before: a character that lower-cases to ASCII is part of a word)."""
    return bounded(text).lower().encode("ascii", "replace").translate(_SEPARATORS).split()


def _hash_words(words: Sequence[bytes]) -> list[int]:
    """Stable 64-bit hashes of words (two CRC32s), the most recent distinct words remembered:
    natural text repeats its words, so most are a dictionary lookup (a third of the cost of
    features was hashing words). Text made of ever-new words costs what it would without the
    memo plus one insertion a word: the memo is emptied when it holds :data:`WORD_MEMO` words,
    so it stays a few megabytes whatever is sent."""
    get = _word_memo.get
    return [get(word) or _hash_word(word) for word in words]


def _hash_word(word: bytes) -> int:
    value = zlib.crc32(word, 0x5BD1E995) << 32 | zlib.crc32(word)
    if len(_word_memo) >= WORD_MEMO:
        _word_memo.clear()
    _word_memo[word] = value
    return value


def _mix(x: U64) -> U64:
    """splitmix64's finaliser, vectorised (numpy uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(text: str) -> U64:
    """Stable 64-bit hashes of the word 3-shingles (single words for very short texts).

    Words are hashed with two CRC32s (C speed); shingles combine them with one vectorised mix.
    Array arithmetic on uint64 wraps silently, which is what a hash wants.
    """
    words = _words(text)
    if not words:
        return np.zeros(0, dtype=np.uint64)
    w = np.array(_hash_words(words), dtype=np.uint64)
    if len(w) >= 3:
        w = w[:-2] * np.uint64(0x100000001B3) + w[1:-1] * np.uint64(0x9E3779B97F4A7C15) + w[2:]
    return _mix(w)


def simhash(hashes: U64) -> int:
    """64-bit SimHash: bit i is set when most shingles have bit i set."""
    if len(hashes) == 0:
        return 0
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    votes = bits.sum(axis=0, dtype=np.int32) * 2 > len(hashes)
    return int(np.packbits(votes, bitorder="little").view(np.uint64)[0])


def minhash(hashes: U64) -> npt.NDArray[np.uint32]:
    """K-slot MinHash by multiply-shift (the inputs are already mixed); all-ones when empty."""
    if len(hashes) == 0:
        return np.full(MINHASH_K, 0xFFFFFFFF, dtype=np.uint32)
    mixed = hashes[None, :] * _MULT[:, None] + _ADD[:, None]
    out: npt.NDArray[np.uint32] = (mixed.min(axis=1) >> np.uint64(32)).astype(np.uint32)
    return out


def network_of(addr: str | None) -> int:
    if not addr:
        return 0
    sep = ":" if ":" in addr else "."
    prefix = sep.join(addr.split(sep)[:3])
    return zlib.crc32(prefix.encode())


def _log(value: float | int | None) -> float:
    return math.log1p(max(float(value or 0), 0.0))


def prompt_signals(prompt: str) -> tuple[float, float, float, float, int]:
    """(reasoning, templating, question, code, words) — densities in [0, 1], and a word count.

    A handful of C-level scans (two small regexes, ``str.translate`` deletions, counts): this
    runs for every request. A long prompt is read at both ends (half the budget each), so text
    put in front of an instruction does not hide it.
    """
    half = MAX_SIGNAL_CHARS // 2
    head = prompt if len(prompt) <= MAX_SIGNAL_CHARS else f"{prompt[:half]}\n{prompt[-half:]}"
    low = head.lower()
    words = max(1, head.count(" ") + head.count("\n") + 1)
    reasoning = min(1.0, len(_REASONING.findall(low)) / 3.0)
    labels = sum(1 for line in head.split("\n") if ":" in line[:26])
    markup = _occurrences(low, _MARKUP) + _occurrences(low, _MARKUP_CHARS)
    templating = min(1.0, (labels + markup) / 6)
    question = min(1.0, head.count("?") / 3.0)
    code = _occurrences(low, _CODE_WORDS) + _occurrences(low, _CODE_CHARS)
    return reasoning, templating, question, min(1.0, code / max(8.0, words / 4)), words


def _row(record: RequestRecord, prompt: str) -> list[float]:
    reasoning, templating, question, code, words = prompt_signals(prompt)
    completion = record.completion_tokens or 0
    prompt_tokens = record.prompt_tokens or max(1, len(prompt) // 4)
    max_tokens = record.max_tokens or 0
    temperature = 1.0 if record.temperature is None else min(float(record.temperature), 2.0)
    return [
        _log(record.prompt_chars or len(prompt)) / 8,
        _log(words) / 6,
        _log(max_tokens) / 8,
        float(max_tokens == 1),
        float(record.logprobs),
        min(float(record.top_logprobs or 0), 20.0) / 20,
        _log(record.logit_bias_size) / 6,
        _log((record.n or 1) - 1),
        temperature / 2,
        0.0,  # stream: transport is not evidence (a streamed exchange reads as a plain one)
        reasoning,
        templating,
        question,
        code,
        _log(completion) / 8,
        min(4.0, max(-4.0, math.log((completion + 1) / (prompt_tokens + 1)))) / 4,
        float(record.status_code >= 400),
        float(record.status_code == 429),
    ]


def _word_hashes(prompt: str) -> list[int]:
    return _hash_words(_words(prompt))


def extract_batch(items: Sequence[tuple[RequestRecord, str]],
                  digests: Sequence[bytes | None] | None = None
                  ) -> list[RequestFeatures | None]:
    """Features of many finished requests in one vectorised pass (what the micro-batcher
    calls), aligned with ``items``; None for a record that could not be read.

    ``digests`` (aligned with ``items``): :func:`gateway.detect.coverage.digest` of prompts
    that were already cut to :func:`bounded` by the caller (the runtime cuts on the reply path);
    None where the prompt given is the whole prompt."""
    rows: list[list[float]] = []
    kept: list[tuple[int, RequestRecord, float, int]] = []
    flat: list[int] = []
    counts: list[int] = []
    for index, (record, prompt) in enumerate(items):
        try:
            whole = (digests[index] if digests is not None else None) or coverage.digest(prompt)
            prompt = bounded(prompt)
            row = _row(record, prompt)
            ts = record.created_at.timestamp()
            words = _word_hashes(prompt) or [0]
            fingerprint = coverage.fingerprint(record, whole)
        except (AttributeError, TypeError, ValueError, OverflowError):
            continue  # reported by the caller as a None
        rows.append(row)
        kept.append((index, record, ts, fingerprint))
        flat.extend(words)
        counts.append(len(words))
    out: list[RequestFeatures | None] = [None] * len(items)
    if not kept:
        return out
    # Word 3-shingles of every prompt at once: combine each word with its next two, then keep
    # the positions whose three words belong to the same prompt (single words for short ones).
    w = np.array(flat, dtype=np.uint64)
    n_words = np.array(counts)
    word_start = np.concatenate([[0], np.cumsum(n_words)[:-1]])
    padded = np.concatenate([w, np.zeros(2, dtype=np.uint64)])
    tri = padded[:-2] * np.uint64(0x100000001B3) \
        + padded[1:-1] * np.uint64(0x9E3779B97F4A7C15) + padded[2:]
    sizes = np.where(n_words >= 3, n_words - 2, n_words)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offset = np.arange(len(owner)) - starts[owner]
    position = word_start[owner] + offset
    values = np.where((n_words >= 3)[owner], tri[position], w[position])
    empty = (n_words == 1) & (w[word_start] == 0)
    mixed = _mix(values)
    bits = np.unpackbits(mixed.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    # uint16 sums (4x cheaper): a bounded prompt has at most a few thousand words, even where
    # lower-casing lengthens it, and twice that is far below 65,536.
    votes = np.add.reduceat(bits, starts, axis=0, dtype=np.uint16) * 2 > sizes[:, None]
    sims = np.packbits(votes, axis=1, bitorder="little").view(np.uint64)[:, 0]
    slots = mixed[None, :] * _MULT[:, None] + _ADD[:, None]
    mins = (np.minimum.reduceat(slots, starts, axis=1) >> np.uint64(32)).astype(np.uint32).T
    mins[empty] = 0xFFFFFFFF
    sims[empty] = 0
    vectors = np.array(rows, dtype=np.float32)
    for i, (index, record, ts, fingerprint) in enumerate(kept):
        out[index] = RequestFeatures(record.request_id, ts, vectors[i], int(sims[i]),
                                     mins[i].copy(), network_of(record.client_addr),
                                     fingerprint)
    return out


def extract(record: RequestRecord, prompt: str) -> RequestFeatures:
    """Features of one finished request; raises on an unreadable record."""
    found = extract_batch([(record, prompt)])[0]
    if found is None:
        raise ValueError("unreadable request record")
    return found
