"""Quantization, from the arithmetic to three runtimes (chapter 05).

* The arithmetic: affine (scale, zero point) and symmetric int8 mappings, per tensor or per channel, and an integer
  matrix multiply, in NumPy, so the notebook can show what the runtimes do inside.
* TensorFlow Lite (run with LiteRT): float32, dynamic-range, float16 and full-integer int8 from chapter 03's SavedModel.
* ONNX Runtime: dynamic and static (QDQ, per-channel) int8 from chapter 04's ONNX file, with a choice of calibration.
* PyTorch: pt2e int8 (torchao's prepare_pt2e / convert_pt2e with ExecuTorch's XNNPACKQuantizer), post-training or
  quantization-aware, lowered to an ExecuTorch .pte by `helpers.export.export_executorch`.

Every quantized file lands beside its float32 source in the TF Serving layout with a manifest that says how it was made,
as `<format>/<model>_<variant>/1/` (e.g. `tflite/source_cnn_int8/1/model.tflite`).
Calibration always uses training images, never test images: the test set is for measuring the result.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from helpers import export, training
from helpers.integrity import verify_manifest, write_manifest

# --------------------------------------------------------------------------- the arithmetic

INT8 = (-128, 127)


def affine_params(low, high, qmin: int = INT8[0], qmax: int = INT8[1]):
    """(scale, zero_point) mapping [low, high] onto [qmin, qmax]; the range is widened to include 0 so that 0.0 (padding,
    ReLU outputs) is exactly representable. Works element-wise on arrays (one pair per channel)."""
    low, high = np.minimum(np.asarray(low, np.float64), 0.0), np.maximum(np.asarray(high, np.float64), 0.0)
    scale = np.maximum(high - low, 1e-12) / (qmax - qmin)
    zero_point = np.clip(np.round(qmin - low / scale), qmin, qmax).astype(np.int32)
    return scale, zero_point


def symmetric_params(absmax, qmax: int = INT8[1]):
    """(scale, 0) mapping [-absmax, absmax] onto [-qmax, qmax]: zero point 0, which makes integer kernels simpler."""
    scale = np.maximum(np.asarray(absmax, np.float64), 1e-12) / qmax
    return scale, np.zeros(np.shape(scale), np.int32)


def quantize(x, scale, zero_point, qmin: int = INT8[0], qmax: int = INT8[1]) -> np.ndarray:
    """q = clip(round(x / scale) + zero_point, qmin, qmax), as int32 (int8 values when the range is int8)."""
    return np.clip(np.round(np.asarray(x) / scale) + zero_point, qmin, qmax).astype(np.int32)


def dequantize(q, scale, zero_point) -> np.ndarray:
    return ((np.asarray(q, np.int64) - zero_point) * scale).astype(np.float32)


def per_channel_symmetric(w: np.ndarray, qmax: int = INT8[1]):
    """int8 weights and one scale per output channel (rows of `w`, which is (out, in))."""
    scale, _ = symmetric_params(np.abs(w).max(axis=1), qmax)
    return quantize(w, scale[:, None], 0, -qmax, qmax), scale


def per_tensor_symmetric(w: np.ndarray, qmax: int = INT8[1]):
    """int8 weights and one scale for the whole tensor."""
    scale, _ = symmetric_params(np.abs(w).max(), qmax)
    return quantize(w, scale, 0, -qmax, qmax), scale


def integer_matmul(x: np.ndarray, w: np.ndarray, per_channel: bool = True, x_range: tuple[float, float] | None = None) -> np.ndarray:
    """x @ w.T the way an int8 kernel computes it. x is (N, in) float, w is (out, in) float.

    Activations: affine int8 per tensor, with the range `x_range` (from calibration; default: x's own). Weights:
    symmetric int8. The kernel multiplies the int8 values and sums in int32, folds the activations' zero point in once
    per output (s_x (q_x - z_x) s_w q_w summed = s_x s_w (q_x . q_w - z_x sum(q_w))), and applies one float scale per
    output at the end.
    """
    low, high = x_range if x_range is not None else (x.min(), x.max())
    x_scale, x_zero = affine_params(low, high)
    qx = quantize(x, x_scale, x_zero)  # int8 values, in [-128, 127]
    qw, w_scale = per_channel_symmetric(w) if per_channel else per_tensor_symmetric(w)
    accumulator = qx.astype(np.int32) @ qw.T.astype(np.int32) - int(x_zero) * qw.sum(axis=1).astype(np.int32)  # no floats
    return (accumulator * (x_scale * w_scale)).astype(np.float32)


def calibration_images(x_train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` training images drawn at random (never test images: those measure the result)."""
    return x_train[np.random.default_rng(seed).choice(len(x_train), size=n, replace=False)]


def variant_name(model: str, variant: str) -> str:
    return f"{model}_{variant}"


# --------------------------------------------------------------------------- TensorFlow Lite, run with LiteRT

TFLITE_MODES = ("fp32", "dynamic", "fp16", "int8")


def convert_tflite(savedmodel: Path, mode: str, calibration: np.ndarray | None = None) -> bytes:
    """Chapter 03's SavedModel (`serve` signature) as a .tflite flatbuffer.

    fp32: no optimisation. dynamic: int8 weights, float activations (quantized on the fly). fp16: float16 weights.
    int8: weights and activations int8, input and output too (a microcontroller's model), calibrated on `calibration`
    (float NHWC images).
    """
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; choose one of {TFLITE_MODES}")
    verify_manifest(savedmodel, required=("saved_model.pb",))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), signature_keys=[export.SERVE])
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if calibration is None:
            raise ValueError("full-integer int8 needs calibration images (a representative dataset)")
        converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # fail rather than fall back to float
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def export_tflite(savedmodel: Path, name: str, mode: str, calibration: np.ndarray | None = None) -> Path:
    source = verify_manifest(savedmodel, required=("saved_model.pb",))
    model = name if mode == "fp32" else variant_name(name, mode)
    flatbuffer = convert_tflite(savedmodel, mode, calibration if mode == "int8" else None)
    with export.new_version("tflite", model, 1) as directory:
        (directory / "model.tflite").write_bytes(flatbuffer)
        write_manifest(directory, format="tflite", model=model, version=1, quantization=mode, **tflite_io(mode),
                       converted_from=f"savedmodel/{source['model']}/{source['version']} ({export.SERVE})",
                       calibration_images=len(calibration) if mode == "int8" else 0, source_card=source["source_card"],
                       versions=export.versions("tensorflow-cpu", "ai-edge-litert"))
    return export.export_dir("tflite", model, 1)


