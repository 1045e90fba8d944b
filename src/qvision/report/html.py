"""The evidence page: one self-contained HTML file (Jinja2, charts inline as SVG, no
network) and a plain-words MODEL_CARD.md, written atomically into a report folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qvision.errors import MissingExtraError, QVisionError
from qvision.eval.tasks.adapters import points_lost
from qvision.fileio import output_set
from qvision.model.names import display_name
from qvision.report import charts
from qvision.report.harm import harm_section, harm_summary
from qvision.report.template import PAGE, STYLE

DEFAULT_BUDGET = 1.0  # points, when the run had no --max-drop
ROBUSTNESS_WARN = 5.0  # points of extra loss under one corruption that the verdict names


@dataclass
class ReportInputs:
    quantize: object | None = None  # QuantizeResult
    fp32_eval: object | None = None  # EvalResult
    int8_eval: object | None = None
    bench: object | None = None  # BenchResult: FP32 first, then INT8
    analysis: object | None = None  # AnalyzeResult
    activations: list[dict] = field(default_factory=list)  # name, counts, edges, lo, hi
    robustness: object | None = None  # RobustnessResult
    data_check: object | None = None  # DataCheck
    manifest: dict | None = None
    max_drop: float | None = None
    parts: tuple[str, ...] | None = None  # what was asked for (None: rendered from saved JSON)
    # measurements of the same run beyond this model's (the demo's labelled OCR figure)
    notes: list[str] = field(default_factory=list)


def _missing(r: ReportInputs) -> dict[str, str]:
    """What a section says when it has nothing: not asked for, or not measurable."""

    def note(part: str) -> str:
        if r.parts is not None and part not in r.parts:
            return f"Not measured: add '{part}' to --report-parts (or use 'all')."
        return "Not measured."

    rob = note("robustness")
    if rob == "Not measured." and r.parts is not None and not (r.fp32_eval and r.fp32_eval.metrics):
        rob = "Not measured: the evaluation images carry no labels."
    return {"sensitivity": note("sensitivity"), "ranges": note("ranges"), "robustness": rob}


def _shift_summary(r: ReportInputs) -> str:
    c = getattr(r.quantize, "shift_check", None)
    if c is None or not c.rows:
        return ""
    departs = [f"{x.shift} {x.severity}" for x in c.rows if x.departs]
    return (
        f"Only the quick shift check ran (INT8 against FP32 on dark, bright, low-contrast and "
        f"defocused copies of {c.images} calibration images, label-free): "
        + (
            f"INT8 departs from FP32 under {', '.join(departs)}."
            if departs
            else "INT8 follows FP32 under every shift checked."
        )
        + " Full robustness on labelled images: --report-parts all."
    )


def _shift_rows(r: ReportInputs) -> tuple[list[list[str]], str]:
    """The quantize run's own check: INT8 against FP32 on shifted calibration images."""
    c = getattr(r.quantize, "shift_check", None)
    if c is None:
        return [], ""

    def row(name, agree, ci, sqnr, departs=False):
        return [
            name,
            _pct(agree),
            _share_span(ci).strip() or "—",
            "identical" if sqnr is None else f"{sqnr:.1f}",
            "departs" if departs else "",
        ]

    rows = [row("clean", c.clean, c.clean_ci, c.clean_sqnr_db)]
    rows += [
        row(f"{x.shift} {x.severity}", x.agreement, x.agreement_ci, x.sqnr_db, x.departs)
        for x in c.rows
    ]
    what = c.measure if c.clean is not None else "output SQNR only (no task known)"
    note = (
        f"INT8 against FP32 on shifted copies of {c.images} calibration images, label-free "
        f"({what}); measured while quantizing. 'departs': INT8 clearly stops following FP32."
    )
    return rows, note


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _metric(task: str):
    from qvision.eval.tasks.adapters import ADAPTERS

    return ADAPTERS[task].primary if task in ADAPTERS else ("top1", 1)


