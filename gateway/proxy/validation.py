"""The validated request model at the edge: every parameter the gateway reads, typed and
range-checked before anything uses it.

A client of this gateway is, by design, the party it defends against, so nothing it sends is
trusted: a negative ``max_tokens`` would credit its token budget, an integer beyond 64 bits or a
NUL byte could poison the request log, a deeply nested value could break re-encoding. Each route
the gateway understands has a table of the parameters it reads (OpenAI's documented ranges); a
value outside its table is refused with a 400 naming ``param``. Parameters the gateway does not
read pass through untouched, except the upstream extensions in :data:`DENIED_FIELDS`, which
would bypass its controls. Pure functions, no I/O: the hot path calls :func:`validate` once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import GatewayError, invalid_request
from gateway.sampling import prompt_count

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
GENERATION_ROUTES = frozenset({CHAT, COMPLETIONS, RESPONSES})
VALIDATED_ROUTES = GENERATION_ROUTES | {EMBEDDINGS}
OUTPUT_CAP_FIELD = {CHAT: "max_tokens", COMPLETIONS: "max_tokens", RESPONSES: "max_output_tokens"}
"""Where the gateway writes its default output cap when a generation request names none."""

MAX_DEPTH = 64
"""Deeper JSON is refused: no OpenAI request needs it, and orjson cannot re-encode past 255."""
MAX_OUTPUT_TOKENS = 1 << 20
MAX_MODEL_CHARS = 256
MAX_STOP_SEQUENCES = 4
MAX_LOGIT_BIAS_ENTRIES = 1024
TOKEN_ID_MAX = (1 << 31) - 1
INT64 = (-(1 << 63), (1 << 63) - 1)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_ID = re.compile(r"[0-9]{1,10}")

# Upstream (vLLM) extensions that would bypass the gateway's controls: logprobs of every prompt
# position (uncapped, un-noised), vocabulary restriction (a logit_bias sweep by another name),
# caller-chosen logits processors or extra sampling arguments (the watermark's account lives
# there: in vLLM mode the gateway writes its own, signed, see
# gateway.upstream_identity.vllm_xargs), queue priority and request ids (another tenant's
# scheduling), the transfer parameters vLLM copies into the same extra arguments, and vLLM
# 0.32's logprobs of caller-chosen token ids (any number of them: the whole logit vector, past
# the top_logprobs cap).
DENIED_FIELDS = frozenset({
    "prompt_logprobs", "allowed_token_ids", "logits_processors", "vllm_xargs", "extra_args",
    "priority", "request_id", "kv_transfer_params", "ec_transfer_params", "logprob_token_ids",
    "prompt_logprob_token_ids",
})


RENDERED_FIELDS = ("tools", "functions", "documents", "chat_template_kwargs")
"""Request fields a chat template renders into the prompt beside the messages: read as JSON."""


@dataclass(frozen=True, slots=True)
class Int:
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Number:
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Kind:
    """A JSON type check only (``bool``, ``dict``, ``str``)."""

    type: type
    label: str


BOOL = Kind(bool, "a boolean")
OBJECT = Kind(dict, "an object")
STRING = Kind(str, "a string")
Spec = Int | Number | Kind

_SAMPLING: dict[str, Spec] = {
    "stream": BOOL, "stream_options": OBJECT, "temperature": Number(0.0, 2.0),
    "top_p": Number(0.0, 1.0), "seed": Int(*INT64), "user": STRING,
}
_PENALTIES: dict[str, Spec] = {
    "n": Int(1, 128), "presence_penalty": Number(-2.0, 2.0),
    "frequency_penalty": Number(-2.0, 2.0), "max_tokens": Int(1, MAX_OUTPUT_TOKENS),
    "logit_bias": OBJECT,
}
ROUTE_SPECS: dict[str, dict[str, Spec]] = {
    CHAT: {**_SAMPLING, **_PENALTIES, "max_completion_tokens": Int(1, MAX_OUTPUT_TOKENS),
           "logprobs": BOOL, "top_logprobs": Int(0, 20)},
    COMPLETIONS: {**_SAMPLING, **_PENALTIES, "logprobs": Int(0, 20), "best_of": Int(1, 128),
                  "echo": BOOL, "suffix": STRING},
    RESPONSES: {**_SAMPLING, "max_output_tokens": Int(1, MAX_OUTPUT_TOKENS),
                "top_logprobs": Int(0, 20), "instructions": STRING},
    EMBEDDINGS: {"user": STRING, "dimensions": Int(1, 1 << 16), "encoding_format": STRING},
}


@dataclass(slots=True)
class RequestParams:
    """What the gateway reads from a request: every value already in range. The fields the
    request record copies (``gateway.records.PARAMETER_FIELDS``) have the record's names and
    types (``tests/test_records.py``)."""

    model: str
    stream: bool
    max_tokens: int | None
    n: int | None
    temperature: float | None
    top_p: float | None
    logprobs: bool
    top_logprobs: int | None
    logit_bias_size: int
    prompt: str
    asks_usage: bool
    sequences: int = 1
    """Sequences the upstream generates per request: ``max(n, best_of)`` (what it costs)."""


ROUTE_DENIED: dict[str, frozenset[str]] = {
    # Chat has no ``echo`` in the OpenAI API; vLLM's chat ``echo`` with ``logprobs`` turns on
    # the logprobs of every prompt position, returned beside the choices, outside the caps.
    CHAT: frozenset({"echo"}),
}
"""Fields refused on one route only (the same name is legitimate on another)."""


_DENIED_ON: dict[str, frozenset[str]] = {
    route: DENIED_FIELDS | ROUTE_DENIED.get(route, frozenset()) for route in ROUTE_SPECS
}
"""Every field refused on a route, joined once (not per request)."""


def validate(route: str, payload: dict[str, Any]) -> RequestParams:
    """Check ``payload`` for ``route`` (one of :data:`VALIDATED_ROUTES`); 400 on any violation."""
    check_depth(payload)
    for name in _DENIED_ON[route].intersection(payload):
        raise _refused(name)
    # Only what this route's table checked is ever read: a field of another route's table
    # (``n`` on responses, ``logit_bias`` on embeddings) passes through unread, whatever it holds.
    specs = ROUTE_SPECS[route]
    read = {name: payload.get(name) for name in specs}
    for name, spec in specs.items():
        value = read[name]
        if value is not None:  # most fields are absent: no call for them
            _check(name, value, spec)
    _check_model(payload.get("model"))
    _check_stop(payload.get("stop"))
    bias = read.get("logit_bias")
    if bias:
        _check_logit_bias(bias)
    if route == RESPONSES and payload.get("background") is True:
        # Answered at once, without usage, while generation goes on with the slot released.
        raise _refused("background")
    if route == COMPLETIONS and read.get("echo") is True and read.get("logprobs"):
        # The logprobs of every position of a prompt the caller wrote, with no generation to
        # pay for: the logit-extraction channel OpenAI closed on its own completions endpoint.
        raise invalid_request("'echo' cannot be combined with 'logprobs' on this gateway.",
                              param="echo", code="parameter_not_allowed")
    options = read.get("stream_options")
    return RequestParams(
        model=payload["model"],
        stream=read.get("stream") is True,
        max_tokens=_max_tokens(route, read),
        n=read.get("n"),
        temperature=_float(read.get("temperature")),
        top_p=_float(read.get("top_p")),
        logprobs=_wants_logprobs(route, read),
        top_logprobs=read.get("logprobs") if route == COMPLETIONS else read.get("top_logprobs"),
        logit_bias_size=len(bias) if bias else 0,
        prompt=prompt_text(route, payload),
        asks_usage=isinstance(options, dict) and options.get("include_usage") is True,
        sequences=_prompts(route, payload) * max(read.get("n") or 1, read.get("best_of") or 1),
    )


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise invalid_request(
                f"The request body is nested more than {limit} levels deep.", param="body",
                code="too_deep",
            )
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))


def prompt_text(route: str, payload: dict[str, Any]) -> str:
    """The text the client sent to the model, flattened, for storage and features: the
    messages (content and tool calls) and what a chat template renders beside them (tools,
    documents, template arguments), so no instruction reaches the model unseen."""
    if route == CHAT:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid_request("'messages' must be a non-empty array.", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise invalid_request("Each message must be an object.", param="messages")
        return _joined([flatten(messages), *_rendered(payload)])
    if route == RESPONSES:
        return _joined([payload.get("instructions") or "", flatten(payload.get("input")),
                        *_rendered(payload)])
    source = payload.get("prompt" if route == COMPLETIONS else "input")
    if route == EMBEDDINGS and source is None:
        raise invalid_request("'input' is required.", param="input")
    return flatten(source)


def _prompts(route: str, payload: dict[str, Any]) -> int:
    return prompt_count(payload.get("prompt")) if route == COMPLETIONS else 1


_TEXT_KEYS = ("text", "content", "tool_calls", "function", "arguments", "output")
"""Keys of a message or part whose values the model reads (an image's or a file's are not)."""


def flatten(content: Any) -> str:
    """Text of a content value: strings, arrays of strings, messages or parts (their
    :data:`_TEXT_KEYS`: text, content, tool calls and their arguments, tool outputs), token ids;
    iterative, in document order."""
    out: list[str] = []
    stack: list[Any] = [content]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            stack.extend(reversed([node[k] for k in _TEXT_KEYS if k in node]))
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int | float):
            out.append(str(node))
    return "\n".join(out)


def _rendered(payload: dict[str, Any]) -> list[str]:
    return [_as_json(payload[name]) for name in RENDERED_FIELDS if payload.get(name)]


def _as_json(value: Any) -> str:
    """A value as a template renders it (JSON); its text alone when it will not encode (an
    integer past 64 bits, which a parsed body never holds: orjson reads it as a float)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return flatten(value)


