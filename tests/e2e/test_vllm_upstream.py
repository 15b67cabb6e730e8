"""End to end with real vLLM: the openai SDK → the gateway (``GATEWAY_UPSTREAM_KIND=vllm``) →
vLLM on CPU serving the shipped tiny model with the watermark processor
(``gateway.watermark.vllm_adapter:BatchWatermark``) loaded.

The ``vllm`` fixture (``tests/e2e/conftest.py``) is shared with ``test_suspect.py``. vLLM must
be installed (``scripts/test`` puts it in ``.venv/vllm``): without it these tests fail,
they do not skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, OpenAI

from gateway.upstream_identity.xargs_tag import stamp, tag_key
from tests.e2e.conftest import ADMIN_TOKEN, UPSTREAM_KEY, WATERMARK_SECRET, Stack, StackFactory
from tests.support.vllm_server import metric
from tests.support.waiting import STARTUP_TIMEOUT_S, wait_until

MODEL = "tiny-docstrings"
PROMPT = [{"role": "user", "content": "Return the"}]
LONG = 230  # tokens: the tiny model's context is 256


@pytest.fixture(scope="module")
def vstack(make_stack: StackFactory, vllm: str) -> Iterator[Stack]:
    with make_stack(upstream_url=vllm, upstream_kind="vllm") as running:
        yield running


def direct(vllm: str) -> OpenAI:
    """A client that reached vLLM around the gateway (with the upstream's own credential)."""
    return OpenAI(base_url=vllm, api_key=UPSTREAM_KEY, max_retries=0)


def detect(base: str, text: str) -> dict[str, Any]:
    reply = httpx.post(base + "/admin/v1/watermark/detect", json={"text": text}, timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def attributed(base: str, generate: Callable[[], str], tries: int = 8) -> dict[str, Any]:
    """Detection on the account's replies, joined, once they are attributable (or after
    ``tries`` replies): a sampled reply of the tiny model is sometimes repetitive, with too few
    distinct (context, token) pairs to reach the attribution threshold alone. Four tries were
    once not enough in CI (four replies, 104 distinct pairs between them, p = 0.002)."""
    text = ""
    for _ in range(tries):
        text += generate() + "\n"
        found = detect(base, text)
        if found["account_id"] is not None:
            break
    return found


def test_each_reply_is_attributed_to_its_own_account_among_many(vstack: Stack) -> None:
    accounts = [vstack.new_account(f"vllm-harvester-{i}") for i in range(12)]
    for account, key in accounts[:3]:
        sdk = vstack.client(key)

        def reply(sdk: OpenAI = sdk) -> str:
            answer = sdk.chat.completions.create(model=MODEL, messages=PROMPT,
                                                 max_tokens=LONG, temperature=1.0)
            return answer.choices[0].message.content or ""

        found = attributed(vstack.base, reply)
        assert found["account_id"] == account and found["watermarked"], found
        assert found["p_value"] < 1e-6
    assert detect(vstack.base, "plain words written by a person, " * 8)["account_id"] is None


def test_streamed_replies_are_relayed_and_attributed(vstack: Stack) -> None:
    account, key = vstack.new_account("vllm-streamer")
    sdk = vstack.client(key)

    def streamed() -> str:
        chunks = list(sdk.completions.create(model=MODEL, prompt="The", max_tokens=LONG,
                                             temperature=1.0, stream=True))
        assert len(chunks) > 1
        assert all(chunk.usage is None for chunk in chunks)  # the usage chunk is stripped
        return "".join(choice.text for chunk in chunks for choice in chunk.choices)

    assert attributed(vstack.base, streamed)["account_id"] == account


def test_clients_can_neither_choose_nor_remove_their_watermark(vstack: Stack, vllm: str) -> None:
    _, key = vstack.new_account("vllm-chooser")
    sdk = vstack.client(key)
    for field in ("vllm_xargs", "extra_args"):
        with pytest.raises(BadRequestError) as caught:
            sdk.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                   extra_body={field: {"watermark_account": "someone-else"}})
        assert caught.value.param == field
    around = direct(vllm)
    with pytest.raises(BadRequestError, match="forwarded by the gateway"):
        around.completions.create(model=MODEL, prompt="x", max_tokens=2)
    forged = stamp(tag_key(b"a-secret-that-is-not-the-gateways-own"), "victim", "req_forged0001")
    with pytest.raises(BadRequestError, match="invalid watermark tag"):
        around.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                  extra_body={"vllm_xargs": forged})
    captured = stamp(tag_key(WATERMARK_SECRET.encode()), "victim", "req_captured0001")
    around.completions.create(model=MODEL, prompt="x", max_tokens=2,
                              extra_body={"vllm_xargs": captured})
    with pytest.raises(BadRequestError, match="already used"):
        around.completions.create(model=MODEL, prompt="other", max_tokens=2,
                                  extra_body={"vllm_xargs": captured})


