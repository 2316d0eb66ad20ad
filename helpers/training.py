"""Training loops for the course's classifiers, in Keras and PyTorch, logging the same things to TensorBoard (chapter 02).

Both frameworks follow one `Recipe` (epochs, batch size, Adam with a warm-up + cosine learning-rate schedule) and write
`<run_dir>/train` and `<run_dir>/validation` event files with the same tags (`epoch_loss`, `epoch_accuracy`,
`epoch_learning_rate`) plus weight histograms, so one reader (`helpers.tensorboard_logs`) plots both.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.progress import is_text_mode, progress


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    peak_lr: float
    warmup_fraction: float = 0.1  # of all steps; 0 with cosine=False gives a constant learning rate
    cosine: bool = True
    seed: int = 0
    max_shift: int = 0  # data augmentation: shift each training image by up to this many pixels, anew every epoch

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch_size)


# The source document's own settings (§5.2): Adam at its default 1e-3, Keras' default batch of 32, 5 epochs, no schedule.
DOCUMENT_RECIPE = Recipe(epochs=5, batch_size=32, peak_lr=1e-3, warmup_fraction=0.0, cosine=False)
# What the course trains with: larger batches (faster on a CPU), a higher peak rate made safe by warm-up, cosine decay.
# source_cnn overfits (99.6 % train vs 98.4 % test after 8 epochs without augmentation, measured): shifting the training
# images by up to 2 pixels lifts its test accuracy above 98.5 % in 7 epochs. better_cnn has dropout and does not need it.
RECIPES = {
    "source_cnn": Recipe(epochs=7, batch_size=128, peak_lr=5e-3, max_shift=2),
    "better_cnn": Recipe(epochs=6, batch_size=128, peak_lr=5e-3),
}
# A short fine-tune of a trained source_cnn (after pruning, or for quantization-aware training, chapter 05): one epoch at
# a tenth of its peak rate, decaying to 0, with the same augmentation.
FINE_TUNE = replace(RECIPES["source_cnn"], epochs=1, peak_lr=5e-4, warmup_fraction=0.0)
SMOKE_TRAIN_IMAGES = 10_000


def smoke(recipe: Recipe) -> Recipe:
    """The same recipe, shortened for smoke mode (used with the first SMOKE_TRAIN_IMAGES training images)."""
    return replace(recipe, epochs=min(recipe.epochs, 2))


def learning_rate(step: int, total_steps: int, recipe: Recipe) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to 0 (or constant if `cosine` is False)."""
    if not recipe.cosine:
        return recipe.peak_lr
    warmup = max(1, int(recipe.warmup_fraction * total_steps))
    if step < warmup:
        return recipe.peak_lr * (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * recipe.peak_lr * (1 + math.cos(math.pi * progress_))


# --------------------------------------------------------------------------- data


def random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by its own random (dy, dx) in [-max_shift, max_shift], zeros shifted in.

    Works on NHWC (Keras) and NCHW (PyTorch) batches alike: the 28x28 axes are found by their size.
    """
    if max_shift == 0:
        return images
    h_axis = 1 if images.shape[1] == 28 else 2  # NHWC has H at 1, NCHW at 2
    pad = [(0, 0)] * images.ndim
    pad[h_axis] = pad[h_axis + 1] = (max_shift, max_shift)
    padded = np.pad(images, pad)
    out = np.empty_like(images)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(len(images), 2))
    for i, (dy, dx) in enumerate(offsets):
        window = [slice(None)] * (images.ndim - 1)
        window[h_axis - 1] = slice(dy, dy + 28)
        window[h_axis] = slice(dx, dx + 28)
        out[i] = padded[i][tuple(window)]
    return out


def images_for(framework: str, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1], NHWC for Keras, NCHW for PyTorch."""
    scaled = images.astype(np.float32) / 255.0
    # reshape, not [:, None]: a new axis gets stride 0 in NumPy, which torch.export and ExecuTorch refuse
    return scaled.reshape(len(images), 28, 28, 1) if framework == "keras" else scaled.reshape(len(images), 1, 28, 28)


@dataclass
class History:
    """One row per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate, seconds."""

    rows: list[dict]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows).set_index("epoch")

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([r["seconds"] for r in self.rows]))

    @property
    def total_seconds(self) -> float:
        return float(sum(r["seconds"] for r in self.rows))


# --------------------------------------------------------------------------- Keras


def keras_schedule(recipe: Recipe, total_steps: int):
    import keras
    from keras import ops

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """`learning_rate()` above, in Keras ops so the optimizer can evaluate it inside its graph."""

        def __call__(self, step):
            if not recipe.cosine:
                return ops.convert_to_tensor(recipe.peak_lr, "float32")
            step = ops.cast(step, "float32")
            warmup = float(max(1, int(recipe.warmup_fraction * total_steps)))
            warm = recipe.peak_lr * (step + 1) / warmup
            done = ops.minimum(1.0, (step - warmup) / max(1.0, total_steps - warmup))
            return ops.where(step < warmup, warm, 0.5 * recipe.peak_lr * (1 + ops.cos(math.pi * done)))

        def get_config(self):
            return {}

    return WarmupCosine()


