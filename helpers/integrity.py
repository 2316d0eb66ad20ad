"""Hashes and the refusal to load a file that changed since it was written."""

from __future__ import annotations

import hashlib
from pathlib import Path


class IntegrityError(RuntimeError):
    """A file's content is not what was recorded when it was written. Its text ends with the learner's fix (added when
    shown, not stored: a pickled copy, as Ray and spawned processes make, does not repeat it)."""

    def __str__(self) -> str:
        from helpers.fixes import with_fix

        return with_fix(super().__str__(), "tampered")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str, recorded_in: str | None = None) -> None:
    """Raise IntegrityError naming the file and both hashes unless `path` hashes to `expected_sha256`."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        where = f"its {recorded_in} records {expected_sha256}" if recorded_in else f"{expected_sha256} was recorded when it was saved"
        raise IntegrityError(f"refusing to load {path}: its sha256 is {actual} but {where}: the file is corrupt or was changed.")


# --------------------------------------------------------------------------- manifests for exported artifacts

MANIFEST = "manifest.json"
DIGEST = "manifest_sha256"  # the manifest's own checksum: the sha256 of every other field, in canonical JSON
# helpers.signing's signature of a version folder, beside the manifest and never listed in it: the signature covers the
# manifest (so a manifest rewritten to match a changed file fails it), so the manifest cannot cover the signature, and a
# manifest rewritten after signing must not list it either (re-signing would then break the manifest). It is never
# loaded as part of the model: without a trusted key (helpers.serving --trusted-key) it is simply ignored.
SIGNATURE = "model.sig"


def left_out(directory: Path, path: Path) -> bool:
    """Whether a manifest leaves `path` out: a manifest.json (its own, or a nested export's), or the folder's signature."""
    return path.name == MANIFEST or path.relative_to(directory) == Path(SIGNATURE)


class ManifestError(IntegrityError):
    """A manifest.json that cannot be read, does not follow the schema (MANIFEST_FIELDS, check_manifest) or changed
    since it was written. An IntegrityError, so whatever refuses a changed file refuses it too; its fix differs."""

    def __str__(self) -> str:
        from helpers.fixes import with_fix

        return with_fix(RuntimeError.__str__(self), "manifest")


def canonical_json(fields: dict) -> bytes:
    """The one JSON text of `fields` that DIGEST covers: sorted keys, no whitespace, so re-indenting changes nothing."""
    import json

    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_digest(manifest: dict) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in manifest.items() if k != DIGEST}))


def write_manifest(directory: Path, **fields) -> Path:
    """manifest.json in `directory`: every file's size and sha256 (walking subfolders), plus `fields` (format, io
    contract, preprocessing, card...), plus DIGEST over all of it. `fields` read from an older manifest (as
    helpers.serving.drift.add_drift_reference rewrites one) get a new digest."""
    import json

    directory = Path(directory)
    fields.pop(DIGEST, None)
    files = {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not left_out(directory, p)
    }
    content = json.loads(json.dumps({**fields, "files": files}, default=str))  # exactly what a reader will parse
    content[DIGEST] = manifest_digest(content)
    path = directory / MANIFEST
    path.write_text(json.dumps(content, indent=2))
    return path


def read_manifest(directory: Path) -> dict:
    """The parsed manifest.json of `directory`, refused (ManifestError naming the file) unless it is UTF-8 JSON text of
    an object whose DIGEST matches its content. A changed byte either leaves the content as it was (whitespace) or is
    refused here: no field of a corrupt or edited manifest is ever used."""
    import json

    path = Path(directory) / MANIFEST
    if not path.exists():
        raise IntegrityError(f"refusing to load {directory}: it has no {MANIFEST}, so its files cannot be checked")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ManifestError(f"refusing to load {path}: byte {error.start} is not UTF-8 text, so the file is corrupt") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"refusing to load {path}: it is not valid JSON ({error.msg} at line {error.lineno}, column "
                            f"{error.colno}), so the file is corrupt or was edited") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"refusing to load {path}: it holds a JSON {type(manifest).__name__}, not the object a manifest is")
    recorded = manifest.get(DIGEST)
    if not isinstance(recorded, str):
        raise ManifestError(f"refusing to load {path}: it records no {DIGEST} (its own checksum), so a change to its "
                            "fields could not be detected; it was written by an older version of the course or by hand")
    if (actual := manifest_digest(manifest)) != recorded:
        raise ManifestError(f"refusing to load {path}: its fields hash to {actual} but its {DIGEST} records {recorded}: "
                            "the manifest is corrupt or was edited since it was written")
    return manifest


def verify_manifest(directory: Path, required: tuple[str, ...] = ()) -> dict:
    """The manifest of `directory`, after checking it and every file in the folder against it.

    Refused (IntegrityError naming the file): no manifest; a `required` file the manifest does not list; a listed file
    missing, of another size or changed; a file in the folder the manifest does not list (an added file could be loaded
    unchecked). Refused with ManifestError (naming manifest.json, and its own fix): a manifest that is not UTF-8 JSON,
    does not match its own checksum, or does not follow the schema (check_manifest). The file listing is checked before
    the rest of the schema: it is what vouches for the model's bytes.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    manifest_path = directory / MANIFEST
    if problems := check_files(manifest.get("files")):
        raise ManifestError(f"refusing to load {manifest_path}: it does not follow the manifest schema: {'; '.join(problems)}")
    listed = manifest["files"]
    for name in required:
        if name not in listed:
            raise IntegrityError(f"refusing to load {directory}: {name} is not listed in its {MANIFEST}")
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and not left_out(directory, p)}
    if unlisted := sorted(present - set(listed)):
        raise IntegrityError(f"refusing to load {directory}: {unlisted[0]} is not listed in its {MANIFEST}")
    for name, expected in listed.items():
        path = directory / name
        if not path.exists():
            raise IntegrityError(f"refusing to load {directory}: {name} is listed in {MANIFEST} but missing")
        if (size := path.stat().st_size) != expected["bytes"]:
            raise IntegrityError(f"refusing to load {path}: it has {size} bytes but its {MANIFEST} records {expected['bytes']}: "
                                 "the file is corrupt or was changed.")
        verify_file(path, expected["sha256"], recorded_in=MANIFEST)
    if problems := check_manifest(manifest):
        raise ManifestError(f"refusing to load {manifest_path}: it does not follow the manifest schema: {'; '.join(problems)}")
    return manifest


