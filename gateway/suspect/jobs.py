"""Suspect runs as background jobs of one gateway process (the admin endpoint's).

At most ``max_running`` at once (a run holds HTTP connections to the suspect and CPU for
scoring) and each is cut off after ``deadline_s``. Finished jobs are kept in memory
(``max_kept``, oldest dropped first); the durable copy of each report is its audit entry, so a
job started on another replica, or before a restart, is still readable from the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.suspect.client import SuspectUnavailable
from gateway.suspect.selection import SelectionError
from gateway.suspect.target import TargetRefused

log = logging.getLogger(__name__)


@dataclass
class Job:
    """``status``: "running", "done" or "failed"; ``report`` once done; ``error`` (a fixed
    sentence, never an exception's text) once failed."""

    id: str
    status: str = "running"
    report: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class TooManyJobs(RuntimeError):
    pass


class SuspectJobs:
    def __init__(self, max_running: int = 2, max_kept: int = 100,
                 deadline_s: float = 3600.0) -> None:
        self.max_running, self.max_kept, self.deadline_s = max_running, max_kept, deadline_s
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def running(self) -> int:
        return sum(j.status == "running" for j in self._jobs.values())

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def new_id(self) -> str:
        return "sus_" + secrets.token_hex(12)

    def start(self, job_id: str, work: Callable[[], Awaitable[dict[str, Any]]],
              on_done: Callable[[Job], Awaitable[None]]) -> Job:
        """Run ``work`` in the background; ``on_done`` gets the finished (or failed) job.
        Raises :class:`TooManyJobs` when ``max_running`` are running."""
        if self.running() >= self.max_running:
            raise TooManyJobs
        job = Job(job_id)
        self._jobs[job_id] = job
        while len(self._jobs) > self.max_kept:
            oldest = next(iter(self._jobs))
            if self._jobs[oldest].status == "running":
                break
            del self._jobs[oldest]

        async def _record() -> None:
            try:
                await on_done(job)
            except Exception as exc:
                log.error("suspect job %s: recording the result failed: %s", job_id,
                          type(exc).__name__)

        async def run() -> None:
            try:
                job.report = await asyncio.wait_for(work(), self.deadline_s)
                job.status = "done"
            except asyncio.CancelledError:  # the gateway is stopping (close)
                job.status, job.error = "failed", "the gateway stopped during the run"
                await _record()
                raise
            except TimeoutError:
                job.status, job.error = "failed", "the run exceeded its time limit"
            except (TargetRefused, SuspectUnavailable, SelectionError) as exc:
                job.status, job.error = "failed", str(exc)  # our own sentences, no reply text
            except Exception as exc:  # a fixed sentence; logged by type only
                job.status, job.error = "failed", "the run failed"
                log.warning("suspect job %s failed: %s", job_id, type(exc).__name__)
            await _record()

        job.task = asyncio.create_task(run())
        return job

    async def close(self) -> None:
        """Cancel the running jobs and wait until each has recorded how it ended ("the gateway
        stopped during the run"), so the audit log shows no run without an end."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
