"""Request and response bodies of the admin API (``/admin/v1``); these shapes are public.

Every string a client sends is checked here, at the edge, against what the databases can store:
no NUL (PostgreSQL text cannot hold it), no unpaired UTF-16 surrogate (JSON can escape one, no
driver can encode it), and no longer than its column. Left to the driver, either would be a 500.
The OpenAPI document states the same rules (``pattern``, ``maxLength``), so that clients and the
schemathesis fuzzer (tests/admin/test_fuzz_admin.py) know what is valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from gateway.auth.principal import effective_limits
from gateway.domain.limits import LIMIT_NAMES, TierLimits
from gateway.domain.status import AccountStatus, ActionName
from gateway.domain.workloads import MAX_ALLOWANCE, Workload, WorkloadKind
from gateway.records import RequestRecord
from gateway.settings import Settings
from gateway.store.models import Account, ApiKey
from gateway.store.repository import MAX_CURSOR_CHARS, as_utc, is_storable

# --- strings, ids and times a client sends ---------------------------------------------------

#: Every id this API hands out (``acct_…``, ``key_…``, ``flag_…``) has this shape.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_MAX_CHARS = 64
#: Cursors are urlsafe base64 without padding (see gateway.store.repository).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
_BLANK = " \t\n\r"


@dataclass(frozen=True, slots=True)
class SchemaHint:
    """JSON Schema that pydantic cannot derive from a check written in code: a ``pattern`` or
    ``maxLength`` the code enforces, or that ``null`` is refused (by the route) although the
    Python type allows it. It documents; it does not validate."""

    pattern: str | None = None
    max_length: int | None = None
    not_null: bool = False

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if self.not_null:
            schema = _without_null(schema)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


def _without_null(schema: JsonSchemaValue) -> JsonSchemaValue:
    """``{"anyOf": [X, {"type": "null"}], ...}`` → ``{**X, ...}``."""
    members = [m for m in schema.get("anyOf", []) if m != {"type": "null"}]
    if len(members) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**members[0], **rest}


def _storable(value: str) -> str:
    if not is_storable(value):
        raise ValueError("must not contain NUL or unpaired surrogate characters")
    return value


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogate characters") from None
    return value


def _trimmed(value: str) -> str:
    """Leading and trailing blanks go; a value of blanks only is refused."""
    trimmed = value.strip(_BLANK)
    if not trimmed:
        raise ValueError("must not be blank")
    return trimmed


def _stripped(value: str) -> str:
    return value.strip(_BLANK)


def clamp_to_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive = UTC); beyond the range of UTC datetimes, that range's end.

    ``9999-12-31T23:59:59-14:00`` is after ``datetime.max`` in UTC. Every stored time lies
    within the range, so as a filter bound the clamped value selects exactly the same rows;
    refusing it would refuse a valid RFC 3339 date-time.
    """
    try:
        return as_utc(value)
    except OverflowError:
        extreme = datetime.max if value.year == MAXYEAR else datetime.min
        return extreme.replace(tzinfo=UTC)


_NO_NUL = SchemaHint(pattern=r"^[^\x00]*$")
_NOT_BLANK = SchemaHint(pattern=r"^[ \t\n\r]*[^ \t\n\r\x00][^\x00]*$")

#: Storable text (no NUL, no unpaired surrogate); bound its length where it is used.
Text = Annotated[str, _NO_NUL, AfterValidator(_storable)]
#: Text that is examined, never stored (a suspect model's output may hold NUL bytes): any
#: characters UTF-8 can encode.
AnyText = Annotated[str, AfterValidator(_encodable)]
#: Free text kept as given, less surrounding blanks; not blank.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200), _NOT_BLANK,
    AfterValidator(_storable), AfterValidator(_trimmed),
]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), _NOT_BLANK,
    AfterValidator(_storable), AfterValidator(_trimmed),
]
#: Like Reason, but may be blank (then stored as "").
Note = Annotated[Text, StringConstraints(max_length=2000), AfterValidator(_stripped)]
TierName = Annotated[Text, StringConstraints(min_length=1, max_length=40)]
UtcBound = Annotated[datetime, AfterValidator(clamp_to_utc)]
#: Path ids: anything else cannot exist, and is refused before it reaches the database.
AccountId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)]
KeyId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)]
FlagId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_CHARS)]
#: Opaque; its structure is checked when decoded (400 ``invalid_cursor``), its alphabet here
#: only documented so that the error code stays ``invalid_cursor`` for any bad cursor.
Cursor = Annotated[str, SchemaHint(pattern=CURSOR_PATTERN, max_length=MAX_CURSOR_CHARS)]

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def _integral(value: Any) -> Any:
    """``2.0`` → ``2``: JSON Schema's integer includes it (and strings and bools stay out)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: Beside ``Field(strict=True, ...)`` in one Annotated: a JSON integer is ``2`` or ``2.0``,
#: never ``"2"`` or ``true``. (In a nested Annotated, pydantic would document the Field's
#: bounds as unknown keywords.)
JSON_INTEGER = BeforeValidator(_integral)
LimitValue = Annotated[int, Field(ge=0, le=10**12, strict=True), JSON_INTEGER]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- errors (documentation only: bodies are written by gateway.errors) ------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- accounts --------------------------------------------------------------------------------


class LimitOverrides(_In):
    """Per-account overrides of the tier's limits. In PATCH, ``null`` removes an override."""

    requests_per_minute: LimitValue | None = None
    tokens_per_minute: LimitValue | None = None
    tokens_per_day: LimitValue | None = None
    max_concurrent: LimitValue | None = None

    def changes(self) -> dict[str, int | None]:
        """Only the fields the client sent (``null`` included)."""
        return {name: getattr(self, name) for name in LIMIT_NAMES if name in self.model_fields_set}

    def values(self) -> dict[str, int]:
        """The overrides that are set (for creation, where ``null`` means "not overridden")."""
        return {k: v for k, v in self.changes().items() if v is not None}


