"""Model-server configuration, from the environment (stdlib only: the GPU image has no
pydantic-settings). Same variable names as the gateway where they are shared."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.watermark.config import WatermarkConfig, config_from_env

DEFAULT_MODEL_DIR = Path(__file__).parent / "artifacts" / "tiny-docstrings"


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path = DEFAULT_MODEL_DIR
    device: str = "auto"
    signing_secret: bytes | None = None
    signature_max_age_s: float = 60.0
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
            "watermark_secret": secret("GATEWAY_WATERMARK_SECRET"),
            "watermark": config_from_env(env),
            "allow_unsigned": env.get("GATEWAY_MODELSERVER_ALLOW_UNSIGNED", "") in ("1", "true"),
            "watermark_compile": env.get("GATEWAY_WATERMARK_COMPILE", "") in ("1", "true"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
