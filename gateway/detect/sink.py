"""Where the proxy hands every finished request to the detector. Must never block or raise."""

from __future__ import annotations

from typing import Protocol

from gateway.records import RequestRecord


class FeatureSink(Protocol):
    def observe(self, record: RequestRecord) -> None:
        ...


class NullSink:
    """Detection disabled."""

    def observe(self, record: RequestRecord) -> None:
        return None
