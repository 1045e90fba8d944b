"""Pydantic models for results. Plain keys; every command can dump one with ``--json``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from qvision.fileio import write_text_atomic


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Environment(BaseModel):
    versions: dict[str, str]
    cpu: dict
    created: str = Field(default_factory=_now)


class SkippedFile(BaseModel):
    path: str
    reason: str


class DatasetInfo(BaseModel):
    root: str
    files: int  # image files found
    used: int  # decoded and scored
    skipped: list[SkippedFile] = []
    labelled: bool
    sha256: str  # manifest digest: one id for the exact set of files and labels


class Fidelity(BaseModel):
    top1_agreement: float
    cosine: float
    sqnr_db: float | None  # None: outputs identical
    kl_div: float
    # with labels, points of the task's headline metric lost against the reference on these
    # images (top-1; CER for ocr-rec, where losing means a higher CER) and the half-width of
    # its 95 % interval (paired over the same images)
    drop_points: float | None = None
    drop_ci95_points: float | None = None  # what '± x' says: the larger side of the interval
    drop_ci95_low: float | None = None  # the interval itself, in points
    drop_ci95_high: float | None = None
    top1_agreement_ci95: tuple[float, float] | None = (
        None  # Wilson, over the images (classification)
    )


def ci95_text(half_width: float | None, label: bool = True) -> str:
    """' ± X (95 %)' after a paired drop (' ± X' in a table cell), or '' where none was
    measured: one wording for the CLI tables and autotune's message."""
    if half_width is None:
        return ""
    return f" ± {half_width:.2f}" + (" (95 %)" if label else "")


class Prediction(BaseModel):
    path: str
    top5: list[tuple[int, float]]  # (class index, probability)
    labels: list[str] = []  # class names, when the model carries them


class ClassHarm(BaseModel):
    """One true class, FP32 and INT8 on its images (paired: the same images)."""

    label: int  # class index
    name: str  # the model's class name, else the data's (a WordNet id), else the index
    n: int
    reference_top1: float  # FP32
    top1: float  # INT8
    lost: int  # images FP32 got right and INT8 wrong
    gained: int  # images INT8 got right and FP32 wrong
    change_points: float  # INT8 top-1 minus FP32 top-1, in points (negative: harm)
    # the change's 95 % interval in points, paired (Tango's score interval, honest at n = 1)
    change_ci95: tuple[float, float]


class GroupHarm(BaseModel):
    """One value of one attribute of a --groups CSV; figures as in ClassHarm."""

    attribute: str
    value: str
    n: int
    reference_top1: float
    top1: float
    lost: int
    gained: int
    change_points: float
    change_ci95: tuple[float, float]


class Disagreement(BaseModel):
    """An image FP32 and INT8 classify differently."""

    path: str
    reference_class: int  # FP32's top-1
    model_class: int  # INT8's top-1
    true_class: int | None = None
    reference_name: str = ""
    model_name: str = ""
    true_name: str = ""


class Harm(BaseModel):
    """Per-class (and per-group) top-1 harm of a model against its float reference."""

    metric: str = "top1"
    classes: int  # true classes with at least one scored image
    # classes by change_points, most negative first; ties: more discordant images first,
    # then the class index. Every class with an image, so nothing is hidden
    per_class: list[ClassHarm] = []
    most_hurt: list[int] = []  # the first (up to 10) classes of per_class that lost an image
    # classes whose 95 % interval excludes 0: each at 95 % on its own (about 5 % of
    # unchanged classes would if the intervals were exact), and jointly over all classes
    beyond_interval: int = 0
    beyond_joint_interval: int = 0
    disagreements: list[Disagreement] = []  # INT8 wrong where FP32 was right first, then by path
    disagreements_total: int = 0  # all of them; the list is capped
    groups: list[GroupHarm] = []  # per attribute value of --groups
    groups_file: str | None = None
    # per attribute: scored images without a value for it (not in the CSV, or a blank
    # cell); they are left out of that attribute's groups
    groups_unlisted: dict[str, int] = {}


