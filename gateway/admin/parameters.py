"""Query strings held to the OpenAPI document: every parameter declared, and given once.

FastAPI ignores a query parameter it does not know and keeps the last of a repeated one. For an
admin API both hide mistakes: a misspelt filter (``?staus=banned``) lists every account, and
``?actor=a&actor=b`` silently filters by one actor. Both are refused with 400 before routing, as
unknown body fields already are. The declared names come from the app's own OpenAPI document,
so every router is covered and nothing is declared twice; paths it does not document (404s,
``/metrics``) are left alone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

from gateway.errors import GatewayError

_TEMPLATE_PARAM = re.compile(r"\{[^}/]+\}")
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def echoable(name: str) -> str | None:
    """``name`` when it is safe to quote in an error: a name as the API spells its own. Others
    came from the client and are not echoed: they could be huge, or not even encodable."""
    return name if _NAME.fullmatch(name) else None


@dataclass(frozen=True, slots=True)
class _Operation:
    method: str
    path: re.Pattern[str]
    query: frozenset[str]


def _operations(schema: dict[str, Any]) -> list[_Operation]:
    operations = []
    for template, methods in schema.get("paths", {}).items():
        literal = [re.escape(part) for part in _TEMPLATE_PARAM.split(template)]
        path = re.compile("[^/]+".join(literal))
        for method, operation in methods.items():
            query = frozenset(p["name"] for p in operation.get("parameters", [])
                              if p.get("in") == "query")
            operations.append(_Operation(method.upper(), path, query))
    return operations


class QueryRules:
    """The query parameters each documented operation declares, read once from the app."""

    def __init__(self) -> None:
        self._operations: list[_Operation] | None = None

    def refusal(self, scope: Scope) -> GatewayError | None:
        """Why the request's query string is refused, or None."""
        raw = scope.get("query_string", b"").decode("latin-1")
        names = [name for name, _ in parse_qsl(raw, keep_blank_values=True)]
        repeated = next((n for n, count in Counter(names).items() if count > 1), None)
        if repeated is not None:
            return _refused(repeated, "is given more than once; give it once",
                            "duplicate_parameter")
        declared = self._declared(scope)
        if declared is None:
            return None
        unknown = next((n for n in names if n not in declared), None)
        if unknown is not None:
            return _refused(unknown, "is not a parameter of this operation", "unknown_parameter")
        return None

    def _declared(self, scope: Scope) -> frozenset[str] | None:
        if self._operations is None:
            openapi = getattr(scope.get("app"), "openapi", None)
            self._operations = _operations(openapi()) if callable(openapi) else []
        path, method = scope.get("path", ""), scope.get("method", "")
        for operation in self._operations:
            if operation.method == method and operation.path.fullmatch(path):
                return operation.query
        return None


def _refused(name: str, problem: str, code: str) -> GatewayError:
    param = echoable(name)
    what = f"Query parameter '{param}'" if param else "A query parameter"
    return GatewayError(400, f"{what} {problem}.", param=param, code=code)
