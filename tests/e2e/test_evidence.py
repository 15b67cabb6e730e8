"""No request record is lost when the database goes away in the middle of traffic."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.e2e.conftest import StackFactory
from tests.support.tcp_proxy import ThreadedTcpProxy
from tests.support.waiting import wait_until

N = 150


def _stored_ids(database_url: str, account_id: str) -> set[str]:
    async def query() -> set[str]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await conn.fetch(
                "SELECT request_id FROM request_records WHERE account_id = $1", account_id)
        finally:
            await conn.close()
        return {r["request_id"] for r in rows}

    return asyncio.run(query())


def test_cutting_the_database_mid_run_loses_no_record(
    make_stack: StackFactory, migrated_postgres: str
) -> None:
    with ThreadedTcpProxy("127.0.0.1", 5432) as proxy, make_stack(
        database_url=proxy.rewrite_url(migrated_postgres), key_cache_ttl_s=60,
    ) as stack:
        account_id, key = stack.new_account("outage")
        client = stack.client(key)
        request_ids = []
        for i in range(N):
            if i == N // 3:
                proxy.cut()
            if i == 2 * N // 3:
                assert httpx.get(stack.base + "/readyz").json()["checks"]["database"] is False
                proxy.restore()
            raw = client.chat.completions.with_raw_response.create(
                model="echo-1", messages=[{"role": "user", "content": f"question {i}"}])
            assert raw.http_response.status_code == 200
            request_ids.append(raw.headers["x-request-id"])
        assert len(set(request_ids)) == N
        wait_until(lambda: len(_stored_ids(migrated_postgres, account_id)) >= N, timeout=30)
        assert _stored_ids(migrated_postgres, account_id) == set(request_ids)
        metrics = httpx.get(stack.base + "/metrics").text
        assert "gateway_request_log_spilled_total" in metrics