class ClassAP(BaseModel):
    """One detection category, FP32 and INT8 AP@[.5:.95] on the same images."""

    category_id: int
    name: str
    images: int  # images with a ground-truth box of this category
    instances: int  # its ground-truth boxes
    reference_ap: float  # FP32
    ap: float  # INT8
    change_points: float  # INT8 AP minus FP32 AP, in points (negative: harm)
    # 95 % paired bootstrap over images (percentile); None under ClassApHarm.min_images
    # images, where resamples repeat the same few images and the interval would be too narrow
    change_ci95: tuple[float, float] | None = None


class ClassApHarm(BaseModel):
    """Per-category AP harm of a detector against its float reference."""

    metric: str = "AP@[.5:.95]"
    classes: int  # categories with ground truth
    # by change_points, most negative first; ties: more instances first, then the id
    per_class: list[ClassAP] = []
    most_hurt: list[int] = []  # category ids of the first (up to 10) that lost AP
    beyond_interval: int = 0  # categories whose interval excludes 0 (each at 95 %)
    rounds: int  # bootstrap resamples of the images
    seed: int
    min_images: int


class EvalResult(BaseModel):
    kind: Literal["eval"] = "eval"
    task: str
    model: str
    model_sha256: str
    n: int
    metrics: dict[str, float]
    # 95 % intervals of the metrics that are shares of the n images (top-1, exact match)
    metrics_ci95: dict[str, tuple[float, float]] = {}
    agreement: float | None = None  # top-1 agreement with the reference
    reference: str | None = None
    fidelity: Fidelity | None = None
    dataset: DatasetInfo
    preprocess: dict
    batch_size: int
    seconds: float
    predictions: list[Prediction] = []
    warnings: list[str] = []  # e.g. annotations dropped or clipped, with counts
    # per-class and per-group harm against the reference (labelled classification)
    harm: Harm | None = None
    # per-category AP against the reference (detection with annotations)
    class_ap: ClassApHarm | None = None
    env: Environment
    executor: str = "local"  # where the images were run (cluster.EXECUTORS)
    workers: int = 1


class BatchBench(BaseModel):
    batch: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    throughput_ips: float  # images per second
    speedup: float | None = None  # vs the first model at this batch size


class ModelBench(BaseModel):
    path: str
    size_bytes: int
    median_ms: float  # batch 1
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    throughput_ips: float
    speedup: float  # median latency of the first model / this model's, batch 1
    peak_rss_bytes: int | None = None
    batch_n: BatchBench | None = None
    energy_j: float | None = None  # per batch-1 inference
    energy_method: str | None = None  # "rapl"/"nvml" (measured) or "estimate" (runtime/energy.py)
    energy_uncounted: list[str] = []  # layers the estimate left out, "name (OpType)"

    def uncounted_text(self) -> str:
        """'N layers not counted' (the estimate is a lower bound), or '' when none were."""
        n = len(self.energy_uncounted)
        return f"{n} layer{'s' if n != 1 else ''} not counted" if n else ""


class BenchResult(BaseModel):
    kind: Literal["bench"] = "bench"
    models: list[ModelBench]
    threads: int
    batch: int
    rounds: int
    interleaved: bool = True
    env: Environment


class ModelInfo(BaseModel):
    kind: Literal["model"] = "model"
    path: str
    sha256: str
    size_bytes: int
    opset: int
    ir_version: int
    producer: str
    inputs: list[dict]
    outputs: list[dict]
    op_counts: dict[str, int]
    parameters: int
    metadata: dict[str, str]


class ZooExportResult(BaseModel):
    kind: Literal["zoo-export"] = "zoo-export"
    name: str
    path: str
    sha256: str
    size_bytes: int
    task: str
    preprocess: dict


def write_json(result: BaseModel, path: str | Path) -> Path:
    """Atomic: a crash never leaves half a JSON file."""
    path = Path(path)
    write_text_atomic(path, result.model_dump_json(indent=2) + "\n")
    return path


