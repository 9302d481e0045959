"""Markdown table for RESULTS.md from `relrec evaluate --json` outputs (validation, test)."""

from __future__ import annotations

import json
import sys

METRICS = ("recall@10", "topic_match_rate@10", "popular_share@10", "recall@50")


def cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    if "low" not in entry or entry["low"] is None:
        return f"{100 * entry['value']:.2f}"
    return f"{100 * entry['value']:.2f} [{100 * entry['low']:.2f}, {100 * entry['high']:.2f}]"


def table(result: dict) -> str:
    split = result["split"]
    reads = result.get("test_reads")
    lines = [f"**{split}** — {result['users']} users, "
             f"{result['systems']['model']['all']['counts']['pairs']} warm pairs"
             + (f"; test period read {reads['data']} time(s) for this data and split"
                if reads else ""), "",
             "| system | " + " | ".join(METRICS) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for name, summary in result["systems"].items():
        label = "auto (model)" if name == "model" else name
        lines.append(f"| {label} | " + " | ".join(cell(summary["all"].get(m)) for m in METRICS)
                     + " |")
    lines += ["", "| paired, model − | " + " | ".join(METRICS) + " |",
              "|---|" + "---:|" * len(METRICS)]
    for name, difference in result["paired_differences"].items():
        other = name.removeprefix("model - ")
        lines.append(f"| {other} | " + " | ".join(cell(difference["all"].get(m))
                                                   for m in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        with open(path) as handle:
            print(table(json.load(handle)) + "\n")


if __name__ == "__main__":
    main()
