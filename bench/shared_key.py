"""One key, several clients: held-out benign profiles merged into one account, replayed through
the production engine, flagged at the artifact's threshold. Fixed pairs, so that runs and
models compare: two people, a person and a coding tool or a translation job, a coding tool and
a labelling job, each pair one after the other (an hour apart) and at once (starting
together). The suite's ``shared_key`` profile draws its pairs and timing at random, and only
two people on one key is among the pairs it trains on (bench/adaptive_suite.md, phases 8-9).

    python -m bench.shared_key [--model PATH] [--threshold T] [--accounts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

from gateway.detect.offline import adaptive, corpus
from gateway.detect.offline.engine_replay import replay
from gateway.detect.offline.real_traffic import BENIGN_FNS, Gen, shared
from gateway.detect.offline.simulate import Session
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer

PAIRS = (("user", "user"), ("user", "coding_assistant"), ("user", "translation_batch"),
         ("coding_assistant", "labelling_batch"))
REQUESTS = 60  # per client


def pair(pool: corpus.Pool, a: str, b: str, index: int, together: bool) -> Session:
    """Profiles ``a`` and ``b`` on one key: starting together, or ``b`` an hour after ``a``'s
    last request."""
    g = Gen(random.Random(f"shared:{a}:{b}:{index}"), pool)
    first, second = (BENIGN_FNS[p](g, REQUESTS)[0] for p in (a, b))
    return shared(first, second, first.requests[0].ts, together)


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
                [pair(pool, a, b, i, together)], f"{prefix}{adaptive.SEP}{i}", "heldout")]
            result = asyncio.run(replay(sessions, scorer, artifact, adaptive.group_of))
            flagged = sum(result.flagged_at(s.account, threshold) is not None
                          for s in sessions)
            print(f"  {name:58s} flagged {flagged:3d}/{len(sessions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
