"""``gateway`` subcommands of this feature (registered by ``gateway.cli``): simulate, train,
export, evaluate. Heavy imports (torch, scikit-learn, openai) happen inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.detect.scoring import ARTIFACTS_DIR, DEFAULT_ARTIFACT


def register(commands: Any) -> None:
    """Add this feature's subcommands to the CLI's subparsers."""
    sim = commands.add_parser("simulate", help="labelled traffic: write JSONL or replay via HTTP")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--split", choices=["train", "heldout"], default="train")
    sim.add_argument("--accounts", type=int, default=5, help="accounts per profile")
    sim.add_argument("--profile", action="append", help="only these profiles (repeatable)")
    sim.add_argument("--requests", type=int, nargs=2, default=(60, 240), metavar=("MIN", "MAX"))
    sim.add_argument("--out", help="write sessions as JSON lines here (default: stdout)")
    sim.add_argument("--replay", metavar="BASE_URL", help="send them through this gateway")
    sim.add_argument("--api-key", action="append", default=[],
                     help="one key per replayed account (repeatable; cycled)")
    sim.add_argument("--limit", type=int, help="at most this many requests per account")
    sim.set_defaults(handler=_simulate)

    train = commands.add_parser("train", help="train the extraction classifier on simulated and "
                                "real-text traffic")
    train.add_argument("--out", default=str(ARTIFACTS_DIR), help="artifact directory")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument("--accounts", type=int, default=30,
                       help="simulated accounts per profile")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--name", default="window-v12")
    train.add_argument("--real", choices=["none", "small", "full"], default="full",
                       help="also train on real-text traffic (train split) at this size and "
                       "calibrate the threshold on real benign calibration traffic (none: the "
                       "simulator alone, threshold from its training accounts); the defaults "
                       "reproduce window-v12, the shipped model (bench/adaptive_suite.md)")
    train.add_argument("--forged-cues", type=float, default=0.0,
                       help="share of training windows whose forgeable cues and prompt sizes are "
                       "raised as a decorating client raises them (window-v10: 0.4; measured, "
                       "not shipped: bench/adaptive_suite.md, phase 14)")
    train.add_argument("--by-client", action="store_true",
                       help="teach each window per client, as the runtime scores it, a dilution's "
                       "cover read alone as benign (window-v13; measured, not shipped: "
                       "bench/adaptive_suite.md, phase 18)")
    train.set_defaults(handler=_train)

    cal = commands.add_parser("calibrate", help="fix an artifact's flag threshold on real benign "
                              "calibration traffic (evaluation harnesses declared)")
    cal.add_argument("--model", default=str(DEFAULT_ARTIFACT), help="artifact JSON, rewritten")
    cal.add_argument("--size", choices=["small", "full"], default="full")
    cal.add_argument("--seed", type=int, default=11)
    cal.set_defaults(handler=_calibrate)

    export = commands.add_parser("export", help="export trained torch weights to ONNX")
    export.add_argument("--weights", default=str(ARTIFACTS_DIR / "window-v12.pt"))
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.add_argument("--window", type=int, default=64)
    export.set_defaults(handler=_export)

    ev = commands.add_parser("evaluate", help="model vs GBT and PRADA baselines, held-out split; "
                             "--suite adaptive: adaptive attacks on real traffic")
    ev.add_argument("--suite", choices=["holdout", "adaptive"], default="holdout")
    ev.add_argument("--size", choices=["small", "full"], default="small",
                    help="adaptive suite size (small: CI, ~10 s; full: ~7 min)")
    ev.add_argument("--json", help="adaptive suite: also write the report here")
    ev.add_argument("--model", default=str(DEFAULT_ARTIFACT), help="artifact JSON")
    ev.add_argument("--seed", type=int, default=1007)
    ev.add_argument("--accounts", type=int, default=170, help="held-out accounts per profile")
    ev.add_argument("--train-accounts", type=int, default=60)
    ev.set_defaults(handler=_evaluate)


def _simulate(args: argparse.Namespace) -> int:
    from gateway.detect.offline import simulate

    sessions = simulate.generate(args.seed, args.split, args.accounts, tuple(args.requests),
                                 tuple(args.profile) if args.profile else None)
    if args.replay:
        if not args.api_key:
            print("gateway simulate: --replay needs at least one --api-key", file=sys.stderr)
            return 2
        from gateway.detect.offline.http_replay import replay

        for i, session in enumerate(sessions):
            key = args.api_key[i % len(args.api_key)]
            outcome = replay(session, args.replay, key, limit=args.limit)
            print(json.dumps({"account": session.account, "profile": session.profile,
                              "label": session.label, "outcomes": dict(outcome)}), flush=True)
        return 0
    lines = "".join(json.dumps(asdict(session)) + "\n" for session in sessions)
    if args.out:
        Path(args.out).write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


def _train(args: argparse.Namespace) -> int:
    from gateway.detect.offline.train import TrainConfig, train

    config = TrainConfig(seed=args.seed, accounts_per_profile=args.accounts,
                         epochs=args.epochs, name=args.name, forged_cues=args.forged_cues,
                         real=None if args.real == "none" else args.real,
                         by_client=args.by_client)
    train(Path(args.out), config, log=lambda m: print(m, flush=True))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from gateway.detect.offline.train import calibrate

    threshold = calibrate(Path(args.model), args.size, args.seed)
    print(f"calibrate: {args.model} threshold {threshold:.6f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from gateway.detect.model import export_onnx, load_torch

    export_onnx(load_torch(Path(args.weights)), Path(args.out), args.window)
    print(f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.suite == "adaptive":
        from gateway.detect.offline.adaptive import run_cli

        return run_cli(Path(args.model), args.size, args.seed, args.json)
    from gateway.detect.offline.evaluate import EvalConfig, run
    from gateway.detect.offline.measures import format_reports

    config = EvalConfig(seed=args.seed, accounts_per_profile=args.accounts,
                        train_accounts_per_profile=args.train_accounts)
    reports = run(Path(args.model), config, log=lambda m: print(m, flush=True))
    print(format_reports(reports))
    return 0
