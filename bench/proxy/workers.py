"""Cores and worker processes for the hot-path bench: taskset core lists, and uvicorn's
workers found, waited for and pinned one per core (``bench/hotpath.py --scaling``)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from bench.proxy.overhead_servers import BenchError, Managed, log, log_tail

TICKS = os.sysconf("SC_CLK_TCK")


def parse_cores(text: str) -> list[int]:
    """``"4-7,9"`` -> ``[4, 5, 6, 7, 9]`` (taskset's list syntax), order kept, no repeats."""
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"bad core list {text!r}")
        for core in range(int(lo), int(hi or lo) + 1):
            if core not in cores:
                cores.append(core)
    if not cores:
        raise ValueError(f"empty core list {text!r}")
    return cores


def core_list(cores: list[int]) -> str:
    return ",".join(str(c) for c in cores)


def children_cpu_s(pgid: int) -> dict[int, float]:
    """utime+stime (s) of each live process in process group ``pgid``, by pid."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes under ``master`` (multiprocessing spawn children), by pid;
    ``[master]`` when it serves alone (``--workers 1``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids) or [master]


def settle_workers(managed: Managed, workers: int, timeout_s: float = 30.0) -> list[int]:
    """Wait until all ``workers`` processes exist and have finished starting (their CPU time
    has stopped growing), so that wrk's connections are spread over every one of them; their
    pids. A worker still importing when wrk connects would get none of its connections."""
    master = managed.proc.pid
    deadline = time.monotonic() + timeout_s
    pids = worker_pids(master)
    last: dict[int, float] = {}
    quiet = 0
    while time.monotonic() < deadline:
        if managed.proc.poll() is not None:
            raise BenchError(f"{managed.name} exited with {managed.proc.returncode}:\n"
                             f"{log_tail(managed.log)}")
        pids = worker_pids(master)
        cpu = children_cpu_s(master)
        now = {pid: cpu.get(pid, 0.0) for pid in pids}
        if len(pids) == workers and last.keys() == now.keys() and all(
                now[p] >= 0.1 and now[p] - last[p] < 0.03 for p in pids):
            quiet += 1
            if quiet >= 2:
                return pids
        else:
            quiet = 0
        last = now
        time.sleep(0.3)
    log(f"WARNING {managed.name}: {len(pids)} of {workers} workers settled after "
        f"{timeout_s:.0f}s; measuring anyway")
    return pids


def pin_workers(pids: list[int], cores: list[int]) -> None:
    """Each worker (and its threads) onto a core of its own, in order."""
    if len(pids) > len(cores):
        raise BenchError(f"{len(pids)} workers for {len(cores)} cores: not one core each")
    for pid, core_id in zip(pids, cores, strict=False):
        core = {core_id}
        try:
            tasks = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
            for task in tasks:
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(task, core)
        except (OSError, ValueError) as exc:
            raise BenchError(f"could not pin worker {pid} to core {core}: {exc}") from exc