class TuneTrial(BaseModel):
    """One configuration autotune tried, and what it measured."""

    name: str
    algorithms: list[str]
    float_layers: list[str] = []  # kept in float (mixed precision)
    wide_layers: dict[str, int] = {}  # layer -> weight bits raised above --weights
    metric: float  # task metric on the tuning images (top-1 for classification)
    drop: float  # FP32 metric - this, in points
    # 95 % half-width of ``drop``, paired over the same images (classification with labels)
    drop_ci95: float | None = None
    agreement: float | None = None  # top-1 agreement with FP32
    latency_ms: float | None = None  # median batch-1 latency, for ranking configurations
    seconds: float  # time to build and score this trial
    met: bool


class TuneResult(BaseModel):
    """Autotuning to an accuracy budget (--max-drop): every trial, the chosen one, and
    whether the budget was met."""

    task: str
    metric: str
    images: int
    max_drop: float
    fp32_metric: float
    fp32_latency_ms: float | None = None
    met: bool
    chosen: int  # index into trials
    message: str
    trials: list[TuneTrial]
    seconds: float
    executor: str = "local"  # where the trials ran (cluster.EXECUTORS)
    workers: int = 1  # trials scored at once
    # trials scored beside the first within budget in its wave and dropped from ``trials``
    # (so that the record is the one trial-by-trial tuning makes)
    speculative: int = 0


class AlgorithmResult(BaseModel):
    """What one recovery algorithm changed, and its own error measure before and after."""

    name: str
    stage: str  # "pre" (float model, before calibration) or "post" (the plan)
    options: dict[str, Any] = {}  # every option as used, defaults included
    unit: str  # what ``changed`` counts: "biases", "weight grids", "layers", "blocks", ...
    changed: int
    of: int | None = None  # how many were candidates
    error: str | None = None  # what error_before and error_after measure
    error_before: float | None = None
    error_after: float | None = None
    details: dict[str, Any] = {}  # the algorithm's own figures (iterations, images, ...)
    seconds: float = 0.0
    message: str  # the one line also kept in the plan's warnings


class ShiftRow(BaseModel):
    shift: str  # a corruption of qvision robustness
    severity: int
    # INT8 with FP32 on the shifted images (the task's measure; None: no task, SQNR only)
    agreement: float | None
    agreement_ci: tuple[float, float] | None  # Wilson, joint over the check's shifts
    n: int
    departs: bool  # clearly below the clean agreement: named in the warning
    sqnr_db: float | None = None  # INT8's output against FP32's (None: identical)


class ShiftCheck(BaseModel):
    """quantize's quick, label-free check under shifted copies of calibration images."""

    task: str | None  # None: no task known; only the outputs' SQNR is compared
    measure: str  # what agreement means for the task (top-1 agreement, box agreement, ...)
    images: int
    clean: float | None
    clean_ci: tuple[float, float] | None
    clean_sqnr_db: float | None = None
    rows: list[ShiftRow]
    warning: str | None = None


class MethodChoice(BaseModel):
    """How quantize chose the calibration method when none was given (quant/shiftsafe.py)."""

    chosen: str
    default: str  # the target's default method
    reason: str
    mean_sqnr_db: dict[str, float]  # per method: output SQNR over clean and shifted settings


class QuantizeResult(BaseModel):
    kind: Literal["quantize"] = "quantize"
    model: str
    model_sha256: str
    output: str
    output_sha256: str
    target: str
    target_reason: str
    method: str
    weights: str
    acts: int = 8
    plan: str | None = None  # where the plan was written (--plan-out) or read from (--plan)
    calib_images: int
    skipped: list[SkippedFile] = []
    quantized_nodes: int
    float_nodes: dict[str, int]  # op type -> count kept float
    size_bytes: dict[str, int]  # input, output
    seconds: dict[str, float]  # calibrate, plan, write, total
    warnings: list[str] = []
    algorithms: list[AlgorithmResult] = []  # in run order (empty when replaying a plan)
    shift_check: ShiftCheck | None = None  # FP32 vs INT8 under shifts (None: not run)
    method_choice: MethodChoice | None = None  # None: the method was given or not chosen
    tuning: TuneResult | None = None  # set by --max-drop
    manifest: str | None = None  # provenance record beside the output (<stem>.manifest.json)
    env: Environment
    # in memory only, never written: the plan and prepared model as written, so the report
    # analyses what was written without calibrating again
    _planned: Any = PrivateAttr(default=None)


