"""The short soak (``bench/soak.py``): two gateway processes of two workers on PostgreSQL and
Redis, benign clients replaying held-out real traffic and attacking clients, while PostgreSQL
and Redis are cut, Redis restarts empty, a worker is killed with SIGKILL, the upstream slows
down and the spill disks fill up with PostgreSQL cut; then every check must pass, the benign
accounts unflagged among them.

The long soak is the same harness: ``python -m bench.soak --duration 1800`` (README, "Soak").
The replay that judges the limits is tested here on its own too, so that a check which cannot
fail does not pass for a soak that proves nothing.
"""

from __future__ import annotations

import os

from bench.soak import (
    Config,
    Fault,
    Window,
    gcra_replay,
    late_recoveries,
    run_soak,
    schedule,
    slope_per_min,
)


def test_the_short_soak_with_faults_passes_every_check() -> None:
    report = run_soak(Config(
        # 75 s: one cycle of faults with ~15 s to spare, so a slow kill -9 replacement on a
        # busy machine cannot push the last fault past the quiet tail (it would be skipped)
        duration=75, gateways=2, workers=2, benign=3, attackers=2, attacker_concurrency=2,
        pg_cut_s=5, redis_cut_s=3, slow_s=3, redis_restart_s=2, disk_full_s=3, lease_s=8,
        require_attacker_flags=False,
        # Check "1k" (no record lost to the kill -9) is strict: the request-log journal
        # (gateway/store/journal.py) closed the window the soak first found.
    ))
    print(report.table())  # shown by pytest when the test fails
    assert report.ok, report.table()
    kinds = next(c.detail for c in report.checks if c.name == "faults injected")
    for kind in ("pg-cut", "redis-cut", "kill-worker", "slow-upstream", "redis-restart",
                 "disk-full"):
        assert kind in kinds
    if os.geteuid() == 0:  # the spill disks are tmpfs quotas, filled for real
        assert "spill-0 +" in kinds and "skipped" not in kinds
    assert report.facts["answered_2xx"] > 100
    assert report.facts["records_lost"] == report.facts["records_lost_at_kill"] <= 20
    assert report.facts["statuses"].get(429, 0) > 0  # the attackers did reach their limit


def test_the_short_soak_on_a_redis_cluster_passes_every_check() -> None:
    """The same soak with ``GATEWAY_REDIS_URL`` on a three-primary cluster: its "Redis cut"
    cuts every node's proxy, its "Redis restart" kills one node (a third of the slots and their
    data) and starts it again."""
    report = run_soak(Config(
        # 70 s: the faults' schedule has room for a slow kill -9 replacement on a busy machine
        duration=70, gateways=2, workers=2, benign=3, attackers=2, attacker_concurrency=2,
        pg_cut_s=3, redis_cut_s=3, slow_s=3, redis_restart_s=3, disk_full_s=0, lease_s=8,
        cluster=True, require_attacker_flags=False,
    ))
    print(report.table())
    assert report.ok, report.table()
    kinds = next(c.detail for c in report.checks if c.name == "faults injected")
    assert "cluster node" in kinds and "killed" in kinds
    assert report.facts["answered_2xx"] > 100
    assert report.facts["statuses"].get(429, 0) > 0


def test_the_replay_refuses_what_gcra_refuses_outside_windows_only() -> None:
    burst = [100.0 + i * 0.001 for i in range(12)]  # 12 at once against 10 per minute
    violations, _ = gcra_replay(burst, 10, [], slack_s=0.0, replicas=1)
    assert len(violations) == 2
    # refilled: one more every 6 s
    assert gcra_replay([*burst[:10], 106.1, 112.2], 10, [], slack_s=0.0, replicas=1)[0] == []
    # inside a fail-open window: not judged, and not remembered as Redis never saw them
    window = Window(99.0, 101.0, "redis cut")
    violations, excess = gcra_replay([*burst, 101.5], 10, [window], slack_s=0.0, replicas=4)
    assert violations == []
    (_, count, single, bound), = excess
    assert count == 12 and single >= 10 and bound == 2 * single + 4
    # after a restart Redis forgot: the replay forgets too
    before = [50.0 + i * 0.001 for i in range(10)]
    restart = Window(51.0, 52.0, "redis restart", resets=True)
    after = [53.0 + i * 0.001 for i in range(10)]
    assert gcra_replay(before + after, 10, [restart], slack_s=0.0, replicas=1)[0] == []
    assert len(gcra_replay(before + after, 10, [Window(51.0, 52.0, "cut")],
                           slack_s=0.0, replicas=1)[0]) == 10


def test_the_schedule_fits_the_run_and_leaves_a_quiet_tail() -> None:
    faults = schedule(40, 16, 20, 10, 15, 5)
    assert [f.kind for f in faults] == ["pg-cut", "redis-cut", "kill-worker", "slow-upstream",
                                        "redis-restart"]
    assert faults[-1].start_s + faults[-1].length_s <= 40 - 16 + 1e-9
    long = schedule(1800, 18, 20, 10, 15, 5)
    assert sum(f.kind == "kill-worker" for f in long) >= 15
    assert max(f.start_s + f.length_s for f in long) <= 1800 - 18
    with_disk = schedule(60, 16, 20, 10, 15, 5, disk_s=10)
    assert [f.kind for f in with_disk][:6] == ["pg-cut", "redis-cut", "kill-worker",
                                               "slow-upstream", "redis-restart", "disk-full"]
    assert max(f.start_s + f.length_s for f in with_disk) <= 60 - 16 + 1e-9


def test_rss_slope_is_megabytes_per_minute() -> None:
    assert slope_per_min([(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)]) == 2.0
    assert slope_per_min([(0.0, 100.0)]) is None


def test_a_fallback_that_outlasts_its_fault_is_reported() -> None:
    """Check 2c: fail-open must end once Redis is back; one that runs on to the end of the run
    (a client that never recovers) is a failure, not a wide window."""
    cut = Fault("redis-cut", 0.0, 10.0, started_at=100.0, ended_at=110.0)
    recovered = Window(100.0, 113.0, "redis cut")
    stuck = Window(200.0, 900.0, "redis cut; fallback seen")
    late_cut = Fault("redis-cut", 0.0, 10.0, started_at=200.0, ended_at=210.0)
    assert late_recoveries([recovered], [cut]) == []
    assert late_recoveries([recovered, stuck], [cut, late_cut]) == [stuck]
    assert late_recoveries([Window(300.0, 400.0, "fallback seen")], []) != []
