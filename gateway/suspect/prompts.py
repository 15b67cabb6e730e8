"""Prompts the tester chooses: openings of the Python standard library's docstrings (the
domain of the shipped model, and text every installation has), in a seeded random order.

Fresh prompts never came from the gateway's outputs, so they cannot carry any account's
watermark; prompts from elsewhere (``--prompts FILE``) are fine too, because pairs copied from a
prompt are not scored (:class:`gateway.suspect.pairs.PairSet`).
"""

from __future__ import annotations

import ast
import random
import sysconfig
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

_SKIP = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
                   "turtledemo", "__pycache__", "ensurepip"})


@lru_cache(maxsize=4)
def stdlib_openings(length: int = 24, limit_files: int = 4000) -> tuple[str, ...]:
    """Distinct docstring openings of exactly ``length`` characters (ASCII), sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for i, path in enumerate(sorted(root.rglob("*.py"))):
        if i >= limit_files:
            break
        if _SKIP.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= length and doc.isascii():
                    found.add(doc[:length])
    return tuple(sorted(found))


def prompt_stream(prompts: Sequence[str], seed: int) -> Iterator[str]:
    """``prompts`` in a seeded random order, reshuffled on each pass (never empty-handed)."""
    if not prompts:
        raise ValueError("no prompts")
    rng = random.Random(seed)
    while True:
        order = list(prompts)
        rng.shuffle(order)
        yield from order
