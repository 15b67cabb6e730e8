"""The gateway → model server signature (v2): it authorises exactly one request — the method,
path, query and body it was made for — once, while it is fresh; the replay memory never forgets
a signature that could still be accepted, and refuses (fails closed) rather than forget."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from typing import Any

import pytest

from gateway.upstream_identity.signature import (
    InProcessNonces,
    ReplayCacheUnavailable,
    VerificationError,
    Verifier,
    sign,
)

SECRET = b"upstream-signing-secret-0123456789abcdef"
BODY = b'{"model": "m", "prompt": "x"}'
REQUEST: dict[str, Any] = {"method": "POST", "target": "/v1/completions", "body": BODY}
NOW = 1_700_000_000.0
_nonce = itertools.count()


def signed(account: str = "acct-1", now: float = NOW, **request: Any) -> dict[str, str]:
    exact = {**REQUEST, **request}
    return dict(sign(SECRET, account, f"n-{next(_nonce)}", exact["method"], exact["target"],
                     exact["body"], now=now))


async def verify(verifier: Verifier, headers: dict[str, str], now: float = NOW,
                 **request: Any) -> str:
    exact = {**REQUEST, **request}
    return await verifier.verify(headers, exact["method"], exact["target"], exact["body"],
                                 now=now)


async def test_a_signature_admits_the_request_it_signs_once() -> None:
    verifier = Verifier(SECRET)
    headers = signed("acct-7")
    assert await verify(verifier, headers) == "acct-7"
    with pytest.raises(VerificationError, match="already used"):
        await verify(verifier, headers, now=NOW + 1)


@pytest.mark.parametrize("tampered", [
    {"method": "PUT"},
    {"target": "/v1/chat/completions"},
    {"target": "/v1/completions?stream=true"},
    {"body": BODY + b" "},
    {"body": b""},
])
async def test_a_signature_does_not_admit_another_method_path_query_or_body(
        tampered: dict[str, Any]) -> None:
    verifier = Verifier(SECRET)
    headers = signed()
    with pytest.raises(VerificationError, match="invalid"):
        await verify(verifier, headers, **tampered)
    assert await verify(verifier, headers) == "acct-1"  # the forgery did not use the nonce


async def test_the_account_cannot_be_swapped_and_another_secret_does_not_verify() -> None:
    with pytest.raises(VerificationError, match="invalid"):
        await verify(Verifier(SECRET), {**signed(), "x-gateway-account": "acct-2"})
    with pytest.raises(VerificationError, match="invalid"):
        await verify(Verifier(b"another-secret-entirely-0123456789ab"), signed())


async def test_a_stale_or_far_future_signature_is_refused() -> None:
    verifier = Verifier(SECRET, max_age_s=60)
    with pytest.raises(VerificationError, match="expired"):
        await verify(verifier, signed(now=NOW - 61))
    with pytest.raises(VerificationError, match="expired"):
        await verify(verifier, signed(now=NOW + 61))
    assert await verify(verifier, signed(now=NOW - 59)) == "acct-1"


async def test_the_v1_format_is_refused_so_a_captured_v1_header_cannot_downgrade() -> None:
    timestamp, nonce = str(int(NOW)), "n-v1"
    message = "\n".join(("v1", timestamp, nonce, "acct-1")).encode()
    v1 = {"x-gateway-account": "acct-1", "x-gateway-timestamp": timestamp,
          "x-gateway-nonce": nonce,
          "x-gateway-signature": "v1=" + hmac.new(SECRET, message, hashlib.sha256).hexdigest()}
    with pytest.raises(VerificationError, match="unsupported"):
        await verify(Verifier(SECRET), v1)


async def test_missing_or_malformed_headers_are_refused() -> None:
    headers = signed()
    for name in headers:
        with pytest.raises(VerificationError, match="missing or malformed"):
            await verify(Verifier(SECRET), {k: v for k, v in headers.items() if k != name})
    with pytest.raises(VerificationError, match="missing or malformed"):
        await verify(Verifier(SECRET), {**headers, "x-gateway-timestamp": "soon"})


def test_signing_refuses_fields_that_would_make_the_message_ambiguous() -> None:
    with pytest.raises(ValueError, match="newline"):
        sign(SECRET, "acct\n1", "n", "POST", "/v1/completions", b"")


async def test_a_flood_never_evicts_a_nonce_that_could_still_be_replayed() -> None:
    verifier = Verifier(SECRET, max_age_s=60, nonces=InProcessNonces(capacity=3))
    first, *others = [signed() for _ in range(3)]
    for headers in (first, *others):
        await verify(verifier, headers)
    with pytest.raises(ReplayCacheUnavailable):  # full of live nonces: refuse, not forget
        await verify(verifier, signed(), now=NOW + 1)
    with pytest.raises(VerificationError, match="already used"):
        await verify(verifier, first, now=NOW + 1)


async def test_expired_nonces_make_room_once_their_signatures_can_no_longer_be_accepted(
        ) -> None:
    nonces = InProcessNonces(capacity=3)
    verifier = Verifier(SECRET, max_age_s=60, nonces=nonces)
    for _ in range(3):
        await verify(verifier, signed())
    later = NOW + 60 + 60
    assert await verify(verifier, signed(now=later), now=later) == "acct-1"
    assert len(nonces) == 1


async def test_a_refused_request_uses_no_replay_memory() -> None:
    nonces = InProcessNonces(capacity=1)
    verifier = Verifier(SECRET, nonces=nonces)
    with pytest.raises(VerificationError):
        await verify(verifier, signed(), body=b"forged")
    with pytest.raises(VerificationError):
        await verify(verifier, signed(now=NOW - 3600))
    assert len(nonces) == 0
