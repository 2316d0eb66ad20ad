"""The runtimes a served model version runs in, behind one small interface.

A backend is made from a verified export folder (its manifest says which format it is) and answers `predict(x)` for a
float32 batch in the model's input layout. ONNX Runtime runs the ONNX exports of chapters 03-05; TensorFlow runs
chapter 03's SavedModel through its `serve` signature, as TF Serving does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers import runtimes
from helpers.integrity import IntegrityError, sha256_bytes, verify_manifest
from helpers.serving.explainer import Explainer, load_explainer


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # -1 for the batch dimension
    datatype: str = "FP32"  # the Open Inference Protocol's name for float32


class Backend:
    platform: str  # as Triton and KServe report it in model metadata
    input: TensorSpec
    output: TensorSpec
    drift_reference: np.ndarray | None = None  # reference output probabilities, if the version ships them (chapter 07)
    explainer: Explainer | None = None  # its PyTorch twin, for :explain, if the version ships one (chapter 13)

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def spec_from_manifest(io: dict) -> TensorSpec:
    """{"images": ["N", 28, 28, 1, "float32"]} -> TensorSpec("images", (-1, 28, 28, 1))."""
    (name, dims), = io.items()
    return TensorSpec(name, tuple(-1 if d == "N" else int(d) for d in dims[:-1]))


class OnnxBackend(Backend):
    platform = "onnxruntime_onnx"

    def __init__(self, directory: Path, manifest: dict):
        # read once and checked again here, so the session runs exactly these bytes, which the browser demo also
        # serves (chapter 09): the page runs the very model the server runs
        self.model_bytes = (Path(directory) / "model.onnx").read_bytes()
        if sha256_bytes(self.model_bytes) != manifest["files"]["model.onnx"]["sha256"]:
            raise IntegrityError(f"refusing to load {directory}: model.onnx changed while it was being loaded")
        # a server gets its parallelism from requests, not inside one
        self.session = runtimes.load_onnx(directory, threads=1, model_bytes=self.model_bytes)
        self.input, self.output = spec_from_manifest(manifest["inputs"]), spec_from_manifest(manifest["outputs"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class SavedModelBackend(Backend):
    platform = "tensorflow_savedmodel"

    def __init__(self, directory: Path, manifest: dict):
        signature = manifest["signatures"][runtimes.SERVE]
        self.input, self.output = spec_from_manifest(signature["inputs"]), spec_from_manifest(signature["outputs"])
        self.serve = runtimes.load_savedmodel(directory).signatures[runtimes.SERVE]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.serve(**{self.input.name: x})[self.output.name].numpy()


BACKENDS = {"onnx": OnnxBackend, "savedmodel": SavedModelBackend}


def load_backend(directory: Path) -> Backend:
    """The backend for a verified export folder, warmed up and checked: one zero image in, one finite row of logits out."""
    manifest = verify_manifest(directory)
    if manifest.get("format") not in BACKENDS:
        raise ValueError(f"{directory}: format {manifest.get('format')!r} cannot be served; serve one of {sorted(BACKENDS)}")
    backend = BACKENDS[manifest["format"]](Path(directory), manifest)
    example = np.zeros((1, *backend.input.shape[1:]), np.float32)
    output = np.asarray(backend.predict(example))
    expected = (1, *backend.output.shape[1:])
    if output.shape != expected or not np.all(np.isfinite(output)):
        raise ValueError(f"{directory}: warm-up gave an output of shape {output.shape} (expected {expected}) or non-finite values")
    if "drift_reference" in manifest:  # listed in the manifest, so verified above with the model
        backend.drift_reference = load_drift_reference(Path(directory) / manifest["drift_reference"]["file"], output.shape[1])
    if "explainer" in manifest:  # likewise verified above; checked here against the model it explains
        backend.explainer = load_explainer(directory, manifest["explainer"], backend.predict, backend.input.shape[1:])
    return backend


def load_drift_reference(path: Path, n_outputs: int) -> np.ndarray:
    """A version's reference output probabilities, checked here so that a bad one refuses the version at load time
    instead of failing drift tests later."""
    import scipy.stats  # noqa: F401  the drift test needs it: imported now, in the loading thread, not on the event loop

    reference = np.load(path, allow_pickle=False)
    if reference.ndim != 2 or reference.shape[1] != n_outputs or len(reference) < 20:
        raise ValueError(f"{path.name}: expected at least 20 rows of {n_outputs} probabilities, got shape {reference.shape}")
    if not np.all(np.isfinite(reference)) or not np.allclose(reference.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{path.name}: rows must be finite probabilities that sum to 1")
    return reference
