"""Request and response bodies of the admin API (``/admin/v1``); these shapes are public."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from gateway.auth.principal import effective_limits
from gateway.settings import Settings, TierLimits
from gateway.store.models import Account, ApiKey
from gateway.store.repository import LIMIT_NAMES, as_utc

AccountStatus = Literal["active", "throttled", "suspended", "banned"]
ActionName = Literal["warn", "throttle", "suspend", "ban", "reinstate"]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
LimitValue = Annotated[int, Field(ge=0, le=10**12, strict=True)]


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
    tier: str | None = Field(default=None, description="Defaults to GATEWAY_DEFAULT_TIER.")
    limits: LimitOverrides | None = None
    reason: Reason | None = Field(default=None, description="Written to the audit log.")


class AccountPatch(_In):
    """Partial update: absent fields are unchanged; ``"limits": null`` removes all overrides."""

    name: Name | None = None
    tier: str | None = None
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
            created_at=account.created_at,
            updated_at=account.updated_at,
        )


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


class RequestOut(_Out):
    request_id: str
    account_id: str | None
    key_id: str | None
    route: str
    method: str
    status_code: int
    model: str | None
    tier: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    upstream_latency_ms: float | None
    ttfb_ms: float | None
    client_addr: str | None
    stream: bool
    max_tokens: int | None
    n: int | None
    temperature: float | None
    top_p: float | None
    logprobs: bool
    top_logprobs: int | None
    logit_bias_size: int
    prompt_chars: int
    prompt_hash: str | None
    prompt_text: str | None
    error_code: str | None
    created_at: UtcDatetime


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
