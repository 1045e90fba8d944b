"""Signed provenance: an OpenSSF model_signing signature (EC key, offline, a Sigstore
bundle) over a quantized model, its external data, its manifest and its plan.

model_signing hashes, signs and verifies; this module only chooses what is covered and
explains the verdict. It signs the model's folder with every other entry of that folder
ignored, and verifies with unsigned files ignored: files added to the folder later do not
matter, a changed or missing signed file fails. A plan outside the folder cannot be in
that signature; the signed manifest pins it by its sha256, which ``verify_model`` checks.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from types import ModuleType

from qvision.errors import MissingExtraError, QVisionError
from qvision.fileio import atomic_path, check_output_path, same_file, sha256_file
from qvision.model.load import model_files
from qvision.provenance import manifest_path
from qvision.records import SignedFile, SignResult, VerifyResult

PLAN_RECORDS = {"plan": "plan", "plan_in": "plan-in"}  # manifest key -> role
_ROLE_ORDER = {"model": 0, "external-data": 1, "manifest": 2, "plan": 3, "plan-in": 4}
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}  # model_signing's


def default_signature(model: str | Path) -> Path:
    m = Path(model)
    return m.with_name(f"{m.stem}.sig")


def sign_model(
    model: str | Path,
    key: str | Path,
    signature: str | Path | None = None,
    password: str | None = None,
) -> SignResult:
    """Sign ``model`` with the EC private key ``key``; the signature goes to ``signature``
    (default ``<stem>.sig`` beside the model), written atomically. Inputs are not touched."""
    ms = _model_signing()  # a missing extra fails before any work
    model = _abs(_existing(model, "model"))
    key = _existing(key, "private key")
    _check_curve(_public_of_private(key, password), key)
    folder = model.parent
    roles: dict[Path, str] = {model: "model"}  # file -> role, in the signature
    # model_files refuses a non-model and external data missing or outside the folder
    roles |= {_abs(p): "external-data" for p in model_files(model)[1:]}
    notes: list[str] = []
    manifest = _read_manifest(model)
    plans: dict[str, Path] = {}  # manifest key -> plan file found
    if manifest is None:
        notes.append(
            f"no manifest beside the model ({manifest_path(model).name}): signed the model alone"
        )
    else:
        roles[manifest_path(model)] = "manifest"
        for rec_key, role in PLAN_RECORDS.items():
            rec = manifest.get(rec_key)
            found = _locate(rec["path"], folder) if rec else None
            if rec and found is None:
                notes.append(
                    f"{role} {rec['path']} named in the manifest was not found: not signed, but "
                    "the signed manifest pins its sha256 (verify --plan PATH checks a copy)"
                )
            elif found is not None:
                plans[rec_key] = found
                if folder in found.parents:
                    roles.setdefault(found, role)
    if folder in _abs(key).parents:
        notes.append("the private key lies in the model's folder: do not ship that folder as is")
    sig = Path(signature) if signature is not None else default_signature(model)
    check_output_path(sig, [key, *roles, *plans.values()])
    names = {p.relative_to(folder).as_posix(): p for p in roles}
    with atomic_path(sig) as tmp:
        # listed once the temp file exists, so that it (and any old signature) is left out
        hashing = ms.hashing.Config().set_ignored_paths(paths=_other_entries(folder, set(roles)))
        config = ms.signing.Config().use_elliptic_key_signer(
            private_key=key, password=None if password is None else password.encode()
        )
        try:
            config.set_hashing_config(hashing).sign(folder, tmp)
        except ValueError as exc:  # a symlink or special file anywhere in the folder
            raise _unsignable(exc, folder) from None
        signed, _ = _signed_resources(tmp.read_bytes())
        if set(signed) != set(names):  # a file came or went between listing and hashing
            raise QVisionError("the folder changed while it was being signed; try again", folder)
        # a manifest or plan that disagrees with what was signed would be vouched for wrongly
        if manifest is not None:
            _check_manifest_model(manifest, signed[model.name], model)
            for rec_key, found in plans.items():
                rel = found.relative_to(folder).as_posix() if folder in found.parents else None
                digest = signed.get(rel) if rel else sha256_file(found)
                if digest != manifest[rec_key]["sha256"]:
                    raise QVisionError(
                        "differs from the sha256 the manifest records for the "
                        f"{PLAN_RECORDS[rec_key]} (edited after quantize?); nothing signed",
                        found,
                    )
    files = [SignedFile(path=str(p), role=roles[p], sha256=signed[n]) for n, p in names.items()]
    files += [
        SignedFile(
            path=str(p), role=PLAN_RECORDS[k], sha256=manifest[k]["sha256"], covered_by="manifest"
        )
        for k, p in plans.items()
        if folder not in p.parents
    ]
    return SignResult(model=str(model), signature=str(sig), key=str(key), files=files, notes=notes)


def verify_model(
    model: str | Path,
    key: str | Path,
    signature: str | Path | None = None,
    plan: str | Path | None = None,
) -> VerifyResult:
    """Check ``model`` (its folder's signed files) against ``signature`` with the EC public
    key ``key``, then a plan outside the folder (the one the manifest names, or ``plan``)
    against the signed manifest. A bad input raises QVisionError; a failed check gives
    ``ok=False`` with one reason per problem."""
    ms = _model_signing()
    model = _abs(_existing(model, "model"))
    key = _existing(key, "public key")
    _check_curve(_public_key(key), key)
    sig = _existing(signature if signature is not None else default_signature(model), "signature")
    plan = _existing(plan, "plan") if plan is not None else None
    folder = model.parent
    res = VerifyResult(model=str(model), signature=str(sig), key=str(key), ok=False)
    data = sig.read_bytes()  # read once: the bytes verified are the bytes reported
    try:
        signed, hash_type = _signed_resources(data)
    except ValueError as exc:
        res.reasons.append(f"{sig} is not a model_signing signature ({exc})")
        return res
    res.reasons += _run_verifier(ms, folder, key, data, signed, hash_type)
    if res.reasons:
        return res
    # the signature holds; now make sure it vouches for this model, not other files
    if model.name not in signed:
        res.reasons.append(f"{model.name} is not covered by the signature")
        return res
    roles: dict[Path, str] = {model: "model"}
    roles |= {_abs(p): "external-data" for p in model_files(model)[1:]}
    manifest_file = manifest_path(model)
    if manifest_file.is_file():
        roles[manifest_file] = "manifest"
    else:
        res.notes.append(
            f"no manifest beside the model ({manifest_file.name}): only the model was checked"
        )
    for p, role in roles.items():
        if (name := p.relative_to(folder).as_posix()) not in signed:
            res.reasons.append(f"{role} {name} is not covered by the signature")
    manifest = _read_manifest(model, fail=res.reasons) if manifest_file.is_file() else None
    plans: list[SignedFile] = []
    if manifest is not None:
        try:
            _check_manifest_model(manifest, _sha(folder, model.name, signed, hash_type), model)
        except QVisionError as exc:
            res.reasons.append(exc.problem)
        plans = _check_plans(manifest, folder, plan, signed, res)
    elif plan is not None:
        res.reasons.append(f"no signed manifest beside the model to check the plan {plan} against")
    roles |= {Path(f.path): f.role for f in plans}
    res.files = [
        SignedFile(
            path=str(folder / n),
            role=roles.get(folder / n, "other"),
            sha256=_sha(folder, n, signed, hash_type),
        )
        for n in sorted(signed, key=lambda n: (_ROLE_ORDER.get(roles.get(folder / n), 9), n))
    ]
    res.files += [f for f in plans if f.covered_by == "manifest"]
    res.ok = not res.reasons
    return res


def _run_verifier(
    ms: ModuleType, folder: Path, key: Path, data: bytes, signed: dict, hash_type: str
) -> list[str]:
    """model_signing's verdict, as reasons (none: the signature holds)."""
    from cryptography.exceptions import InvalidSignature

    config = ms.verifying.Config().use_elliptic_key_verifier(public_key=key)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "signature.json"
        copy.write_bytes(data)
        try:
            config.set_ignore_unsigned_files(True).verify(folder, copy)
            return []
        except InvalidSignature:
            return [
                "the signature does not match its signed content (the signature file was altered)"
            ]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            message = _first_line(exc)
    if message.startswith("Key mismatch"):
        return [f"the signature was made with another key than the one {key} belongs to"]
    if message.startswith(("Signature mismatch", "Cannot use")) and hash_type == "sha256":
        # the signed content checked out (model_signing compares files after the key), so
        # its digests can name the files that differ
        changed = []
        for name, digest in sorted(signed.items()):
            p = folder / name
            if p.is_symlink() or not p.is_file():
                changed.append(f"{name}: signed, now missing or not a regular file")
            elif (now := sha256_file(p)) != digest:
                changed.append(f"{name}: changed (sha256 signed {digest[:12]}…, now {now[:12]}…)")
        if changed:
            return changed
    return [f"model_signing: {message}"]


def _unsignable(exc: ValueError, folder: Path) -> QVisionError:
    message = _first_line(exc)
    if "symlink" in message and message.count("'") >= 2:
        link = message.split("'")[1]
        # model_signing walks the whole folder and checks every entry, ignored ones too
        return QVisionError(
            f"model_signing refuses symbolic links anywhere in the folder it signs, even files "
            f"it leaves out ({link}); move the model, its manifest and plan "
            "to a folder without links",
            folder,
        )
    return QVisionError(f"model_signing cannot sign this folder: {message}", folder)


def _check_plans(
    manifest: dict, folder: Path, plan: Path | None, signed: dict, res: VerifyResult
) -> list[SignedFile]:
    """Plans pinned by the (signed) manifest: the ones it names, where found, and ``plan``."""
    checks: dict[Path, tuple[str, set[str]]] = {}  # file -> (role, sha256s it may have)
    for rec_key, role in PLAN_RECORDS.items():
        rec = manifest.get(rec_key)
        if not rec:
            continue
        found = _locate(rec["path"], folder)
        if found is None and plan is None:  # with --plan, that copy is what gets checked
            res.notes.append(
                f"{role} {rec['path']} named in the manifest was not found: not checked (give --plan PATH)"
            )
        elif found is not None:
            checks[found] = (role, {rec["sha256"]})
    if plan is not None:
        digests = {manifest[k]["sha256"] for k in PLAN_RECORDS if manifest.get(k)}
        if not digests:
            res.reasons.append(f"the manifest records no plan to check {plan} against")
        elif not any(same_file(plan, p) for p in checks):
            checks[_abs(plan)] = ("plan", digests)
    files = []
    for path, (role, digests) in checks.items():
        digest = sha256_file(path)
        if digest not in digests:
            res.reasons.append(
                f"{role} {path}: changed (sha256 differs from the one the signed manifest records)"
            )
        else:
            inside = folder in path.parents and path.relative_to(folder).as_posix() in signed
            by = "signature" if inside else "manifest"
            files.append(SignedFile(path=str(path), role=role, sha256=digest, covered_by=by))
    return files


def _signed_resources(data: bytes) -> tuple[dict[str, str], str]:
    """{file name in the folder: digest} and the hash type from a signature's in-toto
    statement. Only trustworthy once model_signing has checked the signature."""
    try:
        bundle = json.loads(data)
        pred = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))["predicate"]
        digests = {r["name"]: r["digest"] for r in pred["resources"]}
        return digests, pred["serialization"]["hash_type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read its statement: {type(exc).__name__}") from None


