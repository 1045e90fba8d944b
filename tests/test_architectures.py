"""Real detection and segmentation architectures from torchvision (random weights: op
coverage, not accuracy) through export, quantization and ONNX Runtime's fusion."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qvision import api
from qvision.data import image_folder, iter_batches
from qvision.data.preprocess import METADATA_KEY, Preprocess
from qvision.quant.plan import QuantPlan

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.slow


class LrAspp(torch.nn.Module):
    """LR-ASPP MobileNetV3-Large: HardSwish, squeeze-excite with HardSigmoid, Resize."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.m = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=21
        ).eval()

    def forward(self, x):
        return self.m(x)["out"]


class SsdLiteHead(torch.nn.Module):
    """SSDLite320 MobileNetV3-Large backbone and head; box offsets and class scores joined
    into one [N, anchors, 4 + classes] output, as YOLO-style exports do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.m = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=91
        ).eval()

    def forward(self, x):
        head = self.m.head(list(self.m.backbone(x).values()))
        return torch.cat([head["bbox_regression"], torch.sigmoid(head["cls_logits"])], dim=2)


def _export(module, size, path):
    from qvision.zoo.torch_models import export_onnx

    model = export_onnx(module, size)
    pre = Preprocess(resize=(size, size), resize_mode="exact", crop=None)
    model.metadata_props.add(key=METADATA_KEY, value=pre.to_json())
    onnx.save(model, str(path))
    return path, pre


def _fused(tmp_path, src, out, pre, flat_dir):
    x = next(iter_batches(image_folder(flat_dir), pre, batch_size=4)).inputs
    f = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    q = ort.InferenceSession(str(out), opts).run(None, {"input": x})[0]
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    return f, q, ops


@pytest.mark.parametrize("net", ["lraspp", "ssdlite"])
def test_torchvision_architectures_quantize_and_fuse(tmp_path, flat_dir, net):
    module, size = (LrAspp(), 96) if net == "lraspp" else (SsdLiteHead(), 160)
    src, pre = _export(module, size, tmp_path / f"{net}.onnx")
    out, plan_path = tmp_path / "q.onnx", tmp_path / "plan.json"
    api.quantize(src, out, flat_dir, plan_out=plan_path)
    f, q, ops = _fused(tmp_path, src, out, pre, flat_dir)
    convs = sum(1 for n in onnx.load(str(src)).graph.node if n.op_type == "Conv")
    assert ops["QLinearConv"] == convs and ops["Conv"] == ops["FusedConv"] == 0, ops
    assert np.isfinite(q).all() and q.shape == f.shape
    if net == "ssdlite":
        plan = QuantPlan.load(plan_path)
        joins = [d for d in plan.nodes.values() if d.op_type == "Concat" and d.kind == "concat"]
        # the head's concats of boxes and scores: float (mixed ranges or post-processing)
        assert joins and all(d.action == "float" for d in joins)
        assert np.abs(q[..., 4:] - f[..., 4:]).max() < 0.01  # scores keep their own grid
