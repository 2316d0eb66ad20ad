"""Export the course's models to deployable formats, load them back safely, and check them against their source.

Every export lands in `artifacts/exports/<format>/<model>/<version>/` (the TF Serving layout: a model name, then one
folder per integer version) with a manifest.json listing each file's size and sha256, the inputs and outputs, the
preprocessing contract of the input (`preprocessing`: dtype, shape, layout, value range and how raw pixels are scaled),
the source model's card and the library versions. Every `load_*` checks the manifest first (its own checksum and its
schema: helpers.integrity) and refuses a changed file.

Formats: "savedmodel" and "onnx" (from Keras, chapter 03); "torchscript" (.pt), "lite" (.ptl), "executorch" (.pte) and
"onnx" (from PyTorch, chapter 04). Chapter 05's quantized variants ("tflite", int8 "onnx" and "executorch") are made by
`helpers.quantize` into the same layout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers import env, paths
from helpers.integrity import IntegrityError, verify_manifest, write_manifest
from helpers.losses import softmax

# the loaders live with the other runtimes code; chapters call them as export.load_onnx(...) and so on
from helpers.runtimes import SERVE, SERVING_DEFAULT, THREADS, load_onnx, load_savedmodel, onnx_predictor  # noqa: F401


def export_dir(fmt: str, model: str, version: int) -> Path:
    return paths.artifacts() / "exports" / fmt / model / str(version)


@contextmanager
def new_version(fmt: str, model: str, version: int):
    """Yields an empty staging folder; on success it replaces `<format>/<model>/<version>/` in one rename.

    A failed export leaves the previous version untouched. The staging name starts with a dot, so a server scanning
    for numbered versions never sees it.
    """
    final = export_dir(fmt, model, version)
    staging = final.with_name(f".{final.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def versions(*names: str) -> dict[str, str]:
    return {name: env.installed_version(name) for name in names}


# MNIST's raw pixels: 28 x 28 uint8, 0 = background, 255 = ink; the models take them divided by 255, nothing subtracted
PIXELS = "MNIST: 28 x 28 grayscale uint8, 0 = background, 255 = ink; no mean or std normalisation"
LAYOUTS = {(28, 28, 1): "NHWC", (1, 28, 28): "NCHW", (28, 28): "NHW"}


def preprocessing(inputs: dict, dtype: str = "float32", value_range=(0.0, 1.0), scaling: str = "uint8 / 255") -> dict:
    """The preprocessing contract of a model's one input, for its manifest: what a caller must send it.

    `inputs` is the manifest's {"images": ["N", 28, 28, 1, "float32"]}; `dtype` is what the caller prepares (an int8
    TFLite model quantizes float32 itself, with the scale stored in the model).
    """
    (name, dims), = inputs.items()
    return {"input": name, "dtype": dtype, "shape": dims[:-1], "layout": LAYOUTS[tuple(dims[1:-1])],
            "range": list(value_range), "scaling": scaling, "pixels": PIXELS}


# --------------------------------------------------------------------------- parity


def parity(reference_logits: np.ndarray, logits: np.ndarray) -> dict:
    """How far an export's outputs are from its source's, on the same images."""
    reference_logits, logits = np.asarray(reference_logits, np.float64), np.asarray(logits, np.float64)
    if reference_logits.shape != logits.shape:
        raise ValueError(f"cannot compare outputs of shapes {reference_logits.shape} and {logits.shape}")
    return {
        "images": len(logits),
        "argmax_agreement": float(np.mean(reference_logits.argmax(1) == logits.argmax(1))),
        "max_abs_diff_logits": float(np.abs(reference_logits - logits).max()),
        "max_abs_diff_probabilities": float(np.abs(softmax(reference_logits) - softmax(logits)).max()),
    }


def in_batches(predict, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return np.concatenate([np.asarray(predict(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------- Keras -> SavedModel -> ONNX (chapter 03)

SAVEDMODEL_SERVE_IO = {"inputs": {"images": ["N", 28, 28, 1, "float32"]}, "outputs": {"output_0": ["N", 10, "float32"]}}


def export_savedmodel(model, name: str, version: int, card: dict, batch_size: int | None = None) -> Path:
    """A SavedModel with two signatures: `serve` (the model) and `serving_default` (preprocessing inside the graph)."""
    import keras
    import tensorflow as tf

    with new_version("savedmodel", name, version) as directory:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name=SERVE, fn=lambda images: model(images, training=False),
                             input_signature=[tf.TensorSpec([batch_size, 28, 28, 1], tf.float32, name="images")])

        @tf.function(input_signature=[tf.TensorSpec([batch_size, 28, 28], tf.uint8, name="images")])
        def serving_default(images):
            logits = model(tf.cast(images, tf.float32)[..., None] / 255.0, training=False)
            return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}

        archive.add_endpoint(name=SERVING_DEFAULT, fn=serving_default)
        archive.write_out(str(directory), verbose=False)
        write_manifest(directory, format="savedmodel", model=name, version=version, source_card=card,
                       signatures={SERVE: {**SAVEDMODEL_SERVE_IO, "preprocessing": preprocessing(SAVEDMODEL_SERVE_IO["inputs"])},
                                   SERVING_DEFAULT: {"inputs": {"images": ["N", 28, 28, "uint8"]},
                                                     "outputs": {"probabilities": ["N", 10, "float32"], "classes": ["N", "int64"]},
                                                     "preprocessing": preprocessing(
                                                         {"images": ["N", 28, 28, "uint8"]}, "uint8", (0, 255),
                                                         "none: raw pixels; the graph casts them to float32 and divides by 255")}},
                       versions=versions("tensorflow-cpu", "keras"))
    return export_dir("savedmodel", name, version)


def savedmodel_to_onnx(savedmodel: Path, name: str, version: int, opset: int = 17) -> Path:
    """Convert the `serve` signature with tf2onnx (in a subprocess, as its command line does)."""
    manifest = verify_manifest(savedmodel, required=("saved_model.pb",))
    with new_version("onnx", name, version) as directory:
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel), "--signature_def", SERVE,
               "--opset", str(opset), "--output", str(directory / "model.onnx")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"tf2onnx failed (exit {result.returncode}): {result.stderr[-2000:]}")
        write_manifest(directory, format="onnx", model=name, version=version, converted_from=f"savedmodel/{name}/{version} ({SERVE})",
                       source_card=manifest["source_card"], **SAVEDMODEL_SERVE_IO,
                       preprocessing=preprocessing(SAVEDMODEL_SERVE_IO["inputs"]), versions=versions("tf2onnx", "onnx", "tensorflow-cpu"))
    return export_dir("onnx", name, version)


# --------------------------------------------------------------------------- PyTorch -> TorchScript / Lite / ExecuTorch / ONNX (chapter 04)

TORCHSCRIPT_IO = {"inputs": {"x": ["N", 1, 28, 28, "float32"]}, "outputs": {"logits": ["N", 10, "float32"]}}
TORCHSCRIPT_IO["preprocessing"] = preprocessing(TORCHSCRIPT_IO["inputs"])


def export_scripted(fmt: str, save, filename: str, name: str, version: int, card: dict) -> Path:
    """A scripted module written by `save(path)` as `<fmt>/<name>/<version>/<filename>`, with its manifest."""
    with new_version(fmt, name, version) as directory:
        save(str(directory / filename))
        write_manifest(directory, format=fmt, model=name, version=version, source_card=card,
                       **TORCHSCRIPT_IO, versions=versions("torch"))
    return export_dir(fmt, name, version)


def export_torchscript(scripted, name: str, version: int, card: dict) -> Path:
    """A TorchScript module (from torch.jit.trace or script) as model.pt."""
    return export_scripted("torchscript", scripted.save, "model.pt", name, version, card)


def load_torchscript(directory: Path):
    import torch

    verify_manifest(directory, required=("model.pt",))
    return torch.jit.load(str(Path(directory) / "model.pt")).eval()


def export_lite(scripted, name: str, version: int, card: dict) -> Path:
    """The source document's Android artifact: a lite-interpreter model.ptl (deprecated, see chapter 04)."""
    return export_scripted("lite", scripted._save_for_lite_interpreter, "model.ptl", name, version, card)


