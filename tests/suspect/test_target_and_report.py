"""What the gateway will call (SSRF rules), and the report: complete for a ToS case, free of
secrets."""

from __future__ import annotations

import json
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.suspect.candidates import build_candidates
from gateway.suspect.client import HttpSampler, SamplingParams
from gateway.suspect.prompts import prompt_stream
from gateway.suspect.report import report_json, report_markdown
from gateway.suspect.runner import Plan, run_suspect
from gateway.suspect.target import (
    PublicOnlyResolver,
    Target,
    TargetRefused,
    check_target,
    check_url,
    is_public,
)
from gateway.watermark.config import WatermarkConfig
from gateway.watermark.keys import derive_key
from tests.suspect.support import SimulatedSuspect

SECRET = b"suspect-report-secret-0123456789abcdef"


@pytest.mark.parametrize("url", [
    "http://suspect.example/v1",            # http without the explicit allow
    "ftp://suspect.example/v1",
    "https://user:pw@suspect.example/v1",   # credentials in the URL
    "https://suspect.example/v1?x=1",
    "https:///v1",
    "file:///etc/passwd",
])
def test_urls_outside_the_rules_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, allow_http=False)


def test_http_is_allowed_only_explicitly() -> None:
    assert check_url("http://suspect.example:8000/v1", allow_http=True) == (
        "suspect.example", 8000)
    assert check_url("https://suspect.example/v1", allow_http=False) == ("suspect.example", 443)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254",
                                     "::1", "fd00::1", "0.0.0.0", "::ffff:127.0.0.1",
                                     "100.64.0.1"])
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


def test_public_addresses_are_public() -> None:
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111")


async def test_loopback_targets_need_the_private_network_power() -> None:
    target = Target("http://127.0.0.1:9/v1", "m", allow_http=True)
    with pytest.raises(TargetRefused) as refused:
        await check_target(target)
    assert "allow_private_network" in str(refused.value)
    await check_target(Target("http://127.0.0.1:9/v1", "m", allow_http=True,
                              allow_private_network=True))


class _Rebinding(AbstractResolver):
    """A name that resolved to a public address at the check, and now to a private one."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=self.address, port=port, family=family,
                              proto=0, flags=0)]

    async def close(self) -> None:
        return None


async def test_every_connection_is_checked_again_against_dns_rebinding() -> None:
    with pytest.raises(OSError, match="no public address"):
        await PublicOnlyResolver(_Rebinding("169.254.169.254")).resolve("suspect.example", 443)
    public = await PublicOnlyResolver(_Rebinding("93.184.216.34")).resolve("suspect.example")
    assert [r["host"] for r in public] == ["93.184.216.34"]


async def test_the_sampler_reaches_no_private_address_without_the_power() -> None:
    """Even past check_target, a sampler without allow_private_network connects nowhere
    private: ``localhost`` resolves to loopback only, so the query fails (counted)."""
    target = Target("http://localhost:9/v1", "m", allow_http=True)
    async with HttpSampler(target, SamplingParams(timeout_s=5)) as sampler:
        assert await sampler(["def f():"]) == []
    assert sampler.failures == 1


def test_the_suspects_key_is_not_in_the_targets_repr() -> None:
    assert "sk-suspect" not in repr(Target("https://h/v1", "m", api_key="sk-suspect-123"))


async def test_the_report_names_the_account_and_holds_no_key_material() -> None:
    ids = [f"acct-{i}" for i in range(50)]
    key = derive_key(SECRET, ids[7])
    result = await run_suspect(SimulatedSuspect([key], bias=0.3),
                               prompt_stream(["Return the "], 0),
                               build_candidates(ids, [SECRET]), WatermarkConfig(),
                               Plan(alpha=1e-6, max_queries=40, queries_per_look=10))
    report = report_json(result, {"base_url": "https://h/v1", "model": "m", "actor": "alice"})
    assert report["verdict"] == "attributed"
    assert report["attributed"][0]["name"] == ids[7]
    assert report["attributed"][0]["p_corrected"] < 1e-6
    assert report["queries"] <= 40 and report["pairs_scored"] > 0
    assert report["hypotheses"] == 50 * 2 and report["max_looks"] == 4  # two views
    text = json.dumps(report)
    for secret in (str(key[0]), str(key[1]), SECRET.decode()):
        assert secret not in text
    markdown = report_markdown(report)
    assert ids[7] in markdown and "alice" in markdown and "attributed" in markdown


@pytest.mark.parametrize("url", ["http://suspect.example/v1", "https://u:p@suspect.example/v1"])
def test_the_command_refuses_a_target_before_reading_anything(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["suspect", "--base-url", url, "--model", "m"]) == 2
    assert "gateway suspect:" in capsys.readouterr().err
