"""Small ONNX exports with random weights, for tests that need a real model file but not a trained one."""

import os

import numpy as np
import torch

from helpers import export, models

CARD = {"name": "source_cnn", "file_sha256": "c" * 64}


def make_export(tmp_path, seed: int, x: np.ndarray):
    """A source_cnn ONNX export (random weights) in its own artifacts folder; returns (folder, its logits for `x`)."""
    os.environ["COURSE_ARTIFACTS"] = str(tmp_path / f"artifacts-{seed}")
    torch.manual_seed(seed)
    model = models.torch_model("source_cnn").eval()
    directory = export.export_torch_onnx(model, "source_cnn", 1, CARD)
    return directory, export.torch_predictor(model)(x)