class AccountCreate(_In):
    name: Name
    tier: TierName | None = Field(default=None, description="Defaults to GATEWAY_DEFAULT_TIER.")
    limits: LimitOverrides | None = None
    reason: Reason | None = Field(default=None, description="Written to the audit log.")


class AccountPatch(_In):
    """Partial update: absent fields are unchanged; ``"limits": null`` removes all overrides.

    At least one of name, tier and limits; name and tier may be absent but not null.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["name"]}, {"required": ["tier"]}, {"required": ["limits"]}],
    })

    name: Annotated[Name | None, SchemaHint(not_null=True)] = None
    tier: Annotated[TierName | None, SchemaHint(not_null=True)] = None
    limits: LimitOverrides | None = None
    reason: Reason | None = Field(default=None, description="Written to the audit log.")


class AccountOut(BaseModel):
    id: str
    name: str
    status: AccountStatus
    tier: str
    limits: TierLimits = Field(description="Limits in force: the tier's, overridden per account.")
    limit_overrides: dict[str, int]
    risk_score: float
    watermark_identity: str = Field(
        description="Whose key watermarks the account's outputs: its own id, or its flagged "
        "campaign's cohort (``cohort:<flag id>``).")
    workload: WorkloadOut | None = Field(
        description="The operator's declaration of the account's workload; null: none.")
    created_at: UtcDatetime
    updated_at: UtcDatetime

    @classmethod
    def build(cls, account: Account, settings: Settings) -> AccountOut:
        overrides = {k: v for k, v in (account.limits or {}).items() if k in LIMIT_NAMES}
        _, limits = effective_limits(settings.tiers, account.tier, account.status, overrides)
        return cls(
            id=account.id,
            name=account.name,
            status=account.status,
            tier=account.tier,
            limits=limits,
            limit_overrides=overrides,
            risk_score=account.risk_score,
            watermark_identity=account.watermark_identity or account.id,
            workload=WorkloadOut.build(Workload.from_json(account.workload)),
            created_at=account.created_at,
            updated_at=account.updated_at,
        )


class WorkloadIn(_In):
    """A declared workload: while the account has sent at most ``allowance`` distinct requests,
    the detector's verdicts on it are withheld (its risk is still scored); past it they apply
    in full. Declare what the customer's contract says (a benchmark's size), never more."""

    kind: WorkloadKind = Field(description="evaluation: a benchmark harness.")
    allowance: Annotated[int, Field(
        ge=1, le=MAX_ALLOWANCE, strict=True,
        description="Distinct requests the workload needs; reruns are free."), JSON_INTEGER]
    reason: Reason = Field(description="Written to the audit log (the contract, the ticket).")

    def workload(self) -> Workload:
        return Workload(self.kind, self.allowance)


class WorkloadOut(BaseModel):
    kind: WorkloadKind
    allowance: int

    @classmethod
    def build(cls, workload: Workload | None) -> WorkloadOut | None:
        return None if workload is None else cls(kind=workload.kind,
                                                 allowance=workload.allowance)


class AccountList(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None


# --- keys ------------------------------------------------------------------------------------


class KeyCreate(_In):
    reason: Reason | None = Field(default=None, description="Written to the audit log.")


class KeyCreated(BaseModel):
    """The only response that ever carries a key's plaintext."""

    id: str
    account_id: str
    key: str
    prefix: str
    created_at: UtcDatetime


class KeyOut(_Out):
    id: str
    account_id: str
    prefix: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None

    @classmethod
    def build(cls, key: ApiKey) -> KeyOut:
        return cls.model_validate(key)


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = None


# --- enforcement -----------------------------------------------------------------------------


class ActionCreate(_In):
    action: ActionName
    reason: Reason


class ActionOut(_Out):
    id: int
    account_id: str
    action: ActionName
    reason: str
    actor: str
    previous_status: AccountStatus
    new_status: AccountStatus
    created_at: UtcDatetime


class ActionResult(BaseModel):
    action: ActionOut
    account: AccountOut


class ActionList(BaseModel):
    items: list[ActionOut]
    next_cursor: str | None


# --- traffic ---------------------------------------------------------------------------------


def record_view(name: str, fields: Iterable[str] | None = None) -> type[_Out]:
    """A read model of request records, built from :class:`RequestRecord`'s own declaration:
    ``fields`` (default: all of them, in the record's order), each with the record's type and
    required; ``created_at`` is read as UTC."""
    hints = get_type_hints(RequestRecord)
    names = fields or [f.name for f in dataclasses.fields(RequestRecord)]
    definitions: dict[str, Any] = {
        field: (UtcDatetime if field == "created_at" else hints[field], ...) for field in names
    }
    return create_model(name, __base__=_Out, __module__=__name__, **definitions)


if TYPE_CHECKING:
    class RequestOut(_Out):
        """Every field of :class:`RequestRecord` (built by :func:`record_view`)."""
else:
    RequestOut = record_view("RequestOut")


class RequestList(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None


# --- audit -----------------------------------------------------------------------------------


class AuditOut(_Out):
    id: int
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str | None
    reason: str | None
    details: dict[str, Any] | None
    created_at: UtcDatetime


class AuditList(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None
