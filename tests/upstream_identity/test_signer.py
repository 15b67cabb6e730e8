"""The gateway's upstream signer: what it adds to a request, and that the model server's verifier
accepts it for that exact request, once."""

from __future__ import annotations

import pytest

from gateway.settings import Settings
from gateway.upstream_identity.signature import VerificationError, Verifier
from gateway.upstream_identity.signer import NoSigner, build_signer

CHAT = "/v1/chat/completions"
SIGNING = b"upstream-signing-secret-0123456789abcdef"


def test_the_signer_can_be_switched_off() -> None:
    assert isinstance(build_signer(Settings(mode="local")), NoSigner)


async def test_the_gateway_signer_signs_the_exact_request_once_and_names_no_secret() -> None:
    signer = build_signer(Settings(mode="local", upstream_signing_secret=SIGNING.decode()))
    body = b'{"model": "m"}'
    headers = dict(signer.headers("acct-1", "req-1", "POST", CHAT, body))
    verifier = Verifier(SIGNING, max_age_s=60)
    with pytest.raises(VerificationError, match="invalid"):
        await verifier.verify(headers, "POST", CHAT, b'{"model": "other"}')
    assert await verifier.verify(headers, "POST", CHAT, body) == "acct-1"
    with pytest.raises(VerificationError, match="already used"):
        await verifier.verify(headers, "POST", CHAT, body)
    assert SIGNING.decode() not in str(headers)
