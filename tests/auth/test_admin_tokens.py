"""Admin tokens: who a token belongs to, with which role."""

from __future__ import annotations

from pydantic import SecretStr

from gateway.auth.admin_tokens import Actor, AdminTokens
from gateway.settings import AdminTokenConfig, Settings
from tests.admin.conftest import ADMIN_TOKEN, REVIEWER_TOKEN, VIEWER_TOKEN, make_settings


def test_bootstrap_token_is_an_admin_named_bootstrap_admin() -> None:
    tokens = AdminTokens.from_settings(make_settings())
    assert tokens.authenticate(ADMIN_TOKEN) == Actor("bootstrap-admin", "admin")


def test_configured_tokens_carry_their_name_and_role() -> None:
    tokens = AdminTokens.from_settings(make_settings())
    assert tokens.authenticate(REVIEWER_TOKEN) == Actor("rita-reviewer", "reviewer")
    assert tokens.authenticate(VIEWER_TOKEN) == Actor("victor-viewer", "viewer")


def test_unknown_empty_missing_and_near_miss_tokens_are_rejected() -> None:
    tokens = AdminTokens.from_settings(make_settings())
    for token in (None, "", "nope", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", ADMIN_TOKEN.upper()):
        assert tokens.authenticate(token) is None


def test_without_any_configured_token_nothing_authenticates() -> None:
    tokens = AdminTokens.from_settings(Settings(mode="local"))
    assert len(tokens) == 0
    assert tokens.authenticate("") is None
    assert tokens.authenticate("anything") is None


def test_extra_tokens_work_without_a_bootstrap_token() -> None:
    settings = Settings(
        mode="local",
        admin_tokens=[AdminTokenConfig(name="v", token=SecretStr(VIEWER_TOKEN), role="viewer")],
    )
    assert AdminTokens.from_settings(settings).authenticate(VIEWER_TOKEN) == Actor("v", "viewer")

