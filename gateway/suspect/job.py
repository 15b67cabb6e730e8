"""One suspect test from request to report, shared by ``gateway suspect`` and the admin
endpoint: check the target, derive the candidates' keys, sample and test, build the report."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.settings import Settings
from gateway.suspect.candidates import build_candidates
from gateway.suspect.client import HttpSampler, SamplingParams
from gateway.suspect.prompts import prompt_stream, stdlib_openings
from gateway.suspect.report import report_json
from gateway.suspect.runner import Plan, run_suspect
from gateway.suspect.target import Target, check_target
from gateway.watermark.service import watermark_config, watermark_secrets


@dataclass(frozen=True)
class SuspectRequest:
    """Everything a run needs from its caller. ``api_key`` is the suspect's (never ours)."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    endpoint: str = "completions"
    alpha: float = 1e-6
    max_queries: int = 1024
    queries_per_look: int = 64
    max_tokens: int = 256
    temperature: float = 1.0
    concurrency: int = 4
    seed: int = 0
    allow_http: bool = False
    allow_private_network: bool = False
    prompts: list[str] | None = None
    min_counts: tuple[int, ...] = (1, 4)


async def run_request(request: SuspectRequest, settings: Settings, account_ids: Sequence[str],
                      groups: Mapping[str, Sequence[str]],
                      meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report of one run (raises ``TargetRefused``, ``SuspectUnavailable`` or
    ``ValueError`` for a request that cannot run)."""
    if not account_ids:
        raise ValueError("no accounts to test")
    target = Target(request.base_url, request.model, request.api_key, request.endpoint,
                    request.allow_http, request.allow_private_network)
    await check_target(target)
    config = watermark_config(settings)
    candidates = build_candidates(account_ids, watermark_secrets(settings), groups)
    plan = Plan(request.alpha, request.max_queries, request.queries_per_look,
                request.min_counts)
    params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature,
                            concurrency=request.concurrency)
    chosen: Sequence[str] = (request.prompts if request.prompts
                             else await asyncio.to_thread(stdlib_openings, 24))
    prompts = prompt_stream(chosen, request.seed)
    async with HttpSampler(target, params) as sampler:
        result = await run_suspect(sampler, prompts, candidates, config, plan)
    return report_json(result, {
        "base_url": request.base_url, "model": request.model, "endpoint": request.endpoint,
        **dict(meta), "finished_at": datetime.now(UTC).isoformat(),
        "allow_http": request.allow_http,
        "allow_private_network": request.allow_private_network})
