"""ProxyApp, the hot path, alone: fakes at its seams (key loader, limiter, caps, shaper,
signer, record and detector sinks), the real pooled client against an in-process upstream.

What it specifies is the order of the path (auth → status → body → caps → limit → upstream →
records) and who hears what: what reaches the upstream, what the limiter is charged, what is
recorded, and that a request refused early goes no further.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway.auth.cache import KeyCache
from gateway.auth.lookup import auth_unavailable
from gateway.auth.principal import Principal
from gateway.domain.keys import hash_key
from gateway.domain.limits import default_tiers
from gateway.errors import GatewayError
from gateway.logprobs.caps import refused
from gateway.logprobs.shaping import IdentityShaper
from gateway.metrics import Metrics
from gateway.proxy.handler import ProxyApp
from gateway.proxy.upstream import UpstreamClient
from gateway.ratelimit.limiter import Admission
from gateway.records import RequestRecord
from gateway.settings import Settings
from gateway.upstream_identity.xargs_tag import ACCOUNT

API_KEY = "sk-gw-" + "k" * 40
BLOCKED_KEY = "sk-gw-" + "b" * 40
UNVERIFIABLE_KEY = "sk-gw-" + "u" * 40
COHORT_KEY = "sk-gw-" + "c" * 40  # an account of a flagged campaign
USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello"}],
                        "max_tokens": 20}


# --- fakes for the seams ---------------------------------------------------------------------


@dataclass
class Upstream:
    """An OpenAI-compatible upstream that answers every chat request and keeps what it got."""

    seen: list[web.Request] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        self.bodies.append(await request.json())
        reply = {"id": "c1", "object": "chat.completion", "usage": USAGE,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
        return web.json_response(reply)


@dataclass
class Limiter:
    """Admits (or refuses) and remembers every admission and settlement."""

    refuse: GatewayError | None = None
    admitted: list[tuple[str, int]] = field(default_factory=list)
    settled: list[tuple[str, int | None]] = field(default_factory=list)

    async def admit(self, account_id: str, limits: Any, estimated_tokens: int) -> Admission:
        self.admitted.append((account_id, estimated_tokens))
        if self.refuse is not None:
            return Admission(allowed=False, error=self.refuse)
        return Admission(allowed=True, reserved_tokens=estimated_tokens)

    async def settle(self, account_id: str, admission: Admission, used_tokens: int | None) -> None:
        self.settled.append((account_id, used_tokens))


@dataclass
class Caps:
    """Refuses ``logit_bias`` when ``strict``; remembers what it was asked about."""

    strict: bool = False
    checked: list[tuple[str, str]] = field(default_factory=list)

    def check(self, principal: Principal, route: str, payload: dict[str, Any]) -> None:
        self.checked.append((principal.account_id, route))
        if self.strict and "logit_bias" in payload:
            raise refused("logit_bias", "Not on this tier.")


@dataclass
class Signer:
    def headers(
        self, account_id: str, request_id: str, method: str, path: str, body: bytes
    ) -> list[tuple[str, str]]:
        return [("x-gateway-account", account_id)]


@dataclass
class Sinks:
    """The request-record writer and the detector, as the proxy sees them."""

    records: list[RequestRecord] = field(default_factory=list)
    observed: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)

    def observe(self, record: RequestRecord, prompt: str) -> None:
        self.observed.append((record.request_id, prompt))


@dataclass
class Proxy:
    client: httpx.AsyncClient
    upstream: Upstream
    limiter: Limiter
    caps: Caps
    sinks: Sinks
    metrics: Metrics

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    async def chat(self, body: dict[str, Any], key: str = API_KEY) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {key}"})


def principal(account_id: str, status: str = "active", cohort: str | None = None) -> Principal:
    return Principal(key_id=f"key_{account_id}", account_id=account_id, status=status,
                     tier="standard", limits=default_tiers()["standard"], cohort=cohort)


@pytest.fixture
async def upstream_url() -> AsyncIterator[tuple[str, Upstream]]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1", upstream
    await runner.cleanup()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize ``settings_overrides`` to change them)."""
    return {}


