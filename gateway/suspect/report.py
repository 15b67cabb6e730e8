"""The run as a report to attach to a ToS case: JSON (machine-readable) and Markdown.

What it holds: the suspect's base URL and model name, who ran it and when, the method (test,
corrections, alpha, watermark parameters), queries and pairs spent, and the accounts or groups
with their corrected p-values. What it never holds: the suspect's API key, any watermark key or
secret, or the suspect's replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.suspect.runner import SuspectResult
from gateway.suspect.sequential import Hypothesis

METHOD = ("One-sided exact binomial test of the green-token count over distinct (context, token) "
          "pairs of the suspect's replies (pairs copied from our prompts excluded; each view "
          "scores the distinct pairs seen at least min_count times, min_count in {V}), per "
          "account key and per group (summed counts, Binomial(n*k, gamma)); Bonferroni over {H} "
          "hypotheses (accounts and groups, times views) and a union bound over at most {L} "
          "sequential looks: corrected p = min(1, p * {H} * {L}).")


def _hypothesis(h: Hypothesis) -> dict[str, Any]:
    return {"kind": h.kind, "name": h.name, "min_count": h.min_count, "green": h.green,
            "trials": h.trials, "green_fraction": round(h.green_fraction, 6),
            "log10_p": round(h.log10_p, 3),
            "log10_p_corrected": round(h.log10_p_corrected, 3), "p_corrected": h.p_corrected}


def report_json(result: SuspectResult, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The report as a JSON-ready dict; ``meta`` (suspect URL, model, actor, times) goes in
    as given and must hold no secret."""
    return {
        **dict(meta),
        "verdict": result.verdict,
        "attributed": [_hypothesis(h) for h in result.attributed],
        "best": [_hypothesis(h) for h in result.best],
        "queries": result.queries, "failed_queries": result.failed_queries,
        "tokens": result.tokens, "pairs_scored": result.pairs,
        "accounts_tested": result.accounts_tested, "groups_tested": result.groups_tested,
        "hypotheses": result.hypotheses, "looks": len(result.looks),
        "max_looks": result.max_looks, "alpha": result.alpha,
        "watermark": {"gamma": result.gamma, "context_width": result.width},
        "detectable_excess": result.detectable_excess,
        "trajectory": [{"look": lk.index, "queries": lk.queries, "pairs": lk.pairs,
                        "best_log10_p_corrected": (lk.best[0].log10_p_corrected
                                                   if lk.best else 0.0)}
                       for lk in result.looks],
        "views_min_count": list(result.min_counts),
        "method": METHOD.format(H=result.hypotheses, L=result.max_looks,
                                V=list(result.min_counts)),
        "seconds": round(result.seconds, 3),
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable rendering of :func:`report_json`'s output."""
    lines = [f"# Suspect model test: {report['verdict'].replace('_', ' ')}", ""]
    for label in ("base_url", "model", "actor", "started_at", "finished_at"):
        if label in report:
            lines.append(f"- **{label}**: {report[label]}")
    lines += [f"- **queries**: {report['queries']} ({report['failed_queries']} failed); "
              f"**tokens**: {report['tokens']}; **distinct pairs scored**: "
              f"{report['pairs_scored']}",
              f"- **tested**: {report['accounts_tested']} accounts, {report['groups_tested']} "
              f"groups; alpha {report['alpha']:g}; looks {report['looks']} of at most "
              f"{report['max_looks']}", ""]
    if report["verdict"] != "attributed" and report["detectable_excess"] is not None:
        lines += [f"No account or group attributed. A green-rate excess of "
                  f"{report['detectable_excess']:.4f} over gamma would have been attributed with "
                  f"90% power at this number of pairs.", ""]
    lines += ["| kind | name | view (min count) | green / trials | green fraction | log10 p | "
              "corrected p |", "|---|---|---|---|---|---|---|"]
    for h in report["best"]:
        lines.append(f"| {h['kind']} | {h['name']} | {h['min_count']} | "
                     f"{h['green']} / {h['trials']} | "
                     f"{h['green_fraction']:.4f} | {h['log10_p']:.2f} | "
                     f"{h['p_corrected']:.3g} |")
    lines += ["", f"Method: {report['method']}", ""]
    return "\n".join(lines)
