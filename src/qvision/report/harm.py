"""The report's "Per-class harm" section: the most hurt classes with paired intervals, how
many changed beyond them (said plainly when few images per class resolve nothing), the
groups of --groups, and thumbnails of images FP32 and INT8 classify differently."""

from __future__ import annotations

import base64
import io
from statistics import median

from qvision.errors import QVisionError
from qvision.intervals import Z95

THUMBS = 24  # images in the strip; the JSON keeps up to 50, and counts all
THUMB_PX = 96


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _beyond(k: int) -> str:
    if k == 0:
        return "no class changed beyond its own 95 % interval"
    return f"{k} changed beyond {'its' if k == 1 else 'their'} own 95 % interval"


def harm_summary(harm) -> str:
    """One paragraph: how many classes lost images, how many changed beyond their interval,
    and how wide an interval is at this many images per class."""
    c = harm.classes
    lost = sum(1 for x in harm.per_class if x.lost)
    per = median(x.n for x in harm.per_class) if harm.per_class else 0
    # the half-width of a class's interval when nothing changed: z²/(n + z²)
    width = 100 * Z95**2 / (per + Z95**2) if per else 100.0
    text = (
        f"{lost} of {c} classes lost at least one image to INT8 (FP32 right, INT8 wrong); "
        f"{_beyond(harm.beyond_interval)} (at 95 % jointly over all {c} classes, the count "
        f"to read when picking the worst of many: {harm.beyond_joint_interval}). "
    )
    per_text = f"{per:g} image{'' if per == 1 else 's'}"
    if harm.beyond_interval == 0:
        text += (
            f"With a median of {per_text} per class, a class's interval spans about "
            f"±{width:.0f} points even when nothing changed, so no single class's change is "
            "resolved at this n: the table shows where to look, not proven harm."
        )
    else:
        text += (
            f"With a median of {per_text} per class an interval spans about ±{width:.0f} "
            "points when nothing changed; the classes beyond theirs lost more than chance "
            "alone explains at this n."
        )
    return text


def _row(label: str, x) -> list[str]:
    lo, hi = x.change_ci95
    return [
        label,
        str(x.n),
        f"{100 * x.reference_top1:.0f} % → {100 * x.top1:.0f} %",
        f"{x.change_points:+.1f}",
        f"{lo:+.1f} to {hi:+.1f}",
        f"{x.lost} / {x.gained}",
    ]


def thumbnail(path: str, px: int = THUMB_PX) -> str | None:
    """A small JPEG of the image as a data URI; None when it cannot be read now (a report
    rendered from saved JSON on another machine)."""
    from qvision.data.images import load_image

    try:
        img = load_image(path)
    except (QVisionError, OSError):
        return None
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def class_ap_summary(h) -> str:
    """One paragraph for a detector's per-class AP."""
    lost = sum(1 for x in h.per_class if x.change_points < 0)
    without = sum(1 for x in h.per_class if x.change_ci95 is None)
    text = (
        f"{lost} of {h.classes} classes lost {h.metric} under INT8; "
        f"{_beyond(h.beyond_interval)} (paired bootstrap over images, {h.rounds} resamples)."
    )
    if without:
        text += (
            f" {_plural(without, 'class')} appear in fewer than {h.min_images} images and get "
            "no interval: resampling so few images cannot show how uncertain their AP is."
        )
    return text


def _ap_row(x) -> list[str]:
    span = "—" if x.change_ci95 is None else f"{x.change_ci95[0]:+.1f} to {x.change_ci95[1]:+.1f}"
    return [
        x.name,
        f"{x.images} / {x.instances}",
        f"{100 * x.reference_ap:.1f} → {100 * x.ap:.1f}",
        f"{x.change_points:+.1f}",
        span,
        "",
    ]


def _class_ap_section(h) -> dict:
    by_id = {c.category_id: c for c in h.per_class}
    return {
        "metric": h.metric,
        "n_label": "images / boxes",
        "rows": [_ap_row(by_id[i]) for i in h.most_hurt],
        "summary": class_ap_summary(h),
        "ranking": (
            f"Ranked by the change in {h.metric} (INT8 minus FP32, most negative first); "
            "ties: more ground-truth boxes first, then the category id. Only classes that lost "
            "AP are listed; every class is in the JSON (class_ap.per_class). Intervals: "
            "percentile bootstrap of the paired change, resampling images."
        ),
        "thumbs": [],
        "disagreements": "",
        "groups": [],
        "groups_note": "",
    }


def harm_section(int8_eval, thumbs: int = THUMBS) -> dict | None:
    """What the template shows (None: no per-class harm was measured)."""
    harm = getattr(int8_eval, "harm", None)
    if harm is None:
        ap = getattr(int8_eval, "class_ap", None)
        return None if ap is None else _class_ap_section(ap)
    by_label = {c.label: c for c in harm.per_class}
    rows = [_row(by_label[i].name, by_label[i]) for i in harm.most_hurt]
    strip = []
    for d in harm.disagreements[:thumbs]:
        uri = thumbnail(d.path)
        if uri is not None:
            strip.append(
                {
                    "uri": uri,
                    "path": d.path,
                    "fp32": d.reference_name,
                    "int8": d.model_name,
                    "truth": d.true_name,
                    "hurt": d.reference_class == d.true_class,
                }
            )
    n = int8_eval.n
    shown = f"the first {len(strip)}" if len(strip) < harm.disagreements_total else "all"
    unlisted = {a: k for a, k in harm.groups_unlisted.items() if k}
    return {
        "metric": "top-1",
        "n_label": "n",
        "rows": rows,
        "summary": harm_summary(harm),
        "ranking": (
            "Ranked by the change in top-1 (INT8 minus FP32, most negative first); ties: "
            "more images right for only one of the two models first, then by class index. Only classes that lost an image are listed; every class is in the JSON "
            "(harm.per_class). Intervals: Tango's paired score interval, chosen because it "
            "stays close to 95 % coverage at a few images per class, where Wald-type "
            "intervals fall well below it."
        ),
        "thumbs": strip,
        "disagreements": (
            f"{_plural(harm.disagreements_total, 'image')} of {n} classified differently by "
            f"FP32 and INT8; {shown} shown, those INT8 got wrong where FP32 was right first "
            "(in red)."
            if harm.disagreements_total
            else f"FP32 and INT8 pick the same class on all {n} images."
        ),
        "groups": [_row(f"{g.attribute} = {g.value}", g) for g in harm.groups],
        "groups_note": (
            f"From {harm.groups_file}. Images without a value for an attribute are left out "
            "of its groups: "
            + (", ".join(f"{a}: {_plural(k, 'image')}" for a, k in unlisted.items()) or "none")
            + "."
            if harm.groups
            else ""
        ),
    }
