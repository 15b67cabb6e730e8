"""GCRA: a rolling limit, no double burst at a window edge, exact retry-after."""

from gateway.ratelimit import gcra

MIN = gcra.MINUTE_US
T0 = 1_700_000_000_000_000


def _spend(tat: int | None, now: int, count: int, limit: int) -> tuple[int | None, int]:
    admitted = 0
    for _ in range(count):
        result = gcra.check(tat, now, 1, MIN, limit)
        if result.allowed:
            tat = result.new_tat
            admitted += 1
    return tat, admitted


def test_a_full_burst_at_the_end_of_a_minute_cannot_repeat_at_the_start_of_the_next() -> None:
    tat, admitted = _spend(None, T0 + 59_900_000, 10, limit=10)
    assert admitted == 10
    # A fixed window would reset at T0 + 60 s and admit ten more 200 ms later.
    tat, admitted = _spend(tat, T0 + 60_100_000, 10, limit=10)
    assert admitted == 0
    # The limit refills continuously: one request per six seconds.
    tat, admitted = _spend(tat, T0 + 59_900_000 + 6_000_000, 10, limit=10)
    assert admitted == 1


def test_retry_after_is_exact() -> None:
    tat, _ = _spend(None, T0, 10, limit=10)
    refused = gcra.check(tat, T0 + 1_000, 1, MIN, 10)
    assert not refused.allowed
    wait = refused.retry_after
    assert not gcra.check(tat, T0 + 1_000 + wait - 1, 1, MIN, 10).allowed
    assert gcra.check(tat, T0 + 1_000 + wait, 1, MIN, 10).allowed


def test_a_cost_larger_than_the_whole_limit_never_fits() -> None:
    result = gcra.check(None, T0, 1001, MIN, 1000)
    assert not result.allowed and not result.fits
    assert gcra.check(None, T0, 1000, MIN, 1000).allowed


def test_refunds_and_charges_move_the_budget() -> None:
    tat = gcra.check(None, T0, 600, MIN, 1000).new_tat
    assert gcra.remaining(tat, T0, MIN, 1000) == 400
    refunded = gcra.adjust(tat, T0, -500, MIN, 1000)
    assert gcra.remaining(refunded, T0, MIN, 1000) == 900
    charged = gcra.adjust(tat, T0, 1000, MIN, 1000)
    assert gcra.remaining(charged, T0, MIN, 1000) == 0
    assert not gcra.check(charged, T0, 0, MIN, 1000).allowed  # in debt: even free calls wait


def test_a_zero_limit_admits_nothing() -> None:
    assert not gcra.check(None, T0, 1, MIN, 0).allowed