def _sha(folder: Path, name: str, signed: dict, hash_type: str) -> str:
    """The sha256 signed for a file, or computed where the signature used another hash."""
    return signed[name] if hash_type == "sha256" else sha256_file(folder / name)


def _check_manifest_model(manifest: dict, model_sha: str, model: Path) -> None:
    recorded = (manifest.get("output_model") or {}).get("sha256")
    if recorded != model_sha:
        raise QVisionError(
            f"the manifest {manifest_path(model).name} describes another model "
            "(its output_model sha256 differs)",
            model,
        )


def _read_manifest(model: Path, fail: list[str] | None = None) -> dict | None:
    """The qvision manifest beside ``model`` or None; a broken one raises (or, given
    ``fail``, is recorded there)."""
    path = manifest_path(model)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("kind") != "qvision-manifest":
            raise ValueError("not a qvision manifest")
    except (ValueError, UnicodeDecodeError) as exc:
        if fail is None:
            raise QVisionError(f"cannot read the manifest: {_first_line(exc)}", path) from None
        fail.append(f"{path.name}: cannot read the manifest ({_first_line(exc)})")
        return None
    return manifest


def _locate(recorded: str, folder: Path) -> Path | None:
    """A file the manifest names: under its name beside the model first (the folder is
    what travels together), else where it was recorded (absolute, or relative to the
    current folder, as quantize was given it)."""
    for p in (folder / Path(recorded).name, Path(recorded)):
        if p.is_file():
            return _abs(p)
    return None


