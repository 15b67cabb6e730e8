"""Model-server configuration, from the environment (stdlib only: the GPU image has no
pydantic-settings). Same variable names as the gateway where they are shared.

Its own: ``GATEWAY_MODELSERVER_REDIS_URL`` (default none) is the Redis through which every model
server behind the gateway shares its memory of used request signatures, so a captured request
cannot be replayed on another one; while it is unreachable, signed requests are refused (503).
It is deliberately not ``GATEWAY_REDIS_URL``: the gateway's limiter may run fail-open, this
must not, and a model server should not start refusing requests because an env file shared with
the gateway names a Redis. Unset, each process remembers its own nonces, at most
``GATEWAY_MODELSERVER_REPLAY_CACHE_SIZE`` (200000) live ones, refusing (503) beyond that."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.upstream_identity.signature import MAX_NONCES
from gateway.watermark.config import WatermarkConfig, config_from_env

DEFAULT_MODEL_DIR = Path(__file__).parent / "artifacts" / "tiny-docstrings"


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path = DEFAULT_MODEL_DIR
    device: str = "auto"
    signing_secret: bytes | None = None
    signature_max_age_s: float = 60.0
    redis_url: str | None = None  # shared replay memory of the model servers
    replay_cache_size: int = MAX_NONCES  # live nonces one process remembers without Redis
    watermark_secret: bytes | None = None
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)
    allow_unsigned: bool = False
    max_batch: int = 64
    model_name: str = "tiny-docstrings"
    watermark_compile: bool = False  # the processor's optional, guarded torch.compile path

    @classmethod
    def from_env(cls, **overrides: object) -> ServerConfig:
        env = os.environ

        def secret(name: str) -> bytes | None:
            value = env.get(name)
            return value.encode() if value else None

        values: dict[str, object] = {
            "model_dir": Path(env.get("GATEWAY_MODEL_DIR", str(DEFAULT_MODEL_DIR))),
            "device": env.get("GATEWAY_MODEL_DEVICE", "auto"),
            "signing_secret": secret("GATEWAY_UPSTREAM_SIGNING_SECRET"),
            "signature_max_age_s": float(env.get("GATEWAY_UPSTREAM_SIGNATURE_MAX_AGE_S", "60")),
            "redis_url": env.get("GATEWAY_MODELSERVER_REDIS_URL") or None,
            "replay_cache_size": int(env.get("GATEWAY_MODELSERVER_REPLAY_CACHE_SIZE",
                                             str(MAX_NONCES))),
            "watermark_secret": secret("GATEWAY_WATERMARK_SECRET"),
            "watermark": config_from_env(env),
            "allow_unsigned": env.get("GATEWAY_MODELSERVER_ALLOW_UNSIGNED", "") in ("1", "true"),
            "watermark_compile": env.get("GATEWAY_WATERMARK_COMPILE", "") in ("1", "true"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
