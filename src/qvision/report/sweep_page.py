"""A sweep's results as one self-contained HTML table (no Jinja2 needed: plain escaping)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from qvision.records import SweepResult
from qvision.report.template import STYLE

COLUMNS = (
    "model", "target", "algorithms", "weights", "data", "n", "metric", "FP32", "INT8",
    "drop (points)", "95 % paired", "agreement", "size", "quantize s",
)  # fmt: skip


def cells(result: SweepResult) -> list[list[str]]:
    """The table's text, row by row (the CLI prints the same)."""

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.2f}%"

    out = []
    for r in result.rows:
        ci = "—" if r.drop_ci95 is None else f"{r.drop_ci95[0]:+.2f} to {r.drop_ci95[1]:+.2f}"
        out.append(
            [
                Path(r.model).name,
                r.target,
                r.algorithms
                if r.algorithms != "default"
                else f"default ({','.join(r.applied) or 'none'})",
                r.weights,
                Path(r.data).name,
                str(r.n),
                r.metric,
                pct(r.fp32),
                pct(r.int8),
                "—" if r.drop is None else f"{r.drop:+.2f}",
                ci,
                pct(r.agreement),
                f"{r.size_bytes / 2**20:.2f} MB ({r.size_bytes / r.fp32_size_bytes:.2f}×)",
                f"{r.quantize_seconds:.1f}",
            ]
        )
    return out


def page(result: SweepResult) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in cells(result)
    )
    note = (
        f"{len(result.rows)} rows from {escape(result.config)}; ran as {escape(result.executor)} "
        f"pieces ({result.workers} at once) in {result.seconds:.0f} s. Drops are points lost "
        "against each float model on the same images; intervals are paired (classification)."
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>qvision sweep'
        f'</title>\n{STYLE}</head><body>\n<h1>qvision sweep</h1>\n<p class="note">{note}</p>\n'
        f"<table><tr>{head}</tr>\n{body}\n</table>\n</body></html>\n"
    )
