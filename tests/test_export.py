"""Every export format: written with a manifest, loaded back faithfully, and refused after a one-bit change."""

import numpy as np
import pytest
import torch

from helpers import bench, export, integrity, models

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("artifacts_in_tmp")]

IMAGES = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
CARD = {"name": "source_cnn", "test_accuracy": 0.5}


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    return models.torch_model("source_cnn").eval()


def eager_logits(model):
    with torch.no_grad():
        return model(torch.from_numpy(IMAGES)).numpy()


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def torch_exports(model):
    """(directory, model file, loader, predict-from-loaded) for each PyTorch format."""
    traced = torch.jit.trace(model, torch.from_numpy(IMAGES[:1]))
    return {
        "torchscript": (export.export_torchscript(traced, "source_cnn", 1, CARD), "model.pt", export.load_torchscript,
                        lambda m: m(torch.from_numpy(IMAGES)).detach().numpy()),
        "lite": (export.export_lite(traced, "source_cnn", 1, CARD), "model.ptl", export.load_lite,
                 lambda m: m(torch.from_numpy(IMAGES)).detach().numpy()),
        "executorch": (export.export_executorch(model, "source_cnn", 1, CARD), "model.pte", export.load_executorch,
                       lambda m: export.executorch_predictor(m)(IMAGES)),
        "onnx": (export.export_torch_onnx(model, "source_cnn", 1, CARD), "model.onnx", export.load_onnx,
                 lambda m: export.onnx_predictor(m)(IMAGES)),
    }


def test_every_torch_format_matches_eager_and_refuses_a_changed_file(torch_model):
    reference = eager_logits(torch_model)
    for fmt, (directory, filename, load, predict) in torch_exports(torch_model).items():
        manifest = integrity.verify_manifest(directory)
        assert manifest["format"] == fmt and filename in manifest["files"] and manifest["source_card"] == CARD
        result = export.parity(reference, predict(load(directory)))
        assert result["argmax_agreement"] == 1.0 and result["max_abs_diff_probabilities"] <= 1e-5, fmt
        flip_a_bit(directory / filename)
        with pytest.raises(integrity.IntegrityError, match=filename):
            load(directory)


def test_the_savedmodel_and_its_onnx_conversion_match_keras_and_refuse_changes():
    keras_model = models.keras_model("source_cnn")
    images = np.moveaxis(IMAGES, 1, -1)
    reference = np.asarray(keras_model(images))
    savedmodel = export.export_savedmodel(keras_model, "mnist", 1, CARD)
    loaded = export.load_savedmodel(savedmodel)
    assert set(loaded.signatures) == {export.SERVE, export.SERVING_DEFAULT}
    raw = np.rint(images[..., 0] * 255).astype(np.uint8)
    served = loaded.signatures[export.SERVING_DEFAULT](images=raw)
    expected = export.softmax(np.asarray(keras_model((raw / 255.0).astype(np.float32)[..., None])))  # the scaling is in the graph
    assert np.abs(served["probabilities"].numpy() - expected).max() <= 1e-6
    assert np.array_equal(served["classes"].numpy(), expected.argmax(1))
    assert export.parity(reference, loaded.signatures[export.SERVE](images=images)["output_0"].numpy())["max_abs_diff_probabilities"] <= 1e-6
    onnx_dir = export.savedmodel_to_onnx(savedmodel, "mnist", 1)
    onnx_parity = export.parity(reference, export.onnx_predictor(export.load_onnx(onnx_dir))(images))
    assert onnx_parity["argmax_agreement"] == 1.0 and onnx_parity["max_abs_diff_probabilities"] <= 1e-5
    flip_a_bit(savedmodel / "saved_model.pb")
    with pytest.raises(integrity.IntegrityError, match="saved_model.pb"):
        export.load_savedmodel(savedmodel)


def test_a_folder_without_a_manifest_or_with_a_missing_file_is_refused(tmp_path):
    with pytest.raises(integrity.IntegrityError, match="no manifest.json"):
        integrity.verify_manifest(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"weights")
    integrity.write_manifest(tmp_path, format="onnx")
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(integrity.IntegrityError, match="missing"):
        integrity.verify_manifest(tmp_path)


def test_an_unlisted_or_unrequired_model_file_is_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"weights")
    integrity.write_manifest(tmp_path, format="onnx")
    with pytest.raises(integrity.IntegrityError, match="model.pte is not listed"):
        integrity.verify_manifest(tmp_path, required=("model.pte",))
    (tmp_path / "model.onnx.data").write_bytes(b"swapped-in weights")  # added after the manifest was written
    with pytest.raises(integrity.IntegrityError, match="model.onnx.data is not listed"):
        integrity.verify_manifest(tmp_path)


def test_a_failed_export_leaves_the_previous_version_untouched():
    with export.new_version("onnx", "mnist", 1) as staging:
        (staging / "model.onnx").write_bytes(b"version one")
    with pytest.raises(RuntimeError):
        with export.new_version("onnx", "mnist", 1) as staging:
            (staging / "model.onnx").write_bytes(b"half written")
            raise RuntimeError("converter crashed")
    final = export.export_dir("onnx", "mnist", 1)
    assert (final / "model.onnx").read_bytes() == b"version one"
    assert sorted(p.name for p in final.parent.iterdir()) == ["1"]  # no staging folder left behind


def test_parity_refuses_outputs_of_different_shapes():
    with pytest.raises(ValueError, match="shapes"):
        export.parity(np.zeros((4, 10)), np.zeros((1, 10)))


def test_parity_reports_disagreement():
    reference = np.array([[2.0, 0.0], [0.0, 2.0]])
    result = export.parity(reference, np.array([[2.0, 0.0], [3.0, 2.0]]))
    assert result["argmax_agreement"] == 0.5 and result["max_abs_diff_logits"] == 3.0


def test_bench_compare_makes_one_row_per_runtime():
    runtimes = {name: {"predict": lambda x: np.tanh(x), "bytes": 2000, "load_s": 0.5, "threads": 1} for name in ("a", "b")}
    table = bench.compare(runtimes, np.ones(4), np.ones((8, 4)), repeats=5, seconds=0.02)
    assert list(table.index) == ["a", "b"] and list(table.columns) == bench.COMPARISON_COLUMNS
    assert table.loc["a", "size (kB)"] == 2.0 and table.loc["b", "load (ms)"] == 500.0 and (table["p50_ms"] > 0).all()


def test_bench_reports_percentiles_and_throughput_with_the_thread_count():
    result = bench.measure(lambda x: np.tanh(x).sum(), np.ones(10), np.ones((32, 10)), threads=2, warmup=2, repeats=30, seconds=0.05)
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["samples_per_s"] > 0 and result["batch_size"] == 32 and result["threads"] == 2 and result["repeats"] == 30
