"""Write-ahead journal of submitted request records: what a killed worker had not yet stored.

The writer batches records in memory for up to ``flush_interval_s`` before they reach the
database or a spill file. A worker killed in that window (``kill -9``, the OOM killer) used to
lose the records of requests its clients had already seen answered — evidence an attacker who
can crash a worker would be glad to see gone. Every submitted record is now appended to a
journal segment first: one ``write`` to the page cache, no ``fsync``, so it survives the
process (not the host; spill files, which do ``fsync``, are for database outages).

Segments are ``journal-<owner>-<time_ns>.jsonl`` in the spill directory, 0600, and stay locked
(``flock``) by their writer for as long as it lives. The writer seals the active segment with
the submission counts it covers, and deletes a sealed segment once everything it covers is
in the database or a spill file. A segment nobody holds belongs to a dead writer: any writer
renames it to a spill file name (under the lock), and the normal spill replay puts its records
in — those already stored are skipped by the idempotent insert.

Every method does blocking file I/O, but only ``append`` is on the request path (one small
write, no fsync).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.records import RequestRecord
from gateway.store.spill import FILE_MODE, make_private_dir

log = logging.getLogger(__name__)

JOURNAL_GLOB = "journal-*.jsonl"
Counts = tuple[int, int]
"""(queue lane, overflow lane) submission counts; each lane settles in order."""


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    opened: float
    covers: Counts = (0, 0)


class Journal:
    """The journal of one writer (see the module docstring)."""

    def __init__(self, directory: Path, seal_after_s: float = 1.0) -> None:
        make_private_dir(directory)
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.seal_after_s = seal_after_s
        self._active: _Segment | None = None
        self._sealed: list[_Segment] = []

    def append(self, record: RequestRecord) -> None:
        """Journal one record; raises OSError (the caller logs it and carries on)."""
        # orjson encodes the dataclass itself exactly as ``to_json_dict`` would (datetimes as
        # ISO 8601), without building the dict first.
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        segment = self._active or self._open()
        try:
            os.write(segment.fd, line)
        except OSError:
            self._seal((1 << 62, 1 << 62))  # never released early; replayed if we die
            raise

    def progress(self, submitted: Counts, settled: Counts) -> None:
        """Seal the active segment once it is old enough (covering ``submitted``), and delete
        every sealed segment that ``settled`` covers."""
        active = self._active
        if active is not None and time.monotonic() - active.opened >= self.seal_after_s:
            self._seal(submitted)
        keep = []
        for segment in self._sealed:
            if segment.covers[0] <= settled[0] and segment.covers[1] <= settled[1]:
                _drop(segment)
            else:
                keep.append(segment)
        self._sealed = keep

    def close(self, settled_all: bool) -> None:
        """At stop: delete every segment when all is settled; else just unlock them, so the
        next writer to start replays them."""
        for segment in [*self._sealed, *([self._active] if self._active else [])]:
            if settled_all:
                _drop(segment)
            else:
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
        self._active, self._sealed = None, []

    def adopt_orphans(self) -> int:
        """Rename every segment of a dead writer (unlocked) to a spill file name, for the spill
        replay to take in; returns how many."""
        adopted = 0
        for path in sorted(self.directory.glob(JOURNAL_GLOB)):
            if path.name.startswith(f"journal-{self.owner}-"):
                continue
            with contextlib.suppress(FileNotFoundError):
                adopted += _adopt(path)
        return adopted

    def _open(self) -> _Segment:
        path = self.directory / f"journal-{self.owner}-{time.time_ns()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._active = _Segment(path, fd, time.monotonic())
        return self._active

    def _seal(self, covers: Counts) -> None:
        if self._active is not None:
            self._active.covers = covers
            self._sealed.append(self._active)
            self._active = None


def _drop(segment: _Segment) -> None:
    with contextlib.suppress(OSError):
        segment.path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.close(segment.fd)


def _adopt(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its writer is alive
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            return 0
        if os.fstat(fd).st_size == 0:
            path.unlink()
            return 0
        os.rename(path, path.with_name("spill-" + path.name.removeprefix("journal-")))
        log.warning("request log: replaying %s, left by a writer that died", path.name)
        return 1
    finally:
        os.close(fd)
