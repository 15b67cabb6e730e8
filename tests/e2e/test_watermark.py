"""End to end: the reference model server behind the real gateway watermarks each account's
text, the admin API attributes it, and the logit-stealing defences hold (Carlini et al.)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

from bench.watermark.carlini_attack import attack, openai_query
from gateway.accounts.operations import AccountOperations
from gateway.detect.enforce import DETECTOR
from gateway.domain.cohorts import cohort_identity
from gateway.modelserver.server import create_model_server_app
from gateway.store import flags as flag_store
from gateway.store.db import create_engine, session_factory
from gateway.upstream_identity.signature import sign
from tests.e2e.conftest import ADMIN_TOKEN, WATERMARK_SECRET, Stack, StackFactory
from tests.modelserver.conftest import TOY_HIDDEN, make_toy_model, toy_config
from tests.support.servers import free_port, serve_in_thread, wait_healthy

SIGNING_SECRET = "upstream-signing-Vb7Nq2Lr8Tx4Kz1Pw6"
VOCAB = 256  # byte tokens; the end-of-text token is never biased
PROMPTS = TOY_HIDDEN + 16


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = make_toy_model(tmp_path_factory.mktemp("toy-model"))
    config = toy_config(model_dir, signing_secret=SIGNING_SECRET.encode(),
                        watermark_secret=WATERMARK_SECRET.encode())
    with serve_in_thread(create_model_server_app(config)) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def wm_stack(make_stack: StackFactory, model_server: str) -> Iterator[Stack]:
    with make_stack(upstream_url=model_server, upstream_signing_secret=SIGNING_SECRET) as stack:
        yield stack


def detect(base: str, **body: Any) -> dict[str, Any]:
    reply = httpx.post(base + "/admin/v1/watermark/detect", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def test_generations_through_the_gateway_are_attributed_to_their_account(
        wm_stack: Stack) -> None:
    account, key = wm_stack.new_account("harvester")
    wm_stack.new_account("bystander")
    reply = wm_stack.client(key).completions.create(
        model="m", prompt="The", max_tokens=250, temperature=1.0)
    text = reply.choices[0].text
    found = detect(wm_stack.base, text=text)
    assert found["account_id"] == account and found["watermarked"]
    assert found["p_value"] < 1e-6 and found["tokens_scored"] > 100
    assert detect(wm_stack.base, text="plain words written by a person, " * 8)[
        "account_id"] is None


async def _flag_campaign(database_url: str, accounts: list[str]) -> str:
    """What the detector's policy does when it flags a campaign: the flag, and its cohort."""
    engine = create_engine(database_url)
    try:
        async with AccountOperations(session_factory(engine)).begin(DETECTOR) as changes:
            flag = await flag_store.create_flag(
                changes.session, kind="campaign", account_ids=accounts, score=0.9,
                model_version="e2e", reasons=["accounts alike"], evidence={})
            await changes.join_cohort(accounts, cohort_identity(flag.id), reason="e2e")
        return flag.id
    finally:
        await engine.dispose()


def test_a_flagged_campaign_is_watermarked_as_one_cohort_until_it_is_dismissed(
        wm_stack: Stack) -> None:
    members = [wm_stack.new_account(f"sybil-{i}") for i in range(2)]
    flag_id = asyncio.run(_flag_campaign(wm_stack.app.runtime.settings.async_database_url,
                                         [a for a, _ in members]))
    (first, first_key), (_, second_key) = members

    def generate(key: str) -> str:
        reply = wm_stack.client(key).completions.create(
            model="m", prompt="The", max_tokens=250, temperature=1.0)
        return reply.choices[0].text

    ids = [a for a, _ in members]
    for key in (first_key, second_key):
        found = detect(wm_stack.base, text=generate(key))
        assert found["cohort"] == f"cohort:{flag_id}" and found["p_value"] < 1e-6
        assert found["account_id"] == ids[0] and found["account_ids"] == ids  # as its flag
    with wm_stack.admin() as admin:
        shown = admin.get(f"/admin/v1/accounts/{first}").json()["watermark_identity"]
        assert shown == f"cohort:{flag_id}"
        review = admin.post(f"/admin/v1/flags/{flag_id}/review", json={"decision": "dismiss"})
        assert review.status_code == 200, review.text
        assert admin.get(f"/admin/v1/accounts/{first}").json()["watermark_identity"] == first
    found = detect(wm_stack.base, text=generate(first_key))
    assert (found["account_id"], found["account_ids"], found["cohort"]) == (first, [first], None)