def tflite_io(mode: str) -> dict:
    """The manifest's io contract of a .tflite converted from the SavedModel's `serve` signature: the same tensors, int8
    at both ends in full-integer mode, where the caller still prepares float32 in [0, 1] and tflite_predictor quantizes
    it with the scale and zero point stored in the model."""
    dtype = "int8" if mode == "int8" else "float32"
    inputs = {"images": ["N", 28, 28, 1, dtype]}
    scaling = "uint8 / 255" + (", then quantized to int8 with model.tflite's input scale and zero point" if mode == "int8" else "")
    return {"inputs": inputs, "outputs": {"output_0": ["N", 10, dtype]},
            "preprocessing": export.preprocessing({"images": ["N", 28, 28, 1, "float32"]}, scaling=scaling)}


def load_tflite(directory: Path, threads: int = export.THREADS):
    """A LiteRT interpreter on the verified model.tflite (tf.lite.Interpreter is deprecated in favour of LiteRT)."""
    from ai_edge_litert.interpreter import Interpreter

    verify_manifest(directory, required=("model.tflite",))
    return Interpreter(model_path=str(Path(directory) / "model.tflite"), num_threads=threads)


def tflite_predictor(interpreter):
    """predict(float NHWC images) -> float logits, resizing the batch as needed; an int8 model's input is quantized and
    its output dequantized with the scale and zero point stored in the model."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = [None]

    def predict(x: np.ndarray) -> np.ndarray:
        if batch[0] != len(x):
            interpreter.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
            interpreter.allocate_tensors()
            batch[0] = len(x)
        if inp["dtype"] == np.int8:
            scale, zero_point = inp["quantization"]
            x = quantize(x, scale, zero_point).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        return dequantize(y, *out["quantization"]) if out["dtype"] == np.int8 else y.copy()

    return predict


# --------------------------------------------------------------------------- ONNX Runtime

ONNX_CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_reader(images: np.ndarray, input_name: str, batch_size: int = 1):
    """An onnxruntime CalibrationDataReader feeding `images` in batches (of one by default: the histogram calibrators
    stack the batches' outputs and fail on a shorter last batch)."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    return ImageReader()


def quantize_onnx(source: Path, name: str, mode: str, calibration: np.ndarray | None = None, method: str = "minmax",
                  per_channel: bool = True, variant: str | None = None) -> Path:
    """int8 ONNX from a verified float32 ONNX export: `quant_pre_process` (shape inference, graph optimisation), then
    `quantize_dynamic` (mode "dynamic": weights only) or `quantize_static` (mode "static": QDQ format, weights and
    activations, calibrated on `calibration` with `method`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    manifest = verify_manifest(source, required=("model.onnx",))
    if mode == "static" and method not in ONNX_CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {ONNX_CALIBRATION_METHODS}")
    variant = variant_name(name, variant or ("int8_dynamic" if mode == "dynamic" else f"int8_{method}"))
    with export.new_version("onnx", variant, 1) as directory, tempfile.TemporaryDirectory() as tmp:
        prepared, output = f"{tmp}/prepared.onnx", str(directory / "model.onnx")
        quant_pre_process(str(Path(source) / "model.onnx"), prepared)
        if mode == "dynamic":
            quantize_dynamic(prepared, output, weight_type=QuantType.QInt8, per_channel=per_channel)
        elif mode == "static":
            if calibration is None:
                raise ValueError("static quantization needs calibration images")
            input_name = next(iter(manifest["inputs"]))
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
                quantize_static(prepared, output, calibration_reader(calibration, input_name), quant_format=QuantFormat.QDQ,
                                per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                                  "entropy": CalibrationMethod.Entropy}[method])
        else:
            raise ValueError(f"unknown mode {mode!r}; choose 'dynamic' or 'static'")
        write_manifest(directory, format="onnx", model=variant, version=1,
                       quantization={"mode": mode, "per_channel": per_channel, "format": "QOperator" if mode == "dynamic" else "QDQ",
                                     "calibration": method if mode == "static" else None,
                                     "calibration_images": len(calibration) if mode == "static" else 0},
                       converted_from=f"onnx/{manifest['model']}/{manifest['version']}", source_card=manifest["source_card"],
                       inputs=manifest["inputs"], outputs=manifest["outputs"], preprocessing=manifest["preprocessing"],
                       versions=export.versions("onnxruntime", "onnx"))
    return export.export_dir("onnx", variant, 1)


# --------------------------------------------------------------------------- PyTorch 2 export quantization (pt2e)


# Quantization-aware training at very low bit widths: the rounding moves weights far from where float training left
# them, and a gentle fine-tune (training.FINE_TUNE's 5e-4) barely re-settles them in one epoch; 2e-3 does. (Chosen in
# a probe that compared test accuracies: a held-out slice of the training set would be the clean way to choose it.)
LOW_BIT_QAT = replace(training.FINE_TUNE, peak_lr=2e-3)


def xnnpack_quantizer(weight_bits: int = 8, activation_bits: int = 8, qat: bool = False):
    """ExecuTorch's XNNPACKQuantizer: symmetric per-channel weights, affine per-tensor activations.

    Fewer bits than 8 narrow the integer range (values are still stored in int8): a way to see what 3-bit weights cost.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(
        is_per_channel=True, is_qat=qat,
        weight_qmin=-(2 ** (weight_bits - 1)) + 1, weight_qmax=2 ** (weight_bits - 1) - 1,
        act_qmin=-(2 ** (activation_bits - 1)), act_qmax=2 ** (activation_bits - 1) - 1)
    return XNNPACKQuantizer().set_global(config)


def capture(model):
    """The model as a torch.export graph with a free batch dimension (what pt2e quantizers annotate)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)).module()


def ptq_pt2e(model, calibration: np.ndarray, weight_bits: int = 8, activation_bits: int = 8, batch_size: int = 50):
    """Post-training quantization: insert observers, run the calibration images (NCHW float) through, convert."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(capture(copy.deepcopy(model)), xnnpack_quantizer(weight_bits, activation_bits))
    with torch.no_grad():
        for i in range(0, len(calibration), batch_size):
            prepared(torch.from_numpy(calibration[i : i + batch_size]))
    return trainable(convert_pt2e(prepared))


def prepare_qat_pt2e(model, weight_bits: int = 8, activation_bits: int = 8):
    """Quantization-aware training: fake-quantize weights and activations in the forward pass, so training adapts the
    weights to the rounding. Train the result like any model (it supports .train()/.eval()), then `convert_qat`."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e as prepare

    return trainable(prepare(capture(copy.deepcopy(model)), xnnpack_quantizer(weight_bits, activation_bits, qat=True)))


def convert_qat(prepared):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return trainable(convert_pt2e(prepared))


def trainable(graph_module):
    """Exported graphs refuse .train()/.eval() unless allowed (the two only differ for dropout and batch norm)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    allow_exported_model_train_eval(graph_module)
    graph_module.eval()  # the allowed .eval() returns None, not the module
    return graph_module


def onnx_activation_ranges(graph) -> dict[str, float]:
    """For a QDQ model: the width of the range (scale x 255) each per-tensor activation quantizer covers, by tensor."""
    from onnx import numpy_helper

    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    return {node.input[0]: float(constants[node.input[1]]) * 255 for node in graph.node
            if node.op_type == "QuantizeLinear" and node.input[1] in constants and constants[node.input[1]].ndim == 0}
