"""A request record built from hostile input cannot destroy, wedge or leak the request log.

Values a client can smuggle into a record (integers up to 2**64, NUL characters, lone
surrogates, non-finite floats) are stored *sanitised*: clamped to the column's range, NULs
stripped, surrogates replaced, non-finite floats as NULL. A row the database still refuses as
data (here: a NOT NULL column left empty, which no sanitising can fix) is *quarantined*: set
aside in ``quarantine.jsonl`` in the spill directory, counted, and never replayed. Neither
kind marks the database unhealthy or keeps any other record out, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.metrics import Metrics
from gateway.records import RequestRecord
from gateway.store.models import RequestRow
from gateway.store.spill import SpillDir
from tests.store.conftest import WriterFactory
from tests.store.helpers import (
    metric,
    quarantined,
    record,
    spill_files,
    stored_ids,
)
from tests.support.waiting import wait_until_async

QUARANTINED = "gateway_request_log_quarantined_total"
WRITE_ERRORS = "gateway_request_log_write_errors_total"
NEVER = 3600.0
INT32_MAX = 2**31 - 1
SECRET = "SECRET-PROMPT-TEXT"

# Each maps to (fields of the hostile record, the stored values expected after sanitising).
POISON: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "max_tokens 2**64": ({"max_tokens": 2**64}, {"max_tokens": INT32_MAX}),
    "n 2**40": ({"n": 2**40}, {"n": INT32_MAX}),
    "top_logprobs -2**64": ({"top_logprobs": -(2**64)}, {"top_logprobs": -(2**31)}),
    "NUL in model": ({"model": "m\x00"}, {"model": "m"}),
    "NUL in prompt": ({"prompt_text": "a\x00b"}, {"prompt_text": "ab"}),
    "lone surrogate": ({"prompt_text": "x\ud800y"}, {"prompt_text": "x\ufffdy"}),
    "non-finite floats": ({"temperature": float("nan"), "top_p": float("inf")},
                          {"temperature": None, "top_p": None}),
    "int too big for a float": ({"latency_ms": 10**400}, {"latency_ms": None}),
}


def _unstorable(account_id: str, **fields: Any) -> RequestRecord:
    """A record no sanitising can make storable: its NOT NULL ``route`` is missing."""
    bad = record(account_id=account_id, **fields)
    bad.route = None  # type: ignore[assignment]
    return bad


def _gateway_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What the gateway itself logged (drivers log parameters at DEBUG; that is theirs)."""
    return "\n".join(caplog.handler.format(r) for r in caplog.records
                     if r.name.startswith("gateway"))


async def _stored(engine: AsyncEngine, request_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(
            select(RequestRow).where(RequestRow.request_id == request_id))).one()


def _fields(item: RequestRecord) -> dict[str, Any]:
    """A record's values as a database returns them (``created_at`` compared apart)."""
    row = item.to_row()
    del row["created_at"]
    return row


async def _stored_fields(engine: AsyncEngine, item: RequestRecord) -> dict[str, Any]:
    row = await _stored(engine, item.request_id)
    return {name: getattr(row, name) for name in _fields(item)}


async def _others_still_arrive(engine: AsyncEngine, writer: Any) -> None:
    later = [record(account_id="acct-other") for _ in range(5)]
    for item in later:
        writer.submit(item)
    await writer.flush()
    assert set(r.request_id for r in later) <= set(await stored_ids(engine))


async def test_hostile_values_are_stored_sanitised_beside_the_good_records(
    engine: AsyncEngine, make_writer: WriterFactory, metrics: Metrics, tmp_path: Path
) -> None:
    writer = make_writer(engine, batch_size=50, replay_interval_s=NEVER)
    await writer.start()
    errors_before = metric(metrics, WRITE_ERRORS)
    earlier = [record(account_id="acct-attacker") for _ in range(10)]  # the attacker's own
    for item in earlier:
        writer.submit(item)
    await writer.flush()
    good = [record() for _ in range(20)]
    hostile = {name: record(account_id="acct-attacker", **fields)
               for name, (fields, _) in POISON.items()}
    for i, item in enumerate(hostile.values()):  # interleaved: they share batches
        writer.submit(good[i])
        writer.submit(item)
    for item in good[len(hostile):]:
        writer.submit(item)

    await writer.flush()

    every = [*earlier, *good, *hostile.values()]
    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in every)
    for name, (_, expected) in POISON.items():
        row = await _stored(engine, hostile[name].request_id)
        assert {field: getattr(row, field) for field in expected} == expected, name
    assert writer.database_healthy
    assert metric(metrics, WRITE_ERRORS) == errors_before
    assert spill_files(tmp_path / "spill") == []
    assert quarantined(tmp_path / "spill") == []
    await _others_still_arrive(engine, writer)


