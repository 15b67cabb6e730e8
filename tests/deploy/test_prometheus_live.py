"""The shipped dashboards and alert rules against a real Prometheus scraping a real gateway.

A ``gateway serve --workers 2`` process (multiprocess metrics, as deployed) runs on the real
PostgreSQL and Redis, each behind a cuttable TCP proxy, in front of the echo upstream. A real
Prometheus (Debian package) scrapes it every second with the shipped prometheus.yml (targets
rewritten in a temporary copy) and evaluates the shipped alerts.yml. Simulated traffic —
benign and attacking profiles, bad keys, rate-limited bursts, streams, upstream failures and
timeouts, a Redis outage and a database outage — makes every series exist. Then every PromQL
expression of every panel and every rule goes through Prometheus's HTTP API.

"Returns data": a panel's query returns at least one series with a number (not NaN: a quantile
of a histogram with no observations in the window is NaN, a panel showing nothing). An alert
rule's whole expression must evaluate without error, and its *signal* — the side before its one
top-level comparison, e.g. ``max by (instance) (gateway_ratelimit_fallback_active)`` for
``... > 0`` — must return data in the same sense, so the rule watches series that exist, whether
or not it fires now. Prometheus must also report every loaded rule evaluated with health "ok",
and the outage alerts' conditions must have been true during the outages.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.detect.offline import simulate
from gateway.detect.offline.http_replay import replay
from gateway.modelserver.echo import create_echo_app
from gateway.store.migrate import upgrade
from tests.deploy import shipped
from tests.e2e.conftest import ADMIN_TOKEN, HASH_SECRET, UPSTREAM_KEY, WATERMARK_SECRET
from tests.support.servers import free_port, serve_in_thread, stop_process, wait_healthy
from tests.support.tcp_proxy import ThreadedTcpProxy
from tests.support.waiting import STARTUP_TIMEOUT_S, wait_until

# A Redis database of its own: detection keeps one campaign-sweep lock and every account's
# sketch per Redis database (one deployment), so a gateway of another test run on database 0
# could hold the lock and leave this one's campaign unswept.
REDIS_DB = 5
# Ordinary requests vary their prompts like a person would: a fixed prompt sent over and over is
# what the detector flags (and throttles), which would turn these requests into 429s.
_PROMPTS = itertools.cycle([r.prompt for r in simulate.generate(
    9, "heldout", 1, (200, 200), ("chat",))[0].requests])
# Replayed sessions are answered at their simulated lengths (the echo's 8-23 words would make a
# chat session something else to the detector): http_replay scripts them here.
LENGTHS: dict[str, int] = {}
READ_TIMEOUT_S = 5.0
"""The gateway's upstream read timeout here; the deliberate timeout waits three times as long."""


@dataclass
class Live:
    gateway: str
    prometheus: str
    admin: httpx.Client

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(self.prometheus + "/api/v1/query", params={"query": expr},
                             timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def series(self, expr: str) -> list[Any]:
        body = self.query(expr)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        result: list[Any] = body["data"]["result"]
        return result


def _gateway_env(database_url: str, redis_url: str, upstream: str, spill: Path) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": database_url, "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_UPSTREAM_URL": upstream, "GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_KEY_HASH_SECRET": HASH_SECRET,
        "GATEWAY_WATERMARK_SECRET": WATERMARK_SECRET, "GATEWAY_LOG_LEVEL": "warning",
        # 5 s: the everyday traffic's chunks must never meet it on a busy CI box (at 1 s, a
        # stream replayed while both cores were saturated did); one deliberate request does.
        "GATEWAY_UPSTREAM_READ_TIMEOUT_S": str(READ_TIMEOUT_S), "GATEWAY_KEY_CACHE_TTL_S": "0.5",
        "GATEWAY_REQUEST_LOG_SPILL_DIR": str(spill),
        "GATEWAY_REQUEST_LOG_FLUSH_INTERVAL_S": "0.05",
        "GATEWAY_REQUEST_LOG_REPLAY_INTERVAL_S": "0.2",
        "GATEWAY_RATELIMIT_RETRY_INTERVAL_S": "0.2",
        "GATEWAY_DETECTION_ENABLED": "true", "GATEWAY_DETECTION_MIN_SCORE_INTERVAL_S": "0",
        "GATEWAY_DETECTION_MAX_WAIT_MS": "1", "GATEWAY_DETECTION_RISK_FLUSH_INTERVAL_S": "0.2",
        "GATEWAY_DETECTION_CAMPAIGN_INTERVAL_S": "0.5",
        "GATEWAY_DETECTION_THROTTLE_THRESHOLD": "0.6",
    }


