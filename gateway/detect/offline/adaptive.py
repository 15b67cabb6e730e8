"""``gateway evaluate --suite adaptive``: the shipped model against adaptive attackers on real text.

Order matters, as in a deployment: the flag threshold is fixed FIRST, on benign traffic alone
(``calibration`` sources, :mod:`gateway.detect.offline.corpus`), as the lowest risk that flags at
most ``benign_target`` of those accounts. Only then are the report's populations replayed, from
``heldout`` sources the threshold never saw: benign accounts per profile (people and each kind of
automation separately), and every attack generator (:mod:`gateway.detect.offline.real_attacks`)
under every evasion combination (:mod:`gateway.detect.offline.evasions`).

Everything goes through the production engine on a simulated clock
(:mod:`gateway.detect.offline.engine_replay`): same window, features, model, scoring schedule, risk
and campaign clustering. Per (attack, evasion) the report gives the share of accounts flagged
(account flag or listed in a campaign), and per operation the completions and output tokens it
harvested before each of its accounts was flagged (median and worst over operations), plus, for
multi-account operations, what was harvested before the first campaign flag. Per-account peak risk
also gives ROC AUC and TPR at 1% / 0.1% FPR, comparable with ``gateway evaluate``.

Declared workloads (:mod:`gateway.domain.workloads`) are applied as an operator would: every
evaluation harness — the one benign profile whose traffic is a greedy chain-of-thought harvest
request for request — is declared with :data:`SUITE_ALLOWANCE`, in calibration and held out
alike, and the benign table also shows the same harnesses undeclared. Attack accounts are
undeclared except under the ``declared`` evasion: an attacker who obtained a declaration.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from gateway.detect.offline import corpus, evasions
from gateway.detect.offline import measures as evaluation
from gateway.detect.offline.engine_replay import Replay, replay
from gateway.detect.offline.real_attacks import ATTACK_FNS
from gateway.detect.offline.real_traffic import AUTOMATION, BENIGN_FNS, Gen, Request
from gateway.detect.offline.simulate import Session
from gateway.detect.scoring import DEFAULT_ARTIFACT, Artifact, Scorer, load_scorer
from gateway.domain.workloads import Workload

BENIGN_TARGET: Final = 0.005
SEP: Final = "|"
SUITE_ALLOWANCE: Final = 256
"""The allowance every declared account gets in the suite: above any harness's question set
(20-120 questions, reruns free), what a benchmark subset's operator would ask for."""
DECLARED: Final = Workload("evaluation", SUITE_ALLOWANCE)
DECLARED_PROFILES: Final = frozenset({"eval_harness"})
UNDECLARED_SUFFIX: Final = ", undeclared"


@dataclass(frozen=True)
class Size:
    name: str
    limits: corpus.Limits
    users: int
    """Benign people per population (calibration and held-out each); half as many shared keys."""
    automation: int
    """Accounts per automation profile (organisations for ``org_nat``) per population."""
    benign_requests: tuple[int, int]
    operations: int
    """Operations per (attack, evasion)."""
    requests: int
    """Requests per operation, all its accounts together."""
    combos: tuple[str, ...] = evasions.DEFAULT


SIZES: Final = {
    "small": Size("small", corpus.Limits(conversations=1500, modules=120), users=8,
                  automation=2, benign_requests=(16, 48), operations=2, requests=24),
    "full": Size("full", corpus.Limits(), users=240, automation=40, benign_requests=(40, 240),
                 operations=12, requests=160),
}


@dataclass
class Spread:
    median: float
    worst: float


@dataclass
class Cell:
    attack: str
    evasion: str
    operations: int
    accounts: int
    flagged: float
    """Share of accounts under a flag (account or campaign) at the calibrated threshold."""
    flagged_shipped: float
    """The same at the artifact's own threshold."""
    campaign_operations: float
    """Share of operations with at least one account listed in a campaign flag."""
    requests_to_flag: float | None
    """Median position of the account flag among accounts flagged by the classifier."""
    harvest_completions: Spread
    harvest_tokens: Spread
    harvest_completions_shipped: Spread
    """Completions harvested before the flag at the artifact's own threshold."""
    total_completions: Spread
    before_campaign_completions: Spread
    """Per operation, everything harvested before its first campaign flag (all when never)."""


