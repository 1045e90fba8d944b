"""The monitor's page (``qvision monitor --html``): the current window, the alerts and the
window over the stream, for people; the report's style and chart helpers."""

from __future__ import annotations

from pathlib import Path

from qvision.errors import MissingExtraError
from qvision.fileio import write_text_atomic
from qvision.report import charts
from qvision.report.template import MONITOR_PAGE, STYLE


def _pct(v, ci=None) -> str:
    if v is None:
        return "—"
    span = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    return f"{100 * v:.1f} %{span}"


def render(res, refresh: int | None = None) -> str:
    """The page of a MonitorResult; ``refresh``: seconds between reloads (while following)."""
    try:
        import jinja2
    except ImportError:
        raise MissingExtraError("jinja2", "report", "the monitor's page") from None
    t = res.thresholds
    worst = max(res.saturation.items(), key=lambda kv: kv[1], default=(None, 0.0))
    window = [
        [
            f"{res.agreement_metric} with FP32 (n={min(res.sampled, int(t.get('window', 0)))}, 95 %)",
            _pct(res.agreement, res.agreement_ci95),
            f"upper end < {_pct(t.get('agreement'))}",
        ],
        [
            "worst grid's clipped share",
            _pct(worst[1]) + (f" ({worst[0]})" if worst[0] else ""),
            f"> calibration + {_pct(t.get('saturation'))}",
        ],
        [
            "input drift, KS p (Bonferroni)",
            "—" if res.drift is None else f"{res.drift:.2g}",
            f"< {t.get('drift_p')}",
        ],
        [
            "INT8 latency per image (median)",
            "—" if res.latency_ms is None else f"{res.latency_ms:.2f} ms",
            "",
        ],
    ]
    points = [p for p in res.history if p["images"] >= t.get("min_images", 0)]
    chart = (
        charts.stream(points, [(a.at_image, a.kind) for a in res.alerts], res.agreement_metric)
        if len(points) > 1
        else None
    )
    env = jinja2.Environment(autoescape=True)
    return env.from_string(MONITOR_PAGE).render(
        title=f"qvision monitor — {Path(res.model).name}",
        style=STYLE,
        refresh=refresh,
        headline=(
            f"{len(res.alerts)} alert(s) in {res.images} images"
            if res.alerts
            else f"No alert in {res.images} images"
        ),
        info=(
            f"{res.model} against {res.reference} ({res.task or 'classification'}); "
            f"{res.sampled} images also through FP32; windows of {t.get('window')} images, "
            f"judged from {t.get('min_images')}."
        ),
        window=window,
        alerts=res.alerts,
        chart=chart,
        grids=[
            [name, _pct(v), _pct(res.saturation_baseline.get(name))]
            for name, v in res.saturation.items()
        ],
        skipped=res.skipped,
    )


def write_page(res, path: str | Path, refresh: int | None = None) -> Path:
    """Written atomically: a reader never sees half a page."""
    write_text_atomic(Path(path), render(res, refresh))
    return Path(path)
