"""The quarantine files: whole records kept for forensics, and a summary index read from the
end, so listing recent entries costs the same however many (and however large) there are."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.store.quarantine import Quarantine
from tests.store.helpers import quarantined, record


def test_recent_entries_come_newest_first_across_many_read_blocks(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    records = [record(account_id=f"acct-{i}", prompt_text="p" * 5000) for i in range(600)]
    for start in range(0, 600, 100):
        quarantine.add_records([(r, "IntegrityError") for r in records[start:start + 100]])

    recent = quarantine.recent(250)

    assert [e.request_id for e in recent] == [r.request_id for r in reversed(records)][:250]
    assert {e.reason for e in recent} == {"IntegrityError"}
    assert [e.request_id for e in quarantine.recent(10_000)] == [
        r.request_id for r in reversed(records)]


def test_entries_keep_the_whole_record_and_unreadable_lines_verbatim(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    kept = record(prompt_text="the evidence")
    quarantine.add_records([(kept, "DataError [22000]")])
    quarantine.add_lines([b'{"torn', b"\xff\xfe not utf-8"], "spill-1-aa-1.jsonl")

    full = quarantined(tmp_path)

    assert full[0]["record"]["prompt_text"] == "the evidence"
    assert [(e["line"], e["source"]) for e in full[1:]] == [
        ('{"torn', "spill-1-aa-1.jsonl"), ("\\xff\\xfe not utf-8", "spill-1-aa-1.jsonl")]
    assert [(e.request_id, e.reason) for e in quarantine.recent(5)] == [
        (None, "UnreadableLine"), (None, "UnreadableLine"),
        (kept.request_id, "DataError [22000]")]


def test_a_torn_or_foreign_index_line_is_skipped(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    quarantine.add_records([(record(), "IntegrityError")])
    with quarantine.index_path.open("ab") as sink:
        sink.write(b"not json\n" + json.dumps({"request_id": "x"}).encode() + b"\n{\"torn")

    assert len(quarantine.recent(10)) == 1


def test_no_quarantine_yet_lists_nothing(tmp_path: Path) -> None:
    assert Quarantine(tmp_path / "missing").recent(10) == []
