"""Server-sent events: split the upstream's byte stream into events as they complete.

Events are forwarded the moment their terminating blank line arrives, so nothing is buffered
beyond one event. Only events that may carry usage (or that a shaper rewrites) are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

DONE = b"[DONE]"


class EventSplitter:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete events (each with its terminator) found after adding ``chunk``."""
        self._buffer += chunk
        events: list[bytes] = []
        while True:
            end = _event_end(self._buffer)
            if end < 0:
                return events
            events.append(self._buffer[:end])
            self._buffer = self._buffer[end:]

    def remainder(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def _event_end(buffer: bytes) -> int:
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 2 if lf >= 0 else -1


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` field of one event, or None for comments and data-less events."""
    parts = [
        line[5:].removeprefix(b" ")
        for line in event.splitlines()
        if line.startswith(b"data:")
    ]
    return b"\n".join(parts) if parts else None


def encode_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def usage_from(payload: Any) -> Usage | None:
    """Token counts in a response or stream chunk: chat/completions (``usage.prompt_tokens``),
    or the Responses API (``usage.input_tokens``, also inside a ``response.*`` event). Counts
    that are not non-negative integers are ignored: usage can only be charged, never credited."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if usage is None and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return Usage(_count(prompt), _count(completion))


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def may_carry_usage(data: bytes) -> bool:
    """Cheap pre-check before decoding: OpenAI-style servers send ``"usage": null`` on every
    chunk but the last when usage is requested."""
    return b'"usage"' in data and b'"usage":null' not in data and b'"usage": null' not in data


def may_carry_logprobs(data: bytes) -> bool:
    """Cheap pre-check before shaping: a JSON text whose every ``"logprobs"`` is
    ``"logprobs":null`` (OpenAI's chunks and completions when none were asked for) and that
    has no ``\\u`` escape (which could spell the key) holds no logprobs for the shaper to
    perturb, so it can pass through as the upstream encoded it instead of being decoded and
    re-encoded. Any doubt (a non-null value, other spacing) answers True: shape."""
    if b"\\u" in data:
        return True
    keys = data.count(b'"logprobs"')
    return keys > 0 and keys != data.count(b'"logprobs":null') + data.count(b'"logprobs": null')


def is_usage_only_chunk(payload: dict[str, Any]) -> bool:
    return payload.get("choices") == [] and isinstance(payload.get("usage"), dict)
