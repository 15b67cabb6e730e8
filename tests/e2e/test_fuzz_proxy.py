"""A fuzzer that stays: hostile OpenAI requests through the real gateway onto PostgreSQL and
Redis, with every invariant the gateway promises checked after each example.

Each example goes twice, with the same bytes: once from an account in good standing and once
from an account deep in token debt. After each:
- the response is a success or an OpenAI-shaped error, and never a 5xx the gateway made up
  (502/504 upstream errors are the only 5xx allowed);
- the debtor is never admitted: nothing it sends credits its limits;
and at the end, every authenticated request has exactly one record in PostgreSQL.

``GATEWAY_FUZZ_EXAMPLES`` sets the number of examples (default 300 in CI, ~10 s; 15,000 took
5 min here).
"""

from __future__ import annotations

import asyncio
import json
import os
import string
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.limits import TierLimits, default_tiers
from tests.e2e.conftest import Stack, StackFactory
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.servers import serve_in_thread
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "300"))
REDIS_URL = "redis://127.0.0.1:6379/0"
DEEP = "\u2063DEEP\u2063"  # replaced in the encoded body by a deeply nested array

EXTREME_INTS = st.sampled_from([
    0, -1, 1, 20, 21, 128, 129, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    -(2**63) - 1, -(10**15), 10**30,
])
HOSTILE_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "m\x00", "\ud800", "a\udfffb", "\u202e", "x" * 300, DEEP]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), EXTREME_INTS,
                    st.floats(allow_nan=False, allow_infinity=False), HOSTILE_TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
PART = st.fixed_dictionaries({"type": st.just("text"), "text": HOSTILE_TEXT})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"])},
    optional={"content": st.one_of(HOSTILE_TEXT, st.lists(PART, max_size=3), VALUES)},
)
FIELDS = {
    "model": st.one_of(st.just("m"), st.just("usage-5"), HOSTILE_TEXT, VALUES),
    "messages": st.one_of(st.lists(MESSAGE, min_size=1, max_size=3), VALUES),
    "prompt": st.one_of(HOSTILE_TEXT, st.lists(st.integers(), max_size=4), VALUES),
    "input": st.one_of(HOSTILE_TEXT, st.lists(MESSAGE, max_size=2), VALUES),
    "instructions": st.one_of(HOSTILE_TEXT, VALUES),
    **{name: st.one_of(EXTREME_INTS, st.integers(-5, 30), VALUES) for name in (
        "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "top_logprobs",
        "logprobs", "seed", "best_of", "dimensions")},
    **{name: st.one_of(st.floats(-3, 3), EXTREME_INTS, VALUES) for name in (
        "temperature", "top_p", "presence_penalty", "frequency_penalty")},
    "stream": st.one_of(st.booleans(), VALUES),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": VALUES}), VALUES),
    "logit_bias": st.one_of(st.dictionaries(st.one_of(st.text(max_size=12),
                                                      st.integers(0, 2**40).map(str)),
                                            st.one_of(st.floats(-200, 200), VALUES),
                                            max_size=6), VALUES),
    "stop": st.one_of(HOSTILE_TEXT, st.lists(HOSTILE_TEXT, max_size=6), VALUES),
    "prompt_logprobs": VALUES, "vllm_xargs": VALUES, "metadata": VALUES, "tools": VALUES,
}
BASES = {
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "m", "prompt": "hi"},
    "/v1/responses": {"model": "m", "input": "hi"},
    "/v1/embeddings": {"model": "m", "input": "hi"},
}
# A valid body for the route with up to three fields replaced by hostile values: most examples
# get past JSON parsing, many past validation, some all the way to the upstream and back.
OVERRIDES = st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: FIELDS[name] for name in names}))
ROUTES = st.sampled_from([
    ("POST", "/v1/chat/completions")] * 4 + [("POST", "/v1/completions")] * 2 + [
    ("POST", "/v1/responses")] * 2 + [
    ("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("POST", "/v1/moderations"),
    ("DELETE", "/v1/models/m"), ("PUT", "/v1/chat/completions"), ("GET", "/v1/chat/completions"),
])
HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " ,;=./:-_",
                      max_size=40).map(str.strip)
HEADERS = st.fixed_dictionaries({}, optional={
    "connection": st.lists(st.sampled_from([
        "keep-alive", "content-type", "x-gateway-account", "authorization", "x-request-id",
        "x-hop", "te", "close"]), max_size=3).map(", ".join),
    "x-hop": HEADER_TEXT, "x-forwarded-for": HEADER_TEXT, "forwarded": HEADER_TEXT,
    "x-gateway-account": HEADER_TEXT, "x-gateway-signature": HEADER_TEXT,
    "x-request-id": HEADER_TEXT, "te": st.sampled_from(["trailers", "gzip"]),
    "content-type": st.sampled_from(["application/json", "text/plain", "", "multipart/form-data"]),
})