@dataclass
class BenignRow:
    profile: str
    accounts: int
    flagged: float
    flagged_shipped: float
    campaign: float
    median_peak: float


@dataclass
class Summary:
    auc: float
    tpr_1: float
    tpr_01: float


@dataclass
class AdaptiveReport:
    model: str
    size: str
    seed: int
    threshold: float
    shipped_threshold: float
    calibration_accounts: int
    calibration_flag_rate: float
    benign_target: float
    benign_flag_rate: float
    """Held-out benign accounts flagged at the calibrated threshold (all profiles)."""
    benign_flag_rate_shipped: float
    benign_campaign_rate: float
    sources: dict[str, list[str]]
    benign: list[BenignRow]
    cells: list[Cell]
    no_evasion: Summary
    all_cells: Summary
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


# --- populations -------------------------------------------------------------------------------


def _named(sessions: Sequence[Session], prefix: str, group: str | None = None) -> list[Session]:
    """Accounts named ``prefix|k``, requests in time order, campaign set to the group."""
    out = []
    for k, s in enumerate(sessions):
        reqs = sorted(s.requests, key=lambda r: r.ts)
        out.append(Session(f"{prefix}{SEP}{k}", s.profile, s.label, s.client_addr, reqs,
                           group if group is not None else s.campaign))
    return out