def verdict(r: ReportInputs) -> dict:
    if r.fp32_eval is None or r.int8_eval is None or not r.fp32_eval.metrics:
        return {
            "ok": None,
            "text": "No labelled evaluation: accuracy against a budget not measured.",
        }
    key, sign = _metric(r.int8_eval.task)
    f, q = r.fp32_eval.metrics.get(key), r.int8_eval.metrics.get(key)
    if f is None or q is None:
        return {"ok": None, "text": f"{key} missing from the evaluation."}
    budget = r.max_drop if r.max_drop is not None else DEFAULT_BUDGET
    drop = points_lost(f, q, sign)
    ok: bool | None = drop <= budget + 1e-9
    place = "within" if ok else "outside"
    fid = r.int8_eval.fidelity
    if fid is not None and fid.drop_ci95_low is not None:
        # the interval decides: a drop whose interval spans the budget is not resolved
        lo, hi = fid.drop_ci95_low, fid.drop_ci95_high
        if lo <= budget + 1e-9 < hi:
            ok, place = None, f"not resolved at n = {r.int8_eval.n} against"
        else:
            ok = hi <= budget + 1e-9
            place = "within" if ok else "outside"
    text = (
        f"INT8 {key} {100 * q:.2f} % vs FP32 {100 * f:.2f} %: "
        f"{'loses' if drop > 0 else 'gains'} {abs(drop):.2f} points{_interval(r)}, "
        f"{place} the {budget:g}-point budget"
        f"{'' if r.max_drop is not None else ' (default)'}"
    )
    if r.bench is not None and len(r.bench.models) > 1:
        b0, b1 = r.bench.models[0], r.bench.models[1]
        text += f"; {b1.speedup:.2f}× the FP32 speed, {b0.size_bytes / b1.size_bytes:.1f}× smaller"
    clear = _clear_corruption(r)
    if clear is not None:
        text += (
            f". But under corruption INT8 loses {clear.gap:.1f} points more than FP32 "
            f"({clear.corruption}, severity {clear.severity}: {100 * clear.int8:.1f} vs "
            f"{100 * clear.fp32:.1f} %{_gap_interval(r, clear)}); see Robustness"
        )
    else:
        worst = _worst_corruption(r)
        if worst is not None and worst.gap > ROBUSTNESS_WARN:
            text += (
                f". The largest corrupted gap, {worst.gap:.1f} points ({worst.corruption}, "
                f"severity {worst.severity}), is not resolved at n = {worst.n or r.robustness.images}"
                f"{_gap_interval(r, worst)}"
            )
    return {"ok": ok, "text": text + "."}


def _gap_interval(r: ReportInputs, row) -> str:
    """'; joint 95 % over K settings: lo to hi points' for a row that has one."""
    if row.gap_joint_ci95 is None:
        return "; no interval: the metric is not a mean over images"
    k = sum(1 for x in r.robustness.rows if x.corruption != "clean")
    lo, hi = row.gap_joint_ci95
    return f"; {lo:.1f} to {hi:.1f} points at 95 % jointly over {k} settings"


def _clear_corruption(r: ReportInputs):
    """The corrupted setting that surely costs INT8 more than ROBUSTNESS_WARN points: the
    lower end of its joint interval is above it (with several settings, the worst of them
    is expected to look bad by chance). A metric without an interval: the largest gap."""
    rows = [x for x in getattr(r.robustness, "rows", []) if x.corruption != "clean"]
    if any(x.gap_joint_ci95 is not None for x in rows):
        clear = [x for x in rows if x.gap_joint_ci95 and x.gap_joint_ci95[0] > ROBUSTNESS_WARN]
        return max(clear, key=lambda x: x.gap_joint_ci95[0]) if clear else None
    big = [x for x in rows if x.gap > ROBUSTNESS_WARN]
    return max(big, key=lambda x: x.gap) if big else None


