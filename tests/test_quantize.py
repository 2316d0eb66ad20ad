"""Quantization (chapter 05): the arithmetic, and each runtime's int8 file written, verified and faithful to its source."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from helpers import bench, export, integrity, models, quantize, training

pytestmark = pytest.mark.integration  # starts real processes or trains and exports models

RNG = np.random.default_rng(0)
CARD = {"name": "source_cnn", "test_accuracy": 0.5, "file_sha256": "a" * 64}
UINT8_IMAGES = RNG.integers(0, 256, size=(64, 28, 28), dtype=np.uint8)


# --------------------------------------------------------------------------- arithmetic


def test_affine_quantization_keeps_zero_exact_and_errs_by_half_a_step_inside_the_range():
    x = RNG.uniform(-0.7, 2.3, size=1000)
    scale, zero_point = quantize.affine_params(x.min(), x.max())
    q = quantize.quantize(x, scale, zero_point)
    assert q.min() >= -128 and q.max() <= 127
    assert np.abs(quantize.dequantize(q, scale, zero_point) - x).max() <= scale / 2 + 1e-9
    assert quantize.dequantize(quantize.quantize(0.0, scale, zero_point), scale, zero_point) == 0.0


def test_a_range_without_zero_is_widened_to_include_it_and_values_beyond_are_clipped():
    scale, zero_point = quantize.affine_params(0.5, 1.0)  # all positive: becomes [0, 1], zero point at -128
    assert zero_point == -128 and np.isclose(scale, 1 / 255)
    assert quantize.quantize(5.0, scale, zero_point) == 127  # clipped


def test_symmetric_quantization_has_zero_point_zero_and_per_channel_is_never_worse():
    w = RNG.normal(size=(16, 50)) * RNG.uniform(0.01, 3, size=(16, 1))  # rows with very different ranges
    _, zero_point = quantize.symmetric_params(np.abs(w).max())
    assert zero_point == 0
    q_t, s_t = quantize.per_tensor_symmetric(w)
    q_c, s_c = quantize.per_channel_symmetric(w)
    assert np.abs(q_c).max() <= 127 and s_c.shape == (16,)
    error_t = np.abs(quantize.dequantize(q_t, s_t, 0) - w).mean()
    error_c = np.abs(quantize.dequantize(q_c, s_c[:, None], 0) - w).mean()
    assert error_c < error_t / 2


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("low", [0.0, -2.0])  # ReLU features (zero point -128) and mixed-sign activations
def test_the_integer_matmul_equals_the_float_product_of_the_dequantized_operands(per_channel, low):
    x, w = RNG.uniform(low, 3, size=(20, 64)), RNG.normal(size=(10, 64))
    x_scale, x_zero = quantize.affine_params(x.min(), x.max())
    qw, w_scale = quantize.per_channel_symmetric(w) if per_channel else quantize.per_tensor_symmetric(w)
    dequantized_w = quantize.dequantize(qw, w_scale[:, None] if per_channel else w_scale, 0).astype(np.float64)
    expected = quantize.dequantize(quantize.quantize(x, x_scale, x_zero), x_scale, x_zero).astype(np.float64) @ dequantized_w.T
    result = quantize.integer_matmul(x, w, per_channel=per_channel)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)  # exact integers, one float32 rescale
    assert np.abs(result - x @ w.T).max() < 0.05 * np.abs(x @ w.T).max()


def test_the_integer_matmul_uses_a_given_calibration_range_and_clips_beyond_it():
    x, w = RNG.uniform(0, 1, size=(5, 16)), RNG.normal(size=(3, 16))
    x[0, 0] = 10.0  # an outlier beyond the calibrated range [0, 1]
    result = quantize.integer_matmul(x, w, x_range=(0.0, 1.0))
    clipped = np.minimum(x, 1.0)
    assert np.abs(result - clipped @ w.T).max() < 0.05 * np.abs(clipped @ w.T).max()


def test_calibration_images_are_a_reproducible_sample_of_the_given_training_images():
    a, b = quantize.calibration_images(UINT8_IMAGES, 10, seed=3), quantize.calibration_images(UINT8_IMAGES, 10, seed=3)
    assert np.array_equal(a, b) and len(a) == 10
    rows = {image.tobytes() for image in UINT8_IMAGES}
    assert all(image.tobytes() in rows for image in a)
    assert len({image.tobytes() for image in a}) == 10  # without replacement


# --------------------------------------------------------------------------- runtimes


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def torch_source(tmp_path_factory):
    torch.manual_seed(0)
    return models.torch_model("source_cnn").eval()


def eager(model, x):
    return export.torch_predictor(model)(x)


def close_to(reference, result, relative=0.1):
    """A quantized output tracks its float source: errors small against the spread of the logits."""
    return np.abs(reference - result).max() <= relative * np.abs(reference).max()


def test_tflite_variants_are_smaller_faithful_and_refuse_a_changed_file(artifacts_in_tmp):
    keras_model = models.keras_model("source_cnn")
    savedmodel = export.export_savedmodel(keras_model, "mnist", 1, CARD)
    x = training.images_for("keras", UINT8_IMAGES)
    reference = np.asarray(keras_model(x))
    sizes = {}
    for mode in quantize.TFLITE_MODES:
        directory = quantize.export_tflite(savedmodel, "source_cnn", mode, x)
        manifest = integrity.verify_manifest(directory)
        assert manifest["quantization"] == mode and manifest["source_card"] == CARD
        interpreter = quantize.load_tflite(directory)
        predict = quantize.tflite_predictor(interpreter)
        np.testing.assert_allclose(predict(x[:1]), predict(x)[:1], atol=1e-6)  # the batch is resized both ways
        result = predict(x)
        assert result.shape == reference.shape and result.dtype == np.float32
        assert close_to(reference, result, 1e-5 if mode == "fp32" else 0.1), mode
        sizes[mode] = integrity.total_bytes(manifest)
    assert sizes["int8"] < 0.3 * sizes["fp32"] and sizes["dynamic"] < 0.3 * sizes["fp32"] and sizes["fp16"] < 0.6 * sizes["fp32"]
    assert quantize.load_tflite(export.export_dir("tflite", "source_cnn_int8", 1)).get_input_details()[0]["dtype"] == np.int8
    flip_a_bit(directory / "model.tflite")
    with pytest.raises(integrity.IntegrityError, match="model.tflite"):
        quantize.load_tflite(directory)
    with pytest.raises(ValueError, match="calibration"):
        quantize.convert_tflite(savedmodel, "int8")


def test_onnx_dynamic_and_static_quantization_are_smaller_and_faithful(artifacts_in_tmp, torch_source):
    source = export.export_torch_onnx(torch_source, "source_cnn", 1, CARD)
    x = training.images_for("torch", UINT8_IMAGES)
    reference, source_bytes = eager(torch_source, x), integrity.total_bytes(integrity.verify_manifest(source))
    variants = [quantize.quantize_onnx(source, "source_cnn", "dynamic")]
    variants += [quantize.quantize_onnx(source, "source_cnn", "static", x, method) for method in quantize.ONNX_CALIBRATION_METHODS]
    as_written = ort.SessionOptions()  # the QDQ graph's own arithmetic: quantize/dequantize, no fused int8 kernels
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for directory in variants:
        manifest = integrity.verify_manifest(directory)
        assert manifest["source_card"] == CARD and manifest["inputs"] == {"images": ["N", 1, 28, 28, "float32"]}
        assert integrity.total_bytes(manifest) < 0.3 * source_bytes
        fused = export.onnx_predictor(export.load_onnx(directory))(x)
        if manifest["quantization"]["format"] == "QDQ":
            unfused = ort.InferenceSession(str(directory / "model.onnx"), as_written, providers=["CPUExecutionProvider"])
            assert close_to(reference, unfused.run(None, {"images": x})[0]), directory
            # ONNX Runtime's fused int8 kernels on an x86 CPU without VNNI (AVX2 only) multiply u8 by s8 in pairs
            # summed into int16, which saturates on inputs as large as these random ones (its documentation's
            # reduce_range advice): 14 % of the largest logit on such a CPU against 1 % without the fusion
            assert close_to(reference, fused, 0.2), directory
        else:
            assert close_to(reference, fused), directory
    static = variants[1]
    assert quantize.onnx_activation_ranges(__import__("onnx").load(static / "model.onnx").graph)["images"] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="calibration images"):
        quantize.quantize_onnx(source, "source_cnn", "static")
    with pytest.raises(ValueError, match="calibration method"):
        quantize.quantize_onnx(source, "source_cnn", "static", x, "median")


def test_pt2e_int8_lowers_to_an_executorch_program_that_matches_the_quantized_graph(artifacts_in_tmp, torch_source):
    x = training.images_for("torch", UINT8_IMAGES)
    quantized = quantize.ptq_pt2e(torch_source, x)
    assert close_to(eager(torch_source, x), eager(quantized, x))
    directory = export.export_executorch(quantized, "source_cnn_int8", 1, CARD, quantization={"flow": "pt2e PTQ"})
    manifest = integrity.verify_manifest(directory)
    assert manifest["quantization"] == {"flow": "pt2e PTQ"}
    result = export.executorch_predictor(export.load_executorch(directory))(x)
    assert np.mean(result.argmax(1) == eager(quantized, x).argmax(1)) >= 0.95
    assert close_to(eager(quantized, x), result, 0.05)


def test_quantization_aware_training_trains_a_copy_and_leaves_the_source_model_alone(torch_source):
    before = {k: v.clone() for k, v in torch_source.state_dict().items()}
    x = training.images_for("torch", UINT8_IMAGES)
    prepared = quantize.prepare_qat_pt2e(torch_source, weight_bits=3)
    start = [p.detach().clone() for p in prepared.parameters()]
    recipe = training.Recipe(epochs=1, batch_size=16, peak_lr=1e-2, seed=0)
    history = training.train_torch(prepared, x, np.arange(64) % 10, None, None, recipe, run_dir=None)
    assert len(history.rows) == 1 and history.rows[0]["val_loss"] is None
    assert any(not torch.equal(a, b) for a, b in zip(start, prepared.parameters()))  # training moved the weights
    assert all(torch.equal(before[k], v) for k, v in torch_source.state_dict().items())
    converted = quantize.convert_qat(prepared)
    assert eager(converted, x).shape == (64, 10)
    assert 0 < max_levels_per_channel(converted) <= 7  # 3-bit weights: at most 7 values (-3..3) per channel


def max_levels_per_channel(graph_module) -> int:
    """The most distinct integer values any output channel of any int8 weight constant holds in a converted graph."""
    levels = 0
    for _, tensor in list(graph_module.named_buffers()) + list(graph_module.named_parameters()):
        if tensor.dtype == torch.int8 and tensor.ndim >= 2:
            levels = max(levels, max(len(torch.unique(row)) for row in tensor.reshape(tensor.shape[0], -1)))
    return levels


def test_ptq_honours_the_weight_bit_width(torch_source):
    x = training.images_for("torch", UINT8_IMAGES)
    assert max_levels_per_channel(quantize.ptq_pt2e(torch_source, x, weight_bits=3)) <= 7
    assert max_levels_per_channel(quantize.ptq_pt2e(torch_source, x)) > 7


# --------------------------------------------------------------------------- reuse of earlier exports, bench helpers


def test_current_export_reuses_a_matching_export_and_rebuilds_a_stale_or_changed_one(artifacts_in_tmp, torch_source):
    built = []

    def build(card):
        return lambda: built.append(1) or export.export_torch_onnx(torch_source, "source_cnn", 1, card)

    directory = export.current_export("onnx", "source_cnn", 1, CARD, build(CARD))  # missing: built
    assert export.current_export("onnx", "source_cnn", 1, CARD, build(CARD)) == directory and len(built) == 1  # reused
    other = {**CARD, "file_sha256": "b" * 64}
    export.current_export("onnx", "source_cnn", 1, other, build(other))  # made from another model: rebuilt
    flip_a_bit(directory / "model.onnx")
    export.current_export("onnx", "source_cnn", 1, other, build(other))  # tampered: rebuilt
    assert len(built) == 3 and integrity.verify_manifest(directory)["source_card"] == other


def test_the_pareto_front_keeps_exactly_the_undominated_points():
    accuracy = [0.90, 0.95, 0.95, 0.99, 0.80]
    latency = [1.0, 2.0, 3.0, 5.0, 0.5]
    assert bench.pareto_front(accuracy, latency).tolist() == [True, True, False, True, True]
    assert bench.pareto_front([0.9, 0.9], [1.0, 1.0]).tolist() == [True, True]  # ties dominate neither
    # within the tolerance, a slightly more accurate but slower variant no longer counts as better
    assert bench.pareto_front([0.9858, 0.9857], [2.0, 1.0]).tolist() == [True, True]
    assert bench.pareto_front([0.9858, 0.9857], [2.0, 1.0], tolerance=0.001).tolist() == [False, True]


def test_the_tradeoff_plot_keeps_its_axis_on_the_window_and_lists_the_rest():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from helpers import plots

    table = pd.DataFrame({"accuracy": [0.985, 0.984, 0.90], "p50_ms": [0.02, 0.01, 0.005], "size (kB)": [200, 60, 50],
                          "runtime": ["a", "b", "b"]}, index=["big", "small", "fast but bad"])
    front = bench.pareto_front(table["accuracy"], table["p50_ms"])
    fig = plots.tradeoff(table, front, n=10_000)
    low, high = fig.axes[0].get_ylim()
    assert low > 90 and high < 100  # the inaccurate variant does not stretch the axis
    assert any("fast but bad" in t.get_text() for t in fig.texts)


def test_onnx_operator_times_come_from_the_runtime_profiler(artifacts_in_tmp, torch_source):
    directory = export.export_torch_onnx(torch_source, "source_cnn", 1, CARD)
    times = bench.onnx_operator_times(directory, training.images_for("torch", UINT8_IMAGES), runs=3)
    assert {"Gemm"} <= set(times.index) and (times > 0).all()
