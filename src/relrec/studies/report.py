"""Study reports: JSON (every number), Markdown tables and a self-contained HTML page with plots.

A study is a list of rows, each a system scored by :func:`relrec.evaluate.evaluation.
evaluate_system` on the same triggers, plus named curves (e.g. the w_co:w_sem ratio sweep or
the MTMH α sweep). Every number in the report is read from ``results.json``, which names the
run manifest it came from.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relrec.manifest import atomic_write_bytes, atomic_write_json
from relrec.evaluate.evaluation import FEW_USERS_WARNING
from relrec.evaluate.sealed import reads_line


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn:
    every ``relrec`` command imports this module, and matplotlib costs ~0.35 s of start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot

ENGAGEMENT = "recall@10"
RELEVANCE = "topic_match_rate@10"
SEGMENT_LABELS = {"all": "overall", "popular_triggers": "top-1% triggers",
                  "unpopular_triggers": "bottom-10% triggers", "cold": "cold pairs"}


@dataclass
class StudyRow:
    system: str
    group: str  # e.g. "Table I", "Table II", "peers"
    summary: dict  # SystemEvaluation.summary: segment -> metric -> interval
    paired_vs_reference: dict | None = None  # metric -> interval of (row - reference)
    settings: dict = field(default_factory=dict)  # train config / peer parameters


def split_notes(segments: dict, test_reads: dict | None) -> list[str]:
    """Report lines saying how many users the intervals resample and how often test was read."""
    users = segments["all"].n_users
    if users == 0:
        notes = ["Intervals resample triggers: this run's held-out pairs carry no users (too "
                 "narrow; run `relrec prepare` again)."]
    else:
        notes = [f"Intervals resample users: {users} users in the scored period"
                 + (f" (fewer than {FEW_USERS_WARNING}: wide, uncertain intervals)."
                    if users < FEW_USERS_WARNING else ".")]
    if test_reads:
        notes.append(reads_line(test_reads) + ".")
    return notes


@dataclass
class StudyResult:
    name: str
    split: str
    reference: str  # the row paired differences are taken against
    rows: list[StudyRow]
    curves: dict[str, list[dict]] = field(default_factory=dict)  # name -> [{x, system}]
    notes: list[str] = field(default_factory=list)
    relevance_metric: str = RELEVANCE
    manifest: str = ""

    def row(self, system: str) -> StudyRow:
        return next(row for row in self.rows if row.system == system)

    def to_dict(self) -> dict:
        return asdict(self)


def _metric(row: StudyRow, metric: str, segment: str = "all") -> dict | None:
    return row.summary.get(segment, {}).get(metric)


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    if "low" not in entry or entry.get("low") is None:
        return f"{entry['value'] * 100:.2f}"
    return f"{entry['value'] * 100:.2f} [{entry['low'] * 100:.2f}, {entry['high'] * 100:.2f}]"


def markdown_table(result: StudyResult, segments=("all",),
                   metrics=(ENGAGEMENT, None, "popular_share@10")) -> str:
    metrics = [result.relevance_metric if m is None else m for m in metrics]
    header = ["system", "group"] + [f"{m} ({SEGMENT_LABELS[s]})" for s in segments
                                    for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result.rows:
        cells = [row.system, row.group] + [_cell(_metric(row, m, s)) for s in segments
                                           for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(result: StudyResult, metrics=(ENGAGEMENT, None)) -> str:
    metrics = [result.relevance_metric if m is None else m for m in metrics]
    lines = ["| system | " + " | ".join(f"Δ {m} vs {result.reference}" for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for row in result.rows:
        if not row.paired_vs_reference or row.system == result.reference:
            continue
        lines.append(f"| {row.system} | " + " | ".join(
            _cell(row.paired_vs_reference.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def _errorbar(ax, entries_x, entries_y, label, marker="o", color=None):
    x, y = entries_x["value"], entries_y["value"]
    ax.errorbar(x * 100, y * 100,
                xerr=[[(x - entries_x["low"]) * 100], [(entries_x["high"] - x) * 100]],
                yerr=[[(y - entries_y["low"]) * 100], [(entries_y["high"] - y) * 100]],
                fmt=marker, capsize=3, label=label, color=color)


def tradeoff_plot(result: StudyResult, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    for position, row in enumerate(result.rows):
        engagement, relevance = _metric(row, ENGAGEMENT), _metric(row, result.relevance_metric)
        if not engagement or not relevance or engagement.get("low") is None:
            continue
        _errorbar(ax, engagement, relevance, row.system,
                  marker="s" if row.group == "peers" else "o",
                  color=plt.cm.tab20(position % 20))  # distinct colours for up to 20 rows
    ax.set_xlabel(f"engagement: {ENGAGEMENT} (%)")
    ax.set_ylabel(f"relevance: {result.relevance_metric} (%)")
    ax.set_title(f"{result.name} study ({result.split} split), 95% bootstrap intervals")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_plot(result: StudyResult, curve: str, path: Path) -> Path:
    points = result.curves[curve]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [point["x"] for point in points]
    for metric, color in ((ENGAGEMENT, "tab:blue"), (result.relevance_metric, "tab:orange")):
        entries = [result.row(point["system"]).summary["all"].get(metric) for point in points]
        if not all(entries):
            continue
        values = [entry["value"] * 100 for entry in entries]
        low = [entry["low"] * 100 for entry in entries]
        high = [entry["high"] * 100 for entry in entries]
        axis = ax if metric == ENGAGEMENT else ax.twinx()
        axis.plot(range(len(xs)), values, marker="o", color=color, label=metric)
        axis.fill_between(range(len(xs)), low, high, color=color, alpha=0.2)
        axis.set_ylabel(f"{metric} (%)", color=color)
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel(curve)
    ax.set_title(f"{curve} sweep ({result.split} split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bucket_plot(result: StudyResult, path: Path) -> Path:
    segments = ["all", "popular_triggers", "unpopular_triggers"]
    rows = [row for row in result.rows if all(_metric(row, ENGAGEMENT, s) for s in segments)]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / max(len(rows), 1)
    for axis, metric in zip(axes, (ENGAGEMENT, result.relevance_metric)):
        for position, row in enumerate(rows):
            entries = [_metric(row, metric, s) for s in segments]
            if not all(entries):
                continue
            values = [e["value"] * 100 for e in entries]
            errors = [[(e["value"] - e["low"]) * 100 for e in entries],
                      [(e["high"] - e["value"]) * 100 for e in entries]]
            axis.bar([i + position * width for i in range(len(segments))], values, width,
                     yerr=errors, capsize=2, label=row.system)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(segments))])
        axis.set_xticklabels([SEGMENT_LABELS[s] for s in segments])
        axis.set_ylabel(f"{metric} (%)")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"by trigger popularity ({result.split} split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: StudyResult, directory: str | Path, extra_figures=()) -> dict[str, Path]:
    """Write results.json, report.md, report.html and the PNG plots into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "results.json", result.to_dict())
    figures = [tradeoff_plot(result, directory / "tradeoff.png"),
               bucket_plot(result, directory / "buckets.png")]
    for curve in result.curves:
        safe = "".join(ch if ch.isalnum() else "_" for ch in curve)
        figures.append(curve_plot(result, curve, directory / f"curve_{safe}.png"))
    figures += [Path(f) for f in extra_figures]
    segments = ("all", "popular_triggers", "unpopular_triggers")
    markdown = [f"# {result.name} study ({result.split} split)", "",
                f"Numbers from `{result.manifest}`; % with 95% bootstrap intervals over triggers.",
                "", "## Overall", "", markdown_table(result), "",
                "## By trigger popularity", "",
                markdown_table(result, segments=segments[1:],
                               metrics=(ENGAGEMENT, None)), "",
                f"## Paired differences against {result.reference}", "",
                paired_table(result), ""]
    if result.notes:
        markdown += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    markdown += [f"![{figure.stem}]({figure.name})" for figure in figures]
    atomic_write_bytes(directory / "report.md", "\n".join(markdown).encode())
    body = [f"<h1>{html.escape(result.name)} study ({result.split} split)</h1>"]
    for figure in figures:
        encoded = base64.b64encode(figure.read_bytes()).decode()
        body.append(f'<img alt="{figure.stem}" src="data:image/png;base64,{encoded}" '
                    'style="max-width:100%">')
    body.append("<pre>" + html.escape("\n".join(markdown[:-len(figures)] if figures
                                                 else markdown)) + "</pre>")
    body.append("<script type='application/json' id='results'>"
                + html.escape(json.dumps(result.to_dict())) + "</script>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>relrec study</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "pre{white-space:pre-wrap}</style></head><body>" + "".join(body) + "</body></html>")
    atomic_write_bytes(directory / "report.html", page.encode())
    return {"json": directory / "results.json", "markdown": directory / "report.md",
            "html": directory / "report.html", "figures": figures}
