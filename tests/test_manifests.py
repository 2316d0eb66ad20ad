"""Every manifest is checked when it is read: its own checksum (manifest_sha256), then the files it lists, then the schema
(required fields, types, the input/output contract and the preprocessing contract). One changed byte anywhere in a
manifest.json either leaves its content as it was (whitespace) or is refused with an error that names manifest.json and
its fix: never a bare JSONDecodeError, never a model loaded under changed fields."""

import json
from collections import Counter

import numpy as np
import pytest

from helpers import export, integrity
from helpers.fixes import FIXES
from helpers.integrity import MANIFEST, IntegrityError, ManifestError

IO = {"inputs": {"images": ["N", 1, 28, 28, "float32"]}, "outputs": {"logits": ["N", 10, "float32"]}}


def complete_fields(**overrides) -> dict:
    """The fields of an ONNX export's manifest (as helpers.export writes them), without the files."""
    fields = {"format": "onnx", "model": "source_cnn", "version": 1, "source_card": {"name": "source_cnn", "test_accuracy": 0.5,
              "learning_rate": 1e-05}, "exporter": "torch.onnx (dynamo)", **IO, "preprocessing": export.preprocessing(IO["inputs"]),
              "versions": {"torch": "2.0", "onnx": None}}
    return {**fields, **overrides}


