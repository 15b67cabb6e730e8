"""The quarantine: request records the database refused as data, kept out of the way.

A record the database will never take (see :mod:`gateway.store.errors`) must neither be lost
(it is ToS evidence, maybe of an attack on the log itself) nor retried (it would block every
record behind it). It is appended to ``quarantine.jsonl`` in the spill directory, whole, with
why and when; an unreadable spill line is kept verbatim the same way. A small summary of each
entry also goes to ``quarantine-index.jsonl``, so that listing recent entries reads a few KiB
however large the quarantined prompts are.

Both files are private (0600), appended under ``flock`` (worker processes share the
directory) and fsynced before the caller goes on to delete the spill file the entries came
from. Entries are never replayed; an operator may re-import them once a fix is deployed.

Every method does blocking file I/O: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.records import RequestRecord

log = logging.getLogger(__name__)

QUARANTINE_FILE = "quarantine.jsonl"
INDEX_FILE = "quarantine-index.jsonl"
UNREADABLE = "UnreadableLine"
FILE_MODE = 0o600
_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """What an admin may see of an entry: no record content (it may hold the prompt)."""

    request_id: str | None
    account_id: str | None
    reason: str
    quarantined_at: datetime


class Quarantine:
    """The quarantine files of one spill directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / QUARANTINE_FILE
        self.index_path = directory / INDEX_FILE

    def add_records(self, refused: Sequence[tuple[RequestRecord, str]]) -> None:
        """Set aside records with the reason each was refused (an error class name)."""
        entries = [_entry(record.request_id, record.account_id, reason, record=_record(record))
                   for record, reason in refused]
        self._append(entries)

    def add_lines(self, lines: Sequence[bytes], source: str) -> None:
        """Set aside spill lines that are not a readable record, verbatim (as text)."""
        entries = [_entry(None, None, UNREADABLE, source=source,
                          line=line.decode("utf-8", "backslashreplace")) for line in lines]
        self._append(entries)

    def recent(self, limit: int) -> list[QuarantineEntry]:
        """Up to ``limit`` entries, newest first."""
        entries: list[QuarantineEntry] = []
        for line in _lines_backwards(self.index_path):
            entry = _summary(line)
            if entry is not None:
                entries.append(entry)
            if len(entries) >= limit:
                break
        return entries

    def _append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        full = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
        index = b"".join(orjson.dumps({k: entry[k] for k in _SUMMARY}) + b"\n"
                         for entry in entries)
        append_private(self.path, full)
        append_private(self.index_path, index)


_SUMMARY = ("request_id", "account_id", "reason", "quarantined_at")


def _entry(request_id: str | None, account_id: str | None, reason: str,
           **content: Any) -> dict[str, Any]:
    return {"request_id": request_id, "account_id": account_id, "reason": reason,
            "quarantined_at": datetime.now(UTC).isoformat(), **content}


def _record(record: RequestRecord) -> dict[str, Any] | None:
    """The record as JSON, or None should it not be encodable (it is sanitised, so it is)."""
    data = record.to_json_dict()
    try:
        orjson.dumps(data)
    except TypeError:
        log.error("request log: quarantined record %s is not encodable", record.request_id)
        return None
    return data


def _summary(line: bytes) -> QuarantineEntry | None:
    try:
        data = orjson.loads(line)
        return QuarantineEntry(
            request_id=data["request_id"], account_id=data["account_id"],
            reason=str(data["reason"]),
            quarantined_at=datetime.fromisoformat(data["quarantined_at"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def append_private(path: Path, data: bytes) -> None:
    """Append durably to a file only its owner may read, locked against other processes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's complete lines, last first, reading from the end in blocks."""
    try:
        reader = path.open("rb")
    except FileNotFoundError:
        return
    with reader:
        position = reader.seek(0, os.SEEK_END)
        partial = b""  # the start of a line whose beginning is not read yet
        while position > 0:
            step = min(_BLOCK, position)
            position -= step
            reader.seek(position)
            partial, *complete = (reader.read(step) + partial).split(b"\n")
            yield from (line for line in reversed(complete) if line)
        if partial:
            yield partial