def _interval(r: ReportInputs) -> str:
    """The 95 % interval of the top-1 drop over these images, when it was measured paired."""
    f = r.int8_eval.fidelity
    if f is None or f.drop_ci95_points is None:
        return ""
    return f" (± {f.drop_ci95_points:.2f} at 95 % on these {r.int8_eval.n} images)"


def _share_span(interval) -> str:
    return "" if interval is None else f" [{100 * interval[0]:.0f}–{100 * interval[1]:.0f}]"


def _span(interval) -> str:
    return "—" if interval is None else f"{interval[0]:+.1f} to {interval[1]:+.1f}"


def _worst_corruption(r: ReportInputs):
    rows = [x for x in getattr(r.robustness, "rows", []) if x.corruption != "clean"]
    return max(rows, key=lambda x: x.gap) if rows else None


def _accuracy_rows(r: ReportInputs) -> list[list[str]]:
    if r.fp32_eval is None or r.int8_eval is None:
        return []
    rows = []
    f = r.int8_eval.fidelity
    for k, v in r.fp32_eval.metrics.items():
        q = r.int8_eval.metrics.get(k)
        change = "" if q is None else f"{100 * (q - v):+.2f}"
        if k == _metric(r.int8_eval.task)[0] and f is not None and f.drop_ci95_low is not None:
            change += f" ({-f.drop_ci95_high:+.1f} to {-f.drop_ci95_low:+.1f})"
        rows.append(
            [
                k,
                _pct(v) + _share_span(r.fp32_eval.metrics_ci95.get(k)),
                _pct(q) + _share_span(r.int8_eval.metrics_ci95.get(k)),
                change,
            ]
        )
    if r.int8_eval.agreement is not None:
        span = _share_span(f.top1_agreement_ci95 if f is not None else None)
        rows.append(["agreement with FP32", "", _pct(r.int8_eval.agreement) + span, ""])
    if f is not None:
        rows.append(
            ["output SQNR", "", "identical" if f.sqnr_db is None else f"{f.sqnr_db:.2f} dB", ""]
        )
        rows.append(["output cosine", "", f"{f.cosine:.5f}", ""])
    return rows


def _latency_rows(r: ReportInputs) -> list[list[str]]:
    if r.bench is None:
        return []
    rows = []
    for label, m in zip(
        ["FP32", "INT8", *[f"model {i}" for i in range(3, 9)]], r.bench.models, strict=False
    ):
        energy = "—" if m.energy_j is None else f"{m.energy_j * 1e3:.2f} mJ ({m.energy_method})"
        if m.energy_uncounted:
            energy += f", {m.uncounted_text()}"
        rows.append(
            [
                label,
                f"{m.median_ms:.2f}",
                f"{m.p90_ms:.2f}",
                f"{m.speedup:.2f}×",
                f"{m.size_bytes / 1e6:.2f} MB",
                energy,
            ]
        )
    return rows


def _tradeoff_chart(r: ReportInputs) -> str | None:
    key = _metric(r.int8_eval.task)[0] if r.int8_eval else "metric"
    points = []
    measured = r.bench is not None and r.fp32_eval is not None and r.int8_eval is not None
    if measured and key in r.fp32_eval.metrics and key in r.int8_eval.metrics:
        points.append(("FP32", r.bench.models[0].median_ms, 100 * r.fp32_eval.metrics[key]))
        points.append(("INT8", r.bench.models[1].median_ms, 100 * r.int8_eval.metrics[key]))
    tuning = getattr(r.quantize, "tuning", None)
    if tuning is not None:
        for i, t in enumerate(tuning.trials):
            if t.latency_ms:
                points.append((f"trial {i}", t.latency_ms, 100 * t.metric))
    return charts.accuracy_latency(points, f"{key} (%)") if len(points) > 1 else None


