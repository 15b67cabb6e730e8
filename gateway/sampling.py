"""What a generation request asks the upstream to sample, as far as limits and caps care: how
many prompts it carries (each generates ``n`` sequences), and whether its distribution is
constrained (logprobs from a constrained distribution are logit differences). Pure functions
over a decoded body, shared by request validation (:mod:`gateway.proxy.validation`) and the
per-tier caps (:mod:`gateway.logprobs.caps`)."""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError, invalid_request

MAX_PROMPTS = 128
"""Prompts in one completions batch (the most ``n`` may be): vLLM takes up to 1,024."""

# Fields that restrict or reshape the distribution a token is drawn from. With logprobs, each
# returns logprobs the caps never see: vLLM computes a banned token's neighbours' raw logprobs
# before ``bad_words`` / ``stop_token_ids`` / ``min_tokens`` act and returns the chosen token's,
# and renormalises over a caller-chosen token set under a grammar (``structured_outputs``, the
# older ``guided_*``, a JSON ``response_format``, a forced tool call) — the logit differences a
# ``logit_bias`` sweep extracts, by another name. Each is fine alone; with logprobs, only tiers
# allowed ``logit_bias`` with logprobs may send them (:func:`check_unconstrained`).
CONSTRAINING_FIELDS = frozenset({
    "bad_words", "stop_token_ids", "min_tokens", "structured_outputs", "guided_json",
    "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
    "guided_whitespace_pattern", "structural_tag",
})
_FREE_FORMATS = frozenset({None, "text"})
_FREE_TOOL_CHOICES = frozenset({None, "none", "auto"})


def prompt_count(prompt: Any) -> int:
    """Prompts in a completions ``prompt``: a string or token ids is one; an array of strings
    or of token-id arrays is a batch, each prompt generating ``n`` choices. A batch is capped at
    :data:`MAX_PROMPTS` and refused when mixed."""
    if not isinstance(prompt, list) or not prompt:
        return 1
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return 1  # one prompt, as token ids
    if not (all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt)):
        raise invalid_request("'prompt' must be a string, an array of strings, an array of "
                              "token ids or an array of token-id arrays.", param="prompt")
    if len(prompt) > MAX_PROMPTS:
        raise invalid_request(f"'prompt' may hold at most {MAX_PROMPTS} prompts.",
                              param="prompt", code="out_of_range")
    return len(prompt)


def check_unconstrained(payload: dict[str, Any]) -> None:
    """Refuse a request whose logprobs would come from a constrained distribution (see
    :data:`CONSTRAINING_FIELDS`); the caller decides when logprobs make it matter (the tier's
    caps: :mod:`gateway.logprobs.caps`)."""
    for name in CONSTRAINING_FIELDS.intersection(payload):
        if payload[name]:  # an empty list, 0 or false constrains nothing
            raise _with_logprobs(name)
    if not _free(payload.get("response_format"), _FREE_FORMATS):
        raise _with_logprobs("response_format")
    text = payload.get("text")  # the responses route keeps its format under text.format
    if isinstance(text, dict) and not _free(text.get("format"), _FREE_FORMATS):
        raise _with_logprobs("text")
    if not _free(payload.get("tool_choice"), _FREE_TOOL_CHOICES):
        raise _with_logprobs("tool_choice")


def _free(value: Any, free: frozenset[str | None]) -> bool:
    """Whether a format or tool choice (a name, or an object with a ``type``) leaves the
    distribution alone; any other shape counts as constraining."""
    if isinstance(value, dict) and value.get("type") == "function":
        return False  # a named tool forced
    kind = value.get("type") if isinstance(value, dict) and "type" in value else value
    return kind is None or (isinstance(kind, str) and kind in free)


def _with_logprobs(name: str) -> GatewayError:
    return invalid_request(f"'{name}' cannot be combined with logprobs for this account's tier.",
                           param=name, code="parameter_not_allowed")