def written(directory, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    integrity.write_manifest(directory, **fields)
    return directory


def refused(directory, match: str = "") -> str:
    with pytest.raises(ManifestError) as info:
        integrity.verify_manifest(directory)
    text = str(info.value)
    assert MANIFEST in text and text.endswith("Fix: " + FIXES["manifest"].fix) and match in text, text
    return text


# --------------------------------------------------------------------------- one changed byte, everywhere


def flips(data: bytes):
    """(position, new byte) for every single-bit flip of every byte, and every other JSON whitespace byte in place of
    each whitespace byte (the changes that can leave the content as it was)."""
    whitespace = b" \t\n\r"
    for i, byte in enumerate(data):
        for bit in range(8):
            yield i, byte ^ (1 << bit)
        if byte in whitespace:
            yield from ((i, other) for other in whitespace if other != byte)


def content_class(original: dict, data: bytes) -> str:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not JSON"
    if not isinstance(parsed, dict):
        return "changed content"
    return "same content" if integrity.canonical_json(parsed) == integrity.canonical_json(original) else "changed content"


def flip_every_byte(directory) -> Counter:
    """Apply each flip to directory's manifest.json and check the outcome; returns how many of each outcome."""
    path = directory / MANIFEST
    original_bytes = path.read_bytes()
    original = json.loads(original_bytes)
    outcomes = Counter()
    try:
        for position, new in flips(original_bytes):
            data = bytearray(original_bytes)
            data[position] = new
            path.write_bytes(bytes(data))
            kind = content_class(original, bytes(data))
            if kind == "same content":
                assert integrity.verify_manifest(directory) == original, position
                outcomes["same content: loads, equal to the original"] += 1
                continue
            try:
                integrity.verify_manifest(directory)
            except ManifestError as error:  # not a JSONDecodeError, nor an IntegrityError about some other file
                text = str(error)
                assert MANIFEST in text and text.endswith("Fix: " + FIXES["manifest"].fix), (position, text)
                reason = ("not UTF-8" if "not UTF-8" in text else "not JSON" if "not valid JSON" in text
                          else "no checksum" if "records no" in text else "checksum differs" if "hash to" in text else text)
                outcomes[f"{kind}: refused ({reason})"] += 1
            else:
                raise AssertionError(f"byte {position} set to {new:#04x} ({kind}) was loaded: {bytes(data)[max(0, position - 30):position + 30]!r}")
    finally:
        path.write_bytes(original_bytes)
    assert integrity.verify_manifest(directory) == original
    return outcomes


def test_every_one_byte_change_of_a_manifest_is_harmless_or_refused_with_the_fix(tmp_path):
    directory = written(tmp_path / "onnx" / "source_cnn" / "1", **complete_fields())
    outcomes = flip_every_byte(directory)
    print(dict(outcomes))
    assert outcomes["same content: loads, equal to the original"] > 0  # whitespace swaps; "1e-05" -> "1E-05"
    assert sum(n for kind, n in outcomes.items() if kind.startswith("changed content")) > 0
    assert sum(n for kind, n in outcomes.items() if kind.startswith("not JSON")) > 0


@pytest.mark.integration  # exports a small real model
def test_every_one_byte_change_of_a_real_export_manifest_is_harmless_or_refused(tmp_path):
    from small_models import make_export

    directory, _ = make_export(tmp_path, seed=0, x=np.zeros((1, 1, 28, 28), np.float32))
    manifest = integrity.verify_manifest(directory)
    assert manifest["preprocessing"] == {"input": "images", "dtype": "float32", "shape": ["N", 1, 28, 28], "layout": "NCHW",
                                         "range": [0.0, 1.0], "scaling": "uint8 / 255", "pixels": export.PIXELS}
    outcomes = flip_every_byte(directory)
    print(dict(outcomes))
    assert sum(outcomes.values()) > 8 * len((directory / MANIFEST).read_bytes())


# --------------------------------------------------------------------------- the schema


def test_a_complete_manifest_verifies_and_records_its_checksum(tmp_path):
    manifest = integrity.verify_manifest(written(tmp_path / "v", **complete_fields()))
    assert manifest[integrity.DIGEST] == integrity.manifest_digest(manifest) and integrity.check_manifest(manifest) == []


@pytest.mark.parametrize("field", ["format", "model", "version", "source_card", "versions", "inputs", "outputs", "preprocessing"])
def test_a_manifest_missing_a_required_field_is_refused(tmp_path, field):
    fields = complete_fields()
    fields.pop(field)
    refused(written(tmp_path / "v", **fields), f"'{field}'")


BROKEN = {
    "an unknown format": ({"format": "onnz"}, "'format' must be one of"),
    "a version in quotes": ({"version": "1"}, "'version' must be a positive integer"),
    "a dtype that is no dtype": ({"inputs": {"images": ["N", 1, 28, 28, "float33"]}}, "tensor 'images' must be dims then a dtype"),
    "a shape with text": ({"outputs": {"logits": ["N", "ten", "float32"]}}, "tensor 'logits'"),
    "preprocessing of another input": ({"preprocessing": {**export.preprocessing(IO["inputs"]), "input": "x"}}, "'input' must name"),
    "preprocessing of another shape": ({"preprocessing": {**export.preprocessing(IO["inputs"]), "shape": ["N", 28, 28, 1]}},
                                       "is not the shape of input"),
    "a range upside down": ({"preprocessing": {**export.preprocessing(IO["inputs"]), "range": [1, 0]}}, "'range'"),
    "no scaling": ({"preprocessing": {k: v for k, v in export.preprocessing(IO["inputs"]).items() if k != "scaling"}}, "'scaling'"),
    "a layout of the wrong rank": ({"preprocessing": {**export.preprocessing(IO["inputs"]), "layout": "NHW"}}, "'layout'"),
    "a drift reference that is not listed": ({"drift_reference": {"file": "other.npy", "rows": 300, "of": "softmax"}},
                                             "'files' does not list"),
    "a SavedModel without signatures": ({"format": "savedmodel"}, "'signatures'"),
    "an accuracy above 1": ({"measured": {"accuracy": 98.6, "images": 10000, "dataset": "MNIST test"}}, "'measured'"),
    "an accuracy with no image count": ({"measured": {"accuracy": 0.98, "dataset": "MNIST test"}}, "'measured'"),
}


@pytest.mark.parametrize("what", BROKEN)
def test_a_manifest_that_breaks_the_schema_is_refused_by_name(tmp_path, what):
    overrides, match = BROKEN[what]
    refused(written(tmp_path / "v", **complete_fields(**overrides)), match)


def test_a_files_entry_of_the_wrong_shape_is_refused_before_any_file_is_read(tmp_path):
    directory = written(tmp_path / "v", **complete_fields())
    manifest = json.loads((directory / MANIFEST).read_text())
    for entry, match in [({"bytes": 4096, "sha256": "ABC"}, "64 lowercase hex"), ({"bytes": "4096", "sha256": "0" * 64}, "'bytes'"),
                         ({"sha256": "0" * 64}, "exactly 'bytes' and 'sha256'")]:
        manifest["files"]["model.onnx"] = entry
        manifest[integrity.DIGEST] = integrity.manifest_digest(manifest)  # a consistent manifest that still breaks the schema
        (directory / MANIFEST).write_text(json.dumps(manifest))
        refused(directory, match)
    manifest["files"] = {"../model.onnx": {"bytes": 4096, "sha256": "0" * 64}}
    manifest[integrity.DIGEST] = integrity.manifest_digest(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))
    refused(directory, "not a path inside")