def train_keras(model, x, y, x_val, y_val, recipe: Recipe, run_dir: Path, from_logits: bool = True) -> History:
    """Compile and fit `model` by `recipe`, logging to TensorBoard under `run_dir`."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    total_steps = recipe.epochs * recipe.steps_per_epoch(len(x))
    model.compile(
        optimizer=keras.optimizers.Adam(keras_schedule(recipe, total_steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        jit_compile=False,  # XLA is 2-4x slower than plain TensorFlow for these small models on a CPU (measured)
        steps_per_execution=32,  # fewer Python round trips per step: ~30 % faster here
    )
    timer = make_epoch_timer()
    callbacks = [keras.callbacks.TensorBoard(log_dir=str(run_dir), histogram_freq=1), timer]
    if recipe.max_shift == 0:
        model.fit(x, y, validation_data=(x_val, y_val), epochs=recipe.epochs, batch_size=recipe.batch_size,
                  callbacks=callbacks, verbose=2 if is_text_mode() else 1)
    else:
        # A fresh shifted copy of the training set each epoch, one fit call per epoch (the optimizer and its schedule
        # carry on). Not a keras.utils.PyDataset: its worker thread kept a CPU core busy after training and slowed
        # PyTorch in the same kernel by 1.5-2.5x (measured).
        rng = np.random.default_rng(recipe.seed)
        for epoch in progress(range(recipe.epochs), desc="epochs", disable=is_text_mode()):
            model.fit(random_shift(x, recipe.max_shift, rng), y, validation_data=(x_val, y_val), initial_epoch=epoch,
                      epochs=epoch + 1, batch_size=recipe.batch_size, callbacks=callbacks, verbose=0)
            print_epoch(timer.rows[-1], recipe.epochs)
    return History(timer.rows)


def make_epoch_timer():
    """A Keras callback recording each epoch's logs, learning rate and wall time (built here: keras is imported lazily)."""
    import keras

    class _EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row["seconds"] = time.perf_counter() - self.started
            self.rows.append(row)

    return _EpochTimer()


def print_epoch(row: dict, epochs: int) -> None:
    validation = f" - val_loss {row['val_loss']:.4f} - val_accuracy {row['val_accuracy']:.4f}" if row.get("val_loss") is not None else ""
    print(f"epoch {row['epoch']}/{epochs} - {row['seconds']:.0f}s - loss {row['loss']:.4f} - accuracy {row['accuracy']:.4f}{validation}")


def keras_logits(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    # Direct calls rather than model.predict: predict builds a tf.function per model, and TensorFlow warns about
    # "retracing" when a notebook predicts with many models in turn.
    return np.concatenate([np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------- PyTorch


def torch_logits(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]).numpy()


def cross_entropy_and_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from helpers.losses import cross_entropy_with_logits

    return cross_entropy_with_logits(logits.astype(np.float64), y), float((logits.argmax(1) == y).mean())


def train_torch(model, x, y, x_val, y_val, recipe: Recipe, run_dir: Path | None) -> History:
    """Mini-batch Adam by `recipe`, seeded and deterministic on a CPU, logging to TensorBoard under `run_dir` (if given)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)  # the batch order, independent of other random draws
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    shift_rng = np.random.default_rng(recipe.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.peak_lr)
    total_steps = recipe.epochs * recipe.steps_per_epoch(len(x))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate(step, total_steps, recipe) / recipe.peak_lr)
    writers = {split: SummaryWriter(str(Path(run_dir) / split)) for split in ("train", "validation")} if run_dir else {}
    rows = []
    try:
        for epoch in range(1, recipe.epochs + 1):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(x_t), generator=generator)
            losses, correct = [], 0
            # the bar is for live use; executed copies get the one-line summary per epoch below
            batches = progress(range(0, len(x_t), recipe.batch_size), desc=f"epoch {epoch}/{recipe.epochs}", leave=False,
                               disable=is_text_mode())
            for i in batches:
                idx = order[i : i + recipe.batch_size]
                optimizer.zero_grad()
                batch = x_t[idx] if recipe.max_shift == 0 else torch.from_numpy(random_shift(x[idx.numpy()], recipe.max_shift, shift_rng))
                logits = model(batch)
                loss = torch.nn.functional.cross_entropy(logits, y_t[idx])
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item() * len(idx))
                correct += int((logits.argmax(1) == y_t[idx]).sum())
            seconds = time.perf_counter() - started
            lr = optimizer.param_groups[0]["lr"]  # at the end of the epoch, as Keras reports it
            # no validation set: e.g. quantization-aware training, whose observers would learn from it
            val_loss, val_accuracy = cross_entropy_and_accuracy(torch_logits(model, x_val), y_val) if x_val is not None else (None, None)
            row = {"epoch": epoch, "loss": sum(losses) / len(x_t), "accuracy": correct / len(x_t),
                   "val_loss": val_loss, "val_accuracy": val_accuracy, "learning_rate": lr, "seconds": seconds}
            rows.append(row)
            if writers:
                log_epoch(writers, model, row)
            print_epoch(row, recipe.epochs)
    finally:
        for writer in writers.values():
            writer.close()
    return History(rows)


def log_epoch(writers: dict, model, row: dict) -> None:
    """The tags Keras' TensorBoard callback writes, so both frameworks read back the same way."""
    epoch = row["epoch"] - 1  # Keras counts epochs from 0 in its event files
    train, validation = writers["train"], writers["validation"]
    train.add_scalar("epoch_loss", row["loss"], epoch)
    train.add_scalar("epoch_accuracy", row["accuracy"], epoch)
    train.add_scalar("epoch_learning_rate", row["learning_rate"], epoch)
    if row["val_loss"] is not None:
        validation.add_scalar("epoch_loss", row["val_loss"], epoch)
        validation.add_scalar("epoch_accuracy", row["val_accuracy"], epoch)
    for name, parameter in model.named_parameters():
        train.add_histogram(name, parameter.detach(), epoch)
