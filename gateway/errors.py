"""The one error shape the gateway speaks: OpenAI's ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """An error that becomes an OpenAI-shaped HTTP response.

    Messages must never contain secrets: keys, tokens or upstream credentials.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type, "param": param, "code": code}}
    )


def invalid_request(
    message: str, param: str | None = None, code: str | None = None
) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def invalid_api_key() -> GatewayError:
    return GatewayError(
        401,
        "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def account_blocked(status: str) -> GatewayError:
    return GatewayError(
        403,
        f"This account is {status}. Contact support to appeal.",
        type="permission_error",
        code=f"account_{status}",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"Request body exceeds the limit of {limit} bytes.",
        code="request_too_large",
    )


def upstream_unreachable() -> GatewayError:
    return GatewayError(
        502, "The upstream model server could not be reached.",
        type="upstream_error", code="upstream_unreachable",
    )


def upstream_failed() -> GatewayError:
    return GatewayError(
        502, "The upstream model server closed the connection unexpectedly.",
        type="upstream_error", code="upstream_protocol_error",
    )


def upstream_timeout() -> GatewayError:
    return GatewayError(
        504, "The upstream model server did not answer in time.",
        type="upstream_error", code="upstream_timeout",
    )