def test_policy_refusals_name_the_parameter(wm_stack: Stack) -> None:
    _, key = wm_stack.new_account("capped", tier="standard")
    sdk = wm_stack.client(key)
    with pytest.raises(BadRequestError) as caught:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                    logprobs=True, top_logprobs=20)
    assert caught.value.param == "top_logprobs"
    with pytest.raises(BadRequestError) as caught:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                    logprobs=True, logit_bias={"65": 5})
    assert caught.value.param == "logit_bias"


def test_returned_logprobs_are_noisy_the_same_on_repeats_and_in_streams(
        wm_stack: Stack) -> None:
    _, key = wm_stack.new_account("reader", tier="enterprise")
    sdk = wm_stack.client(key)
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "abc"}],
                           "max_tokens": 6, "logprobs": True, "top_logprobs": 5, "seed": 1}
    first = sdk.chat.completions.create(**ask).choices[0].logprobs.content
    again = sdk.chat.completions.create(**ask).choices[0].logprobs.content
    values = [[t.logprob for t in e.top_logprobs] for e in first]
    assert values == [[t.logprob for t in e.top_logprobs] for e in again]
    assert all(v == round(v, 2) and row == sorted(row, reverse=True)
               for row in values for v in row)
    streamed = [[t.logprob for t in e.top_logprobs]
                for chunk in sdk.chat.completions.create(**ask, stream=True)
                for choice in chunk.choices if choice.logprobs and choice.logprobs.content
                for e in choice.logprobs.content]
    assert streamed == values


def test_carlini_attack_recovers_the_hidden_size_directly_but_not_through_the_gateway(
        wm_stack: Stack, model_server: str) -> None:
    counter = itertools.count()

    def as_gateway(method: str, target: str, body: bytes) -> dict[str, str]:
        return dict(sign(SIGNING_SECRET.encode(), "attacker", f"carlini-{next(counter)}",
                         method, target, body))

    _, standard_key = wm_stack.new_account("thief", tier="standard")
    with pytest.raises(PermissionError, match="top_logprobs"):
        attack(openai_query(wm_stack.base + "/v1", standard_key), VOCAB, PROMPTS)
    with pytest.raises(PermissionError, match="logit_bias"):  # within the top-5 cap
        attack(openai_query(wm_stack.base + "/v1", standard_key), VOCAB, PROMPTS, top_k=5)

    _, enterprise_key = wm_stack.new_account("rich-thief", tier="enterprise")
    with ThreadPoolExecutor(2) as pool:  # both attacks at once: the server batches them
        direct_run = pool.submit(attack, openai_query(model_server, "unused", as_gateway),
                                 VOCAB, PROMPTS)
        through_run = pool.submit(attack, openai_query(wm_stack.base + "/v1", enterprise_key),
                                  VOCAB, PROMPTS)
        direct, through = direct_run.result(), through_run.result()
    assert direct.hidden_size == TOY_HIDDEN
    print(f"carlini: direct {direct.hidden_size} in {direct.queries} queries; through the "
          f"gateway {through.hidden_size} in {through.queries}")
    assert through.hidden_size != TOY_HIDDEN


def test_demo_generations_are_attributed_to_the_demo_account(tmp_path: Path) -> None:
    port = free_port()
    api_key = "sk-gw-demoWATERMARKdemo0123456789abcdefghijk"
    admin = "demo-admin-token-watermark"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--upstream", "reference",
         "--port", str(port), "--upstream-port",
         str(free_port()), "--api-key", api_key, "--admin-token", admin,
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
        sdk = OpenAI(base_url=base + "/v1", api_key=api_key, max_retries=0)
        reply = sdk.chat.completions.create(  # a harvester keeps every reply it gets
            model="tiny-docstrings", max_tokens=250, n=4, seed=5,
            messages=[{"role": "user", "content": "Return the"}])
        text = "\n".join(c.message.content or "" for c in reply.choices)
        headers = {"Authorization": f"Bearer {admin}"}
        demo_id = httpx.get(base + "/admin/v1/accounts", headers=headers).json()["items"][0]["id"]
        found = httpx.post(base + "/admin/v1/watermark/detect", json={"text": text},
                           headers=headers, timeout=60).json()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert found["account_id"] == demo_id, (text, found)
    assert found["p_value"] < 1e-6
