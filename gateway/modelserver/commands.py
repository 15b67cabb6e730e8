"""``gateway`` subcommands of the reference model server (registered by ``gateway.cli``):
``model-server`` and ``train-tiny-model``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_MODEL_PORT = 8001


def register(commands: Any) -> None:
    """Add this feature's subcommands to the CLI's subparsers."""
    server = commands.add_parser(
        "model-server", help="the reference OpenAI-compatible model server (watermarking)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=DEFAULT_MODEL_PORT)
    server.add_argument("--model", help="model directory (default: the shipped tiny model)")
    server.add_argument("--device", help="auto, cpu or cuda (default GATEWAY_MODEL_DEVICE)")
    server.set_defaults(handler=_model_server)

    train = commands.add_parser(
        "train-tiny-model", help="train the default tiny byte-level model on stdlib docstrings")
    train.add_argument("--out", default=str(_default_model_dir()))
    train.add_argument("--steps", type=int)
    train.add_argument("--n-embd", type=int)
    train.add_argument("--n-layer", type=int)
    train.set_defaults(handler=_train)


def _default_model_dir() -> Path:
    from gateway.modelserver.config import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


def _model_server(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.modelserver.config import ServerConfig
    from gateway.modelserver.server import create_model_server_app

    overrides: dict[str, object] = {}
    if args.model:
        overrides["model_dir"] = Path(args.model)
    if args.device:
        overrides["device"] = args.device
    config = ServerConfig.from_env(**overrides)
    uvicorn.run(create_model_server_app(config), host=args.host, port=args.port,
                log_level=os.environ.get("GATEWAY_LOG_LEVEL", "info").lower(),
                access_log=False, server_header=False)
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gateway.modelserver.train_tiny import TinyConfig, train

    config = TinyConfig()
    for name in ("steps", "n_embd", "n_layer"):
        value = getattr(args, name)
        if value is not None:
            config = replace(config, **{name: value})
    loss = train(config, Path(args.out))
    print(json.dumps({"out": args.out, "final_loss": loss}))
    return 0
