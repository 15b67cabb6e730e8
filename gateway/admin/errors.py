"""OpenAI-shaped errors for the admin API, and handlers that give the whole app that shape.

Every error body is ``{"error": {"message", "type", "param", "code"}}`` — including FastAPI's
own 404/405 and request-validation failures, which become 400 with ``param`` naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from gateway.errors import GatewayError, error_body

log = logging.getLogger(__name__)

JSON = "application/json"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def invalid_admin_token() -> GatewayError:
    return GatewayError(
        401,
        "Missing or invalid admin token. Pass it as 'Authorization: Bearer <admin token>'.",
        type="authentication_error",
        code="invalid_admin_token",
        headers={"www-authenticate": "Bearer"},
    )


def insufficient_role(required: str) -> GatewayError:
    return GatewayError(
        403,
        f"This admin token's role may not do this; it needs the '{required}' role.",
        type="permission_error",
        code="insufficient_role",
    )


def not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError(
        404, f"No {kind} with id '{ident}'.", type="invalid_request_error", code=f"{kind}_not_found"
    )


def _param(loc: Sequence[Any]) -> str | None:
    """``("body", "limits", "tokens_per_day")`` → ``"limits.tokens_per_day"``; indices ``[i]``."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _validation_error(exc: RequestValidationError) -> GatewayError:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    if first.get("type") == "json_invalid":
        return GatewayError(400, "The request body is not valid JSON.", code="invalid_json")
    param = _param(first.get("loc", ()))
    if param is None:
        return GatewayError(400, "A JSON object body is required.", code="invalid_body")
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return GatewayError(400, message, param=param, code="invalid_value")


def _respond(error: GatewayError) -> Response:
    return Response(error.body(), status_code=error.status, headers=error.headers, media_type=JSON)


async def _on_gateway_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _respond(exc)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    body = error_body(
        message,
        type="invalid_request_error" if exc.status_code < 500 else "server_error",
        code=_HTTP_CODES.get(exc.status_code),
    )
    return Response(body, status_code=exc.status_code, headers=exc.headers, media_type=JSON)


async def _on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _respond(_validation_error(exc))


async def _on_unexpected(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error in request", exc_info=exc)
    body = error_body("The server had an error while processing your request.", type="server_error")
    return Response(body, status_code=500, media_type=JSON)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error ``app`` returns OpenAI-shaped (unexpected ones as a bare 500)."""
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
