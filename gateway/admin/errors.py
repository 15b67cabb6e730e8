"""OpenAI-shaped errors for the admin API, and handlers that give the whole app that shape.

Every error body is ``{"error": {"message", "type", "param", "code"}}`` — including FastAPI's
own 404/405 and request-validation failures, which become 400 with ``param`` naming the field
(never 422, and the OpenAPI document says so), a body over the limit (413, see
:mod:`gateway.admin.guard`) and any unexpected exception (a bare 500). Messages quote nothing
the client sent but ids already checked to have an id's shape and names the API itself uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from gateway.admin.guard import SERVER_ERROR, AdminGuard, log_unexpected
from gateway.admin.parameters import echoable
from gateway.errors import GatewayError, error_body

JSON = "application/json"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_NOT_AN_OBJECT = frozenset({"missing", "model_attributes_type", "dict_type", "model_type"})
_HTTP_CODES = {
    404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
    415: "unsupported_media_type",
}


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
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = echoable(str(part)) or "<unknown field>"  # an unknown key is the client's text
        text += f".{name}" if text else name
    return text or None


def _validation_error(exc: RequestValidationError) -> GatewayError:
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    if first.get("type") == "json_invalid":
        return GatewayError(400, "The request body is not valid JSON.", code="invalid_json")
    param = _param(first.get("loc", ()))
    if param is None and first.get("type") in _NOT_AN_OBJECT:
        return GatewayError(400, "A JSON object body is required.", code="invalid_body")
    if param is None:
        message = f"Invalid request body: {first.get('msg', 'invalid')}."
        return GatewayError(400, message, code="invalid_body")
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return GatewayError(400, message, param=param, code="invalid_value")


def _respond(error: GatewayError) -> Response:
    return Response(error.body(), status_code=error.status, headers=error.headers, media_type=JSON)


async def _on_gateway_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _respond(exc)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first
    route's, and the admin API has one route per method. Asked of the routes themselves
    (``matches``), so included routers and mounts count too."""
    routes = request.app.router.routes
    return ", ".join(
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in routes)
    )


def _unparsable_body(exc: HTTPException) -> bool:
    """FastAPI's own 400 for a body it could not decode (not UTF-8, numbers of thousands of
    digits, nesting too deep), which it raises from the decoding error."""
    return exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = "Invalid URL: no such route."
    elif _unparsable_body(exc):
        message, code = "The request body is not valid JSON.", "invalid_json"
    else:
        message = str(exc.detail)
    body = error_body(
        message, type="invalid_request_error" if exc.status_code < 500 else "server_error",
        code=code,
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["allow"] = _allowed_methods(request)
    return Response(body, status_code=exc.status_code, headers=headers, media_type=JSON)


async def _on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _respond(_validation_error(exc))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    """Only for what escapes :class:`AdminGuard` (nothing, in practice)."""
    log_unexpected(exc, request.scope)
    return Response(error_body(SERVER_ERROR, type="server_error"), status_code=500,
                    media_type=JSON)


def _documented_without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` minus FastAPI's 422 responses, which this app answers as 400."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        return schema

    return openapi


def install_error_handlers(app: FastAPI) -> None:
    """Make every error ``app`` returns OpenAI-shaped (unexpected ones as a bare 500), bound
    request bodies (413), and document 400 rather than 422 for invalid requests."""
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(AdminGuard)
    app.openapi = _documented_without_422(app)  # type: ignore[method-assign]