def encode(body: dict[str, Any], depth: int) -> bytes:
    """JSON with lone surrogates escaped (as an attacker can send them) and the DEEP marker
    replaced by ``depth`` nested arrays."""
    text = json.dumps(body, ensure_ascii=True)
    marker = json.dumps(DEEP, ensure_ascii=True)
    return text.replace(marker, "[" * depth + "1" + "]" * depth).encode()


def _bodies(route: tuple[str, str]) -> st.SearchStrategy[bytes]:
    base = BASES.get(route[1], {})
    encoded = st.tuples(OVERRIDES.map(lambda extra: {**base, **extra}),
                        st.sampled_from([3, 3, 3, 100, 300, 600, 5000])).map(lambda bd: encode(*bd))
    return st.one_of(encoded, encoded, encoded, st.just(b""), st.binary(max_size=64))


REQUESTS = ROUTES.flatmap(lambda route: st.tuples(st.just(route), _bodies(route)))


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[str, ScriptedUpstream]]:
    upstream = ScriptedUpstream()
    with serve_in_thread(upstream) as url:
        yield url + "/v1", upstream


@pytest.fixture(scope="module")
def fuzzed(make_stack: StackFactory, scripted: tuple[str, ScriptedUpstream]) -> Iterator[Stack]:
    tiers = default_tiers()
    tiers["debtor"] = TierLimits(requests_per_minute=10**6, tokens_per_minute=10**6,
                                 tokens_per_day=1_000, max_concurrent=1_000)
    tiers["roomy"] = TierLimits(requests_per_minute=10**6, tokens_per_minute=10**9,
                                tokens_per_day=10**12, max_concurrent=1_000)
    with make_stack(upstream_url=scripted[0], redis_url=REDIS_URL, tiers=tiers,
                    ratelimit_redis_timeout_s=1.0, prompt_storage="full") as stack:
        yield stack


class Ledger:
    """The request ids every authenticated request was answered with, per account."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {}

    def add(self, account_id: str, response: httpx.Response) -> None:
        self.ids.setdefault(account_id, []).append(response.headers["x-request-id"])


def _in_debt(stack: Stack, key: str) -> None:
    response = httpx.post(stack.base + "/v1/chat/completions", timeout=10,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "usage-10000000", "max_tokens": 100,
                                "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200


def _assert_openai_shaped(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str)


def _stored(database_url: str, account_ids: list[str]) -> list[tuple[str, str]]:
    async def query() -> list[tuple[str, str]]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT account_id, request_id FROM request_records "
                                    "WHERE account_id = ANY($1::text[])", account_ids)
        finally:
            await conn.close()
        return [(r["account_id"], r["request_id"]) for r in rows]

    return asyncio.run(query())


def test_hostile_requests_never_bend_a_limit_lose_a_record_or_break_the_error_shape(
    fuzzed: Stack,
) -> None:
    good_id, good_key = fuzzed.new_account(tier="roomy")
    debtor_id, debtor_key = fuzzed.new_account(tier="debtor")
    _in_debt(fuzzed, debtor_key)
    ledger = Ledger()
    http = httpx.Client(base_url=fuzzed.base, timeout=30)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=REQUESTS, headers=HEADERS)
    def example(request: tuple[tuple[str, str], bytes], headers: dict[str, str]) -> None:
        (method, path), raw = request
        for account_id, key in ((good_id, good_key), (debtor_id, debtor_key)):
            response = http.request(method, path, content=raw,
                                    headers={**headers, "Authorization": f"Bearer {key}"})
            ledger.add(account_id, response)
            _assert_openai_shaped(response)
            status = response.status_code
            if status >= 500:
                assert status in (502, 504), (status, response.text)
                assert response.json()["error"]["type"] == "upstream_error"
            if account_id == debtor_id:
                assert status >= 400, "an account deep in debt was admitted"

    try:
        example()
    finally:
        http.close()
    expected = {(a, rid) for a, ids in ledger.ids.items() for rid in ids}
    assert len(expected) == sum(len(ids) for ids in ledger.ids.values())  # ids are unique
    url = fuzzed.app.runtime.settings.database_url
    stored = wait_until(lambda: (rows := _stored(url, [good_id, debtor_id]))
                        and len(rows) >= len(expected) + 1 and rows, timeout=30)
    stored_set = set(stored)
    assert len(stored) == len(stored_set)  # exactly one record per request
    assert expected <= stored_set
    assert len(stored_set - expected) == 1  # the request that put the debtor in debt
