"""Model servers check the gateway's signature against the raw request they received, and share
their memory of used signatures through Redis: a captured request cannot be replayed on any of
them, nor its signature reused for another request; without that memory they refuse (503)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.modelserver.replay import RedisNonces
from gateway.modelserver.server import create_model_server_app
from gateway.redis_client import RedisClient, connect
from gateway.upstream_identity.signature import (
    CLOCK_SKEW_S,
    ReplayCacheUnavailable,
    VerificationError,
    Verifier,
    sign,
)
from tests.modelserver.conftest import SIGNING, signed, toy_config
from tests.support.servers import free_port, serve_in_thread

REDIS_URL = "redis://127.0.0.1:6379/0"
PAYLOAD = json.dumps({"model": "m", "prompt": "x", "max_tokens": 2}).encode()


@pytest.fixture(scope="module")
def two_servers(toy_model_dir: Path) -> Iterator[tuple[str, str]]:
    """Two model-server processes' worth of state (apps) behind one shared Redis."""
    config = toy_config(toy_model_dir, redis_url=REDIS_URL)
    with serve_in_thread(create_model_server_app(config)) as first, \
            serve_in_thread(create_model_server_app(config)) as second:
        yield first, second


def send(url: str, target: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url + target, content=body, timeout=30,
                      headers={**headers, "content-type": "application/json"})


def refusal(reply: httpx.Response) -> tuple[int, str]:
    error = reply.json()["error"]
    return reply.status_code, f"{error['code']}: {error['message']}"


def test_a_captured_request_replayed_on_another_model_server_is_refused(
        two_servers: tuple[str, str]) -> None:
    first, second = two_servers
    headers = signed("POST", "/v1/completions", PAYLOAD)
    assert send(first, "/v1/completions", PAYLOAD, headers).status_code == 200
    status, why = refusal(send(second, "/v1/completions", PAYLOAD, headers))
    assert status == 401 and why.startswith("unsigned_request") and "already used" in why


@pytest.mark.parametrize(("target", "body"), [
    ("/v1/chat/completions", json.dumps({"model": "m", "max_tokens": 2, "messages": [
        {"role": "user", "content": "x"}]}).encode()),
    ("/v1/completions?stream=true", PAYLOAD),
    ("/v1/completions", PAYLOAD.replace(b'"max_tokens": 2', b'"max_tokens": 2000')),
])
def test_a_signature_is_refused_for_any_other_path_query_or_body(
        two_servers: tuple[str, str], target: str, body: bytes) -> None:
    first, _ = two_servers
    headers = signed("POST", "/v1/completions", PAYLOAD)
    status, why = refusal(send(first, target, body, headers))
    assert status == 401 and "invalid gateway signature" in why
    assert send(first, "/v1/completions", PAYLOAD, headers).status_code == 200


def test_a_signed_query_string_is_part_of_what_is_verified(
        two_servers: tuple[str, str]) -> None:
    first, _ = two_servers
    headers = signed("POST", "/v1/completions?tag=a%2Fb", PAYLOAD)
    assert send(first, "/v1/completions?tag=a%2Fb", PAYLOAD, headers).status_code == 200


def test_without_its_replay_memory_a_model_server_refuses_signed_requests(
        toy_model_dir: Path) -> None:
    config = toy_config(toy_model_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with serve_in_thread(create_model_server_app(config)) as url:
        reply = send(url, "/v1/completions", PAYLOAD, signed("POST", "/v1/completions", PAYLOAD))
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "replay_cache_unavailable"


@pytest.fixture(params=["single", "cluster"])
def nonce_url(request: pytest.FixtureRequest) -> str:
    """The shared nonce memory: one Redis, and a real 3-primary Redis Cluster."""
    return REDIS_URL if request.param == "single" else request.getfixturevalue("redis_cluster_url")


@pytest.fixture
async def redis(nonce_url: str) -> AsyncIterator[RedisClient]:
    client = connect(nonce_url)
    await client.ping()  # fail, never skip, when Redis is down
    yield client
    await client.aclose()


@pytest.fixture
async def shared(nonce_url: str) -> AsyncIterator[tuple[Verifier, Verifier, str]]:
    """Two verifiers, as in two model-server processes, each with its own Redis connection."""
    prefix = f"test:nonce:{uuid.uuid4().hex[:8]}:"
    stores = [RedisNonces(nonce_url, prefix=prefix) for _ in range(2)]
    yield Verifier(SIGNING, 60, stores[0]), Verifier(SIGNING, 60, stores[1]), prefix
    for store in stores:
        await store.aclose()


async def test_verifiers_sharing_redis_admit_a_signature_once_between_them(
        shared: tuple[Verifier, Verifier, str]) -> None:
    one, other, _ = shared
    headers = signed("POST", "/v1/completions", PAYLOAD)
    assert await one.verify(headers, "POST", "/v1/completions", PAYLOAD) == "acct-1"
    with pytest.raises(VerificationError, match="already used"):
        await other.verify(headers, "POST", "/v1/completions", PAYLOAD)


async def test_redis_remembers_a_nonce_for_as_long_as_its_signature_could_be_accepted(
        shared: tuple[Verifier, Verifier, str], redis: RedisClient) -> None:
    one, _, prefix = shared
    now = time.time()
    headers = dict(sign(SIGNING, "acct-1", "aged-nonce", "POST", "/v1/models",
                                        b"", now=now - 20))
    await one.verify(headers, "POST", "/v1/models", b"", now=now)
    remaining_s = await redis.pttl(prefix + "aged-nonce") / 1000
    assert 39 <= remaining_s <= 40 + CLOCK_SKEW_S  # 60 s of validity, 20 already spent


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_an_unreachable_redis_fails_closed(scheme: str) -> None:
    store = RedisNonces(f"{scheme}://127.0.0.1:{free_port()}/0")
    verifier = Verifier(SIGNING, 60, store)
    try:
        with pytest.raises(ReplayCacheUnavailable):
            await verifier.verify(signed("POST", "/v1/completions", PAYLOAD), "POST",
                                  "/v1/completions", PAYLOAD)
    finally:
        await store.aclose()