def load_lite(directory: Path):
    from torch.jit.mobile import _load_for_lite_interpreter

    verify_manifest(directory, required=("model.ptl",))
    return _load_for_lite_interpreter(str(Path(directory) / "model.ptl"))


def export_executorch(model, name: str, version: int, card: dict, **details) -> Path:
    """torch.export -> ExecuTorch with the XNNPACK delegate -> model.pte, for batch-1 inference (a device's use case).

    `model` may be a pt2e-quantized graph (chapter 05); `details` (how it was quantized) go into the manifest.
    """
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with new_version("executorch", name, version) as directory:
        example = (torch.zeros(1, 1, 28, 28),)
        model.eval()  # (an exported pt2e graph's .eval() returns None, so not chained)
        program = to_edge_transform_and_lower(torch.export.export(model, example), partitioner=[XnnpackPartitioner()])
        (directory / "model.pte").write_bytes(program.to_executorch().buffer)
        write_manifest(directory, format="executorch", model=name, version=version, source_card=card, delegate="XNNPACK",
                       inputs={"x": [1, 1, 28, 28, "float32"]}, outputs={"logits": [1, 10, "float32"]},
                       preprocessing=preprocessing({"x": [1, 1, 28, 28, "float32"]}), **details,
                       versions=versions("torch", "executorch", "torchao"))
    return export_dir("executorch", name, version)