def _sensitivity(r: ReportInputs, top: int = 15):
    a = r.analysis
    if a is None:
        return None, []
    gains = {lay.node: lay for lay in a.layers}
    ranked = [gains[n] for n in a.ranking if n in gains and gains[n].gain_db is not None][:top]
    rows = [
        [
            display_name(x.node, x.label),
            x.node,
            str(x.weight_bits or ""),
            f"{x.sqnr_db:.1f}" if x.sqnr_db else "—",
            f"{x.gain_db:+.2f}",
        ]
        for x in ranked
    ]
    chart = (
        charts.sensitivity([(display_name(x.node, x.label), x.gain_db) for x in ranked])
        if ranked
        else None
    )
    return chart, rows


def _sensitivity_info(r: ReportInputs) -> str:
    a = r.analysis
    if a is None:
        return ""
    measured = sum(1 for x in a.layers if x.gain_db is not None)
    weighted = sum(1 for x in a.layers if x.weight_bits)
    which = (
        f"the {measured} of {weighted} weight layers adding the most error themselves"
        if measured < weighted
        else f"all {measured} weight layers"
    )
    return f"{a.images} calibration images, {which}"


def _robustness(r: ReportInputs):
    rob = r.robustness
    if rob is None or not any(x.corruption != "clean" for x in rob.rows):
        return None, [], ""
    rows = [
        [
            x.corruption,
            str(x.severity or ""),
            _pct(x.fp32),
            _pct(x.int8),
            f"{x.gap:+.2f}",
            _span(x.gap_joint_ci95 if x.corruption != "clean" else x.gap_ci95),
            _pct(x.agreement),
        ]
        for x in rob.rows
    ]
    corrupted = [x for x in rob.rows if x.corruption != "clean"]
    summary = ""
    if corrupted:
        mean_gap = sum(x.gap for x in corrupted) / len(corrupted)
        worst = max(corrupted, key=lambda x: x.gap)
        clear = _clear_corruption(r)
        summary = (
            f"n = {rob.images} images per setting. Clean gap {rob.rows[0].gap:+.2f} points; "
            f"mean gap over {len(corrupted)} corrupted settings {mean_gap:+.2f}; largest "
            f"{worst.gap:+.2f} ({worst.corruption}, severity {worst.severity}). Intervals of "
            f"corrupted settings hold jointly over all {len(corrupted)} at 95 % (Bonferroni); "
            + (
                f"the gap surely exceeds {ROBUSTNESS_WARN:g} points under {clear.corruption} "
                f"{clear.severity}."
                if clear is not None and clear.gap_joint_ci95 is not None
                else f"no setting's gap is shown above {ROBUSTNESS_WARN:g} points at this n."
            )
        )
    chart = charts.robustness(
        [
            (f"{x.corruption} {x.severity or ''}".strip(), 100 * x.fp32, 100 * x.int8)
            for x in rob.rows
        ],
        f"{rob.metric} (%)",
    )
    return chart, rows, summary


def _adversarial(r: ReportInputs) -> tuple[list[list[str]], str]:
    rob = r.robustness
    if rob is None or not getattr(rob, "adversarial", None):
        return [], ""
    rows = [
        [
            a.attack.upper(),
            a.crafted_on,
            f"{a.eps * 255:.0f}/255",
            _pct(a.fp32_success) + _share_span(a.fp32_success_ci95),
            _pct(a.int8_success) + _share_span(a.int8_success_ci95),
        ]
        for a in rob.adversarial
    ]
    pgd = [a for a in rob.adversarial if a.attack == "pgd"]
    worst = max(pgd or rob.adversarial, key=lambda a: a.int8_success - a.fp32_success)
    summary = (
        f"Largest INT8-minus-FP32 success gap: {100 * (worst.int8_success - worst.fp32_success):+.1f} "
        f"points ({worst.attack.upper()} crafted on {worst.crafted_on}, eps {worst.eps * 255:.0f}/255); "
        f"n = {rob.adversarial[0].fp32_correct} / {rob.adversarial[0].int8_correct} images correctly "
        "classified before the attack (FP32 / INT8); 95 % intervals in brackets."
    )
    return rows, summary


