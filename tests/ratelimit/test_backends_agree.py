"""The Redis (Lua) and in-process backends make identical decisions on any sequence of
admissions, settlements and clock steps."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ratelimit.backend import AdmitRequest, InProcessBackend
from gateway.ratelimit.redis_backend import RedisBackend
from gateway.settings import TierLimits

T0 = 1_800_000_000_000_000
LIMITS = TierLimits(requests_per_minute=7, tokens_per_minute=1_000, tokens_per_day=5_000,
                    max_concurrent=3)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 1)),  # which account
        st.tuples(st.just("settle"), st.integers(0, 10), st.integers(0, 1_500)),
        st.tuples(st.just("tick"),
                  st.one_of(st.integers(0, 2_000_000), st.integers(0, 90_000_000))),
    ),
    min_size=1, max_size=40,
)
costs = st.one_of(st.integers(0, 120), st.integers(0, 1_200))


@settings(
    max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations, cost_seed=st.lists(costs, min_size=40, max_size=40))
async def test_identical_decisions(redis, ops, cost_seed) -> None:  # type: ignore[no-untyped-def]
    redis_backend = RedisBackend(redis, prefix=f"prop:{uuid.uuid4().hex[:8]}")
    memory = InProcessBackend()
    now = T0
    admitted: list[tuple[str, str, int]] = []
    for step, op in enumerate(ops):
        if op[0] == "tick":
            now += op[1]
        elif op[0] == "admit":
            account = f"acct{op[1]}"
            request = AdmitRequest(
                account, LIMITS, cost_seed[step], f"slot{step}", 30_000_000, now_us=now)
            a = await redis_backend.admit(request)
            b = await memory.admit(request)
            assert a == b
            if a.allowed:
                admitted.append((account, f"slot{step}", cost_seed[step]))
        elif admitted:
            account, slot, reserved = admitted.pop(op[1] % len(admitted))
            for backend in (redis_backend, memory):
                await backend.settle(account, LIMITS, slot, reserved, op[2], now_us=now)
