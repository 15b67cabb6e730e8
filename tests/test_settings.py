"""Configuration refuses weak secrets outside local mode."""

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

STRONG = "x7Kq2pZ9vR4mT8wL1nB6cY3hJ5dF0gSa"


def test_production_refuses_missing_or_weak_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", STRONG)
    monkeypatch.setenv("GATEWAY_KEY_HASH_SECRET", STRONG)
    for weak in ("changeme", "a" * 40, "short"):
        monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", weak)
        with pytest.raises(ValidationError, match="GATEWAY_ADMIN_TOKEN"):
            Settings()
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", STRONG)
    monkeypatch.setenv("GATEWAY_WATERMARK_SECRET", "secret")
    with pytest.raises(ValidationError, match="GATEWAY_WATERMARK_SECRET"):
        Settings()


def test_strong_secrets_pass_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADMIN_TOKEN", "KEY_HASH_SECRET", "WATERMARK_SECRET"):
        monkeypatch.setenv(f"GATEWAY_{name}", STRONG)
    settings = Settings()
    assert STRONG not in repr(settings)
    assert STRONG not in str(settings.model_dump())


def test_local_mode_accepts_anything_and_upstream_must_end_in_v1() -> None:
    assert Settings(mode="local").mode == "local"
    with pytest.raises(ValidationError, match="/v1"):
        Settings(mode="local", upstream_url="http://upstream:8000")


def test_plain_database_urls_get_async_drivers() -> None:
    assert Settings(mode="local", database_url="postgresql://u@h/db").async_database_url == (
        "postgresql+asyncpg://u@h/db")
