"""Detection cost per request in the engine alone (no HTTP): features, window store, scoring,
sketches and the campaign sweep, on the shipped artifact, with the CPU scorer.

Why: ``detect_throughput.py`` needs nginx, wrk and two quiet cores; this isolates what changed
in the online path (young accounts sketched on every request, merged scoring of young clusters)
and can be run on two trees to compare: ``PYTHONPATH=<tree> python bench/detect_cost.py``.

Workload: ``--accounts`` accounts send ``--requests`` requests each, interleaved, in batches of
``--batch`` (what the micro-batcher forms); half the accounts are new (their first requests are
in the run), half old (they already hold a full window). Prints microseconds per request for
the cycles and for one sweep.

``--source simulator`` (default): the simulator's held-out profiles, short prompts.
``--source real``: the held-out real-text benign population of the adaptive suite (people,
shared keys and every automation profile, prompts from corpora nobody here wrote); longer
prompts, so text features cost more per request. Needs the corpora (``gateway`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.detect.campaign import Campaign
from gateway.detect.offline import corpus, real_traffic, simulate
from gateway.detect.offline.adaptive import SIZES, benign_population
from gateway.detect.offline.simulate import Session, generate
from gateway.detect.runtime import DetectionEngine, DetectionEngineConfig, Scored
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, load_scorer
from gateway.detect.window_store import MemoryWindowStore
from gateway.metrics import Metrics
from gateway.records import RequestRecord


class Quiet:
    async def on_scored(self, results: Sequence[Scored]) -> None:
        return None

    async def on_campaigns(self, found: Sequence[Campaign]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


Recorder = Callable[[Session, int], tuple[RequestRecord, str]]


def workload(source: str, accounts: int, requests: int) -> tuple[list[Session], Recorder]:
    """``accounts`` sessions of at least ``requests`` requests each, and their record maker."""
    if source == "simulator":
        sessions = generate(3, "heldout", max(1, accounts // 12), (requests, requests))
        return sessions[:accounts], simulate.to_record
    size = replace(SIZES["small"], users=accounts, automation=max(1, accounts // 10),
                   benign_requests=(requests, requests))
    people = [s for s in benign_population(corpus.pool("heldout", size.limits), size, 3)
              if len(s.requests) >= requests]
    return people[:accounts], real_traffic.to_record


async def measure(model: Path, accounts: int, requests: int, batch: int,
                  source: str = "simulator") -> dict[str, float]:
    artifact = Artifact.load(model)
    config = DetectionEngineConfig(window=artifact.window, min_requests=artifact.min_requests,
                          score_every=artifact.score_every, max_batch=batch,
                          min_score_interval_s=0.0)
    engine = DetectionEngine(config, load_scorer(artifact, "cpu"), artifact,
                    MemoryWindowStore(artifact.window), Quiet(),
                    metrics=Metrics(CollectorRegistry()))
    sessions, to_record = workload(source, accounts, 2 * requests)
    old = sessions[: len(sessions) // 2]
    for s in old:  # history before the measured run
        for i in range(requests):
            engine.observe(*to_record(s, i))
    while engine.backlog:
        await engine.cycle()
    had = {s.account for s in old}
    offset = {s.account: (requests if s.account in had else 0) for s in sessions}
    records = [to_record(s, offset[s.account] + i) for i in range(requests) for s in sessions]
    started = time.perf_counter()
    for k in range(0, len(records), batch):
        for rec in records[k:k + batch]:
            engine.observe(*rec)
        await engine.cycle()
    cycles = time.perf_counter() - started
    started = time.perf_counter()
    await engine.sweep()
    sweep = time.perf_counter() - started
    return {"requests": len(records), "us_per_request": 1e6 * cycles / len(records),
            "sweep_ms": 1e3 * sweep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=600)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path, default=DEFAULT_ARTIFACT, help="artifact JSON")
    parser.add_argument("--source", choices=("simulator", "real"), default="simulator")
    args = parser.parse_args()
    runs = [asyncio.run(measure(args.model, args.accounts, args.requests, args.batch,
                                args.source)) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["us_per_request"])
    print(json.dumps({"artifact": Artifact.load(args.model).version, "source": args.source,
                      **best}))


if __name__ == "__main__":
    main()
