"""Quantization-aware training: training starts at the PTQ model, lowers the error against
FP32, and the written QDQ model in ONNX Runtime is the trained fake-quant model."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from qvision.data import image_folder, iter_batches
from qvision.model.rewrite import prepare_for_quantization
from qvision.quant.algorithms import run
from qvision.quant.writer import write_qdq

from qdq_models import PRE16, lcnet_block, mobile_block, plan_context

torch = pytest.importorskip("torch")


def _ort(model, x) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def _step(plan, name: str, ref: np.ndarray) -> float:
    """One quantization step of an output: its grid's, or 1/255 of its range if float."""
    if name in plan.activations:
        return float(plan.activations[name].scale[0])
    return float(ref.max() - ref.min()) / 255


@pytest.mark.parametrize(
    ("build", "acts"),
    [(mobile_block, 8), (lcnet_block, 8), (mobile_block, 4)],
    ids=["residual-maxpool", "lcnet", "residual-maxpool-a4"],
)
def test_fake_quant_starts_at_ptq_and_exports_exactly(flat_dir, build, acts):
    from qvision.quant.algorithms.qat import FakeQuant

    model = prepare_for_quantization(build())
    x = next(iter_batches(image_folder(flat_dir), PRE16, batch_size=4)).inputs
    ref = _ort(model, x)
    ctx = plan_context(model, flat_dir, weight_bits=4, act_bits=acts)
    low = [t for t, s in ctx.plan.activations.items() if s.dtype == "uint4"]
    assert bool(low) == (acts == 4), low  # 4-bit grids where asked, in 4-bit tensors
    names = [o.name for o in model.graph.output]
    ptq = _ort(write_qdq(model, ctx.plan), x)
    fq = FakeQuant(ctx)
    with torch.no_grad():
        start = [t.numpy() for t in fq.forward(torch.from_numpy(x))]
    for n, p, s, r in zip(names, ptq, start, ref, strict=True):
        assert np.abs(p - s).max() <= _step(ctx.plan, n, r), n  # training starts at PTQ
    # move every parameter kind, then the written model must be the trained one
    with torch.no_grad():
        ptq_ints = [w.ints().clone() for w in fq.weights]
    optim = torch.optim.Adam(fq.groups(lr=0.3, scale_lr=0.05, bias_lr=0.05))
    want = [torch.from_numpy(r) for r in ref]
    for _ in range(15):
        outs = fq.forward(torch.from_numpy(x))
        loss = sum(((o - w) ** 2).mean() for o, w in zip(outs, want, strict=True))
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        trained = [t.numpy() for t in fq.forward(torch.from_numpy(x))]
        moved = [
            w for w, p in zip(fq.weights, ptq_ints, strict=True) if not torch.equal(w.ints(), p)
        ]
    assert moved, "no weight left PTQ's integers"
    fq.write_back(ctx)
    assert set(ctx.plan.weight_offsets) == {w.name for w in fq.weights}
    exported = _ort(write_qdq(model, ctx.plan), x)
    for n, e, t, r in zip(names, exported, trained, ref, strict=True):
        assert np.abs(e - t).max() <= _step(ctx.plan, n, r), n
    with torch.no_grad():  # in ONNX Runtime's integer arithmetic: the same values
        exact = [t.numpy() for t in fq.forward(torch.from_numpy(x), exact=True)]
    for n, e, t, r in zip(names, exported, exact, ref, strict=True):
        assert np.abs(e - t).max() <= 1e-3 * _step(ctx.plan, n, r), n
    with torch.no_grad():  # the plan's integers are the trained ones, bit for bit
        for w in fq.weights:
            q = ctx.plan.quantized_weight(w.name, fq_weight(model, w.name))
            assert np.array_equal(q.astype(np.int64), w.ints().numpy().astype(np.int64)), w.name


