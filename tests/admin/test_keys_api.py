"""API keys over the admin API: plaintext shown once, stored hashed, revocation takes effect."""

from __future__ import annotations

from sqlalchemy import select

from gateway.domain.keys import hash_key
from gateway.store import repository as repo
from gateway.store.models import ApiKey, AuditEntry
from tests.admin.conftest import ADMIN, VIEWER, Admin, assert_openai_error, new_account


async def test_created_key_is_returned_once_in_plaintext(admin: Admin) -> None:
    account = await new_account(admin)
    response = await admin.client.post(
        f"/accounts/{account['id']}/keys", json={"reason": "first key"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert {"id", "key", "prefix", "created_at"} <= set(created)
    assert created["key"].startswith("sk-gw-") and created["key"].startswith(created["prefix"])

    listed = await admin.client.get(f"/accounts/{account['id']}/keys", headers=VIEWER)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert item["id"] == created["id"] and item["prefix"] == created["prefix"]
    assert item["revoked_at"] is None
    assert "key" not in item and "key_hash" not in item
    assert created["key"] not in listed.text


async def test_key_creation_works_without_a_body(admin: Admin) -> None:
    account = await new_account(admin)
    response = await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)
    assert response.status_code == 201, response.text


async def test_only_a_keyed_hash_is_stored_and_it_resolves_the_account(admin: Admin) -> None:
    account = await new_account(admin)
    created = (await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)).json()
    async with admin.sessions() as session:
        stored = await session.get(ApiKey, created["id"])
        assert stored is not None
        assert stored.key_hash != created["key"] and created["key"] not in stored.key_hash
        assert stored.key_hash == hash_key(created["key"], admin.settings.key_hash_key())
        found = await repo.find_key(session, stored.key_hash)
    assert found is not None and found[1].id == account["id"]


async def test_audit_of_key_creation_holds_neither_plaintext_nor_hash(admin: Admin) -> None:
    account = await new_account(admin)
    created = (await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)).json()
    async with admin.sessions() as session:
        stored = await session.get(ApiKey, created["id"])
        entries = (await session.scalars(select(AuditEntry))).all()
    assert stored is not None
    key_entries = [e for e in entries if e.action == "key.create"]
    assert len(key_entries) == 1 and key_entries[0].target_id == created["id"]
    dumped = repr([(e.details, e.reason, e.target_id) for e in entries])
    assert created["key"] not in dumped and stored.key_hash not in dumped


async def test_revoking_a_key_disables_it_and_notifies_the_cache(admin: Admin) -> None:
    account = await new_account(admin)
    created = (await admin.client.post(f"/accounts/{account['id']}/keys", headers=ADMIN)).json()
    key_hash = hash_key(created["key"], admin.settings.key_hash_key())

    response = await admin.client.delete(
        f"/keys/{created['id']}", params={"reason": "leaked"}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"] and response.json()["revoked_at"] is not None
    assert admin.revoked_hashes == [key_hash]
    async with admin.sessions() as session:
        assert await repo.find_key(session, key_hash) is None
    listed = await admin.client.get(f"/accounts/{account['id']}/keys", headers=VIEWER)
    assert listed.json()["items"][0]["revoked_at"] is not None
    audit = await admin.client.get("/audit", params={"action": "key.revoke"}, headers=VIEWER)
    [entry] = audit.json()["items"]
    assert entry["target_id"] == created["id"] and entry["reason"] == "leaked"


async def test_keys_of_unknown_accounts_and_unknown_keys_are_404(admin: Admin) -> None:
    assert_openai_error(
        await admin.client.post("/accounts/acct_nope/keys", headers=ADMIN), 404,
        code="account_not_found",
    )
    assert_openai_error(
        await admin.client.delete("/keys/key_nope", headers=ADMIN), 404, code="key_not_found"
    )
    assert admin.revoked_hashes == []
