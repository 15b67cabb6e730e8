"""End to end: simulated extraction replayed over HTTP (openai SDK) through a running gateway
ends with a flag — with reasons, evidence and enforcement — visible in the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import chain, zip_longest
from typing import Any

import httpx
import pytest

from gateway.detect import clients
from gateway.detect.offline import dataset, simulate
from gateway.detect.offline.http_replay import replay
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact
from gateway.modelserver.echo import create_echo_app
from tests.e2e.conftest import StackFactory
from tests.support.servers import RecordingApp, serve_in_thread

# Reply lengths scripted per prompt by the replay: each simulated exchange is answered at its
# simulated length, not in the echo's 8-23 words (what the detector sees is the session).
LENGTHS: dict[str, int] = {}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, RecordingApp]]:
    app = RecordingApp(create_echo_app(LENGTHS))
    with serve_in_thread(app) as url:
        yield url + "/v1", app


DETECTION = {
    "detection_enabled": True, "detection_min_score_interval_s": 0.0,
    "detection_max_wait_ms": 1.0, "detection_risk_flush_interval_s": 0.2,
    "detection_campaign_interval_s": 0.5,
}


def _wait_for(fetch: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = fetch()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the detector")


def _flags(admin: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = admin.get("/admin/v1/flags", params=params)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_distillation_is_flagged_and_throttled(make_stack: StackFactory) -> None:
    with make_stack(**DETECTION, detection_throttle_threshold=0.6) as stack:
        account_id, key = stack.new_account("distiller")
        session = simulate.generate(21, "heldout", 1, (80, 80), ("distill",))[0]
        outcomes = replay(session, stack.base, key, limit=80, lengths=LENGTHS)
        # Once flagged the account is throttled (5 requests a minute), so later requests get 429s.
        assert outcomes["ok"] >= 8, outcomes
        with stack.admin() as admin:
            flag = _wait_for(lambda: _flags(admin, status="open", account_id=account_id))[0]
            assert flag["kind"] == "account" and flag["account_ids"] == [account_id]
            assert flag["score"] >= 0.5 and flag["reasons"]
            assert flag["model_version"] == Artifact.load(DEFAULT_ARTIFACT).version
            detail = admin.get(f"/admin/v1/flags/{flag['id']}").json()
            assert detail["evidence"]["request_ids"]
            assert {r["account_id"] for r in _wait_for(
                lambda: admin.get(f"/admin/v1/flags/{flag['id']}").json()["requests"])} == {
                account_id}
            account = _wait_for(lambda: (a := admin.get(
                f"/admin/v1/accounts/{account_id}").json())["status"] == "throttled" and a)
            assert account["risk_score"] >= 0.5
            actions = admin.get(f"/admin/v1/accounts/{account_id}/actions").json()["items"]
            assert [(a["action"], a["actor"]) for a in actions] == [("throttle", "detector")]
            audit = admin.get("/admin/v1/audit", params={"actor": "detector"}).json()["items"]
            assert {e["action"] for e in audit} >= {"flag.create", "account.throttle"}

            review = admin.post(f"/admin/v1/flags/{flag['id']}/review",
                                json={"decision": "confirm", "note": "distillation"})
            assert review.status_code == 200 and review.json()["status"] == "confirmed"


def test_campaign_accounts_get_one_cluster_flag(make_stack: StackFactory) -> None:
    sessions = simulate.generate(5, "heldout", 8, (72, 72), ("campaign",))[:4]
    with make_stack(**DETECTION) as stack:
        accounts = []
        for i, session in enumerate(sessions):
            account_id, key = stack.new_account(f"hydra-{i}")
            accounts.append(account_id)
            replay(session, stack.base, key, limit=24, lengths=LENGTHS)
        with stack.admin() as admin:
            campaign = _wait_for(lambda: [f for f in _flags(admin, kind="campaign")
                                          if set(accounts) <= set(f["account_ids"])])
            assert len(campaign) == 1
            assert campaign[0]["reasons"][0].startswith(f"{len(campaign[0]['account_ids'])} ")
            for account_id in accounts:
                ids = [f["id"] for f in _flags(admin, kind="campaign", account_id=account_id)]
                assert ids == [campaign[0]["id"]]


def test_one_key_shared_by_a_support_bot_and_a_labelling_job_is_not_flagged(
        make_stack: StackFactory) -> None:
    support, labelling = simulate.generate(3, "heldout", 1, (40, 40), ("support", "classify"))
    # The two clients at once, request by request, on one key: every window holds both, each
    # with its own parameters, and the engine scores them as two clients.
    together = [r for r in chain.from_iterable(zip_longest(support.requests,
                                                           labelling.requests))
                if r is not None]
    shared = replace(support, requests=together)
    assert len(clients.parts(dataset.session_features(shared)[-64:], 8)) == 2
    with make_stack(**DETECTION) as stack:
        team_id, team_key = stack.new_account("team")
        assert replay(shared, stack.base, team_key, lengths=LENGTHS)["ok"] == len(together)
        # The engine scores in arrival order: once the later distiller is flagged, every window
        # of the shared key has been scored.
        distiller_id, distiller_key = stack.new_account("distiller")
        distill = simulate.generate(21, "heldout", 1, (80, 80), ("distill",))[0]
        replay(distill, stack.base, distiller_key, limit=80, lengths=LENGTHS)
        with stack.admin() as admin:
            _wait_for(lambda: _flags(admin, account_id=distiller_id))
            assert _flags(admin, account_id=team_id) == []
            assert admin.get(f"/admin/v1/accounts/{team_id}").json()["status"] == "active"