# --------------------------------------------------------------------------- the manifest schema
# Plain Python, so the server needs no schema library: `check_manifest` returns every problem it finds, as text that
# names the field and what it must be. Fields not named here are allowed (details an exporter adds) and, like every
# field, covered by the manifest's own checksum.

FORMATS = ("savedmodel", "onnx", "torchscript", "lite", "executorch", "tflite")
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")
LAYOUTS = {"NHWC": 4, "NCHW": 4, "NHW": 3}
HEX = frozenset("0123456789abcdef")


def is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def is_dims(value, with_dtype: bool = True) -> bool:
    """["N", 28, 28, 1, "float32"]: a batch dimension "N" or a size, then sizes, then (`with_dtype`) the dtype."""
    if not isinstance(value, list) or len(value) < (2 if with_dtype else 1):
        return False
    dims = value[:-1] if with_dtype else value
    if with_dtype and value[-1] not in DTYPES:
        return False
    return all(d == "N" or is_int(d, 1) for d in dims) and all(d != "N" for d in dims[1:])


def check_files(files) -> list[str]:
    """'files': {relative path: {"bytes": size, "sha256": 64 lowercase hex digits}}, at least one."""
    from pathlib import PurePosixPath

    if not isinstance(files, dict) or not files:
        return ["'files' must be an object listing at least one file"]
    problems = []
    for name, entry in files.items():
        parts = PurePosixPath(name).parts
        if not name or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or name == MANIFEST:
            problems.append(f"'files' lists {name!r}, which is not a path inside the version's folder")
        if not isinstance(entry, dict) or set(entry) != {"bytes", "sha256"}:
            problems.append(f"'files' entry {name!r} must be an object with exactly 'bytes' and 'sha256'")
            continue
        if not is_int(entry["bytes"], 0):
            problems.append(f"'files' entry {name!r}: 'bytes' must be a non-negative integer, got {entry['bytes']!r}")
        sha = entry["sha256"]
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= HEX):
            problems.append(f"'files' entry {name!r}: 'sha256' must be 64 lowercase hex digits, got {sha!r}")
    return problems


