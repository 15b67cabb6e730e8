"""One key, several clients: held-out benign profiles merged into one account, replayed through
the production engine, flagged at the artifact's threshold. The suite's benign accounts are one
profile each; an organisation's key shared by two people, or by a chat client and a coding
tool, is not in it, and the window classifier reads a switch of client parameters mid-window
as the ``chat_params`` evasion (bench/adaptive_suite.md, phase 8: a known gap).

    python -m bench.shared_key [--model PATH] [--threshold T] [--accounts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import replace
from pathlib import Path

from gateway.detect.offline import adaptive, corpus
from gateway.detect.offline.engine_replay import replay
from gateway.detect.offline.real_traffic import BENIGN_FNS, Gen, Request
from gateway.detect.offline.simulate import Session
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer

PAIRS = (("user", "user"), ("user", "coding_assistant"), ("user", "translation_batch"),
         ("coding_assistant", "labelling_batch"))
REQUESTS = 60  # per client
GAP_S = 3600.0  # between the first client's last request and the second's first (sequential)


def shared(pool: corpus.Pool, a: str, b: str, index: int, together: bool) -> Session:
    """Profiles ``a`` and ``b`` on one key: at once (``together``) or one after the other."""
    g = Gen(random.Random(f"shared:{a}:{b}:{index}"), pool)
    first, second = (BENIGN_FNS[p](g, REQUESTS)[0] for p in (a, b))
    ra = [r for r in first.requests if isinstance(r, Request)]
    rb = [r for r in second.requests if isinstance(r, Request)]
    offset = 0.0 if together else ra[-1].ts - ra[0].ts + GAP_S
    reqs = ([replace(r, ts=r.ts - ra[0].ts) for r in ra]
            + [replace(r, ts=offset + r.ts - rb[0].ts) for r in rb])
    return Session("", "shared_key", 0, first.client_addr, sorted(reqs, key=lambda r: r.ts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_ARTIFACT), help="artifact JSON")
    parser.add_argument("--accounts", type=int, default=20, help="accounts per row")
    parser.add_argument("--threshold", type=float, help="default: the artifact's")
    args = parser.parse_args(argv)
    artifact = Artifact.load(Path(args.model))
    threshold = args.threshold or artifact.threshold
    scorer = load_scorer(artifact, "cpu")
    pool = corpus.pool("heldout", corpus.Limits(conversations=3000, modules=40))
    print(f"{artifact.version} at threshold {threshold:.4f}")
    for a, b in PAIRS:
        for together in (False, True):
            name = f"{a} + {b}, {'at once' if together else 'one after the other'}"
            prefix = adaptive.SEP.join(("heldout", name))
            sessions = [s for i in range(args.accounts) for s in adaptive._named(
                [shared(pool, a, b, i, together)], f"{prefix}{adaptive.SEP}{i}", "heldout")]
            result = asyncio.run(replay(sessions, scorer, artifact, adaptive.group_of))
            flagged = sum(result.flagged_at(s.account, threshold) is not None
                          for s in sessions)
            print(f"  {name:58s} flagged {flagged:3d}/{len(sessions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