def test_a_file_of_another_size_is_refused_naming_the_manifest(tmp_path):
    directory = written(tmp_path / "v", **complete_fields())
    (directory / "model.onnx").write_bytes(b"shorter")
    with pytest.raises(IntegrityError, match=f"model.onnx: it has 7 bytes but its {MANIFEST} records 4096"):
        integrity.verify_manifest(directory)


def test_an_unreadable_or_older_manifest_is_refused_with_the_fix(tmp_path):
    directory = written(tmp_path / "v", **complete_fields())
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    path.write_text(path.read_text()[:-2])
    refused(directory, "not valid JSON")
    path.write_text("[1, 2]")
    refused(directory, "JSON list")
    manifest.pop(integrity.DIGEST)
    path.write_text(json.dumps(manifest))  # as the course wrote them before manifests checked themselves
    refused(directory, "records no manifest_sha256")
    manifest["model"] = "edited by hand"
    path.write_text(json.dumps({**manifest, integrity.DIGEST: "0" * 64}))
    refused(directory, "edited since it was written")


def test_a_refused_manifest_makes_current_export_export_again(artifacts_in_tmp):
    directory = written(export.export_dir("onnx", "source_cnn", 1), **complete_fields(source_card={"file_sha256": "c" * 64}))
    assert export.current_export("onnx", "source_cnn", 1, {"file_sha256": "c" * 64}, lambda: "built") == directory
    (directory / MANIFEST).write_bytes((directory / MANIFEST).read_bytes().replace(b'"source_cnn"', b'"source_cnm"', 1))
    assert export.current_export("onnx", "source_cnn", 1, {"file_sha256": "c" * 64}, lambda: "built") == "built"


def test_a_drift_reference_rewrites_the_manifest_with_a_new_checksum_and_keeps_validating(tmp_path):
    from helpers.serving.drift import DRIFT_REFERENCE, add_drift_reference

    directory = written(tmp_path / "v", **complete_fields())
    add_drift_reference(directory, np.random.default_rng(0).normal(size=(50, 10)))
    manifest = integrity.verify_manifest(directory)
    assert manifest["drift_reference"] == {"file": DRIFT_REFERENCE, "rows": 50, "of": "softmax of the model's outputs"}
    assert DRIFT_REFERENCE in manifest["files"] and manifest["preprocessing"] == complete_fields()["preprocessing"]


def test_an_exports_own_accuracy_is_recorded_beside_its_parents_and_checked(tmp_path):
    directory = written(tmp_path / "v", **complete_fields())
    export.record_accuracy(directory, 0.098, 10000)  # an export that lost what its source model had
    manifest = integrity.verify_manifest(directory)
    assert manifest["measured"] == {"accuracy": 0.098, "images": 10000, "dataset": "MNIST test"}
    assert manifest["source_card"]["test_accuracy"] == 0.5 and manifest["files"] == {
        "model.onnx": integrity.verify_manifest(written(tmp_path / "w", **complete_fields()))["files"]["model.onnx"]}
    text = (directory / MANIFEST).read_text().replace('"accuracy": 0.098', '"accuracy": 0.986')  # a better score typed in
    (directory / MANIFEST).write_text(text)
    refused(directory, "was edited since it was written")


def test_every_format_writes_a_preprocessing_contract_that_validates():
    """The io blocks helpers.export and helpers.quantize put in their manifests, checked without exporting."""
    from helpers import quantize

    blocks = {"savedmodel serve": {**export.SAVEDMODEL_SERVE_IO, "preprocessing": export.preprocessing(export.SAVEDMODEL_SERVE_IO["inputs"])},
              "torchscript and lite": export.TORCHSCRIPT_IO,
              **{f"tflite {mode}": quantize.tflite_io(mode) for mode in quantize.TFLITE_MODES}}
    for what, block in blocks.items():
        assert integrity.check_io(block, "") == [], what
        assert block["preprocessing"]["range"] == [0.0, 1.0] and block["preprocessing"]["scaling"].startswith("uint8 / 255"), what
    assert quantize.tflite_io("int8")["inputs"]["images"][-1] == "int8"