def _prometheus_config(directory: Path, gateway: str, own: str) -> Path:
    """The shipped config with targets pointed at this test's gateway and Prometheus, scraping
    and evaluating every second; the shipped rules beside it."""
    config = yaml.safe_load((shipped.PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        target = gateway if job["job_name"] == "gateway" else own
        job["static_configs"] = [{**c, "targets": [target]} for c in job["static_configs"]]
    shutil.copy(shipped.PROMETHEUS / "alerts.yml", directory / "alerts.yml")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def _gateway_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """``gateway serve --workers 2``, as deployed; its output goes to ``log`` (a pipe nobody
    reads would block it once full of outage tracebacks)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base)
            yield base
        except BaseException:
            print(log.read_text()[-20000:])  # shown by pytest with the failure
            raise
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    assert path, "prometheus is missing: `bash scripts/test` installs it (Debian package)"
    return path


@pytest.fixture(scope="module")
def live(postgres_url: str, prometheus_binary: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    upgrade(postgres_url)
    work = tmp_path_factory.mktemp("prometheus")
    with serve_in_thread(create_echo_app(LENGTHS)) as upstream, \
            ThreadedTcpProxy("127.0.0.1", 5432) as pg, \
            ThreadedTcpProxy("127.0.0.1", 6379) as redis:
        env = _gateway_env(pg.rewrite_url(postgres_url),
                           f"redis://127.0.0.1:{redis.port}/{REDIS_DB}", upstream + "/v1",
                           work / "spill")
        with _gateway_process(env, work / "gateway.log") as gateway:
            port = free_port()
            config = _prometheus_config(work, gateway.removeprefix("http://"),
                                        f"127.0.0.1:{port}")
            process = subprocess.Popen(
                [prometheus_binary, f"--config.file={config}",
                 f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_until(lambda: _ready(base, process), timeout=STARTUP_TIMEOUT_S,
                           interval=0.2, what="Prometheus ready")
                admin = httpx.Client(base_url=gateway, timeout=30,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                live = Live(gateway, base, admin)
                _drive_traffic(live, pg, redis)
                yield live
            finally:
                stop_process(process)


def _ready(base: str, process: subprocess.Popen[str]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited: {process.stderr.read() if process.stderr else ''}")
    try:
        return httpx.get(base + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _account(admin: httpx.Client, name: str, tier: str = "standard") -> tuple[str, str]:
    account = admin.post("/admin/v1/accounts", json={"name": name, "tier": tier})
    account.raise_for_status()
    account_id = account.json()["id"]
    key = admin.post(f"/admin/v1/accounts/{account_id}/keys", json={})
    key.raise_for_status()
    return account_id, key.json()["key"]


def _client(live: Live, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.gateway + "/v1", api_key=key, max_retries=0, timeout=30)


def _chat(client: openai.OpenAI, model: str = "echo-1", **options: Any) -> int:
    """One chat completion; its HTTP status (200, or the error's)."""
    try:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": next(_PROMPTS)}], **options)
    except openai.APIStatusError as exc:
        return exc.status_code
    except openai.APIConnectionError:
        return 0
    return 200


def _metric(live: Live, name: str) -> float:
    """The sum of a metric's samples in the gateway's own /metrics (all workers)."""
    text = httpx.get(live.gateway + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def _drive_traffic(live: Live, pg: ThreadedTcpProxy, redis: ThreadedTcpProxy) -> None:
    admin = live.admin
    _wait_scraped(live, 'up{job="gateway"} == 1')
    ops = _operator(live)
    # One account per client: the throttle here (0.6) is below the model's flag threshold; one
    # key shared by a chat client and a coding tool is tested at the shipped thresholds in
    # tests/e2e/test_detection.py (bench/adaptive_suite.md, phases 8 and 9).
    for session in simulate.generate(3, "heldout", 1, (30, 30), ("chat", "coding")):
        _, benign_key = _account(admin, f"benign-{session.profile}")
        assert replay(session, live.gateway, benign_key, limit=30, lengths=LENGTHS)["ok"] >= 20
    _, free_key = _account(admin, "bursty", tier="free")
    _everyday_errors(live, ops, free_key)

    # Attacks: logit stealing (policy refusals), distillation (flag, automatic throttle),
    # a campaign across accounts (one cluster flag).
    _, thief_key = _account(admin, "logit-thief")
    thief = simulate.generate(4, "heldout", 1, (20, 20), ("logit_steal",))[0]
    replay(thief, live.gateway, thief_key, limit=20, lengths=LENGTHS)
    distiller_id, distiller_key = _account(admin, "distiller")
    distill = simulate.generate(21, "heldout", 1, (80, 80), ("distill",))[0]
    replay(distill, live.gateway, distiller_key, limit=80, lengths=LENGTHS)
    for i, session in enumerate(simulate.generate(5, "heldout", 8, (72, 72), ("campaign",))[:4]):
        replay(session, live.gateway, _account(admin, f"hydra-{i}")[1], limit=24,
               lengths=LENGTHS)
    # Both kinds of flag, named: a count alone can be reached by account flags before the
    # campaign sweep has run (seen on a machine busy with other work).
    for kind in ("account", "campaign"):
        wait_until(lambda kind=kind: _metric(live, f'gateway_detect_flags_total{{kind="{kind}"}}')
                   >= 1, timeout=60, interval=0.2, what=f"a {kind} flag")
    _reviewers(live, distiller_id)

    # Redis outage: the limiter falls back (gauge at 1, backend errors), then recovers.
    ops = _operator(live)
    redis.cut()
    try:
        wait_until(lambda: _chat(ops) == 200
                   and _metric(live, "gateway_ratelimit_fallback_active") >= 1, timeout=60,
                   interval=0.2)
        _wait_scraped(live, "max(gateway_ratelimit_fallback_active) > 0")
    finally:
        redis.restore()
    wait_until(lambda: _chat(ops) == 200  # 60 s: recovery is seconds, a busy CI box is slower
               and _metric(live, "gateway_ratelimit_fallback_active") == 0, timeout=60,
               interval=0.2)

    # Database outage: request records spill to disk, then are replayed. (The key must have
    # been used before: during an outage only recently seen keys are let through.)
    ops = _operator(live)
    assert _chat(ops) == 200
    pg.cut()
    try:
        wait_until(lambda: _chat(ops) and _metric(live, "gateway_request_log_spilled_total") > 0,
                   timeout=20, interval=0.2)
        _wait_scraped(live, "max(gateway_request_log_spill_pending_bytes) > 0")
    finally:
        pg.restore()
    wait_until(lambda: _chat(ops) == 200
               and _metric(live, "gateway_request_log_replayed_total") > 0,
               timeout=30, interval=0.2)

    # Once Prometheus has seen every series, the everyday events once more, so that rates
    # and histogram quantiles over the last minute have something to compute from.
    _wait_scraped(live, "gateway_request_log_replayed_total > 0")
    ops = _operator(live)
    _everyday_errors(live, ops, free_key)
    _reviewers(live, distiller_id)
    replay(thief, live.gateway, thief_key, limit=5, lengths=LENGTHS)
    for _ in range(20):
        _chat(ops)
    _wait_scraped(live, f"sum(gateway_requests_total) >= {_metric(live, 'gateway_requests_total')}")


def _operator(live: Live) -> openai.OpenAI:
    """A fresh enterprise account's client: no window the detector could have judged yet."""
    return _client(live, _account(live.admin, "operator", tier="enterprise")[1])


def _everyday_errors(live: Live, ops: openai.OpenAI, free_key: str) -> None:
    """Streams, an upstream 500, an upstream timeout, an unknown key, a rate-limited burst."""
    for _ in range(4):
        for _chunk in ops.chat.completions.create(
                model="drip-5", stream=True,
                messages=[{"role": "user", "content": next(_PROMPTS)}]):
            pass
    assert _chat(ops, "fail") == 500
    assert _chat(ops, f"slow-{int(READ_TIMEOUT_S * 3000)}") == 504
    assert _chat(_client(live, "sk-gw-not-a-key")) == 401
    assert 429 in {_chat(_client(live, free_key)) for _ in range(25)}


def _reviewers(live: Live, account_id: str) -> None:
    """A watermark check, a flag review and a manual enforcement action through the admin API."""
    live.admin.post("/admin/v1/watermark/detect", json={"text": "some text to check"}
                    ).raise_for_status()
    flags = live.admin.get("/admin/v1/flags", params={"status": "open"}).json()["items"]
    live.admin.post(f"/admin/v1/flags/{flags[0]['id']}/review",
                    json={"decision": "confirm", "note": "metrics test"}).raise_for_status()
    live.admin.post(f"/admin/v1/accounts/{account_id}/actions",
                    json={"action": "warn", "reason": "metrics test"}).raise_for_status()


def _wait_scraped(live: Live, expr: str) -> None:
    wait_until(lambda: live.series(expr), timeout=20, interval=0.2)


def _without_data(live: Live, queries: list[shipped.Query]) -> list[str]:
    """Queries whose result has no series, or only NaN (e.g. a quantile of no observations)."""
    return [q.source for q in queries
            if not any(s["value"][1] != "NaN" for s in live.series(q.signal))]


def test_every_panel_and_alert_query_parses_and_returns_data(live: Live) -> None:
    queries = shipped.queries()
    assert len(queries) > 40
    for query in queries:  # parses and evaluates: the full expression, then its signal
        for expr in {query.expr, query.signal}:
            body = live.query(expr)
            assert body["status"] == "success", f"{query.source}: {body.get('error')}"
    missing = _without_data(live, queries)
    assert not missing, f"queries without data: {missing}"


def test_prometheus_loaded_and_evaluated_every_shipped_rule(live: Live) -> None:
    names = {rule["alert"] for rule in shipped.alert_rules()}

    def evaluated() -> list[dict[str, Any]]:
        groups = httpx.get(live.prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(r["lastEvaluation"] > "2000" for r in rules)
        return rules if done and {r["name"] for r in rules} == names else []

    for rule in wait_until(evaluated, timeout=20, interval=0.5):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_outage_alert_conditions_were_true_during_the_outages(live: Live) -> None:
    """The fallback and spill alerts' own expressions matched while Redis and the database
    were away (they fire after their `for:`, longer than this test)."""
    rules = {rule["alert"]: rule["expr"] for rule in shipped.alert_rules()}
    for name in ("GatewayRateLimiterFallback", "GatewayRequestLogSpillGrowing"):
        expr = " ".join(rules[name].split())
        assert live.series(f"max_over_time(({expr})[5m:1s])"), name
