"""Append-only JSONL spill files for request records the database could not take (yet).

Files are ``spill-<owner>-<time_ns>.jsonl`` in one directory that several worker processes
may share, ``<owner>`` being ``<pid>-<random>`` of one ``SpillDir``. The locking protocol
(``fcntl.flock``, which binds to an open file description, so it also separates two SpillDirs
in one process):

- a writer holds ``LOCK_EX`` on its *active* file for as long as it may append to it; rotating
  closes the file, which releases the lock and makes it replayable;
- a replayer takes ``LOCK_EX | LOCK_NB`` and skips the file when that fails, so a file is
  replayed by exactly one process, and never while someone is appending to it;
- after locking, both check that the path still names the locked inode (another replayer may
  have deleted or renamed it in between) and retry or skip otherwise;
- a replayer *claims* a file of another owner by renaming it into its own name while locked,
  so each file is attributed to exactly one live owner and the per-process pending-bytes gauge
  sums to the total across workers.

Spill files hold full records (prompts, when stored), so the directory is private to the
gateway's user (0700) and every file in it 0600; a directory or files left with looser modes
(by an earlier version, or a restored backup) are tightened when a ``SpillDir`` is opened.

Every method here does blocking file I/O: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.records import RequestRecord

log = logging.getLogger(__name__)

SPILL_GLOB = "spill-*.jsonl"
DIR_MODE = 0o700
FILE_MODE = 0o600


def encode(records: Sequence[RequestRecord]) -> bytes:
    """JSON lines, one record each."""
    return b"".join(orjson.dumps(record.to_json_dict()) + b"\n" for record in records)


def _decode(line: bytes) -> RequestRecord | None:
    """The record on one line, or None for a line that is torn (crash mid-write) or malformed.

    Any failure counts as malformed: a line must never stop the replay of its file."""
    if not line.endswith(b"\n"):
        return None
    try:
        data: Any = orjson.loads(line)
        return RequestRecord.from_json_dict(data)
    except Exception:
        return None


def _same_inode(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not deleted or renamed meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed; make it and every file directly in it private.

    Only the directory itself is chmod-ed, not its parents (they may be anyone's, e.g. /var).
    Symbolic links and other non-regular entries are left alone. A mode the process may not
    change (a volume mount point owned by root, as Kubernetes makes them) is logged, not fatal:
    the files themselves are created 0600 regardless.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
            path.chmod(DIR_MODE)
    except PermissionError:
        log.warning("spill directory %s: cannot make it private (not its owner)", path)
    for entry in os.scandir(path):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(
                    follow_symlinks=False).st_mode & 0o077:
                os.chmod(entry.path, FILE_MODE)
        except FileNotFoundError:  # another replayer deleted or renamed it meanwhile
            continue
        except PermissionError:
            log.warning("spill directory %s: cannot make %s private", path, entry.name)


@dataclass
class Chunk:
    """Records read from a spill file, and the lines that were not a readable record."""

    records: list[RequestRecord] = field(default_factory=list)
    unreadable: list[bytes] = field(default_factory=list)


class ClaimedSpill:
    """A spill file this process holds locked for replay. ``release`` or ``delete`` unlocks it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._reader: BinaryIO = os.fdopen(fd, "rb")

    def read_chunk(self, size: int) -> Chunk | None:
        """Up to ``size`` lines, None at the end of the file. Lines that are not a record (torn
        by a crash, malformed, or written by something else) come back apart, for the caller
        to quarantine: one bad line must not keep the rest of the file out."""
        chunk = Chunk()
        for _ in range(size):
            line = self._reader.readline()
            if not line:
                break
            record = _decode(line)
            if record is None:
                chunk.unreadable.append(line.rstrip(b"\n"))
            else:
                chunk.records.append(record)
        if chunk.unreadable:
            log.error("spill file %s: %d unreadable line(s) set aside",
                      self.path.name, len(chunk.unreadable))
        return chunk if chunk.records or chunk.unreadable else None

    def delete(self) -> None:
        """Unlink the file (every record is committed), then unlock it."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        self._reader.close()


class SpillDir:
    """The spill directory as seen by one writer: its active file, and claims on the others."""

    def __init__(self, path: Path) -> None:
        self.path = path
        make_private_dir(path)
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._active_fd: int | None = None
        self._active_path: Path | None = None
        self._active_bytes = 0

    @property
    def active_bytes(self) -> int:
        """Bytes in the active file (0 when none is open); replay needs a rotation first."""
        return self._active_bytes

    def append(self, records: Sequence[RequestRecord]) -> int:
        """Append records to the active file, durably (fsync). Returns the bytes written.

        On an I/O error the active file is rotated, so that a torn line is never glued to the
        next append (it becomes one unreadable line, set aside at replay).
        """
        data = encode(records)
        with self._lock:
            fd = self._open_active()
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError:
                self._close_active()
                raise
            self._active_bytes += len(data)
        return len(data)

    def rotate(self) -> None:
        """Close the active file, unlocking it for replay; the next append starts a new one."""
        with self._lock:
            self._close_active()

    close = rotate

    def files(self) -> list[Path]:
        """Every spill file in the directory, oldest name first."""
        return sorted(self.path.glob(SPILL_GLOB))

    def total_bytes(self) -> int:
        """Bytes in all spill files in the directory (every process's)."""
        return sum(_size(path) for path in self.files())

    def own_bytes(self) -> int:
        """Bytes in the files attributed to this owner (active, rotated or claimed)."""
        prefix = f"spill-{self.owner}-"
        return sum(_size(path) for path in self.files() if path.name.startswith(prefix))

    def claim(self, path: Path) -> ClaimedSpill | None:
        """Lock ``path`` for replay, or None when another writer or replayer holds it.

        A file of another owner is renamed into this owner's names; an empty file is deleted on
        the spot (a writer that had just created it notices and makes a new one).
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _same_inode(path, fd):
            os.close(fd)
            return None
        if os.fstat(fd).st_size == 0:
            path.unlink(missing_ok=True)
            os.close(fd)
            return None
        if not path.name.startswith(f"spill-{self.owner}-"):
            target = self._new_path()
            os.rename(path, target)
            path = target
        return ClaimedSpill(path, fd)

    def _new_path(self) -> Path:
        return self.path / f"spill-{self.owner}-{time.time_ns()}.jsonl"

    def _open_active(self) -> int:
        """The active file's descriptor: created exclusively, locked, and verified still linked."""
        if self._active_fd is not None:
            return self._active_fd
        while True:
            path = self._new_path()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_inode(path, fd):
                break
            os.close(fd)
        _fsync_dir(self.path)
        self._active_fd, self._active_path, self._active_bytes = fd, path, 0
        return fd

    def _close_active(self) -> None:
        if self._active_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._active_fd)
        self._active_fd, self._active_path, self._active_bytes = None, None, 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