def check_io(block, where: str) -> list[str]:
    """An input/output contract: 'inputs' and 'outputs' ({name: dims with dtype}) and the 'preprocessing' of the input."""
    if not isinstance(block, dict):
        return [f"{where} must be an object with 'inputs', 'outputs' and 'preprocessing'"]
    problems = []
    for key in ("inputs", "outputs"):
        tensors = block.get(key)
        if key not in block:
            problems.append(f"{where}'{key}' is missing")
        elif not isinstance(tensors, dict) or not tensors:
            problems.append(f"{where}'{key}' must be an object naming at least one tensor")
        else:
            problems += [f"{where}'{key}' tensor {name!r} must be dims then a dtype, like [\"N\", 28, 28, 1, \"float32\"] "
                         f"(dtypes: {', '.join(DTYPES)}), got {dims!r}" for name, dims in tensors.items() if not is_text(name) or not is_dims(dims)]
    if "preprocessing" not in block:
        return [*problems, f"{where}'preprocessing' is missing: what the input expects (dtype, shape, range, scaling)"]
    return problems + check_preprocessing(block["preprocessing"], block.get("inputs"), where)


def check_preprocessing(pre, inputs, where: str) -> list[str]:
    """{"input": name, "dtype", "shape" (the input's dims), "layout", "range": [low, high], "scaling": text}."""
    where = f"{where}'preprocessing'"
    if not isinstance(pre, dict):
        return [f"{where} must be an object"]
    if missing := [k for k in ("input", "dtype", "shape", "layout", "range", "scaling") if k not in pre]:
        return [f"{where} is missing {', '.join(repr(k) for k in missing)}"]
    problems = []
    if not isinstance(inputs, dict) or pre["input"] not in inputs:
        problems.append(f"{where}: 'input' must name one of the inputs, got {pre['input']!r}")
    elif is_dims(inputs[pre["input"]]) and pre["shape"] != inputs[pre["input"]][:-1]:
        problems.append(f"{where}: 'shape' {pre['shape']!r} is not the shape of input {pre['input']!r}, {inputs[pre['input']][:-1]!r}")
    if pre["dtype"] not in DTYPES:
        problems.append(f"{where}: 'dtype' must be one of {', '.join(DTYPES)}, got {pre['dtype']!r}")
    if not is_dims(pre["shape"], with_dtype=False):
        problems.append(f"{where}: 'shape' must be dims like [\"N\", 28, 28, 1], got {pre['shape']!r}")
    elif LAYOUTS.get(pre["layout"]) != len(pre["shape"]):
        problems.append(f"{where}: 'layout' must be one of {', '.join(LAYOUTS)} with as many letters as 'shape' has dims, "
                        f"got {pre['layout']!r}")
    low_high = pre["range"]
    if not (isinstance(low_high, list) and len(low_high) == 2 and all(map(is_number, low_high)) and low_high[0] < low_high[1]):
        problems.append(f"{where}: 'range' must be [low, high] with low < high, got {low_high!r}")
    if not is_text(pre["scaling"]):
        problems.append(f"{where}: 'scaling' must say how raw pixels become the input, e.g. \"uint8 / 255\", got {pre['scaling']!r}")
    return problems


def check_drift_reference(value, files) -> list[str]:
    """helpers.serving.drift's reference: {"file": a listed .npy, "rows": count, "of": what it holds}."""
    if not isinstance(value, dict) or not {"file", "rows", "of"} <= set(value):
        return ["'drift_reference' must be an object with 'file', 'rows' and 'of'"]
    problems = []
    if not isinstance(files, dict) or value["file"] not in files:
        problems.append(f"'drift_reference' names {value['file']!r}, which 'files' does not list")
    if not is_int(value["rows"], 1):
        problems.append(f"'drift_reference': 'rows' must be a positive integer, got {value['rows']!r}")
    if not is_text(value["of"]):
        problems.append("'drift_reference': 'of' must say what the reference holds")
    return problems


