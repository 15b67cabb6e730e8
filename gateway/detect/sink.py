"""Where the proxy hands every finished request to the detector. ``observe`` must never block
or raise: it runs after the reply, on the event loop."""

from __future__ import annotations

from typing import Protocol

from gateway.records import RequestRecord


class FeatureSink(Protocol):
    def observe(self, record: RequestRecord, prompt: str) -> None:
        ...


class NullSink:
    """Detection disabled."""

    def observe(self, record: RequestRecord, prompt: str) -> None:
        return None
