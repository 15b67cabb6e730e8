"""The request record: one per proxied request, the unit of ToS evidence.

A plain dataclass so that the proxy, the durable writer and the detector can share it without
importing each other. It is the one declaration of the record's fields (names, types, defaults):
the admin API's views are built from it (:mod:`gateway.admin.schemas`), and the declarations
that must be written out — the ``request_records`` table (:class:`gateway.store.models.RequestRow`,
and through it the migrations) and the validated parameters the proxy copies in
(:class:`gateway.proxy.validation.RequestParams`) — are held to it by ``tests/test_records.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final


def utcnow() -> datetime:
    return datetime.now(UTC)


#: The fields that describe the request's parameters, copied as they are from the validated
#: request (``RequestParams`` declares each with the same name and type).
PARAMETER_FIELDS: Final = (
    "model", "stream", "max_tokens", "n", "temperature", "top_p", "logprobs", "top_logprobs",
    "logit_bias_size",
)


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    account_id: str | None
    key_id: str | None
    route: str
    method: str
    status_code: int = 0
    model: str | None = None
    tier: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    upstream_latency_ms: float | None = None
    ttfb_ms: float | None = None
    client_addr: str | None = None
    stream: bool = False
    max_tokens: int | None = None
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    logit_bias_size: int = 0
    prompt_chars: int = 0
    prompt_hash: str | None = None
    prompt_text: str | None = None
    error_code: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RECORD_FIELDS}

    def to_json_dict(self) -> dict[str, Any]:
        """A dict for the spill file (datetimes as ISO strings). JSON-safe only once the store
        has sanitised the record (gateway.store.sanitize): until then fields hold whatever the
        proxy copied from the request, e.g. integers beyond 64 bits or lone surrogates."""
        row = self.to_row()
        if isinstance(self.created_at, datetime):
            row["created_at"] = self.created_at.isoformat()
        return row

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> RequestRecord:
        """The record of a spill line; TypeError/ValueError/KeyError when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("a request record is a JSON object")
        data = dict(data)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)


#: The record's field names in declaration order, read once: ``dataclasses.fields`` per call
#: cost more than the rest of ``to_row`` on the request path.
RECORD_FIELDS: Final = tuple(f.name for f in dataclasses.fields(RequestRecord))
