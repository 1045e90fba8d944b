"""Per-class AP of a detector against its float reference: AP@[.5:.95] of each category
from faster-coco-eval's precision array, and the change's 95 % interval by a paired
bootstrap over images (the same resampled images scored for both models)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qvision.errors import MissingExtraError
from qvision.records import ClassAP, ClassApHarm

ROUNDS = 200
MIN_IMAGES = 10  # fewer images with a class: its resamples repeat the same few, no interval
MOST_HURT = 10


def class_ap(gt: dict, detections: list[dict]) -> dict[int, float]:
    """AP@[.5:.95] per category id with ground truth (area all, up to 100 detections)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingExtraError("faster-coco-eval", "coco", "detection AP") from None
    with_truth = sorted({a["category_id"] for a in gt["annotations"]})
    if not detections:
        return dict.fromkeys(with_truth, 0.0)
    g = COCO(gt)
    e = COCOeval_faster(g, g.loadRes(detections), "bbox", print_function=lambda *_: None)
    e.evaluate()
    e.accumulate()
    precision = e.eval["precision"]  # [iou thresholds, recalls, categories, areas, max dets]
    result = {}
    for k, cat in enumerate(e.params.catIds):
        if cat not in with_truth:
            continue
        p = precision[:, :, k, 0, -1]
        result[cat] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return result


def _resample(gt: dict, runs: list[list[dict]], draw: np.ndarray) -> tuple[dict, list[list[dict]]]:
    """The ground truth and each run's detections on the drawn images, an image drawn twice
    appearing twice under new ids (so COCO counts it twice)."""
    images = gt["images"]
    anns_of: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    dets_of = [{} for _ in runs]
    for run, by_image in zip(runs, dets_of, strict=True):
        for d in run:
            by_image.setdefault(d["image_id"], []).append(d)
    new_images, new_anns = [], []
    new_runs: list[list[dict]] = [[] for _ in runs]
    for new_id, i in enumerate(draw, start=1):
        im = images[i]
        new_images.append({**im, "id": new_id})
        for a in anns_of.get(im["id"], []):
            new_anns.append({**a, "id": len(new_anns) + 1, "image_id": new_id})
        for by_image, out in zip(dets_of, new_runs, strict=True):
            out.extend({**d, "image_id": new_id} for d in by_image.get(im["id"], []))
    return {**gt, "images": new_images, "annotations": new_anns}, new_runs


def class_ap_harm(
    gt: dict,
    reference: list[dict],
    detections: list[dict],
    name_of: Callable[[int], str],
    rounds: int = ROUNDS,
    seed: int = 0,
) -> ClassApHarm:
    """Per-class AP of ``detections`` against ``reference`` on the images of ``gt``."""
    ref_ap, ap = class_ap(gt, reference), class_ap(gt, detections)
    images_of: dict[int, set] = {}
    instances: dict[int, int] = {}
    for a in gt["annotations"]:
        images_of.setdefault(a["category_id"], set()).add(a["image_id"])
        instances[a["category_id"]] = instances.get(a["category_id"], 0) + 1
    rng = np.random.default_rng(seed)
    changes: dict[int, list[float]] = {c: [] for c in ap}
    n = len(gt["images"])
    for _ in range(rounds if n > 1 else 0):
        g, (r, d) = _resample(gt, [reference, detections], rng.integers(0, n, n))
        r_ap, d_ap = class_ap(g, r), class_ap(g, d)
        for c in d_ap:  # a class absent from this draw has no AP in it
            changes[c].append(100 * (d_ap[c] - r_ap[c]))
    per_class = []
    for c in ap:
        enough = len(images_of[c]) >= MIN_IMAGES and len(changes[c]) >= rounds // 2
        ci = tuple(float(x) for x in np.percentile(changes[c], [2.5, 97.5])) if enough else None
        per_class.append(
            ClassAP(
                category_id=c,
                name=name_of(c),
                images=len(images_of[c]),
                instances=instances[c],
                reference_ap=ref_ap[c],
                ap=ap[c],
                change_points=100 * (ap[c] - ref_ap[c]) + 0.0,
                change_ci95=ci,
            )
        )
    # most negative change first; ties: more instances first, then the category id
    per_class.sort(key=lambda x: (x.change_points, -x.instances, x.category_id))
    return ClassApHarm(
        classes=len(per_class),
        per_class=per_class,
        most_hurt=[x.category_id for x in per_class if x.change_points < 0][:MOST_HURT],
        beyond_interval=sum(
            1 for x in per_class if x.change_ci95 and (x.change_ci95[0] > 0 or x.change_ci95[1] < 0)
        ),
        rounds=rounds,
        seed=seed,
        min_images=MIN_IMAGES,
    )
