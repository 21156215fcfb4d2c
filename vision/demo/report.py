"""The demo report: ``report.md`` and a self-contained ``report.html`` (pictures embedded as base64)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vision.benchmarks.report import FLOORS


@dataclass
class TaskResult:
    """What the demo measured for one task (sparse and full label runs, same schedule)."""

    task: str
    description: str
    metric_name: str
    sparse: float
    full: float
    sparse_budget: dict
    full_budget: dict
    seed: int
    commands: dict
    train_seconds: dict
    pictures: list[Path] = field(default_factory=list)
    full_converged: Optional[bool] = None
    steps: Optional[int] = None

    def ratio_line(self) -> str:
        key, floor, shown = FLOORS[self.task]
        if self.full >= floor and self.full_converged:
            return f"sparse / full = {self.sparse / self.full:.3f} ({self.sparse:.3f} / {self.full:.3f})"
        return (f"no sparse/full ratio: the schedule was short ({self.steps} steps), so the full-label run "
                f"({shown} {self.full:.3f}) is below the {floor:.2f} floor or not converged; see the converged "
                "numbers in docs/BENCHMARKS.md (embedded below)")


def _budget(budget: dict) -> str:
    if "total" in budget:
        return f"{budget['labelled']:,} of {budget['total']:,} ({100 * budget['labelled'] / max(budget['total'], 1):.3g}%)"
    return ", ".join(f"{k}: {v}" for k, v in budget.items())


def markdown(results: list[TaskResult], timings: dict, benchmarks_md: Optional[str],
             plots: Sequence[Path] = ()) -> str:
    """The report as Markdown: the table, timings, per-task commands and pictures, benchmark plots."""
    lines = ["# sparsevision demo", "",
             "Each task trains the same short schedule twice on the built-in synthetic data — once from sparse "
             "labels with the sparse-label engine, once from full labels — and scores both on the test split "
             "against the full labels. The schedules are minutes long, far from converged: the pictures show "
             "what a few minutes of training learn; the converged comparison is in docs/BENCHMARKS.md.", "",
             "| task | labels | steps | metric | sparse | full | labels used (sparse) | labels used (full) | seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.task} | {r.description} | {r.steps} | {r.metric_name} | {r.sparse:.3f} | "
                     f"{r.full:.3f} | {_budget(r.sparse_budget)} | {_budget(r.full_budget)} | {r.seed} |")
    lines += ["", "## Timing", ""] + [f"- {name}: {seconds:.0f} s" for name, seconds in timings.items()]
    for r in results:
        lines += ["", f"## {r.task}", "", f"- {r.ratio_line()}",
                  *[f"- {kind} run: `{command}` ({r.train_seconds.get(kind, math.nan):.0f} s)"
                    for kind, command in r.commands.items()], ""]
        lines += [f"![{p.stem}]({p.name})" for p in r.pictures]
    if benchmarks_md:
        lines += ["", "## Converged benchmarks (docs/BENCHMARKS.md)", "", benchmarks_md]
    if plots:
        lines += ["", "## Label-efficiency plots (docs/benchmarks/)", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def to_html(markdown_text: str, pictures: list[Path]) -> str:
    """A minimal self-contained HTML page of the report: headings, tables, text, embedded PNGs."""
    images = {p.name: base64.b64encode(p.read_bytes()).decode() for p in pictures if p.is_file()}
    body, table = [], []

    def flush_table() -> None:
        if table:
            body.append("<table border=1 cellpadding=4>" + "".join(table) + "</table>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-"):  # skip the |---| separator
                table.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        flush_table()
        name = line[line.find("(") + 1:-1] if line.startswith("![") else None
        if name in images:
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{images[name]}" '
                        'style="max-width:100%">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    return ("<!doctype html><html><head><meta charset='utf-8'><title>sparsevision demo</title></head>"
            "<body style='font-family:sans-serif;max-width:1400px'>" + "\n".join(body) + "</body></html>\n")