def _data_rows(r: ReportInputs) -> list[list[str]]:
    c = r.data_check
    if c is None:
        return []
    rows = [
        ["images", str(c.files)],
        ["unreadable", str(len(c.unreadable))],
        ["exact duplicates", str(sum(len(g) - 1 for g in c.exact_duplicates))],
        ["near duplicates", str(len(c.near_duplicates))],
    ]
    if c.against:
        rows.append([f"same file in {c.against}", str(len(c.leaked_exact))])
        rows.append([f"near copy in {c.against}", str(len(c.leaked_near))])
    if c.classes:
        rows.append(["classes (largest/smallest)", f"{len(c.classes)} ({c.imbalance:.1f}×)"])
    if c.sizes:
        w, h = c.sizes["width"], c.sizes["height"]
        rows.append(["width, height (median)", f"{w[1]} × {h[1]}"])
    rows.append(["modes", ", ".join(f"{k} {v}" for k, v in c.modes.items())])
    return rows


def _file_row(f: dict) -> str:
    """Path and sha256 of a model, and of each external-data file it needs."""
    text = f"{f['path']} — sha256 {f['sha256']}"
    for e in f.get("external_data", []):  # older manifests have none
        text += f"; external data {e['path']} — sha256 {e['sha256']}"
    return text


def _provenance_rows(r: ReportInputs) -> list[list[str]]:
    m = r.manifest
    if not m:
        return []
    rows = [
        ["input model", _file_row(m["input_model"])],
        ["output model", _file_row(m["output_model"])],
    ]
    if m.get("calibration"):
        c = m["calibration"]
        rows.append(
            ["calibration set", f"{c['root']} ({c['images']} images) — sha256 {c['sha256']}"]
        )
    if m.get("plan"):
        rows.append(["plan", f"{m['plan']['path']} — sha256 {m['plan']['sha256']}"])
    rows += [
        ["target", f"{m['target']} ({m['target_reason']})"],
        ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
        ["CPU", f"{m['cpu'].get('name', '')} — {', '.join(m['cpu'].get('int8_flags', []))}"],
        ["command", " ".join(m["command"])],
        ["started / finished", f"{m['started']} / {m['finished']}"],
    ]
    return rows


def render(r: ReportInputs) -> str:
    try:
        import jinja2
    except ImportError:
        raise MissingExtraError("jinja2", "report", "the HTML report") from None
    sens_chart, sens_rows = _sensitivity(r)
    rob_chart, rob_rows, rob_summary = _robustness(r)
    adv_rows, adv_summary = _adversarial(r)
    shift_rows, shift_note = _shift_rows(r)
    hists = [
        charts.histogram(a["name"], a["counts"], a["edges"], a["lo"], a["hi"])
        for a in r.activations
    ]
    env = jinja2.Environment(autoescape=True)
    model = r.quantize.model if r.quantize else (r.int8_eval.model if r.int8_eval else "")
    return env.from_string(PAGE).render(
        title=f"qvision report — {Path(model).name}",
        style=STYLE,
        verdict=verdict(r),
        accuracy=_accuracy_rows(r),
        harm=harm_section(r.int8_eval),
        eval_info=(
            f"{r.int8_eval.task} on {r.int8_eval.dataset.root} ({r.int8_eval.n} images)"
            if r.int8_eval
            else ""
        ),
        latency=_latency_rows(r),
        bench_info=(
            f"batch 1, median of {r.bench.rounds} interleaved rounds, {r.bench.threads} thread(s)"
            if r.bench
            else ""
        ),
        tradeoff=_tradeoff_chart(r),
        quantize=r.quantize,
        sensitivity_chart=sens_chart,
        sensitivity_info=_sensitivity_info(r),
        sensitivity=sens_rows,
        histograms=hists,
        robustness_chart=rob_chart,
        robustness=rob_rows,
        robustness_summary=rob_summary,
        adversarial=adv_rows,
        adversarial_summary=adv_summary,
        data=_data_rows(r),
        provenance=_provenance_rows(r),
        shift_check=shift_rows,
        shift_note=shift_note,
        missing=_missing(r),
        notes=r.notes,
    )