@pytest.fixture
async def proxy(upstream_url: tuple[str, Upstream], metrics: Metrics,
                settings_overrides: dict[str, Any]) -> AsyncIterator[Proxy]:
    url, upstream = upstream_url
    settings = Settings(mode="local", upstream_url=url, upstream_api_key="upstream-secret",
                        **settings_overrides)
    known = {hash_key(API_KEY, settings.key_hash_key()): principal("acct_1"),
             hash_key(BLOCKED_KEY, settings.key_hash_key()): principal("acct_2", "suspended"),
             hash_key(COHORT_KEY, settings.key_hash_key()): principal(
                 "acct_3", cohort="cohort:flag_1")}

    async def load(key_hash: str) -> Principal | None:
        if key_hash == hash_key(UNVERIFIABLE_KEY, settings.key_hash_key()):
            raise auth_unavailable()  # as the database loader does while PostgreSQL is down
        return known.get(key_hash)

    client = UpstreamClient(url, connect_timeout_s=5, read_timeout_s=30, max_connections=4,
                            metrics=metrics)
    await client.start()
    limiter, caps, sinks = Limiter(), Caps(), Sinks()
    app = ProxyApp(
        settings=settings, upstream=client, keys=KeyCache(load, ttl_s=60), limiter=limiter,
        records=sinks, detector=sinks, shaper=IdentityShaper(), caps=caps, signer=Signer(),
        metrics=metrics,
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield Proxy(http, upstream, limiter, caps, sinks, metrics)
    await client.stop()


# --- the path --------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [
    {}, {"upstream_kind": "vllm", "watermark_secret": "w" * 32}], ids=["reference", "vllm"])
async def test_a_campaign_account_is_watermarked_under_its_cohort_and_recorded_as_itself(
    proxy: Proxy, settings_overrides: dict[str, Any],
) -> None:
    """The upstream is told the cohort (whose key watermarks the answer); the request record,
    the limits and the detector still see the account."""
    response = await proxy.chat(CHAT, key=COHORT_KEY)
    assert response.status_code == 200
    [seen] = proxy.upstream.seen
    [body] = proxy.upstream.bodies
    if settings_overrides:
        assert body["vllm_xargs"][ACCOUNT] == "cohort:flag_1"
    else:
        assert seen.headers["x-gateway-account"] == "cohort:flag_1"
    [record] = proxy.sinks.records
    assert record.account_id == "acct_3"


@pytest.mark.parametrize("settings_overrides", [
    {}, {"upstream_kind": "vllm", "watermark_secret": "w" * 32}], ids=["reference", "vllm"])
@pytest.mark.parametrize(("key", "claimed", "served"), [
    (API_KEY, "cohort:flag_1", "acct_1"),  # an account that would hide in someone's cohort
    (COHORT_KEY, "acct_1", "cohort:flag_1"),  # a flagged member that would leave its cohort
])
async def test_a_client_cannot_choose_the_identity_its_answers_are_watermarked_under(
    proxy: Proxy, settings_overrides: dict[str, Any], key: str, claimed: str, served: str,
) -> None:
    """Whose key marks the text is the gateway's decision: the identity header a client sends
    is dropped, and ``vllm_xargs`` from a client are refused before they reach vLLM."""
    sent = await proxy.client.post(
        "/v1/chat/completions", json=CHAT,
        headers={"Authorization": f"Bearer {key}", "x-gateway-account": claimed})
    assert sent.status_code == 200
    xargs = await proxy.client.post(
        "/v1/chat/completions", json={**CHAT, "vllm_xargs": {ACCOUNT: claimed}},
        headers={"Authorization": f"Bearer {key}"})
    assert xargs.status_code == 400
    [seen] = proxy.upstream.seen
    [body] = proxy.upstream.bodies
    told = body["vllm_xargs"][ACCOUNT] if settings_overrides else seen.headers[
        "x-gateway-account"]
    assert told == served
    assert seen.headers.getall("x-gateway-account", []) in ([], [served])