def benign_population(pool: corpus.Pool, size: Size, seed: int) -> list[Session]:
    """People and every kind of automation, from ``pool``'s texts."""
    out: list[Session] = []
    for profile, fn in BENIGN_FNS.items():
        count = {"user": size.users, "shared_key": size.users // 2}.get(profile, size.automation)
        for i in range(count):
            g = Gen(random.Random(f"{seed}:{pool.split}:{profile}:{i}"), pool)
            prefix = f"{pool.split}{SEP}{profile}{SEP}{i}"
            out += _named(fn(g, g.rng.randint(*size.benign_requests)), prefix, prefix)
    return out


def operation(pool: corpus.Pool, attack: str, combo: str, index: int, requests: int,
              seed: int) -> list[Session]:
    """One attacker's accounts for (attack, evasion combination)."""
    g = Gen(random.Random(f"{seed}:{attack}:{combo}:{index}"), pool)
    sessions = ATTACK_FNS[attack](g, requests, evasions.style(combo))
    prefix = SEP.join((attack, combo, str(index)))
    return _named(evasions.apply(g, sessions, combo), prefix, prefix)


def operation_requests(size: Size, combo: str) -> int:
    """Requests per operation: a declared operation sends the allowance on top, so that its
    cell measures the allowance as the bound on its harvest rather than a harvest under it."""
    return size.requests + (SUITE_ALLOWANCE if attack_workload(combo) else 0)


def group_of(account: str) -> str:
    """Who an account's campaign sweeps see it beside: every benign account of its split
    (people and automation of unrelated organisations share SDK defaults and open templates, as
    in a deployment), or its own operation's accounts."""
    head = account.split(SEP, 1)[0]
    return head if head in corpus.SPLITS else account.rsplit(SEP, 1)[0]


def benign_workload(s: Session) -> Workload | None:
    """What the operator declared for a benign account: evaluation harnesses, nothing else."""
    return DECLARED if s.profile in DECLARED_PROFILES else None


def attack_workload(combo: str) -> Workload | None:
    """An attacker's declaration: only under the ``declared`` evasion."""
    return DECLARED if "declared" in evasions.parse(combo) else None


# --- metrics -----------------------------------------------------------------------------------


def calibrate(peaks: Sequence[float], target: float = BENIGN_TARGET) -> float:
    """The lowest threshold that flags at most ``target`` of these benign peak risks (above
    1.0, i.e. never, when even that many share the maximum risk)."""
    ordered = sorted(peaks, reverse=True)
    allowed = math.floor(target * len(ordered))
    if allowed >= len(ordered):
        return 0.0
    return math.nextafter(ordered[allowed], math.inf)


def _harvest(s: Session, result: Replay, threshold: float,
             workload: Workload | None) -> tuple[int, int, bool]:
    """(completions, output tokens) harvested before the account came under a flag, and
    whether it ever did."""
    point = result.flagged_at(s.account, threshold, workload)
    stop = point.position if point else len(s.requests)
    listed = result.campaign_at.get(s.account, math.inf)
    got = [r for i, r in enumerate(s.requests) if i < stop and r.ts <= listed
           and (not isinstance(r, Request) or r.harvest)]
    flagged = point is not None or listed < math.inf
    return sum(r.n for r in got), sum(r.completion_tokens * r.n for r in got), flagged


def _before_campaign(op: Sequence[Session], result: Replay) -> int:
    first = min((result.campaign_at.get(s.account, math.inf) for s in op), default=math.inf)
    return sum(r.n for s in op for r in s.requests
               if r.ts <= first and (not isinstance(r, Request) or r.harvest))


def _spread(values: Sequence[float]) -> Spread:
    return Spread(float(statistics.median(values)), float(max(values))) if values \
        else Spread(0.0, 0.0)


def cell(attack: str, combo: str, ops: Sequence[Sequence[Session]], result: Replay,
         threshold: float, shipped: float) -> Cell:
    accounts = [s for op in ops for s in op]
    declared = attack_workload(combo)
    per_op = [[_harvest(s, result, threshold, declared) for s in op] for op in ops]
    shipped_op = [sum(_harvest(s, result, shipped, declared)[0] for s in op) for op in ops]
    positions = [p.position for s in accounts
                 if (p := result.flagged_at(s.account, threshold, declared)) is not None]
    shipped_flags = [result.flagged_at(s.account, shipped, declared) is not None
                     or s.account in result.campaign_at for s in accounts]
    return Cell(
        attack, combo, len(ops), len(accounts),
        flagged=_share([h[2] for op in per_op for h in op]),
        flagged_shipped=_share(shipped_flags),
        campaign_operations=_share([any(s.account in result.campaign_at for s in op)
                                    for op in ops]),
        requests_to_flag=float(statistics.median(positions)) if positions else None,
        harvest_completions=_spread([sum(h[0] for h in op) for op in per_op]),
        harvest_tokens=_spread([sum(h[1] for h in op) for op in per_op]),
        harvest_completions_shipped=_spread(shipped_op),
        total_completions=_spread([sum(r.n for s in op for r in s.requests
                                       if not isinstance(r, Request) or r.harvest)
                                   for op in ops]),
        before_campaign_completions=_spread([_before_campaign(op, result) for op in ops]),
    )


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def benign_rows(sessions: Sequence[Session], result: Replay, threshold: float,
                shipped: float) -> list[BenignRow]:
    """One row per profile, as declared; declared profiles once more as if undeclared."""
    by_profile: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        by_profile[s.profile].append(s)
    rows = []
    for profile, group in by_profile.items():
        rows.append(_row(profile, group, result, threshold, shipped, benign_workload(group[0])))
        if profile in DECLARED_PROFILES:
            rows.append(_row(profile + UNDECLARED_SUFFIX, group, result, threshold, shipped,
                             None))
    return rows


def _row(profile: str, group: Sequence[Session], result: Replay, threshold: float,
         shipped: float, workload: Workload | None) -> BenignRow:
    return BenignRow(
        profile, len(group),
        flagged=_share([result.flagged_at(s.account, threshold, workload) is not None
                        for s in group]),
        flagged_shipped=_share([result.flagged_at(s.account, shipped, workload) is not None
                                for s in group]),
        campaign=_share([s.account in result.campaign_at for s in group]),
        median_peak=float(statistics.median(result.peak(s.account, workload) for s in group)),
    )


def benign_peaks(sessions: Sequence[Session], result: Replay) -> list[float]:
    """Each benign account's peak risk with its verdicts as declared."""
    return [result.peak(s.account, benign_workload(s)) for s in sessions]


def benign_flagged(sessions: Sequence[Session], result: Replay, threshold: float) -> float:
    return _share([result.flagged_at(s.account, threshold, benign_workload(s)) is not None
                   for s in sessions])


def summary(attack_peaks: Sequence[float], benign_peaks: Sequence[float]) -> Summary:
    scores = np.array([*attack_peaks, *benign_peaks], dtype=np.float64)
    labels = np.array([1] * len(attack_peaks) + [0] * len(benign_peaks))
    return Summary(evaluation.roc_auc(scores, labels), evaluation.tpr_at_fpr(scores, labels, 0.01),
                   evaluation.tpr_at_fpr(scores, labels, 0.001))


# --- the run -----------------------------------------------------------------------------------


def _replay(sessions: Sequence[Session], scorer: Scorer, artifact: Artifact) -> Replay:
    return asyncio.run(replay(sessions, scorer, artifact, group_of))


def run(artifact_path: Path = DEFAULT_ARTIFACT, size: Size = SIZES["small"], seed: int = 2027,
        log: Callable[[str], None] = print) -> AdaptiveReport:
    """Calibrate on benign calibration traffic, then replay held-out benign and attacks."""
    started = time.monotonic()
    seconds: dict[str, float] = {}
    artifact = Artifact.load(artifact_path)
    scorer = load_scorer(artifact, "cpu")
    pools = {split: corpus.pool(split, size.limits) for split in corpus.SPLITS}
    seconds["load"] = time.monotonic() - started

    calibration = benign_population(pools["calibration"], size, seed)
    cal = _replay(calibration, scorer, artifact)
    threshold = calibrate(benign_peaks(calibration, cal))
    cal_rate = benign_flagged(calibration, cal, threshold)
    seconds["calibration"] = time.monotonic() - started
    log(f"adaptive: threshold {threshold:.6f} fixed on {len(calibration)} benign calibration "
        f"accounts ({100 * cal_rate:.2f}% flagged; shipped threshold {artifact.threshold:.4f})")

    benign = benign_population(pools["heldout"], size, seed + 1)
    held = _replay(benign, scorer, artifact)
    rows = benign_rows(benign, held, threshold, artifact.threshold)
    rates = [benign_flagged(benign, held, t) for t in (threshold, artifact.threshold)]
    held_peaks = benign_peaks(benign, held)
    seconds["benign"] = time.monotonic() - started

    cells: list[Cell] = []
    peaks: dict[str, list[float]] = defaultdict(list)
    for attack in ATTACK_FNS:
        ops = {combo: [operation(pools["heldout"], attack, combo, j,
                                 operation_requests(size, combo), seed)
                       for j in range(size.operations)] for combo in size.combos}
        result = _replay([s for group in ops.values() for op in group for s in op], scorer,
                         artifact)
        for combo, group in ops.items():
            cells.append(cell(attack, combo, group, result, threshold, artifact.threshold))
            peaks[combo] += [result.peak(s.account, attack_workload(combo))
                             for op in group for s in op]
        log(f"adaptive: {attack} done ({time.monotonic() - started:.0f}s)")
    seconds["attacks"] = time.monotonic() - started
    return AdaptiveReport(
        model=artifact.version, size=size.name, seed=seed, threshold=threshold,
        shipped_threshold=artifact.threshold, calibration_accounts=len(calibration),
        calibration_flag_rate=cal_rate, benign_target=BENIGN_TARGET,
        benign_flag_rate=rates[0], benign_flag_rate_shipped=rates[1],
        benign_campaign_rate=_share([s.account in held.campaign_at for s in benign]),
        sources={split: sorted(p.sources) for split, p in pools.items()},
        benign=rows, cells=cells,
        no_evasion=summary(peaks.get("none", []), held_peaks),
        all_cells=summary([p for v in peaks.values() for p in v], held_peaks),
        seconds=seconds,
    )


# --- output ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _grid(report: AdaptiveReport, title: str, value: Callable[[Cell], str]) -> list[str]:
    attacks = list(dict.fromkeys(c.attack for c in report.cells))
    combos = list(dict.fromkeys(c.evasion for c in report.cells))
    by = {(c.attack, c.evasion): c for c in report.cells}
    width = max(12, *(len(a) + 2 for a in attacks))
    lines = [title, "evasion".ljust(30) + "".join(a.rjust(width) for a in attacks)]
    for combo in combos:
        lines.append(combo.ljust(30) + "".join(value(by[(a, combo)]).rjust(width)
                                               for a in attacks))
    return lines


def _benign_lines(report: AdaptiveReport) -> list[str]:
    lines = ["benign (held-out): accounts, flagged @calibrated, @shipped, listed in a campaign, "
             "median peak risk",
             "profile".ljust(42) + "accts".rjust(7) + "flag".rjust(9) + "@ship".rjust(9)
             + "campaign".rjust(10) + "peak".rjust(8)]
    for r in report.benign:
        base = r.profile.removesuffix(UNDECLARED_SUFFIX)
        kind = " (people)" if base == "user" else " (people and tools)" if base not in AUTOMATION \
            else " (automation, declared)" if r.profile in DECLARED_PROFILES else " (automation)"
        lines.append(f"{r.profile + kind:<42}{r.accounts:>7}{_pct(r.flagged):>9}"
                     f"{_pct(r.flagged_shipped):>9}{_pct(r.campaign):>10}{r.median_peak:>8.3f}")
    return lines


def format_report(report: AdaptiveReport) -> str:
    """Readable tables: summary, benign profiles, then attack x evasion grids."""
    s0, s1 = report.no_evasion, report.all_cells
    lines = [
        f"model {report.model}  size {report.size}  seed {report.seed}",
        f"flag threshold {report.threshold:.6f} (fixed on {report.calibration_accounts} benign "
        f"calibration accounts: {100 * report.calibration_flag_rate:.2f}% flagged, target "
        f"<= {100 * report.benign_target:.1f}%); shipped threshold "
        f"{report.shipped_threshold:.4f}",
        f"held-out benign accounts flagged: {100 * report.benign_flag_rate:.2f}% @calibrated, "
        f"{100 * report.benign_flag_rate_shipped:.2f}% @shipped; listed in a campaign flag: "
        f"{100 * report.benign_campaign_rate:.2f}%",
        f"ROC AUC per account: {s0.auc:.4f} no evasion, {s1.auc:.4f} all cells; "
        f"TPR @1% FPR {100 * s0.tpr_1:.1f}% / {100 * s1.tpr_1:.1f}%; "
        f"TPR @0.1% FPR {100 * s0.tpr_01:.1f}% / {100 * s1.tpr_01:.1f}%",
        "", *_benign_lines(report), "",
        *_grid(report, "accounts flagged @calibrated threshold (@shipped)",
               lambda c: f"{_pct(c.flagged)} ({_pct(c.flagged_shipped)})"), "",
        *_grid(report, "completions harvested before the flag per operation: median/worst "
               "(median total)",
               lambda c: f"{c.harvest_completions.median:.0f}/{c.harvest_completions.worst:.0f}"
                         f" ({c.total_completions.median:.0f})"), "",
        *_grid(report, "completions harvested before the flag @shipped threshold: median/worst",
               lambda c: f"{c.harvest_completions_shipped.median:.0f}/"
                         f"{c.harvest_completions_shipped.worst:.0f}"), "",
        *_grid(report, "output tokens harvested before the flag, thousands: median/worst",
               lambda c: f"{c.harvest_tokens.median / 1e3:.0f}k/"
                         f"{c.harvest_tokens.worst / 1e3:.0f}k"), "",
        *_grid(report, "operations with a campaign flag; completions harvested before it: "
               "median/worst",
               lambda c: f"{_pct(c.campaign_operations)} "
                         f"{c.before_campaign_completions.median:.0f}/"
                         f"{c.before_campaign_completions.worst:.0f}"),
    ]
    return "\n".join(lines)


def run_cli(model: Path, size: str, seed: int, json_path: str | None) -> int:
    """``gateway evaluate --suite adaptive``: tables on stdout, the report as JSON if asked."""
    report = run(model, SIZES[size], seed, log=lambda m: print(m, flush=True))
    print(format_report(report))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.to_json())
        print(f"wrote {path}")
    return 0
