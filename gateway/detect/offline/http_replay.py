"""Replay simulated sessions over HTTP through a running gateway with the official ``openai`` SDK.

Time is compressed (requests are sent back to back, or ``pace_s`` apart): the gateway timestamps
requests itself, so timing features see replay time, not simulated time. Errors (e.g. 429 from
the rate limiter, 400 from the request policy) are counted, not raised: they are part of what the
detector sees.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from gateway.detect.offline.simulate import Session, SimRequest


def _kwargs(req: SimRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "sim", "messages": [{"role": "user", "content": req.prompt}]}
    if req.max_tokens is not None:
        out["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.logprobs:
        out["logprobs"] = True
        if req.top_logprobs:
            out["top_logprobs"] = req.top_logprobs
    if req.logit_bias:
        out["logit_bias"] = req.logit_bias
    if req.n > 1:
        out["n"] = req.n
    return out


def replay(session: Session, base_url: str, api_key: str, *, limit: int | None = None,
           pace_s: float = 0.0, client: Any = None,
           lengths: MutableMapping[str, int] | None = None) -> Counter[str]:
    """Send the session's requests (at most ``limit``); returns outcome counts by kind. With
    ``lengths`` (an echo upstream's script, :func:`gateway.modelserver.echo.create_echo_app`)
    each reply is scripted to the simulated reply's length before its request is sent."""
    import openai

    client = client or openai.OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key,
                                     max_retries=0, timeout=30)
    outcomes: Counter[str] = Counter()
    for req in session.requests[:limit]:
        if lengths is not None:
            lengths[req.prompt] = max(1, req.completion_tokens)
        try:
            if req.stream:
                for _ in client.chat.completions.create(stream=True, **_kwargs(req)):
                    pass
            else:
                client.chat.completions.create(**_kwargs(req))
            outcomes["ok"] += 1
        except openai.APIStatusError as exc:
            outcomes[f"http_{exc.status_code}"] += 1
        if pace_s:
            time.sleep(pace_s)
    return outcomes
