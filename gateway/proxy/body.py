"""Reading request bodies: size limit, JSON shape (parameters: :mod:`gateway.proxy.validation`)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.errors import body_too_large, invalid_request
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


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
