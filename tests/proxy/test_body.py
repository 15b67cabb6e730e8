"""Bodies are size-limited, must be JSON objects, and their abuse-relevant parameters typed."""

import pytest

from gateway.errors import GatewayError
from gateway.proxy.body import parse_json_object, read_body


def _receiver(*chunks: bytes):  # type: ignore[no-untyped-def]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():  # type: ignore[no-untyped-def]
        return messages.pop(0)

    return receive


async def test_body_over_the_limit_is_refused_while_streaming_in() -> None:
    with pytest.raises(GatewayError) as caught:
        await read_body(_receiver(b"x" * 600, b"x" * 600), limit=1000, content_length=None)
    assert caught.value.status == 413


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def never():  # type: ignore[no-untyped-def]
        raise AssertionError("body must not be read")

    with pytest.raises(GatewayError) as caught:
        await read_body(never, limit=1000, content_length=b"5000")
    assert caught.value.status == 413


async def test_body_within_limit_is_returned_whole() -> None:
    assert await read_body(_receiver(b"ab", b"cd"), limit=4, content_length=b"4") == b"abcd"


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b"", b"\xff"])
def test_malformed_or_non_object_json_is_a_400_naming_the_body(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_json_object(body)
    assert caught.value.status == 400
    assert caught.value.param == "body"
