"""Read TensorBoard event files back into a table, so notebooks can plot training curves without a browser.

Handles both kinds of scalar TensorBoard stores: PyTorch's SummaryWriter writes `simple_value` scalars, Keras 3 (tf.summary)
writes them as tensors.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_scalars(run_dir: Path) -> pd.DataFrame:
    """Every scalar under `run_dir` (its train/ and validation/ subfolders): columns split, tag, step, value."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    rows = []
    for split_dir in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()):
        accumulator = event_accumulator.EventAccumulator(
            str(split_dir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
        )
        accumulator.Reload()
        tags = accumulator.Tags()
        for tag in tags.get("scalars", []):
            rows += [(split_dir.name, tag, e.step, float(e.value)) for e in accumulator.Scalars(tag)]
        for tag in tags.get("tensors", []):
            for event in accumulator.Tensors(tag):
                value = tensor_util.make_ndarray(event.tensor_proto)
                if value.ndim == 0 and value.dtype.kind in "fiu":  # numbers only: histograms and Keras' model config are tensors too
                    rows.append((split_dir.name, tag, event.step, float(value)))
    if not rows:
        raise FileNotFoundError(f"no TensorBoard scalars under {run_dir}")
    return pd.DataFrame(rows, columns=["split", "tag", "step", "value"]).sort_values(["split", "tag", "step"], ignore_index=True)


def histogram_tags(run_dir: Path, split: str = "train") -> list[str]:
    """Names of the weight histograms logged under `run_dir/split`."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(Path(run_dir) / split), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.HISTOGRAMS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    keras_histograms = [t for t in tags.get("tensors", []) if t.endswith("/histogram")]  # the rest are scalars and config
    return sorted(tags.get("histograms", []) + keras_histograms)


def write_scalars(run_dir: Path, frame: pd.DataFrame, split: str = "production") -> Path:
    """Log every column of `frame` as a TensorBoard scalar, one step per row (e.g. per production window), under
    `run_dir/split`, where TensorBoard and `read_scalars` find it."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(run_dir) / split))
    try:
        for step, row in enumerate(frame.itertuples(index=False)):
            for tag, value in row._asdict().items():
                if pd.notna(value):
                    writer.add_scalar(tag, float(value), step)
    finally:
        writer.close()
    return Path(run_dir) / split
