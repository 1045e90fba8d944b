"""qvision sign / verify: a real model_signing signature (EC key, offline) over a quantized
model, its manifest and plan; any changed byte fails verification."""

import base64
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import onnx
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from qvision import api
from qvision.errors import QVisionError
from qvision.signing import sign_model, verify_model

from conftest import make_flat, run_cli, tiny_classifier


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(str(n) in lines[0] for n in needles), lines[0]


def _pem_pair(folder: Path, name: str, key) -> tuple[Path, Path]:
    priv, pub = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    priv.write_bytes(
        key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    pub.write_bytes(
        key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub = _pem_pair(d, "signer", ec.generate_private_key(ec.SECP256R1()))
    _, other_pub = _pem_pair(d, "other", ec.generate_private_key(ec.SECP384R1()))
    rsa_priv, _ = _pem_pair(
        d, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    secret = ec.generate_private_key(ec.SECP256R1())
    enc = d / "encrypted.pem"
    enc.write_bytes(
        secret.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"s3cret")
        )
    )
    enc_pub = d / "encrypted.pub.pem"
    enc_pub.write_bytes(
        secret.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )
    garbage = d / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    return {
        "priv": priv,
        "pub": pub,
        "other_pub": other_pub,
        "rsa": rsa_priv,
        "encrypted": enc,
        "encrypted_pub": enc_pub,
        "garbage": garbage,
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, photos):
    """A real tiny quantize: out/q.onnx, out/q.manifest.json and out/plan.json."""
    root = tmp_path_factory.mktemp("pristine")
    model = tiny_classifier(root / "tiny.onnx")
    (root / "out").mkdir()
    api.quantize(
        model, root / "out/q.onnx", make_flat(root / "flat"), plan_out=root / "out/plan.json"
    )
    return root / "out"


@pytest.fixture
def out(tmp_path, pristine) -> Path:
    """A fresh copy of the quantized folder for each test (tests change bytes in it)."""
    return Path(shutil.copytree(pristine, tmp_path / "out"))


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_covers_model_manifest_and_plan(out, keys):
    before = _snapshot(out)
    res = sign_model(out / "q.onnx", keys["priv"])
    assert res.kind == "sign" and res.signature == str(out / "q.sig")
    assert {Path(f.path).name: f.role for f in res.files} == {
        "q.onnx": "model",
        "q.manifest.json": "manifest",
        "plan.json": "plan",
    }
    assert all(f.sha256 == _sha(Path(f.path)) and f.covered_by == "signature" for f in res.files)
    # inputs untouched; the signature is the only new file (no temp file left behind)
    assert _snapshot(out) == before | {"q.sig": (out / "q.sig").read_bytes()}

    v = verify_model(out / "q.onnx", keys["pub"])
    assert v.ok and v.kind == "verify" and not v.reasons
    assert [Path(f.path).name for f in v.files] == ["q.onnx", "q.manifest.json", "plan.json"]
    assert {f.sha256 for f in v.files} == {f.sha256 for f in res.files}


def test_cli_round_trip_then_one_flipped_byte_fails(out, keys, tmp_path):
    proc = run_cli("sign", out / "q.onnx", "--key", keys["priv"], "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "sign"
    proc = run_cli("verify", out / "q.onnx", "--key", keys["pub"])
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout and "plan.json" in proc.stdout

    _flip(out / "q.onnx")
    proc = run_cli("verify", out / "q.onnx", "--key", keys["pub"], "--json", tmp_path / "v.json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        ln for ln in proc.stderr.strip().splitlines() if ln.startswith("verify failed: q.onnx")
    ]
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["ok"] is False and "q.onnx" in v["reasons"][0]


@pytest.mark.parametrize("name", ["q.onnx", "q.manifest.json", "plan.json"])
def test_changed_or_missing_signed_file_fails(out, keys, name):
    sign_model(out / "q.onnx", keys["priv"])
    _flip(out / name, offset=len((out / name).read_bytes()) // 2)
    v = verify_model(out / "q.onnx", keys["pub"])
    assert not v.ok and any(r.startswith(f"{name}: changed") for r in v.reasons), v.reasons
    _flip(out / name, offset=len((out / name).read_bytes()) // 2)  # back as signed
    assert verify_model(out / "q.onnx", keys["pub"]).ok
    if name != "q.onnx":
        (out / name).unlink()
        v = verify_model(out / "q.onnx", keys["pub"])
        assert not v.ok and any(r.startswith(f"{name}: signed, now missing") for r in v.reasons)


def test_unrelated_files_added_later_do_not_matter(out, keys):
    (out / "old.sig").write_text("stale")  # ignored at signing too
    sign_model(out / "q.onnx", keys["priv"])
    (out / "README.txt").write_text("notes")
    (out / "extra").mkdir()
    (out / "extra" / "more.bin").write_bytes(b"\0" * 10)
    assert verify_model(out / "q.onnx", keys["pub"]).ok


def test_wrong_key_and_altered_signature_fail(out, keys):
    sign_model(out / "q.onnx", keys["priv"])
    v = verify_model(out / "q.onnx", keys["other_pub"])
    assert not v.ok and "another key" in v.reasons[0]

    # a statement edited to match a changed model no longer matches its signature
    sig = out / "q.sig"
    bundle = json.loads(sig.read_text())
    _flip(out / "q.onnx")
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    for r in statement["predicate"]["resources"]:
        if r["name"] == "q.onnx":
            r["digest"] = _sha(out / "q.onnx")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    v = verify_model(out / "q.onnx", keys["pub"])
    assert not v.ok and "signature file was altered" in v.reasons[0]

    sig.write_text("{}")
    v = verify_model(out / "q.onnx", keys["pub"])
    assert not v.ok and "not a model_signing signature" in v.reasons[0]


def test_plan_outside_the_folder_is_checked_through_the_manifest(tmp_path, keys, photos):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    (tmp_path / "out").mkdir()
    (tmp_path / "plans").mkdir()
    plan = tmp_path / "plans" / "plan.json"
    api.quantize(model, tmp_path / "out/q.onnx", make_flat(tmp_path / "flat"), plan_out=plan)
    q = tmp_path / "out/q.onnx"
    res = sign_model(q, keys["priv"])
    outside = [f for f in res.files if f.covered_by == "manifest"]
    assert [(f.path, f.role) for f in outside] == [(str(plan), "plan")]

    v = verify_model(q, keys["pub"])
    assert v.ok and any(f.path == str(plan) and f.covered_by == "manifest" for f in v.files)

    copy = tmp_path / "copy.json"
    shutil.copy(plan, copy)
    _flip(plan)
    v = verify_model(q, keys["pub"])
    assert not v.ok and str(plan) in v.reasons[0] and "changed" in v.reasons[0]
    # a plan named on the command line: an exact copy passes, a changed one fails
    plan.unlink()
    v = verify_model(q, keys["pub"])
    assert v.ok and "not found" in v.notes[-1]
    assert verify_model(q, keys["pub"], plan=copy).ok
    _flip(copy)
    proc = run_cli("verify", q, "--key", keys["pub"], "--plan", copy)
    assert proc.returncode == 1 and "verify failed: plan" in proc.stderr


def test_manifest_added_after_signing_is_not_trusted(tmp_path, keys, out):
    sign_model(out / "q.onnx", keys["priv"])  # a signed quantized folder, for its manifest
    folder = tmp_path / "plain"
    folder.mkdir()
    model = tiny_classifier(folder / "m.onnx")
    res = sign_model(model, keys["priv"])
    assert [f.role for f in res.files] == ["model"] and "no manifest" in res.notes[0]
    v = verify_model(model, keys["pub"])
    assert v.ok and "no manifest" in v.notes[0]
    shutil.copy(out / "q.manifest.json", folder / "m.manifest.json")
    v = verify_model(model, keys["pub"])
    assert not v.ok and "manifest m.manifest.json is not covered by the signature" in v.reasons


def test_signature_of_another_model_in_the_folder_does_not_vouch(out, keys):
    sign_model(out / "q.onnx", keys["priv"])
    other = tiny_classifier(out / "other.onnx", seed=1)
    v = verify_model(other, keys["pub"], signature=out / "q.sig")
    assert not v.ok and v.reasons == ["other.onnx is not covered by the signature"]


def test_external_data_in_a_subfolder_is_signed(tmp_path, keys):
    folder = tmp_path / "ext"
    folder.mkdir()
    m = onnx.load(str(tiny_classifier(tmp_path / "t.onnx")))
    (folder / "weights").mkdir()
    onnx.save(
        m,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        location="weights/w.bin",
        size_threshold=0,
    )
    (folder / "weights" / "unrelated.txt").write_text("x")
    res = sign_model(folder / "m.onnx", keys["priv"])
    assert {Path(f.path).relative_to(folder).as_posix(): f.role for f in res.files} == {
        "m.onnx": "model",
        "weights/w.bin": "external-data",
    }
    assert verify_model(folder / "m.onnx", keys["pub"]).ok
    _flip(folder / "weights" / "w.bin", offset=10)
    v = verify_model(folder / "m.onnx", keys["pub"])
    assert not v.ok and v.reasons[0].startswith("weights/w.bin: changed")


def test_sign_refuses_what_it_cannot_vouch_for(out, keys, tmp_path):
    before = _snapshot(out)
    _flip(out / "plan.json")  # edited after quantize: the manifest records another plan
    with pytest.raises(QVisionError, match="edited after quantize"):
        sign_model(out / "q.onnx", keys["priv"])
    assert not (out / "q.sig").exists() and len(list(out.iterdir())) == len(before)
    _flip(out / "plan.json")

    shutil.copy(tiny_classifier(tmp_path / "float.onnx"), out / "q.onnx")  # not what it describes
    with pytest.raises(QVisionError, match="describes another model"):
        sign_model(out / "q.onnx", keys["priv"])
    assert not (out / "q.sig").exists()


def test_symlink_in_the_folder_is_a_one_line_error(out, keys):
    os.symlink(out / "plan.json", out / "link.json")
    with pytest.raises(QVisionError, match="symlink"):
        sign_model(out / "q.onnx", keys["priv"])
    assert not (out / "q.sig").exists()


def test_encrypted_key(out, keys, tmp_path):
    with pytest.raises(QVisionError, match="is encrypted"):
        sign_model(out / "q.onnx", keys["encrypted"])
    with pytest.raises(QVisionError, match="wrong password"):
        sign_model(out / "q.onnx", keys["encrypted"], password="nope")
    sign_model(out / "q.onnx", keys["encrypted"], password="s3cret", signature=tmp_path / "a.sig")
    assert verify_model(out / "q.onnx", keys["encrypted_pub"], signature=tmp_path / "a.sig").ok


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("missing.pem", "private key file not found"),
        ("garbage", "not a PEM private key"),
        ("rsa", "RSA key; model_signing signs with EC keys"),
        ("pub", "is a public key"),
    ],
)
def test_bad_signing_keys(out, keys, key, problem):
    path = keys.get(key, out / key)
    with pytest.raises(QVisionError, match=problem):
        sign_model(out / "q.onnx", path)
    assert not (out / "q.sig").exists()


def test_bad_verify_inputs(out, keys):
    with pytest.raises(QVisionError, match="signature file not found"):
        verify_model(out / "q.onnx", keys["pub"])
    sign_model(out / "q.onnx", keys["priv"])
    with pytest.raises(QVisionError, match="is a private key"):
        verify_model(out / "q.onnx", keys["priv"])
    with pytest.raises(QVisionError, match="model file not found"):
        verify_model(out / "nothere.onnx", keys["pub"], signature=out / "q.sig")
    with pytest.raises(QVisionError, match="plan file not found"):
        verify_model(out / "q.onnx", keys["pub"], plan=out / "nothere.json")


def test_cli_key_errors_are_one_line(out, keys, tmp_path):
    proc = run_cli("sign", out / "q.onnx", "--key", tmp_path / "missing.pem")
    _assert_one_line_error(proc, tmp_path / "missing.pem", "private key file not found")
    proc = run_cli(
        "verify", out / "q.onnx", "--key", keys["garbage"], "--signature", out / "plan.json"
    )
    _assert_one_line_error(proc, keys["garbage"], "is a private key")


def test_missing_extra_is_named(monkeypatch, out, keys):
    for name in [m for m in sys.modules if m.split(".")[0] == "model_signing"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)  # import fails as if not installed
    with pytest.raises(QVisionError, match=r"pip install 'qvision\[sign\]'"):
        sign_model(out / "q.onnx", keys["priv"])
    with pytest.raises(QVisionError, match=r"pip install 'qvision\[sign\]'"):
        verify_model(out / "q.onnx", keys["pub"])
