"""Load a verified export and run it: the one place that creates ONNX Runtime sessions and opens SavedModels.

Chapters 03-05 export into these formats (`helpers.export`, `helpers.quantize`), chapter 05 profiles them
(`helpers.bench`), and the server (`helpers.serving`) loads them; all of them go through here, so a thread count or a
session setting is decided once. Every loader checks the version's sha256 manifest first and refuses a changed file.
"""

from __future__ import annotations

from pathlib import Path

from helpers.integrity import verify_manifest

THREADS = 2  # every runtime created by the course uses this many threads unless told otherwise; benchmarks report it
SERVE = "serve"  # SavedModel signature: float32 images (N, 28, 28, 1) in [0, 1] -> logits: what the model computes
SERVING_DEFAULT = "serving_default"  # raw uint8 images (N, 28, 28) -> probabilities and classes: for clients


def onnx_session_options(threads: int = THREADS, profile_prefix: str | None = None):
    """ONNX Runtime session options with a fixed thread count: `threads` inside an operator, one across operators
    (this model is a chain: nothing runs in parallel). `profile_prefix` turns on ONNX Runtime's own profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return options


def load_onnx(directory: Path, threads: int = THREADS, model_bytes: bytes | None = None, profile_prefix: str | None = None):
    """An ONNX Runtime session on the verified model.onnx (or on `model_bytes`, already verified), with a fixed
    thread count."""
    import onnxruntime as ort

    if model_bytes is None:
        verify_manifest(directory, required=("model.onnx",))
    model = model_bytes if model_bytes is not None else str(Path(directory) / "model.onnx")
    return ort.InferenceSession(model, onnx_session_options(threads, profile_prefix), providers=["CPUExecutionProvider"])


def onnx_predictor(session):
    """A function images -> logits over an ONNX Runtime session's single input."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def load_savedmodel(directory: Path):
    """The verified SavedModel, loaded by TensorFlow alone (no Keras code needed)."""
    import tensorflow as tf

    verify_manifest(directory, required=("saved_model.pb",))
    return tf.saved_model.load(str(directory))