def fq_weight(model, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_qat_keeps_the_state_the_held_out_photos_prefer(tmp_path, photos):
    """Every fifth photo is held out and decides what is kept. Here each photo has a copy,
    so what training learns holds on the held-out one: kept, and the error drops. Wild
    steps help nothing held out: PTQ's plan stays as it was."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for p in photos[:3]:
        for copy in ("a", "b"):
            (folder / f"{p.stem}-{copy}{p.suffix}").write_bytes(p.read_bytes())
    model = prepare_for_quantization(mobile_block())
    x = next(iter_batches(image_folder(folder), PRE16, batch_size=6)).inputs
    ref = _ort(model, x)[0]
    ptq = plan_context(model, folder, weight_bits=4)
    ctx = plan_context(model, folder, weight_bits=4)
    ctx.options = {"qat": {"steps": 100, "batch": 4, "views": 0, "lr": 0.01}}
    res = run("qat", ctx)
    assert res.details["held_out"] == 1 and res.details["inputs"] == 5, res.details
    assert res.details["kept"] and res.error_after < res.error_before, res.message
    err_ptq = float(((_ort(write_qdq(model, ptq.plan), x)[0] - ref) ** 2).mean())
    err_qat = float(((_ort(write_qdq(model, ctx.plan), x)[0] - ref) ** 2).mean())
    assert err_qat < err_ptq, (err_ptq, err_qat)
    wild = plan_context(model, folder, weight_bits=4)
    wild.options = {"qat": {"steps": 50, "batch": 4, "views": 0, "lr": 100, "scale_lr": 5}}
    res = run("qat", wild)
    assert not res.details["kept"], res.message
    assert wild.plan == ptq.plan


def test_qat_command_trains_from_the_target_pipeline(tmp_path, tiny_model, flat_dir):
    from conftest import run_cli

    out, plan, res = tmp_path / "q.onnx", tmp_path / "plan.json", tmp_path / "r.json"
    r = run_cli("qat", tiny_model, "-o", out, "--calib", flat_dir, "--weights", "int4",
                "--steps", "20", "--plan-out", plan, "--json", res,
                "--algo-option", "brecq.iters=20")  # fmt: skip
    assert r.returncode == 0, r.stderr
    record = json.loads(res.read_text())
    algos = [a["name"] for a in record["algorithms"]]
    assert algos[-1] == "qat" and "bias-correction" in algos, algos
    saved = json.loads(plan.read_text())
    assert saved["algorithms"][-1] == "qat" and saved["weight_offsets"]
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    bad = run_cli("qat", tiny_model, "-o", tmp_path / "b.onnx", "--calib", flat_dir,
                  "--algo-option", "qat.steps=-1")  # fmt: skip
    assert bad.returncode == 2 and "qat.steps" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.onnx").exists()


def test_labels_join_the_loss_only_where_there_are_labels(tmp_path, tiny_model, labelled_dir):
    from conftest import run_cli

    args = ("--weights", "int4", "--steps", "5", "--algo", "bias-correction", "--labels")
    ok = run_cli("qat", tiny_model, "-o", tmp_path / "a.onnx", "--calib", labelled_dir, *args)
    assert ok.returncode == 0, ok.stderr
    flat = labelled_dir / "cat"  # images, no class folders
    bad = run_cli("qat", tiny_model, "-o", tmp_path / "b.onnx", "--calib", flat, *args)
    assert bad.returncode == 2 and "labelled calibration images" in bad.stderr, bad.stderr
    assert not (tmp_path / "b.onnx").exists()


def test_a_plan_with_broken_weight_offsets_is_refused(flat_dir):
    from qvision.quant.plan import pack_offsets
    from qvision.quant.validate import problems_of

    model = prepare_for_quantization(mobile_block())
    plan = plan_context(model, flat_dir, weight_bits=4).plan
    plan.weight_offsets["w1"] = pack_offsets(np.zeros(5, np.int64))
    plan.weight_offsets["nope"] = pack_offsets(np.zeros(5, np.int64))
    plan.weight_offsets["w3"] = "not base64!"
    found = problems_of(plan, model)
    assert any("weight_offsets['w1']" in p and "5 offsets" in p for p in found), found
    assert any("weight_offsets['nope']" in p for p in found), found
    assert any("weight_offsets['w3']" in p for p in found), found


def test_pytorch_loop_prepare_train_export(tmp_path, flat_dir):
    """qvision.qat for PyTorch users: the prepared module is the INT8 model, trains in a
    plain loop, and exports to a QDQ model that ONNX Runtime runs to the same outputs."""
    from qvision import qat

    from conftest import TINY_PRE

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
        torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()
    x = torch.from_numpy(next(iter_batches(image_folder(flat_dir), TINY_PRE, 4)).inputs)
    qm = qat.prepare(net, x[:1], flat_dir, preprocess=TINY_PRE, weights="int4", algos="none")
    assert len(list(qm.parameters())) > 0
    with torch.no_grad():
        want = net(x)
        before = float(((qm(x) - want) ** 2).mean())
    optim = torch.optim.Adam(qm.groups(lr=0.02, scale_lr=0.01, bias_lr=0.01))
    for _ in range(40):
        loss = ((qm(x) - want) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    qm.eval()  # ONNX Runtime's integer arithmetic from here: what export writes
    with torch.no_grad():
        trained = qm(x).numpy()
    assert float(((torch.from_numpy(trained) - want) ** 2).mean()) < before
    out = qat.export(qm, tmp_path / "net.int8.onnx")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - trained).max() <= 1e-3 * (trained.max() - trained.min()) / 255
    with pytest.raises(Exception, match="prepare returned"):
        qat.export(net, tmp_path / "other.onnx")
