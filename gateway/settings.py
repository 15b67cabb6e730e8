"""All configuration, in one place (environment variables prefixed ``GATEWAY_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.domain.limits import TierLimits, default_tiers
from gateway.domain.roles import Role

WEAK_SECRETS = frozenset(
    {"changeme", "change-me", "secret", "password", "admin", "token", "test", "demo", "default"}
)
MIN_SECRET_LENGTH = 32


class AdminTokenConfig(BaseModel):
    name: str
    token: SecretStr
    role: Role


def is_weak_secret(value: str) -> bool:
    """A secret is weak when short, a well-known placeholder, or made of few distinct characters."""
    return (
        len(value) < MIN_SECRET_LENGTH
        or value.lower() in WEAK_SECRETS
        or len(set(value)) < 10
    )


class Settings(BaseSettings):
    """Gateway configuration. ``mode=local`` (the demo) relaxes the secret-strength checks."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    mode: Literal["production", "local"] = "production"
    log_level: str = "info"

    upstream_url: str = "http://127.0.0.1:8001/v1"
    upstream_api_key: SecretStr | None = None
    upstream_connect_timeout_s: float = Field(default=5.0, gt=0)
    upstream_read_timeout_s: float = Field(default=300.0, gt=0)
    upstream_max_connections: int = Field(default=1000, ge=1)
    upstream_kind: Literal["reference", "vllm"] = "reference"
    """``vllm``: the gateway writes each generation request's signed watermark account into
    ``vllm_xargs`` for :class:`gateway.watermark.vllm_adapter.BatchWatermark` (needs
    ``GATEWAY_WATERMARK_SECRET``, the same in vLLM's environment); ``reference``: the reference
    model server, named the account in signed headers (``GATEWAY_UPSTREAM_SIGNING_SECRET``)."""

    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    redis_url: str | None = None

    ratelimit_enabled: bool = True
    tokenizer_path: str | None = None
    ratelimit_failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"
    ratelimit_redis_timeout_s: float = Field(default=0.1, gt=0)
    ratelimit_replicas: int = Field(default=1, ge=1)
    ratelimit_lease_s: float = Field(default=60.0, gt=0)
    ratelimit_retry_interval_s: float = Field(default=1.0, gt=0)

    admin_token: SecretStr | None = None
    admin_tokens: list[AdminTokenConfig] = Field(default_factory=list)
    key_hash_secret: SecretStr | None = None
    watermark_secret: SecretStr | None = None
    classifier_device: Literal["auto", "cpu", "cuda"] = "auto"

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    prompt_storage: Literal["none", "hash", "full"] = "hash"
    trust_forwarded_for: bool = False
    trusted_proxy_hops: int = Field(default=1, ge=1, le=16)
    """Proxies in front of the gateway that append to ``X-Forwarded-For``: the client's address
    is this many entries from the right (entries further left are whatever the client wrote)."""
    default_max_tokens: int = Field(default=4096, ge=1, le=1 << 20)
    """The output cap forwarded on a generation request that names none, and reserved: without
    it the upstream generates up to the model's context while the limiter reserved a guess."""
    passthrough_routes: list[str] = Field(default_factory=list)
    """Extra ``"METHOD /v1/path"`` (or ``/v1/prefix/*``) routes forwarded without body checks;
    every other non-GET route the gateway does not understand is refused (404)."""
    key_cache_ttl_s: float = Field(default=2.0, ge=0)

    request_log_batch_size: int = Field(default=500, ge=1)
    request_log_flush_interval_s: float = Field(default=0.25, gt=0)
    request_log_queue_max: int = Field(default=20_000, ge=1)
    request_log_spill_dir: str = "./var/spill"
    request_log_replay_interval_s: float = Field(default=2.0, gt=0)
    request_retention_days: int = Field(default=90, ge=1)

    # --- detection (gateway/detect) ---
    detection_enabled: bool | None = None
    """None: on when the classifier artifact exists (it ships with the package)."""
    detection_model_path: str | None = None
    """The artifact's JSON file; default: the shipped one."""
    detection_backend: Literal["auto", "onnx", "torch"] = "auto"
    detection_threads: int = Field(default=1, ge=1)
    detection_min_requests: int | None = Field(default=None, ge=2)
    detection_score_every: int | None = Field(default=None, ge=1)
    detection_max_batch: int = Field(default=256, ge=1)
    detection_max_wait_ms: float = Field(default=50.0, ge=0)
    detection_queue_max: int = Field(default=50_000, ge=1)
    detection_min_score_interval_s: float = Field(default=0.05, ge=0)
    detection_risk_half_life_s: float = Field(default=3 * 86400.0, gt=0)
    detection_window_ttl_s: int = Field(default=7 * 86400, ge=60)
    detection_flag_threshold: float | None = Field(default=None, gt=0, le=1)
    """None: the artifact's calibrated threshold."""
    detection_throttle_threshold: float | None = Field(default=None, gt=0, le=1)
    """None (default): never throttle automatically."""
    detection_suspend_threshold: float | None = Field(default=None, gt=0, le=1)
    """None (default): never suspend automatically."""
    detection_campaign_interval_s: float = Field(default=30.0, gt=0)
    detection_campaign_min_accounts: int = Field(default=3, ge=2)
    detection_tail_quiet_s: float = Field(default=3600.0, gt=0)
    """An account silent this long with requests no scoring has read is scored at the next
    campaign sweep (:meth:`gateway.detect.runtime.DetectionEngine.score_tails`)."""
    detection_risk_flush_interval_s: float = Field(default=2.0, gt=0)

    # --- watermark and logit-stealing defences (gateway/watermark, gateway/logprobs,
    # gateway/upstream_identity, gateway/modelserver) ---
    # Shared with the model server: it verifies the signed account header with this secret.
    upstream_signing_secret: SecretStr | None = None
    upstream_signature_max_age_s: float = Field(default=60.0, gt=0)
    # Old watermark secrets still tried by detection after a rotation (see gateway.watermark.keys).
    watermark_previous_secrets: list[SecretStr] = Field(default_factory=list)
    watermark_gamma: float = Field(default=0.25, gt=0, lt=1)
    watermark_delta: float = Field(default=2.0, ge=0)
    watermark_context_width: int = Field(default=2, ge=1, le=16)
    watermark_alpha: float = Field(default=1e-6, gt=0, lt=1)
    # Keyed noise (nats, standard deviation) and rounding on logprobs returned to clients.
    logprob_noise: float = Field(default=0.1, ge=0)
    logprob_decimals: int = Field(default=2, ge=0, le=8)
    # Per-tier caps against logit stealing, validated by gateway.logprobs.caps.LogprobCaps;
    # tiers not listed get the "standard" entry.
    logprob_caps: dict[str, dict[str, float | bool]] = Field(default={
        "free": {"max_top_logprobs": 5, "max_logit_bias_entries": 20,
                 "max_logit_bias_magnitude": 10, "logit_bias_with_logprobs": False, "max_n": 1},
        "standard": {"max_top_logprobs": 5, "max_logit_bias_entries": 50,
                     "max_logit_bias_magnitude": 20, "logit_bias_with_logprobs": False,
                     "max_n": 4},
        "enterprise": {"max_top_logprobs": 20, "max_logit_bias_entries": 300,
                       "max_logit_bias_magnitude": 100, "logit_bias_with_logprobs": True,
                       "max_n": 16},
        "throttled": {"max_top_logprobs": 0, "max_logit_bias_entries": 0,
                      "max_logit_bias_magnitude": 0, "logit_bias_with_logprobs": False,
                      "max_n": 1},
    })

    default_tier: str = "standard"
    tiers: dict[str, TierLimits] = Field(default_factory=default_tiers)

    @field_validator("upstream_url")
    @classmethod
    def _upstream_ends_in_v1(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.endswith("/v1"):
            raise ValueError("GATEWAY_UPSTREAM_URL must be a base URL ending in /v1")
        return value

    @model_validator(mode="after")
    def _vllm_upstream_can_watermark(self) -> Settings:
        """vLLM refuses every request without a watermark tag, which needs the secret: without
        it the gateway could forward nothing, so it refuses to start (in local mode too)."""
        if self.upstream_kind == "vllm" and (
                self.watermark_secret is None or not self.watermark_secret.get_secret_value()):
            raise ValueError("GATEWAY_UPSTREAM_KIND=vllm needs GATEWAY_WATERMARK_SECRET (the "
                             "same value in vLLM's environment, for its watermark processor)")
        return self

    @model_validator(mode="after")
    def _secrets_are_strong(self) -> Settings:
        if self.default_tier not in self.tiers or "throttled" not in self.tiers:
            raise ValueError("tiers must include the default tier and 'throttled'")
        if self.mode == "local":
            return self
        required = {
            "GATEWAY_ADMIN_TOKEN": self.admin_token,
            "GATEWAY_KEY_HASH_SECRET": self.key_hash_secret,
            "GATEWAY_WATERMARK_SECRET": self.watermark_secret,
        }
        for name, secret in required.items():
            if secret is None or is_weak_secret(secret.get_secret_value()):
                raise ValueError(
                    f"{name} is missing or weak: use at least {MIN_SECRET_LENGTH} random "
                    "characters (or GATEWAY_MODE=local for a throwaway setup)"
                )
        for extra in self.admin_tokens:
            if is_weak_secret(extra.token.get_secret_value()):
                raise ValueError(f"admin token {extra.name!r} is weak")
        return self

    @property
    def async_database_url(self) -> str:
        """The database URL with an async driver, whatever the operator wrote."""
        url = self.database_url
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain):]
        return url

    def key_hash_key(self) -> bytes:
        """The HMAC key for API-key hashes; a fixed, public value only in local mode."""
        if self.key_hash_secret is not None:
            return self.key_hash_secret.get_secret_value().encode()
        return b"gateway-local-mode-key-hash-secret"
