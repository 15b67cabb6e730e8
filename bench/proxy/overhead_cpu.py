"""How much CPU did processes *outside* the benchmark use during a measurement?

On a shared 2-core machine another job (a test run, a build) skews every figure. Busy time from
/proc/stat, minus the CPU time of the benchmark's own process groups (from /proc/<pid>/stat)
and of its reaped children (wrk, via ``getrusage``), gives the share of the machine that
something else took; ``proxy_overhead.py`` reports it per measurement.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
CPUS = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float
    ours_s: float
    children_s: float


def _busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system steal: irq/softirq (loopback TCP) may belong to us, idle/iowait is idle,
    # and guest time is already in user/nice.
    return (fields[0] + fields[1] + fields[2] + fields[7]) / TICKS


def group_cpu_s(pgids: set[int]) -> float:
    """utime+stime (seconds) of every live process in the process groups ``pgids``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) in pgids:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot(pgids: set[int]) -> CpuSnapshot:
    return CpuSnapshot(_busy_s(), group_cpu_s(pgids), _children_s())


def foreign_share(before: CpuSnapshot, after: CpuSnapshot, wall_s: float) -> float:
    """Fraction (0-1) of all CPUs used by other processes between the two snapshots."""
    if wall_s <= 0:
        return 0.0
    ours = (after.ours_s - before.ours_s) + (after.children_s - before.children_s)
    foreign = (after.busy_s - before.busy_s) - ours
    return max(0.0, foreign / (wall_s * CPUS))
