"""Prompts are stored as configured: nothing, a hash, or the full text."""

from __future__ import annotations

import hashlib

import pytest

from tests.e2e.conftest import Stack, StackFactory
from tests.support.waiting import wait_until

PROMPT = "Summarise the causes of the French revolution"


def _record(stack: Stack, account_id: str, request_id: str) -> dict:
    def find() -> dict | None:
        with stack.admin() as admin:
            items = admin.get(f"/admin/v1/accounts/{account_id}/requests").json()["items"]
        return next((r for r in items if r["request_id"] == request_id), None)

    return wait_until(find, timeout=15)


@pytest.mark.parametrize("storage", ["none", "hash", "full"])
def test_prompt_storage_modes(make_stack: StackFactory, storage: str) -> None:
    with make_stack(prompt_storage=storage) as stack:
        account_id, key = stack.new_account()
        raw = stack.client(key).chat.completions.with_raw_response.create(
            model="echo-1", messages=[{"role": "user", "content": PROMPT}])
        record = _record(stack, account_id, raw.headers["x-request-id"])
    digest = hashlib.sha256(PROMPT.encode()).hexdigest()
    assert record["prompt_chars"] == len(PROMPT)
    assert record.get("prompt_hash") == (None if storage == "none" else digest)
    assert record.get("prompt_text") == (PROMPT if storage == "full" else None)
