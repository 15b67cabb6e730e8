"""Response shaping: where the gateway rewrites upstream responses — here, keyed noise and
rounding on every logprob returned to clients (plain responses and each stream chunk), see
:mod:`gateway.logprobs.noise`.

The proxy calls ``begin`` once per request with the decoded, validated request body and the
canonical prompt text it extracted from it (:func:`gateway.proxy.validation.prompt_text`), then
the session's ``shape`` on the decoded JSON response or on each decoded stream chunk, in order;
``shape`` returns the object to send. The noise is keyed on what the model sees, not on the raw
body (see :mod:`gateway.logprobs.request_context`). A shaper that is not ``active`` is skipped
entirely, so the bytes pass through untouched.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.logprobs import request_context
from gateway.logprobs.noise import NoiseSpec, account_noise_key, next_prefix, perturb_position
from gateway.settings import Settings
from gateway.watermark.keys import LOCAL_MODE_SECRET


class ShapingSession(Protocol):
    def shape(self, payload: dict[str, Any]) -> dict[str, Any]:
        ...


class ResponseShaper(Protocol):
    active: bool

    def begin(
        self, account_id: str, route: str, request: dict[str, Any], prompt: str
    ) -> ShapingSession:
        ...


class _Unchanged:
    def shape(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


class IdentityShaper:
    active = False

    def begin(
        self, account_id: str, route: str, request: dict[str, Any], prompt: str
    ) -> ShapingSession:
        return _Unchanged()


class LogprobShaper:
    """Perturbs chat (``logprobs.content``) and completions (``logprobs.token_logprobs``)
    logprobs in place; everything else in the payload is left as it is."""

    active = True

    def __init__(self, secret: bytes, spec: NoiseSpec) -> None:
        self._secret = secret
        self._spec = spec
        self._keys: dict[str, bytes] = {}

    def _key(self, account_id: str) -> bytes:
        key = self._keys.get(account_id)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[account_id] = account_noise_key(self._secret, account_id)
        return key

    def begin(
        self, account_id: str, route: str, request: dict[str, Any], prompt: str
    ) -> ShapingSession:
        context = request_context.RequestContext(
            request_context.request_fingerprint(route, request, prompt))
        return _LogprobSession(self, self._key(account_id), context)

    def shape(
        self, key: bytes, ctx: request_context.RequestContext, payload: dict[str, Any]
    ) -> dict[str, Any]:
        choices = payload.get("choices")
        if not isinstance(choices, list):
            self._responses(key, ctx, payload)
            return payload
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("logprobs"), dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            prefix = ctx.prefixes.get(index, b"")
            logprobs = choice["logprobs"]
            if isinstance(logprobs.get("content"), list):
                prefix = self._chat(key, ctx.fingerprint, prefix, logprobs["content"])
            elif isinstance(logprobs.get("token_logprobs"), list):
                prefix = self._legacy(key, ctx.fingerprint, prefix, logprobs)
            ctx.prefixes[index] = prefix
        return payload

    def _responses(
        self, key: bytes, ctx: request_context.RequestContext, payload: dict[str, Any]
    ) -> None:
        """The Responses API: a whole response (``output[].content[].logprobs``, also inside a
        ``response.*`` stream event), or a stream event carrying ``logprobs`` for one content
        part; deltas continue that part's prefix chain, anything else restarts it, so the
        final event repeats exactly the noise the deltas carried."""
        events = payload.get("type")
        if isinstance(payload.get("logprobs"), list) and isinstance(events, str):
            part = _part_key(payload.get("output_index"), payload.get("content_index"))
            prefix = ctx.prefixes.get(part, b"") if events.endswith(".delta") else b""
            ctx.prefixes[part] = self._chat(key, ctx.fingerprint, prefix, payload["logprobs"])
            return
        inner = payload.get("response")
        response: dict[str, Any] = inner if isinstance(inner, dict) else payload
        output = response.get("output")
        for item in output if isinstance(output, list) else []:
            content = item.get("content") if isinstance(item, dict) else None
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and isinstance(part.get("logprobs"), list):
                    self._chat(key, ctx.fingerprint, b"", part["logprobs"])

    def _chat(self, key: bytes, fp: bytes, prefix: bytes, content: list[Any]) -> bytes:
        for entry in content:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                continue
            token: str = entry["token"]
            tops = [t for t in entry.get("top_logprobs") or [] if isinstance(t, dict)
                    and isinstance(t.get("token"), str) and _is_number(t.get("logprob"))]
            candidates = [(t["token"], float(t["logprob"])) for t in tops]
            if _is_number(entry.get("logprob")):
                candidates.append((token, float(entry["logprob"])))
            noisy = perturb_position(key, fp, prefix, candidates, self._spec)
            for t in tops:
                t["logprob"] = noisy[t["token"]]
            if token in noisy:
                entry["logprob"] = noisy[token]
            prefix = next_prefix(prefix, token)
        return prefix

    def _legacy(self, key: bytes, fp: bytes, prefix: bytes, logprobs: dict[str, Any]) -> bytes:
        tokens = logprobs.get("tokens") or []
        values = logprobs["token_logprobs"]
        tops = logprobs.get("top_logprobs") or []
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                continue
            top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            candidates = [(t, float(v)) for t, v in top.items() if _is_number(v)]
            if i < len(values) and _is_number(values[i]):
                candidates.append((token, float(values[i])))
            noisy = perturb_position(key, fp, prefix, candidates, self._spec)
            if top:
                tops[i] = {t: noisy.get(t, v) for t, v in top.items()}
            if i < len(values) and token in noisy:
                values[i] = noisy[token]
            prefix = next_prefix(prefix, token)
        return prefix


class _LogprobSession:
    def __init__(
        self, shaper: LogprobShaper, key: bytes, context: request_context.RequestContext
    ) -> None:
        self._shaper = shaper
        self._key = key
        self._context = context

    def shape(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._shaper.shape(self._key, self._context, payload)


def _part_key(output_index: Any, content_index: Any) -> int:
    """A stream-state slot for one Responses content part, apart from chat's choice indexes."""
    o = output_index if isinstance(output_index, int) else 0
    c = content_index if isinstance(content_index, int) else 0
    return -1 - (o % (1 << 20)) * 4096 - c % 4096


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_shaper(settings: Settings) -> ResponseShaper:
    if settings.logprob_noise <= 0 and settings.logprob_decimals >= 8:
        return IdentityShaper()
    secret = (settings.watermark_secret.get_secret_value().encode()
              if settings.watermark_secret else LOCAL_MODE_SECRET)
    return LogprobShaper(secret, NoiseSpec(settings.logprob_noise, settings.logprob_decimals))