def _joined(parts: list[str]) -> str:
    return "\n".join(p for p in parts if p)


def _check(name: str, value: Any, spec: Spec) -> None:
    if value is None:
        return
    if isinstance(spec, Kind):
        if not isinstance(value, spec.type):
            raise invalid_request(f"'{name}' must be {spec.label}.", param=name,
                                  code="invalid_type")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"'{name}' must be a number.", param=name, code="invalid_type")
    if isinstance(spec, Int) and not isinstance(value, int):
        raise invalid_request(f"'{name}' must be an integer.", param=name, code="invalid_type")
    if not (math.isfinite(value) and spec.lo <= value <= spec.hi):
        raise invalid_request(
            f"'{name}' must be between {spec.lo:g} and {spec.hi:g}.", param=name,
            code="out_of_range",
        )


def _check_model(model: Any) -> None:
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a string.", param="model")
    if len(model) > MAX_MODEL_CHARS or _CONTROL.search(model):
        raise invalid_request(
            f"'model' must be at most {MAX_MODEL_CHARS} printable characters.", param="model",
        )


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) for s in stop)):
        raise invalid_request(
            f"'stop' must be a string or an array of at most {MAX_STOP_SEQUENCES} strings.",
            param="stop",
        )


def _check_logit_bias(bias: dict[str, Any]) -> None:
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise invalid_request(f"'logit_bias' may have at most {MAX_LOGIT_BIAS_ENTRIES} "
                              "entries.", param="logit_bias")
    for token, value in bias.items():
        if not _TOKEN_ID.fullmatch(token) or int(token) > TOKEN_ID_MAX:
            raise invalid_request("'logit_bias' keys must be token ids.", param="logit_bias")
        _check("logit_bias", value, Number(-100.0, 100.0))


def _max_tokens(route: str, payload: dict[str, Any]) -> int | None:
    names = {CHAT: ("max_completion_tokens", "max_tokens"), COMPLETIONS: ("max_tokens",),
             RESPONSES: ("max_output_tokens",)}.get(route, ())
    for name in names:
        if payload.get(name) is not None:
            value: int = payload[name]
            return value
    return None


def _wants_logprobs(route: str, payload: dict[str, Any]) -> bool:
    if route == CHAT:
        return payload.get("logprobs") is True
    if route == COMPLETIONS:
        return payload.get("logprobs") is not None
    if route == RESPONSES:
        return bool(payload.get("top_logprobs"))
    return False


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _refused(name: str) -> GatewayError:
    return GatewayError(
        400, f"'{name}' is not accepted by this gateway.", param=name,
        code="parameter_not_allowed",
    )