def _other_entries(folder: Path, keep: set[Path]) -> list[str]:
    """Every entry under ``folder`` (relative) that is neither a file to sign nor a
    folder holding one: model_signing's ignored paths."""
    out = []

    def walk(d: Path) -> None:
        with os.scandir(d) as entries:
            for entry in entries:
                p = Path(entry.path)
                if p in keep:
                    continue
                if entry.is_dir(follow_symlinks=False) and any(p in k.parents for k in keep):
                    walk(p)
                else:
                    out.append(p.relative_to(folder).as_posix())

    walk(folder)
    return out


def _public_of_private(path: Path, password: str | None):
    """The public half of the PEM private key at ``path``, or a one-line error."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise QVisionError("is a public key; sign takes the private key", path)
    try:
        return serialization.load_pem_private_key(
            data, None if password is None else password.encode()
        ).public_key()
    except TypeError:  # cryptography's word for a password missing or not needed
        need = "is encrypted: give its password with --password-env VAR"
        raise QVisionError(
            need if password is None else "is not encrypted: drop the password", path
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise QVisionError(
            f"not a PEM private key, or a wrong password ({_first_line(exc)})", path
        ) from None


def _public_key(path: Path):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if b"PRIVATE KEY-----" in data:
        raise QVisionError("is a private key; verify takes the public key", path)
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise QVisionError(f"not a PEM public key ({_first_line(exc)})", path) from None


def _check_curve(public_key, path: Path) -> None:
    """model_signing's key signer takes EC keys on P-256, P-384 and P-521 only."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__.lstrip("_").removesuffix("PublicKey")
        raise QVisionError(
            f"{kind} key; model_signing signs with EC keys (P-256, P-384, P-521)", path
        )
    if public_key.curve.name not in _CURVES:
        raise QVisionError(
            f"EC curve {public_key.curve.name} is not supported; use P-256, P-384 or P-521", path
        )


def _model_signing() -> ModuleType:
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError:
        raise MissingExtraError("model-signing", "sign") from None
    return model_signing


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise QVisionError(f"{what} file not found", p)
    if not p.is_file():
        raise QVisionError(f"{what} is not a file", p)
    return p


def _abs(path: str | Path) -> Path:
    # absolute and normalized, symlinks kept as links (model_signing refuses them itself)
    return Path(os.path.abspath(path))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
