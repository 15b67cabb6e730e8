"""What a backend decides for one request, and the HTTP headers and 429 body that follow from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from gateway.domain.limits import TierLimits
from gateway.errors import GatewayError

LimitKind = Literal["requests", "tokens_per_minute", "tokens_per_day", "concurrency"]
KIND_CODES: tuple[LimitKind, ...] = (
    "requests", "tokens_per_minute", "tokens_per_day", "concurrency",
)
CONCURRENCY_RETRY_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rejected_by: LimitKind | None
    retry_after_us: int
    should_retry: bool
    requests_remaining: int
    requests_reset_us: int
    tokens_remaining: int
    tokens_reset_us: int


def go_duration(microseconds: int) -> str:
    """OpenAI's reset format (Go's duration syntax): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    ms = math.ceil(microseconds / 1000)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:g}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes}m{rest:g}s"


def rate_limit_headers(decision: Decision, limits: TierLimits) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-requests", str(limits.requests_per_minute).encode()),
        (b"x-ratelimit-remaining-requests", str(decision.requests_remaining).encode()),
        (b"x-ratelimit-reset-requests", go_duration(decision.requests_reset_us).encode()),
        (b"x-ratelimit-limit-tokens", str(limits.tokens_per_minute).encode()),
        (b"x-ratelimit-remaining-tokens", str(decision.tokens_remaining).encode()),
        (b"x-ratelimit-reset-tokens", go_duration(decision.tokens_reset_us).encode()),
    ]


def rejection(decision: Decision, limits: TierLimits, requested_tokens: int) -> GatewayError:
    """The 429 (OpenAI's body and headers). ``retry-after`` is rounded up, so it admits too."""
    kind = decision.rejected_by or "requests"
    retry_ms = math.ceil(decision.retry_after_us / 1000)
    headers = {name.decode(): value.decode()
               for name, value in rate_limit_headers(decision, limits)}
    headers["retry-after"] = str(math.ceil(retry_ms / 1000))
    headers["retry-after-ms"] = str(retry_ms)
    if not decision.should_retry:
        headers["x-should-retry"] = "false"
    return GatewayError(
        429, _message(kind, decision, limits, requested_tokens),
        type="tokens" if kind.startswith("tokens") else "requests",
        code="rate_limit_exceeded", headers=headers,
    )


def _message(kind: LimitKind, d: Decision, limits: TierLimits, requested: int) -> str:
    wait = go_duration(d.retry_after_us)
    if kind == "requests":
        used = limits.requests_per_minute - d.requests_remaining
        return (f"Rate limit reached for requests per minute (RPM): Limit "
                f"{limits.requests_per_minute}, Used {used}, Requested 1. "
                f"Please try again in {wait}.")
    if kind == "concurrency":
        return (f"Too many concurrent requests: Limit {limits.max_concurrent}. "
                "Please retry when one of your requests has finished.")
    if kind == "tokens_per_minute":
        used = limits.tokens_per_minute - d.tokens_remaining
        text = (f"Rate limit reached for tokens per minute (TPM): Limit "
                f"{limits.tokens_per_minute}, Used {used}, Requested {requested}.")
    else:
        text = (f"Rate limit reached for tokens per day (TPD): Limit {limits.tokens_per_day}, "
                f"Requested {requested}.")
    if not d.should_retry:
        return text + " This request is larger than the limit allows; reduce max_tokens or "\
            "the prompt."
    return f"{text} Please try again in {wait}."
