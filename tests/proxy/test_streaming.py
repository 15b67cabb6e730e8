"""SSE events are forwarded whole, as soon as each is complete."""

import orjson
import pytest

from gateway.proxy.streaming import (
    EventSplitter,
    event_data,
    is_usage_only_chunk,
    may_carry_logprobs,
    may_carry_usage,
    usage_from,
)


def test_events_split_across_chunks_are_released_when_complete() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: {\"a\"") == []
    assert splitter.feed(b": 1}\n\nda") == [b'data: {"a": 1}\n\n']
    assert splitter.feed(b"ta: [DONE]\n\n") == [b"data: [DONE]\n\n"]
    assert splitter.remainder() == b""


def test_several_events_in_one_chunk_and_crlf_terminators() -> None:
    splitter = EventSplitter()
    events = splitter.feed(b"data: 1\r\n\r\ndata: 2\n\n: comment\n\npartial")
    assert events == [b"data: 1\r\n\r\n", b"data: 2\n\n", b": comment\n\n"]
    assert splitter.remainder() == b"partial"


def test_event_data_joins_data_lines_and_ignores_comments() -> None:
    assert event_data(b"event: x\ndata: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b": keep-alive\n\n") is None


def test_usage_chunk_is_recognised_and_null_usage_skipped_cheaply() -> None:
    final = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    assert is_usage_only_chunk(final)
    usage = usage_from(final)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 5)
    assert not may_carry_usage(orjson.dumps({"choices": [{}], "usage": None}))
    assert may_carry_usage(orjson.dumps(final))
    assert not is_usage_only_chunk({"choices": [{"index": 0}], "usage": None})


@pytest.mark.parametrize(("data", "carries"), [
    (b'{"choices":[{"index":0,"message":{"content":"hi"}}]}', False),
    (b'{"choices":[{"logprobs":null}]}', False),
    (b'{"choices":[{"logprobs": null},{"logprobs":null}]}', False),
    (b'{"choices":[{"logprobs":{"content":[]}}]}', True),
    (b'{"choices":[{"logprobs":null},{"logprobs":{"content":[]}}]}', True),
    (b'{"type":"response.output_text.delta","logprobs":[]}', True),
    (b'{"\\u006cogprobs":{"content":[]}}', True),  # an escaped key: decode to be sure
    (b'{"logprobs" : null}', True),  # other spacing: decode to be sure
    (b'{"model":"logprobs"}', True),  # the word as a value: decode to be sure
])
def test_may_carry_logprobs_answers_false_only_when_certain(data: bytes, carries: bool) -> None:
    assert may_carry_logprobs(data) is carries
