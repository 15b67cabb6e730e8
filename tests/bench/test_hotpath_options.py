"""``bench/hotpath.py``'s core layout: what ``--scaling`` and the core lists accept and refuse
before anything is started (a mistaken layout would put the load on the proxy's cores)."""

from __future__ import annotations

import pytest

from bench.hotpath import parse_args
from bench.proxy.workers import parse_cores


def test_core_lists_take_tasksets_syntax_in_order_without_repeats() -> None:
    assert parse_cores("4-7,9") == [4, 5, 6, 7, 9]
    assert parse_cores("3,1-2,2") == [3, 1, 2]


@pytest.mark.parametrize("text", ["", "a", "1-x", "-3", ","])
def test_malformed_core_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cores(text)


def test_scaling_gives_each_worker_count_its_proxy_cores() -> None:
    opts = parse_args(["--scaling", "1,2,4", "--load-cores", "0-1", "--proxy-cores", "4-7"])
    assert opts.scaling == [1, 2, 4]
    assert opts.load_cores == [0, 1] and opts.proxy_cores == [4, 5, 6, 7]


@pytest.mark.parametrize("argv", [
    ["--scaling", "1,2,4", "--proxy-cores", "4-5"],          # more workers than cores
    ["--scaling", "2,1", "--proxy-cores", "4-5"],            # not increasing
    ["--scaling", "0,1", "--proxy-cores", "4-5"],            # no workers
    ["--load-cores", "0-1", "--proxy-cores", "1-2"],         # load on the proxy's core
    ["--scaling", "1,2", "--proxy-cores", "4-5", "--profile", "/tmp/p"],
])
def test_layouts_that_would_mismeasure_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
