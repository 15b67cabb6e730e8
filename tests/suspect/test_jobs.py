"""Background suspect runs: a gateway that stops cancels its runs, and each still records how it
ended (the audit log never shows a run without an end)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.suspect.jobs import Job, SuspectJobs


async def test_stopping_cancels_running_jobs_and_records_their_end() -> None:
    jobs, recorded = SuspectJobs(), []

    async def forever() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    async def record(job: Job) -> None:
        recorded.append((job.id, job.status, job.error))

    job = jobs.start("sus_1", forever, record)
    await asyncio.sleep(0)  # the run has started
    await jobs.close()

    assert job.task is not None and job.task.cancelled()
    assert recorded == [("sus_1", "failed", "the gateway stopped during the run")]
    assert jobs.running() == 0


async def test_a_finished_job_is_recorded_once() -> None:
    jobs, recorded = SuspectJobs(), []

    async def quick() -> dict[str, Any]:
        return {"verdict": "not_attributed"}

    async def record(job: Job) -> None:
        recorded.append(job.status)

    job = jobs.start("sus_2", quick, record)
    assert job.task is not None
    await job.task
    await jobs.close()
    assert recorded == ["done"] and job.report == {"verdict": "not_attributed"}
