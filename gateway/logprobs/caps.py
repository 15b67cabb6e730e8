"""Logprob caps: checks on a decoded request body before it is forwarded — per-tier caps on
``top_logprobs``, ``logit_bias`` (entries, magnitude, and whether it may come with logprobs) and
``n`` (sequences per request: each prompt of a completions batch generates ``n``), and
constrained decoding with logprobs (``bad_words``, grammars, forced tools: allowed where
``logit_bias`` with logprobs is), against logit stealing (Carlini et al. 2024: logit_bias sweeps
plus top-k logprobs recover the logit vector).
A refusal raises an OpenAI-shaped 400 naming the parameter.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from gateway.auth.principal import Principal
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.sampling import check_unconstrained, prompt_count
from gateway.settings import Settings

COMPLETION_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
RESPONSES = "/v1/responses"


class LogprobCaps(BaseModel):
    """One tier's caps (``GATEWAY_LOGPROB_CAPS``)."""

    max_top_logprobs: int = Field(ge=0)
    max_logit_bias_entries: int = Field(ge=0)
    max_logit_bias_magnitude: float = Field(ge=0)
    logit_bias_with_logprobs: bool
    max_n: int = Field(ge=1)


class RequestCaps(Protocol):
    def check(self, principal: Principal, route: str, payload: dict[str, Any]) -> None:
        ...


def refused(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="parameter_not_allowed")


class TierCaps:
    def __init__(self, caps: dict[str, LogprobCaps], *, metrics: Metrics) -> None:
        if "standard" not in caps:
            raise ValueError("GATEWAY_LOGPROB_CAPS needs a 'standard' entry")
        self._caps = caps
        self._refusals = metrics.policy_refusals

    def caps_for(self, tier: str) -> LogprobCaps:
        return self._caps.get(tier) or self._caps["standard"]

    def check(self, principal: Principal, route: str, payload: dict[str, Any]) -> None:
        """Raises the refusal (a 400 naming the parameter) and counts it by parameter."""
        try:
            self._check(self.caps_for(principal.tier), route, payload)
        except GatewayError as error:
            self._refusals.labels(error.param or "unknown").inc()
            raise

    def _check(self, caps: LogprobCaps, route: str, payload: dict[str, Any]) -> None:
        if route == RESPONSES:
            if self._check_top(payload, "top_logprobs", caps) > 0:
                self._check_shaping(payload, caps)
            return
        if route not in COMPLETION_ROUTES:
            return
        chat = route == "/v1/chat/completions"
        n = _int(payload, "n", 1)
        if n > caps.max_n:
            raise refused("n", f"'n' may be at most {caps.max_n} for this account's tier.")
        best_of = _int(payload, "best_of", 1)
        if best_of > caps.max_n:  # completions: sequences generated
            raise refused("best_of", f"'best_of' may be at most {caps.max_n} for this "
                          "account's tier.")
        prompts = 1 if chat else prompt_count(payload.get("prompt"))
        if prompts * max(n, best_of) > caps.max_n:  # a batch: each prompt generates n
            raise refused("prompt", f"A batch of {prompts} prompts generates "
                          f"{prompts * max(n, best_of)} sequences; at most {caps.max_n} for "
                          "this account's tier.")
        top = self._check_top(payload, "top_logprobs" if chat else "logprobs", caps)
        wants_logprobs = bool(payload.get("logprobs")) or top > 0 if chat else (
            payload.get("logprobs") is not None)
        self._check_bias(payload.get("logit_bias"), caps, wants_logprobs)
        if wants_logprobs:
            self._check_shaping(payload, caps)

    @staticmethod
    def _check_shaping(payload: dict[str, Any], caps: LogprobCaps) -> None:
        """Logprobs from a constrained distribution are logit differences by another name: the
        same permission as ``logit_bias`` with logprobs."""
        if not caps.logit_bias_with_logprobs:
            check_unconstrained(payload)

    @staticmethod
    def _check_top(payload: dict[str, Any], name: str, caps: LogprobCaps) -> int:
        top = _int(payload, name, 0)
        if top > caps.max_top_logprobs:
            raise refused(name, f"'{name}' may be at most {caps.max_top_logprobs} for "
                          "this account's tier.")
        return top

    @staticmethod
    def _check_bias(bias: Any, caps: LogprobCaps, wants_logprobs: bool) -> None:
        if not bias:
            return
        if not isinstance(bias, dict):
            raise refused("logit_bias", "'logit_bias' must be an object.")
        if len(bias) > caps.max_logit_bias_entries:
            raise refused("logit_bias", "'logit_bias' may have at most "
                          f"{caps.max_logit_bias_entries} entries for this account's tier.")
        for value in bias.values():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise refused("logit_bias", "'logit_bias' values must be numbers.")
            if abs(value) > caps.max_logit_bias_magnitude:
                raise refused("logit_bias", "'logit_bias' values may be at most "
                              f"{caps.max_logit_bias_magnitude:g} in magnitude for this "
                              "account's tier.")
        if wants_logprobs and not caps.logit_bias_with_logprobs:
            raise refused("logit_bias", "'logit_bias' cannot be combined with logprobs for this "
                          "account's tier.")


def _int(payload: dict[str, Any], name: str, default: int) -> int:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise refused(name, f"'{name}' must be an integer.")
    return value


def build_caps(settings: Settings, metrics: Metrics) -> RequestCaps:
    caps = {tier: LogprobCaps.model_validate(values)
            for tier, values in settings.logprob_caps.items()}
    return TierCaps(caps, metrics=metrics)
