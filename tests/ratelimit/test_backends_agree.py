"""The Redis (Lua) and in-process backends make identical decisions on any sequence of
admissions, settlements and clock steps."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.domain.limits import TierLimits
from gateway.metrics import Metrics
from gateway.ratelimit.backend import AdmitRequest, InProcessBackend
from gateway.ratelimit.redis_backend import RedisBackend

T0 = 1_800_000_000_000_000
limit_sets = st.builds(
    TierLimits,
    requests_per_minute=st.integers(1, 10), tokens_per_minute=st.integers(50, 2_000),
    tokens_per_day=st.integers(50, 5_000), max_concurrent=st.integers(1, 3),
)

admit = st.tuples(st.just("admit"), st.integers(0, 1))  # which account
operations = st.lists(
    st.one_of(
        admit, admit, admit,
        st.tuples(st.just("settle"), st.integers(0, 10), st.integers(0, 1_500)),
        st.tuples(st.just("tick"),
                  st.one_of(st.integers(0, 2_000_000), st.integers(0, 90_000_000))),
    ),
    min_size=5, max_size=40,
)
costs = st.one_of(st.integers(0, 120), st.integers(0, 1_200))


@settings(
    max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations, cost_seed=st.lists(costs, min_size=40, max_size=40), limits=limit_sets)
async def test_identical_decisions(redis, ops, cost_seed, limits) -> None:  # type: ignore[no-untyped-def]
    redis_backend = RedisBackend(redis, metrics=Metrics(CollectorRegistry()),
                                 prefix=f"prop:{uuid.uuid4().hex[:8]}")
    memory = InProcessBackend()
    now = T0
    admitted: list[tuple[str, str, int]] = []
    for step, op in enumerate(ops):
        if op[0] == "tick":
            now += op[1]
        elif op[0] == "admit":
            account = f"acct{op[1]}"
            request = AdmitRequest(
                account, limits, cost_seed[step], f"slot{step}", 30_000_000, now_us=now)
            a = await redis_backend.admit(request)
            b = await memory.admit(request)
            assert a == b
            if a.allowed:
                admitted.append((account, f"slot{step}", cost_seed[step]))
        elif admitted:
            account, slot, reserved = admitted.pop(op[1] % len(admitted))
            for backend in (redis_backend, memory):
                await backend.settle(account, limits, slot, reserved, op[2], now_us=now)