def load_executorch(directory: Path):
    """The `forward` method of the verified model.pte, in the ExecuTorch runtime."""
    from executorch.runtime import Runtime

    verify_manifest(directory, required=("model.pte",))
    return Runtime.get().load_program(str(Path(directory) / "model.pte")).load_method("forward")


def executorch_threads() -> int:
    """The size of ExecuTorch's XNNPACK thread pool (it sizes itself to the machine; reported, not set)."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def executorch_predictor(method):
    """ExecuTorch programs here take one image at a time: loop over a batch."""
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([method.execute([torch.from_numpy(x[i : i + 1])])[0].numpy() for i in range(len(x))])

    return predict


def export_torch_onnx(model, name: str, version: int, card: dict, dynamic_batch: bool = True) -> Path:
    """torch.onnx.export (the dynamo exporter), weights inline so model.onnx is self-contained."""
    import logging
    import warnings

    import torch

    # "torchvision is not installed. Skipping torchvision::nms" and a LeafSpec deprecation: noise about operators and
    # internals these models do not use
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with new_version("onnx", name, version) as directory, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        program = torch.onnx.export(model.eval(), (torch.zeros(2, 1, 28, 28),), dynamic_shapes=dynamic, dynamo=True,
                                    input_names=["images"], output_names=["logits"], verbose=False)
        program.save(str(directory / "model.onnx"), external_data=False)
        inputs = {"images": ["N" if dynamic_batch else 2, 1, 28, 28, "float32"]}
        write_manifest(directory, format="onnx", model=name, version=version, source_card=card, exporter="torch.onnx (dynamo)",
                       inputs=inputs, outputs={"logits": ["N" if dynamic_batch else 2, 10, "float32"]},
                       preprocessing=preprocessing(inputs), versions=versions("torch", "onnx", "onnxscript"))
    return export_dir("onnx", name, version)


def current_export(fmt: str, name: str, version: int, card: dict, build) -> Path:
    """`<fmt>/<name>/<version>` if it verifies and was exported from the model `card` describes; else `build()` it now.

    Later chapters use this to reuse an earlier chapter's export, or recreate it on a fresh clone.
    """
    directory = export_dir(fmt, name, version)
    try:
        made_from = (verify_manifest(directory).get("source_card") or {}).get("file_sha256")
        if made_from == card["file_sha256"]:
            return directory
        reason = "it was exported from a different model"
    except IntegrityError as error:
        reason = str(error)
    print(f"Exporting {fmt}/{name}/{version} again ({reason[:160]})")
    return build()


def record_accuracy(directory: Path, accuracy: float, images: int, dataset: str = "MNIST test") -> Path:
    """Write the export's own measured accuracy into its manifest (`measured`, with a new manifest checksum): the
    source card's accuracy describes the model before export, not what this file scores."""
    fields = {k: v for k, v in verify_manifest(directory).items() if k != "files"}
    fields["measured"] = {"accuracy": float(accuracy), "images": int(images), "dataset": dataset}
    write_manifest(directory, **fields)
    return Path(directory)


def torch_predictor(module):
    """predict(float NCHW images) -> NumPy logits, for an eager, TorchScript, lite-interpreter or pt2e module."""
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).detach().numpy()

    return predict


def timed(load, *args):
    """(result, seconds) of `load(*args)`: load times go into the comparison tables."""
    started = time.perf_counter()
    result = load(*args)
    return result, time.perf_counter() - started


def predict_in_fresh_process(savedmodel: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """`serving_default` outputs from a new Python process that imports only TensorFlow (helpers.savedmodel_predict)."""
    import tempfile

    verify_manifest(savedmodel, required=("saved_model.pb",))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "images.npy", images)
        cmd = [sys.executable, "-m", "helpers.savedmodel_predict", str(savedmodel), f"{tmp}/images.npy", f"{tmp}/out.npz"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"the fresh process failed (exit {result.returncode}): {result.stderr[-2000:]}")
        with np.load(Path(tmp) / "out.npz") as out:
            return {k: out[k] for k in out.files}
