"""Two adaptive-suite reports side by side (``gateway evaluate --suite adaptive --json``): per
(attack, evasion), accounts flagged at each report's calibrated threshold and the median
completions harvested per operation before the flag, as ``before -> after``.

    python bench/adaptive_compare.py bench/results/adaptive-before-window-v1.json \\
        bench/results/adaptive-after-window-v2.json [--all]

Without ``--all`` only the single evasions (and none) are shown: the issue's target is about
them (>= 90% flagged, median harvest <= 32 completions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SINGLE = ("none", "stream", "chat_params", "dilute25", "dilute50", "dilute75",
          "head_camouflage", "paraphrase", "human_timing", "completions", "sybil_split")


def _cells(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["attack"], c["evasion"]): c for c in report["cells"]}


def table(before: dict[str, Any], after: dict[str, Any], evasions: list[str]) -> str:
    b, a = _cells(before), _cells(after)
    attacks = list(dict.fromkeys(k[0] for k in a))
    lines = [f"{'evasion':<26}" + "".join(f"{x:>22}" for x in attacks)]
    for evasion in evasions:
        row = f"{evasion:<26}"
        for attack in attacks:
            x, y = b[(attack, evasion)], a[(attack, evasion)]
            row += (f"{100 * x['flagged']:>4.0f}%->{100 * y['flagged']:>3.0f}% "
                    f"{x['harvest_completions']['median']:>4.0f}->"
                    f"{y['harvest_completions']['median']:<4.0f}")
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--all", action="store_true", help="every evasion, pairs included")
    args = parser.parse_args()
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    evasions = list(dict.fromkeys(c["evasion"] for c in after["cells"])) if args.all \
        else list(SINGLE)
    print(f"{before['model']} -> {after['model']}: accounts flagged @calibrated, median "
          "completions harvested per operation before the flag")
    print(table(before, after, evasions))
    for name, r in (("before", before), ("after", after)):
        print(f"{name}: threshold {r['threshold']:.6f}, held-out benign flagged "
              f"{100 * r['benign_flag_rate']:.2f}%, listed in a campaign "
              f"{100 * r['benign_campaign_rate']:.2f}%, AUC {r['no_evasion']['auc']:.4f} "
              f"(no evasion) / {r['all_cells']['auc']:.4f} (all cells)")


if __name__ == "__main__":
    main()
