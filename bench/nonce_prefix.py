"""A random token in front of every prompt, before and after, for one or two models.

The suite itself now applies it as the probe ``nonce_prefix`` (and ``nonce_prefix+greedy``;
gateway/detect/offline/evasions.py). This script keeps the phase-12 comparison: each cell plain
and with the tokens, in one run.

A detector that finds the head an account's prompts share as a *prefix* (the measured, not
shipped window-v9 of bench/adaptive_suite.md, phase 12) compares a fixed system prompt's
questions past it. A token that varies per request, sent before the system prompt, leaves no
shared prefix: the shared block is back in the middle of every prompt, and the window reads
whole prompts, as window-v7 (shipped then) always does. This measures what that costs on the
suite's operations (held-out real prompts, seed 1007), replayed through the production engine,
each cell plain and with the tokens:

    python -m bench.nonce_prefix [--attacks distill] [--combos greedy,none] [--model PATH]
        [--threshold T]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from pathlib import Path

from gateway.detect.offline import adaptive, corpus
from gateway.detect.offline.simulate import Session
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def with_nonces(op: list[Session], rng: random.Random) -> list[Session]:
    """The operation's sessions, every prompt behind a token of its own."""
    for session in op:
        session.requests = [replace(r, prompt=f"[{rng.choice(WORDS)}-{rng.randrange(10**6)}] "
                                    f"{r.prompt}") for r in session.requests]
    return op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="distill")
    parser.add_argument("--combos", default="greedy,none")
    parser.add_argument("--model", default=str(DEFAULT_ARTIFACT))
    parser.add_argument("--threshold", type=float, help="default: the artifact's")
    parser.add_argument("--seed", type=int, default=1007)
    args = parser.parse_args(argv)
    artifact = Artifact.load(Path(args.model))
    threshold = artifact.threshold if args.threshold is None else args.threshold
    scorer = load_scorer(artifact, "cpu")
    size = adaptive.SIZES["full"]
    pool = corpus.pool("heldout", size.limits)
    rng = random.Random(args.seed)
    for attack in args.attacks.split(","):
        for combo in args.combos.split(","):
            for nonce in (False, True):
                ops = [adaptive.operation(pool, attack, combo, j,
                                          adaptive.operation_requests(size, combo), args.seed)
                       for j in range(size.operations)]
                if nonce:
                    ops = [with_nonces(op, rng) for op in ops]
                result = adaptive._replay([s for op in ops for s in op], scorer, artifact)
                cell = adaptive.cell(attack, combo, ops, result, threshold, artifact.threshold)
                print(f"{attack:10s} {combo:14s} {'nonce' if nonce else 'plain':6s} flagged "
                      f"{100 * cell.flagged:4.0f}%  harvest median/worst "
                      f"{cell.harvest_completions.median:.0f}/"
                      f"{cell.harvest_completions.worst:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