def test_logprob_caps_and_noise_apply_to_vllm_logprobs(vstack: Stack, vllm: str) -> None:
    _, capped = vstack.new_account("vllm-capped", tier="standard")
    with pytest.raises(BadRequestError) as caught:
        vstack.client(capped).chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=4, logprobs=True, top_logprobs=20)
    assert caught.value.param == "top_logprobs"
    with pytest.raises(BadRequestError) as caught:  # any tokens' logprobs: past the cap
        vstack.client(capped).chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=4, logprobs=True, top_logprobs=2,
            extra_body={"logprob_token_ids": list(range(256))})
    assert caught.value.param == "logprob_token_ids"
    account, key = vstack.new_account("vllm-reader", tier="enterprise")
    ask: dict[str, Any] = {"model": MODEL, "messages": PROMPT, "max_tokens": 12,
                           "logprobs": True, "top_logprobs": 5, "seed": 7, "temperature": 1.0}
    shaped = vstack.client(key).chat.completions.create(**ask).choices[0].logprobs
    xargs = stamp(tag_key(WATERMARK_SECRET.encode()), account, "req_rawlogprobs01")
    raw = direct(vllm).chat.completions.create(**ask, extra_body={"vllm_xargs": xargs}).choices[
        0].logprobs
    assert shaped is not None and shaped.content and raw is not None and raw.content
    # Same seed, same account's watermark: vLLM sampled the same tokens both times.
    assert [t.token for t in shaped.content] == [t.token for t in raw.content]
    got = [t.logprob for entry in shaped.content for t in entry.top_logprobs]
    plain = [t.logprob for entry in raw.content for t in entry.top_logprobs]
    assert all(value == round(value, 2) for value in got)
    assert any(abs(a - round(b, 2)) >= 0.01 for a, b in zip(got, plain, strict=False))
    assert all(abs(a - b) < 1.0 for a, b in zip(got, plain, strict=False))


def test_a_client_disconnect_aborts_the_generation_in_vllm(vstack: Stack, vllm: str,
                                                          vllm_log: Path) -> None:
    """vLLM logs the abort of a request whose client left (``Aborted request(s)``, with request
    logging on), runs nothing afterwards, and generated fewer tokens than asked for. Requests
    sent to vLLM directly (the gateway relays none of them) share vLLM's steps meanwhile, so the
    streamed request cannot finish before the disconnect reaches vLLM, however slowly a busy
    machine relays its first event. Deadlines are generous for the same reason."""
    _, key = vstack.new_account("vllm-quitter", tier="enterprise")
    background, loads, n = 64, 4, 16
    aborts_before = vllm_log.read_text(errors="replace").count("Aborted request")
    generated = metric(vllm, "vllm:generation_tokens_total")
    body = {"model": MODEL, "prompt": "The", "max_tokens": LONG, "n": n, "stream": True,
            "temperature": 1.0, "ignore_eos": True}
    with ThreadPoolExecutor(loads) as pool:
        # ~59,000 tokens of other work: tens of seconds of vLLM steps on this machine.
        load = [pool.submit(direct(vllm).completions.create, model=MODEL, prompt="A",
                            max_tokens=LONG, n=background, temperature=1.0,
                            extra_body={"ignore_eos": True, "vllm_xargs": stamp(
                                tag_key(WATERMARK_SECRET.encode()), "acct_background",
                                f"req_background{i:02d}")})
                for i in range(loads)]
        with httpx.stream("POST", vstack.base + "/v1/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as reply:
            assert reply.status_code == 200, reply.read()
            for line in reply.iter_lines():
                if line.startswith("data:"):
                    break  # leaving the block closes the connection mid-stream
        assert all(f.result().usage.completion_tokens == background * LONG for f in load)
    wait_until(lambda: vllm_log.read_text(errors="replace").count("Aborted request")
               > aborts_before,
               timeout=STARTUP_TIMEOUT_S, what="vLLM logging the abort of the streamed request")
    wait_until(lambda: metric(vllm, "vllm:num_requests_running") == 0
               and metric(vllm, "vllm:num_requests_waiting") == 0,
               timeout=STARTUP_TIMEOUT_S, what="vLLM running no request after the client left")
    spent = metric(vllm, "vllm:generation_tokens_total") - generated - loads * background * LONG
    assert 0 < spent < n * LONG, (spent, n * LONG)