def model_card(r: ReportInputs) -> str:
    v = verdict(r)
    q = r.quantize
    lines = [f"# Model card: {Path(q.output).name if q else 'quantized model'}", ""]
    lines += ["## What it is", ""]
    if q:
        lines.append(
            f"An INT8 version of `{Path(q.model).name}` made by qvision for the `{q.target}` "
            f"target ({q.target_reason}); {q.quantized_nodes} operations run in integer, "
            f"weights {q.weights}, calibrated on {q.calib_images} images with the "
            f"{q.method} method"
            + (
                f" (chosen over {', '.join(k for k in q.method_choice.mean_sqnr_db if k != q.method)}"
                " by how closely each INT8 follows FP32 on shifted copies of calibration images)."
                if q.method_choice
                else "."
            )
        )
    lines += ["", "## Intended use", ""]
    lines.append(
        "The same inputs and task as the float model, on the target above, where its speed "
        "or size matters more than the small accuracy change measured below. Check the "
        "figures on your own data before relying on it."
    )
    lines += ["", "## Measured", "", v["text"], ""]
    for row in _accuracy_rows(r):
        lines.append(f"- {row[0]}: FP32 {row[1] or '—'}, INT8 {row[2]}")
    for row in _latency_rows(r):
        lines.append(f"- {row[0]}: {row[1]} ms median, {row[4]}, energy {row[5]}")
    harm = getattr(r.int8_eval, "harm", None)
    if harm is not None:
        lines += ["", "Per class: " + harm_summary(harm)]
    _, _, rob_summary = _robustness(r)
    lines += ["", "## Robustness", "", rob_summary or _shift_summary(r) or "Not measured."]
    adv_rows, adv_summary = _adversarial(r)
    if adv_rows:
        lines += ["", "Adversarial (share of correctly classified images fooled): " + adv_summary]
        lines += [f"- {a[0]} on {a[1]}, eps {a[2]}: FP32 {a[3]}, INT8 {a[4]}" for a in adv_rows]
    lines += ["", "## Known limits", ""]
    limits = [
        "Accuracy was measured on the evaluation images named above only.",
        "Operations without an integer kernel on the target stay float: "
        + (
            ", ".join(f"{k}×{n}" for k, n in q.float_nodes.items())
            if q and q.float_nodes
            else "none"
        )
        + ".",
    ]
    worst = _clear_corruption(r)
    if worst is not None:
        limits.append(
            f"Under {worst.corruption} (severity {worst.severity}) INT8 scores "
            f"{100 * worst.int8:.1f} % against FP32's {100 * worst.fp32:.1f} %: calibrate on "
            "images like the ones it will see, or compare another calibration method "
            f"(this model used {q.method if q else 'the default'}; --method minmax | "
            "mean-minmax)."
        )
    if r.data_check is not None and (r.data_check.leaked_exact or r.data_check.leaked_near):
        limits.append(
            "Some calibration images also appear in the evaluation set: accuracy is optimistic."
        )
    if q:
        limits += [w for w in q.warnings]
    lines += [f"- {x}" for x in limits]
    return "\n".join(lines) + "\n"


def write_report(r: ReportInputs, out_dir: str | Path) -> Path:
    """report.html and MODEL_CARD.md (and manifest.json when known), replaced together,
    so an interrupted run leaves the previous report whole."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QVisionError("report path exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    page = render(r)
    card = model_card(r)
    with output_set() as stage:  # the three replaced together
        if r.manifest:
            stage(out / "manifest.json").write_text(json.dumps(r.manifest, indent=1))
        stage(out / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        stage(out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"