async def test_rows_the_database_refuses_are_quarantined_and_the_rest_stored(
    engine: AsyncEngine, make_writer: WriterFactory, metrics: Metrics, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    writer = make_writer(engine, batch_size=64, replay_interval_s=NEVER)
    await writer.start()
    quarantined_before = metric(metrics, QUARANTINED)
    errors_before = metric(metrics, WRITE_ERRORS)
    good = [record(model="tiny", prompt_text="héllo 😀", max_tokens=2**31 - 1, temperature=0.5,
                   logprobs=True, top_logprobs=5) for _ in range(57)]
    bad = [_unstorable("acct-attacker", prompt_text=SECRET) for _ in range(3)]
    batch = [*good[:5], bad[0], *good[5:30], bad[1], *good[30:], bad[2]]
    for item in batch:  # no await in between: one batch
        writer.submit(item)

    await writer.flush()

    assert sorted(await stored_ids(engine)) == sorted(r.request_id for r in good)
    for item in good[::7]:
        assert await _stored_fields(engine, item) == _fields(item)  # intact
    entries = quarantined(tmp_path / "spill")
    assert sorted(e["request_id"] for e in entries) == sorted(r.request_id for r in bad)
    assert {e["account_id"] for e in entries} == {"acct-attacker"}
    assert all(e["reason"] and SECRET not in e["reason"] for e in entries)
    assert all(e["record"]["prompt_text"] == SECRET for e in entries)  # kept as evidence
    assert metric(metrics, QUARANTINED) - quarantined_before == 3
    assert metric(metrics, WRITE_ERRORS) == errors_before
    assert writer.database_healthy
    assert spill_files(tmp_path / "spill") == []
    assert SECRET not in _gateway_logs(caplog)
    await _others_still_arrive(engine, writer)


async def test_quarantine_file_is_private(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    writer = make_writer(engine, replay_interval_s=NEVER)
    await writer.start()
    writer.submit(_unstorable("acct-attacker"))

    await writer.flush()

    path = tmp_path / "spill" / "quarantine.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _spill_line(**overrides: Any) -> bytes:
    """A spill line as an earlier (unsanitising) version, or an attacker with disk access,
    could have written it; stdlib json writes what orjson refuses to."""
    data = record(account_id="acct-attacker").to_json_dict()
    data.update(overrides)
    return json.dumps(data).encode() + b"\n"


def _old_spill_file(spill_dir: Path, good: list[RequestRecord], poison: list[bytes]) -> None:
    """One closed spill file: good records with the poison lines in the middle."""
    old = SpillDir(spill_dir)
    old.append(good[: len(good) // 2])
    old.close()
    (path,) = spill_files(spill_dir)
    with path.open("ab") as sink:
        sink.write(b"".join(poison))
        sink.write(b"".join(orjson.dumps(r.to_json_dict()) + b"\n" for r in good[len(good) // 2:]))


def _poison_lines() -> tuple[list[bytes], str, str]:
    """Unparseable JSON, a row the database refuses, and a value that needs clamping."""
    refused = _spill_line(route=None)
    clamped = _spill_line(max_tokens=2**64 - 1, model="m\x00")
    return ([b'{"request_id": "torn', b"\n", b"not json at all\n", refused, clamped],
            json.loads(refused)["request_id"], json.loads(clamped)["request_id"])


async def test_replay_sets_poison_lines_aside_and_stores_every_other_line(
    engine: AsyncEngine, make_writer: WriterFactory, metrics: Metrics, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    good = [record() for _ in range(40)]
    lines, refused_id, clamped_id = _poison_lines()
    _old_spill_file(spill_dir, good, lines)
    writer = make_writer(engine, batch_size=16, replay_interval_s=NEVER)
    quarantined_before = metric(metrics, QUARANTINED)

    await writer.replay_spill()

    stored = set(await stored_ids(engine))
    assert stored == {r.request_id for r in good} | {clamped_id}
    assert (await _stored(engine, clamped_id)).max_tokens == INT32_MAX
    entries = quarantined(spill_dir)
    assert [e["request_id"] for e in entries if e["request_id"]] == [refused_id]
    assert len(entries) == 3  # two unreadable lines, kept verbatim, and the refused row
    assert metric(metrics, QUARANTINED) - quarantined_before == 3
    assert spill_files(spill_dir) == []
    assert writer.database_healthy


async def test_a_restarted_writer_does_not_replay_a_poison_file_again(
    engine: AsyncEngine, make_writer: WriterFactory, tmp_path: Path
) -> None:
    spill_dir = tmp_path / "spill"
    good = [record() for _ in range(10)]
    lines, refused_id, _ = _poison_lines()
    _old_spill_file(spill_dir, good, lines)
    first = make_writer(engine, replay_interval_s=0.05)
    await first.start()  # replays at once, in the background

    await wait_until_async(lambda: asyncio.sleep(0, not spill_files(spill_dir)), timeout=30,
                           what="poison file done")
    await first.stop()
    entries = quarantined(spill_dir)
    second = make_writer(engine, replay_interval_s=0.05)
    await second.start()
    fresh = [record(account_id="acct-other") for _ in range(5)]
    for item in fresh:
        second.submit(item)
    await second.flush()
    await second.replay_spill()

    assert quarantined(spill_dir) == entries  # nothing replayed, nothing set aside twice
    assert {r.request_id for r in good + fresh} <= set(await stored_ids(engine))
    assert refused_id not in await stored_ids(engine)
    assert second.database_healthy
