"""Charts for the HTML report, rendered with matplotlib (Agg) to inline SVG strings."""

from __future__ import annotations

import io

from qvision.errors import MissingExtraError


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "the HTML report's charts") from None
    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG sits inside HTML


def accuracy_latency(points: list[tuple[str, float, float]], metric: str) -> str:
    """(label, latency ms, metric %) per configuration; FP32 first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (label, ms, value) in enumerate(points):
        ax.scatter(ms, value, s=60 if i == 0 else 36, marker="s" if i == 0 else "o")
        ax.annotate(label, (ms, value), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("latency, batch 1 (ms)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return _svg(fig)


def sensitivity(layers: list[tuple[str, float]]) -> str:
    """(layer, dB gained at the output when only it stays float), most sensitive first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.25 * len(layers) + 1))
    names = [n for n, _ in layers][::-1]
    ax.barh(names, [g for _, g in layers][::-1], color="#c0504d")
    ax.set_xlabel("output SQNR gained with only this layer float (dB)")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def histogram(name: str, counts, edges, lo: float, hi: float) -> str:
    """A tensor's float values with the quantization grid's range marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.2, 2.2))
    ax.stairs(counts, edges, fill=True, color="#4f81bd")
    for x in (lo, hi):
        ax.axvline(x, color="#c0504d", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_title(name, fontsize=7)
    ax.tick_params(labelsize=6)
    return _svg(fig)


def robustness(rows: list[tuple[str, float, float]], metric: str) -> str:
    """(setting, FP32 %, INT8 %) per corruption and severity."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 3.2))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r[1] for r in rows], width=0.4, label="FP32")
    ax.bar([i + 0.2 for i in x], [r[2] for r in rows], width=0.4, label="INT8")
    ax.set_xticks(list(x), [r[0] for r in rows], rotation=70, fontsize=6)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def stream(points: list[dict], alerts: list[tuple[int, str]], agreement: str) -> str:
    """The monitor's window over the stream: agreement with FP32, the worst grid's clipped
    share above calibration, and the drift test's p-value; alerts as vertical lines."""
    import math

    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(7.2, 5.4), sharex=True)
    x = [p["images"] for p in points]
    series = [
        (agreement, [p["agreement"] for p in points], "linear"),
        ("saturation above calibration", [p["saturation"] for p in points], "linear"),
        ("drift p (adjusted)", [p["drift_p"] for p in points], "log"),
    ]
    for ax, (label, ys, scale) in zip(axes, series, strict=True):
        ax.plot(x, [math.nan if y is None else y for y in ys], color="#4f81bd")
        ax.set_ylabel(label, fontsize=7)
        ax.set_yscale(scale)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        for at, _ in alerts:
            ax.axvline(at, color="#c0504d", linestyle="--", linewidth=1)
    axes[-1].set_xlabel("images seen")
    return _svg(fig)