class RobustnessRow(BaseModel):
    corruption: str  # "clean" for the unmodified images
    severity: int
    fp32: float  # the task metric (fraction; CER for ocr-rec)
    int8: float
    gap: float  # points lost by INT8 relative to FP32 (a CER rise counts as lost)
    agreement: float | None  # INT8 agreeing with FP32 on the same corrupted images
    n: int | None = None  # images scored in this setting
    # the gap's interval in points, paired over the same images: at 95 % for this setting
    # alone, and at 95 % jointly over all corrupted settings of the run (Bonferroni), which
    # is the one to read when picking the worst of them; None where the task metric is not
    # a mean over images (mAP, mIoU, hmean)
    gap_ci95: tuple[float, float] | None = None
    gap_joint_ci95: tuple[float, float] | None = None


class AdversarialRow(BaseModel):
    attack: str  # fgsm | pgd
    crafted_on: str  # fp32 | int8 (STE)
    eps: float  # L-infinity bound on [0, 1] pixels
    fp32_success: float  # share of the images FP32 classified right that it now gets wrong
    int8_success: float
    fp32_correct: int
    int8_correct: int
    # Wilson 95 % intervals of the two success rates (over the correct images of each)
    fp32_success_ci95: tuple[float, float] | None = None
    int8_success_ci95: tuple[float, float] | None = None


class RobustnessResult(BaseModel):
    kind: Literal["robustness"] = "robustness"
    task: str
    metric: str
    fp32_model: str
    int8_model: str
    data: str
    images: int
    rows: list[RobustnessRow]
    adversarial: list[AdversarialRow] = []
    seconds: float
    env: Environment
    executor: str = "local"  # where the settings ran (cluster.EXECUTORS)
    workers: int = 1  # pieces that could run at once


class SweepRow(BaseModel):
    """One cell of a sweep on one data folder: the quantized model against its float model."""

    model: str
    target: str
    algorithms: str  # as the config names them ('default': the target's pipeline)
    applied: list[str]  # the algorithms that ran
    weights: str
    data: str
    task: str
    metric: str  # the task's headline metric, or agreement on unlabelled data
    n: int
    fp32: float | None
    int8: float | None
    drop: float | None  # points lost against FP32 (a CER rise counts as lost)
    drop_ci95: tuple[float, float] | None = None  # paired over the same images (classification)
    agreement: float | None
    size_bytes: int
    fp32_size_bytes: int
    quantize_seconds: float
    output: str  # the quantized model, in the sweep's folder


class SweepResult(BaseModel):
    kind: Literal["sweep"] = "sweep"
    config: str
    out: str
    executor: str
    workers: int
    rows: list[SweepRow]
    seconds: float


class QuantizeEvalResult(BaseModel):
    kind: Literal["quantize-eval"] = "quantize-eval"
    quantize: QuantizeResult
    fp32: EvalResult
    int8: EvalResult


class OcrDemoResult(BaseModel):
    """The demo's labelled measurement: the PP-OCRv4 recognizer, FP32 and INT8, on rendered
    text lines with exact labels, calibrated on other rendered lines."""

    model: ZooExportResult
    quantize: QuantizeResult
    fp32: EvalResult  # CER and exact match against the labels
    int8: EvalResult  # the same, with fidelity to FP32 (line agreement, paired CER change)
    lines: int  # evaluation lines rendered (seed ``seed``)
    seed: int
    calib_lines: int  # calibration lines rendered (seed ``calib_seed``: disjoint draws)
    calib_seed: int
    n: int  # lines scored
    cer_fp32: float
    cer_int8: float
    # INT8's CER minus FP32's in points (positive: INT8 reads worse), paired over the same
    # lines, and its 95 % interval (from int8.fidelity); None if fewer than 2 lines scored
    cer_change_points: float | None = None
    cer_change_ci95: tuple[float, float] | None = None
    seconds: float = 0.0  # the whole part: export, rendering, quantize, both evaluations