async def test_a_chat_request_reaches_the_upstream_with_its_credential_and_signature(
    proxy: Proxy,
) -> None:
    response = await proxy.chat(CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    [seen] = proxy.upstream.seen
    assert seen.headers["Authorization"] == "Bearer upstream-secret"
    assert seen.headers["x-gateway-account"] == "acct_1"
    assert seen.headers["X-Forwarded-For"] == "203.0.113.9"
    assert proxy.upstream.bodies == [CHAT]
    assert response.headers["x-request-id"]


async def test_the_limiter_reserves_an_estimate_and_is_charged_the_reported_usage(
    proxy: Proxy,
) -> None:
    await proxy.chat(CHAT)
    [(account, estimate)] = proxy.limiter.admitted
    assert account == "acct_1" and estimate >= CHAT["max_tokens"]
    assert proxy.limiter.settled == [("acct_1", USAGE["total_tokens"])]
    assert proxy.caps.checked == [("acct_1", "/v1/chat/completions")]
    assert proxy.sample("gateway_tokens_total", kind="completion",
                        tier="standard") == USAGE["completion_tokens"]
    assert proxy.sample("gateway_requests_total", route="/v1/chat/completions",
                        status_class="2xx") == 1
    assert proxy.sample("gateway_requests_in_flight") == 0


async def test_every_authenticated_request_is_recorded_and_shown_to_the_detector(
    proxy: Proxy,
) -> None:
    response = await proxy.chat({**CHAT, "temperature": 0.5, "logprobs": True,
                                 "top_logprobs": 3})
    [record] = proxy.sinks.records
    assert record.request_id == response.headers["x-request-id"]
    assert (record.account_id, record.key_id, record.tier) == ("acct_1", "key_acct_1", "standard")
    assert (record.route, record.method, record.status_code) == (
        "/v1/chat/completions", "POST", 200)
    assert (record.model, record.max_tokens, record.temperature) == ("m", 20, 0.5)
    assert (record.logprobs, record.top_logprobs, record.stream) == (True, 3, False)
    assert (record.prompt_tokens, record.completion_tokens) == (7, 5)
    assert record.client_addr == "203.0.113.9"
    assert record.prompt_hash is not None and record.prompt_text is None  # default: hash
    assert proxy.sinks.observed == [(record.request_id, "hello")]


async def test_an_unknown_key_is_refused_before_anything_else_and_not_recorded(
    proxy: Proxy,
) -> None:
    response = await proxy.chat(CHAT, key="sk-gw-" + "x" * 40)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert proxy.upstream.seen == [] and proxy.limiter.admitted == []
    assert proxy.sinks.records == []
    assert proxy.sample("gateway_auth_failures_total", reason="invalid_key") == 1
    assert proxy.sample("gateway_requests_total", route="/v1/chat/completions",
                        status_class="4xx") == 1


async def test_a_key_that_cannot_be_verified_is_refused_unrecorded_and_counted(
    proxy: Proxy,
) -> None:
    """The account database is down and the key is not cached: 503 ``auth_unavailable``. It
    belongs to no account, so there is no request record; the refusal is counted instead."""
    response = await proxy.chat(CHAT, key=UNVERIFIABLE_KEY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"
    assert proxy.upstream.seen == [] and proxy.limiter.admitted == []
    assert proxy.sinks.records == []
    assert proxy.sample("gateway_auth_failures_total", reason="auth_unavailable") == 1


async def test_a_suspended_account_is_refused_and_recorded(proxy: Proxy) -> None:
    response = await proxy.chat(CHAT, key=BLOCKED_KEY)
    assert response.status_code == 403
    assert proxy.upstream.seen == [] and proxy.limiter.admitted == []
    assert [(r.account_id, r.status_code) for r in proxy.sinks.records] == [("acct_2", 403)]


async def test_a_caps_refusal_stops_the_request_before_the_limiter(proxy: Proxy) -> None:
    proxy.caps.strict = True
    response = await proxy.chat({**CHAT, "logit_bias": {"1": 5}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logit_bias"
    assert proxy.upstream.seen == [] and proxy.limiter.admitted == []
    assert [r.status_code for r in proxy.sinks.records] == [400]


async def test_a_limiter_refusal_stops_the_request_before_the_upstream(proxy: Proxy) -> None:
    proxy.limiter.refuse = GatewayError(429, "Slow down.", type="rate_limit_error",
                                        code="rate_limit_exceeded")
    response = await proxy.chat(CHAT)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert proxy.upstream.seen == []
    assert [r.status_code for r in proxy.sinks.records] == [429]


async def test_an_invalid_body_is_refused_naming_the_parameter(proxy: Proxy) -> None:
    response = await proxy.chat({**CHAT, "max_tokens": -1})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert proxy.upstream.seen == [] and proxy.caps.checked == []



# --- shaping only what carries logprobs ------------------------------------------------------


@dataclass
class CountingShaper:
    """An active shaper that changes nothing but counts the payloads it was given."""

    active: bool = True
    shaped: list[dict[str, Any]] = field(default_factory=list)

    def begin(self, account_id: str, route: str, request: dict[str, Any],
              prompt: str) -> CountingShaper:
        return self

    def shape(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.shaped.append(payload)
        return payload


async def test_an_answer_without_logprobs_is_relayed_as_the_upstream_encoded_it(
    upstream_url: tuple[str, Upstream], metrics: Metrics,
) -> None:
    url, _ = upstream_url
    settings = Settings(mode="local", upstream_url=url)
    known = {hash_key(API_KEY, settings.key_hash_key()): principal("acct_1")}

    async def load(key_hash: str) -> Principal | None:
        return known.get(key_hash)

    client = UpstreamClient(url, connect_timeout_s=5, read_timeout_s=30, max_connections=4,
                            metrics=metrics)
    await client.start()
    shaper, sinks = CountingShaper(), Sinks()
    app = ProxyApp(
        settings=settings, upstream=client, keys=KeyCache(load, ttl_s=60), limiter=Limiter(),
        records=sinks, detector=sinks, shaper=shaper, caps=Caps(), signer=Signer(),
        metrics=metrics,
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            response = await http.post("/v1/chat/completions", json=CHAT,
                                       headers={"Authorization": f"Bearer {API_KEY}"})
    finally:
        await client.stop()

    assert response.status_code == 200
    assert shaper.shaped == []  # nothing to perturb: not decoded for the shaper, not re-encoded
    assert b'"object": "chat.completion"' in response.content  # aiohttp's spacing, kept
    assert response.json()["usage"] == USAGE
    assert sinks.records[0].completion_tokens == USAGE["completion_tokens"]


# --- hostile input: what is reserved bounds what is generated; addresses a client cannot forge --


async def test_a_request_naming_no_output_cap_gets_the_one_it_was_reserved(
    proxy: Proxy,
) -> None:
    """Without it the upstream generates up to the model's context while the limiter reserved
    a guess: a throwaway account's debt is never paid."""
    uncapped = {k: v for k, v in CHAT.items() if k != "max_tokens"}
    assert (await proxy.chat(uncapped)).status_code == 200
    assert (await proxy.chat(CHAT)).status_code == 200
    default = Settings(mode="local").default_max_tokens
    assert [body.get("max_tokens") for body in proxy.upstream.bodies] == [default, 20]
    assert proxy.limiter.admitted[0][1] >= default > proxy.limiter.admitted[1][1]


@pytest.mark.parametrize(("settings_overrides", "forwarded", "recorded"), [
    ({}, "6.6.6.6", "203.0.113.9"),  # not trusted: the socket peer
    ({"trust_forwarded_for": True}, "6.6.6.6, 198.51.100.7", "198.51.100.7"),
    ({"trust_forwarded_for": True, "trusted_proxy_hops": 2}, "6.6.6.6, 198.51.100.7, 10.0.0.1",
     "198.51.100.7"),
    ({"trust_forwarded_for": True, "trusted_proxy_hops": 2}, "6.6.6.6", "203.0.113.9"),
    ({"trust_forwarded_for": True}, "6.6.6.6, not-an-ip", "203.0.113.9"),
])
async def test_the_client_address_is_the_one_a_trusted_proxy_appended(
    proxy: Proxy, forwarded: str, recorded: str,
) -> None:
    """A client writes whatever it likes at the left of ``X-Forwarded-For``; a proxy appends
    the address it saw on the right. The leftmost entry let one client pose as many networks
    (campaign clustering reads the network)."""
    response = await proxy.client.post("/v1/chat/completions", json=CHAT, headers={
        "Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": forwarded})
    assert response.status_code == 200
    assert [r.client_addr for r in proxy.sinks.records] == [recorded]