def check_explainer(value, files) -> list[str]:
    """helpers.serving.explainer's PyTorch twin: {"file": a listed .safetensors, "framework": "torch", "layers": [...],
    "of": ...}; the layers themselves are checked when the explainer is built."""
    if not isinstance(value, dict) or not {"file", "framework", "layers", "of"} <= set(value):
        return ["'explainer' must be an object with 'file', 'framework', 'layers' and 'of'"]
    problems = []
    if not isinstance(files, dict) or value["file"] not in files:
        problems.append(f"'explainer' names {value['file']!r}, which 'files' does not list")
    elif not str(value["file"]).endswith(".safetensors"):
        problems.append(f"'explainer': 'file' must be a .safetensors file (weights only, no code), got {value['file']!r}")
    if value["framework"] != "torch":
        problems.append(f"'explainer': 'framework' must be \"torch\", got {value['framework']!r}")
    if not isinstance(value["layers"], list) or not value["layers"]:
        problems.append("'explainer': 'layers' must be a non-empty list")
    return problems


def is_measured(value) -> bool:
    """The export's own test result: {"accuracy": in [0, 1], "images": how many, "dataset": which}."""
    return (isinstance(value, dict) and set(value) == {"accuracy", "images", "dataset"} and is_number(value["accuracy"])
            and 0 <= value["accuracy"] <= 1 and is_int(value["images"], 1) and is_text(value["dataset"]))


# field: (required, check, what it must be)
MANIFEST_FIELDS = {
    "format": (True, lambda v: v in FORMATS, f"one of {', '.join(FORMATS)}"),
    "model": (True, is_text, "the model's name"),
    "version": (True, lambda v: is_int(v, 1), "a positive integer"),
    "source_card": (True, lambda v: isinstance(v, dict), "an object: the card of the model it was exported from"),
    "versions": (True, lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()),
                 "an object of package versions"),
    "converted_from": (False, is_text, "a string"),
    "exporter": (False, is_text, "a string"),
    "delegate": (False, is_text, "a string"),
    "quantization": (False, lambda v: is_text(v) or isinstance(v, dict), "a string or an object"),
    "calibration_images": (False, lambda v: is_int(v, 0), "a non-negative integer"),
    # the export's own accuracy, measured on the export itself: the source card's is the model's before export, which
    # an export can lose (a quantization calibrated on unscaled pixels keeps its parent's card and scores 10 %)
    "measured": (False, is_measured, 'an object {"accuracy": 0..1, "images": count, "dataset": name}'),
}


def check_manifest(manifest: dict) -> list[str]:
    """Every way `manifest` breaks the schema: the fields above, 'files', the io contract with its preprocessing (per
    signature for a SavedModel) and the drift reference. [] for a manifest that follows it."""
    problems = check_files(manifest.get("files"))
    for field, (required, check, what) in MANIFEST_FIELDS.items():
        if field not in manifest:
            if required:
                problems.append(f"'{field}' is missing (it must be {what})")
        elif not check(manifest[field]):
            problems.append(f"'{field}' must be {what}, got {manifest[field]!r}")
    if manifest.get("format") == "savedmodel":
        signatures = manifest.get("signatures")
        if not isinstance(signatures, dict) or not signatures:
            problems.append("'signatures' must be an object: signature name -> its inputs, outputs and preprocessing")
        else:
            for name, block in signatures.items():
                problems += check_io(block, f"signature {name!r}: ")
    else:
        problems += check_io(manifest, "")
    if "drift_reference" in manifest:
        problems += check_drift_reference(manifest["drift_reference"], manifest.get("files"))
    if "explainer" in manifest:
        problems += check_explainer(manifest["explainer"], manifest.get("files"))
    return problems


def total_bytes(manifest: dict) -> int:
    return sum(f["bytes"] for f in manifest["files"].values())
