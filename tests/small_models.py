"""Small ONNX exports with random weights, for tests that need a real model file but not a trained one."""

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from helpers import export, models

CARD = {"name": "source_cnn", "file_sha256": "c" * 64}


def model_of(seed: int):
    """The source_cnn with random weights that make_export(..., seed) exports."""
    torch.manual_seed(seed)
    return models.torch_model("source_cnn").eval()


def make_export(tmp_path, seed: int, x: np.ndarray):
    """A source_cnn ONNX export (random weights) in its own artifacts folder; returns (folder, its logits for `x`)."""
    saved = os.environ.get("COURSE_ARTIFACTS")
    os.environ["COURSE_ARTIFACTS"] = str(tmp_path / f"artifacts-{seed}")
    try:
        model = model_of(seed)
        directory = export.export_torch_onnx(model, "source_cnn", 1, CARD)
        return directory, export.torch_predictor(model)(x)
    finally:
        if saved is not None:
            os.environ["COURSE_ARTIFACTS"] = saved


def repository_of(directory: Path, tmp_path) -> Path:
    """A model repository serving the export in `directory` as `mnist` version 1; returns its root."""
    root = Path(tmp_path) / "repository"
    shutil.copytree(directory, root / "mnist" / "1")
    return root
