"""Sanitising: whatever a record holds, afterwards each value fits its column (or is None)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.records import RequestRecord
from gateway.store.models import RequestRow
from gateway.store.sanitize import (
    INT64,
    clean_bool,
    clean_datetime,
    clean_float,
    clean_int,
    clean_text,
    sanitize_record,
    sanitize_row,
)
from gateway.store.writer import insert_ignoring_duplicates
from tests.store.helpers import record, stored_ids

HOSTILE: dict[str, Any] = {
    "model": "m\x00" * 300, "tier": "\ud800" * 50, "client_addr": "\udfff1.2.3.4",
    "prompt_text": "a\x00\ud83d\ude00\ud800b", "prompt_hash": 7, "error_code": ["x"],
    "max_tokens": 2**64, "n": -(2**70), "top_logprobs": 1e300, "prompt_tokens": float("nan"),
    "completion_tokens": "12", "logit_bias_size": 2**63, "prompt_chars": -1,
    "latency_ms": float("inf"), "upstream_latency_ms": 10**400,
    "ttfb_ms": "fast", "temperature": float("-inf"), "top_p": True, "stream": 1,
    "logprobs": "yes",
}


def _hostile() -> list[RequestRecord]:
    """One record per hostile value, and one with every hostile value at once."""
    records = [record(**{name: value}) for name, value in HOSTILE.items()]
    records.append(record(**HOSTILE))
    records[-1].status_code = 10**5000
    return records


def test_integers_are_clamped_to_the_column_range() -> None:
    assert clean_int(2**64) == 2**31 - 1
    assert clean_int(-(2**64)) == -(2**31)
    assert clean_int(2**64, INT64) == 2**63 - 1
    assert clean_int(7) == 7
    assert clean_int(3.9) == 3
    assert clean_int(True) == 1
    assert [clean_int(v) for v in (float("nan"), float("inf"), "5", None)] == [None] * 4


def test_text_loses_nul_and_lone_surrogates_and_is_cut_to_length() -> None:
    assert clean_text("m\x00odel\x00") == "model"
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("\ud83d\ude00") == "😀"  # a pair spelled as two code points is one char
    assert clean_text("é" * 10, 4) == "éééé"
    assert clean_text(12) == "12"
    assert clean_text(10**5000) is None
    assert clean_text(["x"]) is None


def test_floats_are_finite_or_none() -> None:
    assert clean_float(0.5) == 0.5
    assert clean_float(2) == 2.0
    assert [clean_float(v) for v in (float("nan"), float("inf"), 10**400, "1")] == [None] * 4


def test_bools_and_datetimes() -> None:
    assert [clean_bool(v) for v in (True, 0, 1, 2, "yes")] == [True, False, True, None, None]
    plus_two = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert clean_datetime(plus_two) == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert clean_datetime(datetime(2024, 1, 1)) == datetime(2024, 1, 1, tzinfo=UTC)
    assert clean_datetime("2024-01-01") is None


def test_a_sanitised_record_is_unchanged_by_sanitising_again_and_encodes_as_json() -> None:
    clean = sanitize_record(_hostile()[-1])

    assert sanitize_record(clean) == clean
    assert RequestRecord.from_json_dict(orjson.loads(orjson.dumps(clean.to_json_dict()))) == clean
    assert (clean.model, clean.prompt_text) == ("m" * 200, "a😀\ufffdb")
    assert (clean.max_tokens, clean.n) == (2**31 - 1, -(2**31))
    assert (clean.status_code, clean.logprobs, clean.stream) == (2**31 - 1, False, True)


def test_an_ordinary_record_is_unchanged() -> None:
    ordinary = record(model="gpt-x", prompt_text="héllo 😀", max_tokens=100, temperature=0.7)
    assert sanitize_record(ordinary) == ordinary


def _slow_path(rec: RequestRecord) -> RequestRecord:
    """What ``sanitize_record`` is defined to return: every value through its column's cleaner."""
    return RequestRecord(**sanitize_row(rec.to_row()))


@pytest.mark.parametrize("index", range(len(HOSTILE) + 1))
def test_the_fast_path_cleans_exactly_as_the_cleaners_do(index: int) -> None:
    rec = _hostile()[index]
    fast, slow = sanitize_record(rec), _slow_path(rec)
    assert fast.to_row() == slow.to_row() or repr(fast) == repr(slow)  # nan != nan
    assert [type(v) for v in fast.to_row().values()] == [type(v) for v in slow.to_row().values()]


@pytest.mark.parametrize("value", [
    "x" * 200, "x" * 201, "ascii", "naïve", "", 2**31 - 1, 2**31, -(2**31) - 1, 0, True, 1.5,
    float("nan"), -0.0, 7, None,
])
def test_boundary_values_take_the_same_path_fast_or_slow(value: Any) -> None:
    for name in ("model", "max_tokens", "logit_bias_size", "temperature", "stream", "n"):
        rec = record(**{name: value})
        fast, slow = sanitize_record(rec), _slow_path(rec)
        assert repr(fast) == repr(slow), name


def test_a_datetime_outside_utc_takes_the_slow_path() -> None:
    rec = record()
    rec.created_at = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert sanitize_record(rec).created_at.tzinfo is UTC
    assert sanitize_record(rec) == _slow_path(rec)


async def test_every_sanitised_hostile_record_is_stored(engine: AsyncEngine) -> None:
    table = RequestRow.__table__
    assert isinstance(table, Table)
    hostile = _hostile()
    rows = [sanitize_record(r).to_row() for r in hostile]

    async with engine.begin() as conn:
        await conn.execute(insert_ignoring_duplicates(engine.dialect.name, table), rows)

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in hostile)


@pytest.mark.parametrize("name", ["route", "method", "request_id"])
def test_a_missing_required_value_is_left_for_the_database_to_refuse(name: str) -> None:
    hostile = record()
    setattr(hostile, name, None)
    assert getattr(sanitize_record(hostile), name) is None
