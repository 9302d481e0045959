"""RESULTS.md's tables for one condition of `scripts/operating_point_tables.py`: what the
search chose, then validation and test (systems and paired differences, % with 95% intervals
over users). Reads OUT/{valid,test}.json; prints Markdown.

    python scripts/operating_point_markdown.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from results_table import cell  # scripts/results_table.py: "value [low, high]" in %

LABELS = {"model": "auto, served (refit on train+valid)", "run:auto-scored":
          "auto, scored (train only)", "run:cf": "cf", "ease_users": "EASE (users)",
          "ease_sessions": "EASE (sessions)", "covisitation": "co-visitation", "als": "ALS",
          "item2vec": "item2vec", "popularity": "popularity"}
ORDER = list(LABELS)
METRICS = ("recall@10", "topic_match_rate@10", "popular_share@10")
PAIRED = ("run:cf", "run:auto-scored", "ease_users", "ease_sessions", "covisitation")


def split_tables(result: dict) -> str:
    lines = ["| system | recall@10 | topic match@10 | popular share@10 |", "|---|---|---|---|"]
    for name in ORDER:
        if name in result["systems"]:
            summary = result["systems"][name]["all"]
            lines.append(f"| {LABELS[name]} | " + " | ".join(cell(summary[m]) for m in METRICS)
                         + " |")
    lines += ["", "| paired difference | recall@10 | topic match@10 |", "|---|---|---|"]
    for name in PAIRED:
        key = f"model - {name}"
        if key in result["paired_differences"]:
            summary = result["paired_differences"][key]["all"]
            label = "auto, scored" if name == "run:auto-scored" else LABELS[name]
            lines.append(f"| served − {label} | {cell(summary['recall@10'])} | "
                         f"{cell(summary['topic_match_rate@10'])} |")
    return "\n".join(lines)


def main() -> None:
    out = Path(sys.argv[1])
    valid = json.loads((out / "valid.json").read_text())
    test = json.loads((out / "test.json").read_text())
    record = valid["operating_point"]
    scored = [row["name"] for row in record["rows"] if "recall@10" in row]
    skipped = [row["name"] for row in record["rows"] if "recall@10" not in row]
    refit = record.get("refit") or {}
    print(f"Chosen: **{record['chosen']}**; search {record['search_seconds']:.0f} s = "
          f"{record['search_vs_cf']}× one `cf` training ({record['cf_train_seconds']:.0f} s); "
          f"rows scored: {len(scored)}; not scored (budget): {', '.join(skipped) or 'none'}; "
          f"refit {refit.get('epochs', '-')} epoch(s), {refit.get('seconds', 0):.0f} s.")
    ease = record.get("ease") or {}
    print(f"EASE blended in: {ease.get('skipped') or ease.get('family')} "
          f"{ease.get('params', '')} (tuned on validation, {ease.get('source', '-')}; "
          f"{ease.get('seconds', 0):.0f} s outside the budget); chosen weights: content "
          f"{record['content_blend']:g}, EASE {record.get('ease_blend', 0):g}.\n")
    print(f"Validation ({valid['users']} users):\n")
    print(split_tables(valid))
    reads = test["test_reads"]
    print(f"\nTest ({test['users']} users). **Test reads on this machine's ledger: this run "
          f"{reads['run']}, this data and split {reads['data']}.**\n")
    print(split_tables(test))


if __name__ == "__main__":
    main()
