"""Result schema shared by every command, the CLI tables and (later) the HTML report."""

from qvision.report.schema import (
    BenchResult,
    DatasetInfo,
    DemoResult,
    EvalResult,
    Fidelity,
    ModelBench,
    ModelInfo,
    Prediction,
    QuantizeResult,
    ZooExportResult,
    write_json,
)

__all__ = [
    "BenchResult",
    "DatasetInfo",
    "DemoResult",
    "EvalResult",
    "Fidelity",
    "ModelBench",
    "ModelInfo",
    "Prediction",
    "QuantizeResult",
    "ZooExportResult",
    "write_json",
]
