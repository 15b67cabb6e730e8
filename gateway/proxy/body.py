"""Reading and checking request bodies: size limit, JSON shape, the parameters we record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import GatewayError, body_too_large, invalid_request
from gateway.proxy.asgi import Receive


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


async def read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    """The whole request body, refusing (413) as soon as it is known to exceed ``limit``."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise invalid_request("Invalid Content-Length.", param="content-length") from None
        if declared > limit:
            raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise invalid_request("The request body is empty; a JSON object is required.", param="body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request ({exc.msg} at position {exc.pos}).",
            param="body", code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.", param="body")
    return payload


@dataclass(slots=True)
class RequestParams:
    """The parameters that matter for abuse, checked for type before anything is forwarded."""

    model: str | None
    stream: bool
    max_tokens: int | None
    n: int | None
    temperature: float | None
    top_p: float | None
    logprobs: bool
    top_logprobs: int | None
    logit_bias_size: int
    prompt: str


def extract_params(route: str, payload: dict[str, Any]) -> RequestParams:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a string.", param="model")
    logprobs = payload.get("logprobs")
    logit_bias = payload.get("logit_bias")
    if logit_bias is not None and not isinstance(logit_bias, dict):
        raise invalid_request("'logit_bias' must be an object.", param="logit_bias")
    return RequestParams(
        model=model,
        stream=_typed(payload, "stream", bool) or False,
        max_tokens=_int(payload, "max_completion_tokens") or _int(payload, "max_tokens"),
        n=_int(payload, "n"),
        temperature=_number(payload, "temperature"),
        top_p=_number(payload, "top_p"),
        logprobs=bool(logprobs) if route == "/v1/chat/completions" else logprobs is not None,
        top_logprobs=_int(payload, "top_logprobs")
        if route == "/v1/chat/completions" else _int(payload, "logprobs"),
        logit_bias_size=len(logit_bias) if logit_bias else 0,
        prompt=prompt_text(route, payload),
    )


def prompt_text(route: str, payload: dict[str, Any]) -> str:
    """The text the client sent to the model, flattened, for storage and features."""
    if route == "/v1/chat/completions":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid_request("'messages' must be a non-empty array.", param="messages")
        return "\n".join(_message_text(m) for m in messages)
    source = payload.get("prompt" if route == "/v1/completions" else "input", "")
    return _flatten(source)


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise invalid_request("Each message must be an object.", param="messages")
    return _flatten(message.get("content"))


def _flatten(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_flatten(part.get("text") if isinstance(part, dict) else part)
                         for part in content)
    return "" if content is None else str(content)


def _typed(payload: dict[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    if value is not None and not isinstance(value, kind):
        raise invalid_request(f"'{name}' must be of type {kind.__name__}.", param=name)
    return value


def _int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"'{name}' must be an integer.", param=name)
    return value


def _number(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewayError(400, f"'{name}' must be a number.", param=name)
    return float(value)
