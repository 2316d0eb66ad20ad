import numpy as np
import pytest
import torch

from helpers import models, tensorboard_logs, training


def test_warmup_then_cosine_schedule():
    recipe = training.Recipe(epochs=1, batch_size=1, peak_lr=1.0, warmup_fraction=0.1)
    lrs = [training.learning_rate(s, 100, recipe) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only down
    assert lrs[-1] < 0.001
    assert training.learning_rate(50, 100, training.DOCUMENT_RECIPE) == training.DOCUMENT_RECIPE.peak_lr


@pytest.mark.parametrize("recipe", [training.RECIPES["source_cnn"], training.DOCUMENT_RECIPE])
def test_the_keras_schedule_is_the_same_function(recipe):
    schedule = training.keras_schedule(recipe, total_steps=400)
    for step in (0, 5, 39, 40, 41, 200, 399):
        assert float(schedule(step)) == pytest.approx(training.learning_rate(step, 400, recipe), rel=1e-5, abs=1e-9)


def tiny_data(n=256):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def test_torch_training_is_deterministic_and_logs_to_tensorboard(tmp_path):
    x, y = tiny_data()
    recipe = training.Recipe(epochs=2, batch_size=64, peak_lr=1e-3)
    weights = []
    for run in ("a", "b"):
        torch.manual_seed(0)  # the initial weights; train_torch seeds the rest
        model = models.torch_model("source_cnn")
        history = training.train_torch(model, x, y, x[:64], y[:64], recipe, tmp_path / run)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert list(history.frame().columns) == ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    scalars = tensorboard_logs.read_scalars(tmp_path / "a")
    assert set(scalars.groupby(["split", "tag"]).size().index) == {
        ("train", "epoch_loss"), ("train", "epoch_accuracy"), ("train", "epoch_learning_rate"),
        ("validation", "epoch_loss"), ("validation", "epoch_accuracy"),
    }
    assert scalars["step"].max() == 1
    assert "0.weight" in tensorboard_logs.histogram_tags(tmp_path / "a")


@pytest.mark.parametrize("max_shift", [0, 1], ids=["plain", "augmented"])
def test_keras_training_logs_the_same_tags(tmp_path, max_shift):
    x, y = tiny_data(128)
    x = np.moveaxis(x, 1, -1)  # NHWC
    model = models.keras_model("source_cnn")
    recipe = training.Recipe(epochs=2, batch_size=32, peak_lr=1e-3, max_shift=max_shift)
    history = training.train_keras(model, x, y, x[:32], y[:32], recipe, tmp_path)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= set(history.frame().columns)
    assert list(history.frame().index) == [1, 2]
    tags = set(tensorboard_logs.read_scalars(tmp_path).groupby(["split", "tag"]).size().index)
    assert {("train", "epoch_loss"), ("train", "epoch_learning_rate"), ("validation", "epoch_accuracy")} <= tags


def test_reading_an_empty_run_says_so(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorBoard scalars"):
        tensorboard_logs.read_scalars(tmp_path)


def test_random_shift_moves_each_image_within_bounds_in_both_layouts():
    image = np.zeros((28, 28), np.float32)
    image[10:14, 12:15] = 1.0  # a blob well inside the frame: shifting by <= 2 never cuts it
    rng = np.random.default_rng(0)
    nhwc = training.random_shift(np.stack([image] * 50)[..., None], 2, rng)
    nchw = training.random_shift(np.stack([image] * 50)[:, None], 2, rng)
    for batch, spatial in ((nhwc[..., 0], nhwc), (nchw[:, 0], nchw)):
        assert spatial.shape[1:] in ((28, 28, 1), (1, 28, 28))
        assert np.allclose(batch.sum(axis=(1, 2)), image.sum())  # nothing lost
        rows = [np.flatnonzero(b.any(axis=1))[0] for b in batch]
        assert set(rows) <= {8, 9, 10, 11, 12} and len(set(rows)) > 1  # moved, by at most 2
    assert training.random_shift(nhwc, 0, rng) is nhwc