class DemoResult(BaseModel):
    kind: Literal["demo"] = "demo"
    model: ZooExportResult
    quantize: QuantizeResult
    # FP32 predictions on the bundled photos; the photos are also the calibration set and
    # carry no labels: agreement on them checks the workflow, it measures no accuracy
    eval: EvalResult
    int8_eval: EvalResult  # INT8 predictions and fidelity to FP32
    bench: BenchResult
    ocr: OcrDemoResult | None = None  # the labelled measurement (None: not run)


class LayerReport(BaseModel):
    node: str  # the ONNX node name, as plans, --keep-float and --layer-bits take it
    op_type: str
    # readable name: position and shape where the node name is generated ('Conv #12 3×3
    # 32→64'), else the name shortened (qvision.model.names); None in older results
    label: str | None = None
    kind: str
    tensor: str  # the layer's output tensor compared with the float model
    weight_bits: int | None = None
    sqnr_db: float | None  # accumulated error at this layer's output (None: identical)
    cosine: float
    keep_float_output_sqnr_db: float | None = None  # model output SQNR with only this layer float
    gain_db: float | None = None  # that minus the fully quantized model's output SQNR


class AnalyzeResult(BaseModel):
    kind: Literal["analyze"] = "analyze"
    model: str
    target: str
    target_reason: str
    method: str
    method_choice: MethodChoice | None = None  # as quantize chooses it (None: given)
    algorithms: list[str]
    images: int
    output_sqnr_db: float | None
    output_cosine: float
    layers: list[LayerReport]
    ranking: list[str]  # nodes by gain_db, most sensitive first
    seconds: float
    # unreadable files: of the calibration set, then of --images
    skipped: list[SkippedFile] = []
    env: Environment | None = None


class SignedFile(BaseModel):
    """One file a signature vouches for, directly or through the signed manifest."""

    path: str
    role: str  # model | external-data | manifest | plan | plan-in | other
    sha256: str
    # "signature": hashed into the model_signing signature (the model's folder);
    # "manifest": outside that folder, pinned by the sha256 the signed manifest records
    covered_by: Literal["signature", "manifest"] = "signature"


class SignResult(BaseModel):
    kind: Literal["sign"] = "sign"
    model: str
    signature: str
    key: str
    files: list[SignedFile]
    notes: list[str] = []  # what was not covered, and why


class VerifyResult(BaseModel):
    kind: Literal["verify"] = "verify"
    model: str
    signature: str
    key: str
    ok: bool
    files: list[SignedFile] = []  # checked and found as signed
    reasons: list[str] = []  # why verification failed, one per problem
    notes: list[str] = []  # what was not checked, and why


class MonitorAlert(BaseModel):
    kind: str  # agreement | saturation | drift
    message: str
    at_image: int  # images seen when it fired


class MonitorResult(BaseModel):
    kind: Literal["monitor"] = "monitor"
    model: str
    reference: str
    task: str | None = None  # how agreement is scored
    images: int
    sampled: int  # images also run through the reference
    agreement_metric: str = "top-1 agreement"  # what ``agreement`` measures, per image
    agreement: float | None  # mean over the last window's sampled images
    agreement_ci95: tuple[float, float] | None = None
    saturation: dict[str, float]  # the most saturated grids: tensor -> share clipped (window)
    saturation_baseline: dict[str, float] = {}  # the same grids on the calibration images
    drift: float | None  # the drift test's Bonferroni-adjusted p-value (last window)
    latency_ms: float | None = None  # INT8 per image, median over the window
    thresholds: dict[str, float] = {}
    alerts: list[MonitorAlert] = []
    skipped: list[SkippedFile] = []  # unreadable images (the first 100)
    history: list[dict] = []  # window states over the stream (thinned; for the page)
    seconds: float
