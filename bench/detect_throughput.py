"""Gateway throughput with the extraction classifier on versus off, in one run.

Target (issue 4): with detection on, at least 90% of the req/s with it off.

Method: the static nginx upstream of ``proxy_overhead.py`` (core 0), ``gateway serve`` (one
worker, core 1, local mode, SQLite, in-process limiter with limits nobody reaches) in three
configurations started side by side (idle ones cost nothing):
  * ``off``   - GATEWAY_DETECTION_ENABLED=false;
  * ``on``    - the shipped classifier with default settings (one account is scored every 4th
                request, at most every 50 ms);
  * ``worst`` - every 4th request of the account scored, no interval (the most scoring work the
                runtime ever does per request; it still sheds under overload).
wrk (2 threads, 16 connections, POST /v1/chat/completions, one bearer key) drives each for
``--duration`` seconds after a 1 s warm-up, in ``--rounds`` rounds with the order rotated;
ratios are medians of per-round ratios (figures taken seconds apart on this noisy box). Any
non-2xx response fails the run. The gateway's /metrics are scraped afterwards to show how many
windows were scored and how many scorings were shed.

    . .venv/bin/activate && python -m bench.detect_throughput [--duration 5] [--rounds 3]

JSON goes to bench/results/detect_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.proxy import overhead_gateway as gw
from bench.proxy.overhead_payloads import Workload, request_body
from bench.proxy.overhead_servers import RESULTS_DIR, Processes, http_request, start_upstream
from bench.proxy.overhead_wrk import run_wrk

CONFIGS = {
    "off": {"GATEWAY_DETECTION_ENABLED": "false"},
    "on": {"GATEWAY_DETECTION_ENABLED": "true"},
    "worst": {"GATEWAY_DETECTION_ENABLED": "true", "GATEWAY_DETECTION_MIN_SCORE_INTERVAL_S": "0"},
}
WORKLOAD: Workload = "json"


def scrape(url: str, names: tuple[str, ...]) -> dict[str, float]:
    _, _, body = http_request(f"{url}/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        for name in names:
            if line.startswith(name + " ") or line.startswith(name + "{"):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR /
                        "detect_throughput.json")
    args = parser.parse_args()
    reason = gw.unavailable_reason()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="detect-bench-") as tmp, Processes(Path(tmp)) as procs:
        work = Path(tmp)
        upstream = start_upstream(procs)
        base = upstream.base_url(WORKLOAD)
        urls, keys = {}, {}
        for name, env in CONFIGS.items():
            setup = gw.prepare(work / name, base, workers=1)
            setup.env.update(env)
            _, urls[name] = gw.start(procs, setup, base, WORKLOAD)
            keys[name] = setup.api_key
        body_file = work / "body.json"
        body_file.write_bytes(request_body(WORKLOAD))
        rps: dict[str, list[float]] = {n: [] for n in CONFIGS}
        order = list(CONFIGS)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                run_wrk(urls[name], args.concurrency, 1, body_file, keys[name])
                run = run_wrk(urls[name], args.concurrency, args.duration, body_file, keys[name])
                if run.non_2xx or run.socket_errors:
                    print(f"bench: {name}: {run.non_2xx} non-2xx, {run.socket_errors} socket "
                          "errors", file=sys.stderr)
                    return 1
                rps[name].append(run.rps)
                print(f"round {r + 1} {name:6s} {run.rps:9.1f} req/s  p99 {run.p99_ms:.2f} ms",
                      flush=True)
        ratios = {n: statistics.median(rps[n][i] / rps["off"][i] for i in range(args.rounds))
                  for n in CONFIGS if n != "off"}
        detect = {n: scrape(urls[n], ("gateway_detect_windows_scored_total",
                                      "gateway_detect_shed_total",
                                      "gateway_detect_observed_total"))
                  for n in CONFIGS if n != "off"}
    print("\nconfig   median req/s   vs off")
    for name in CONFIGS:
        ratio = ratios.get(name, 1.0)
        print(f"{name:6s} {statistics.median(rps[name]):12.1f}   {100 * ratio:6.1f}%")
    for name, values in detect.items():
        print(f"{name}: {values}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rps": rps, "ratios": ratios, "detector": detect},
                                      indent=1))
    ok = ratios["on"] >= 0.9
    print(f"\ntarget: detection on >= 90% of off: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
