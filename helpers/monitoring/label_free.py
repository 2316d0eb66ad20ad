"""What a model says about production data whose labels have not arrived yet. `torch_views` runs a PyTorch classifier
over images and returns what the drift detectors and the estimates look at: logits, softmax probabilities, predicted
classes and the penultimate layer's embedding. `estimated_accuracy` turns confidence into an accuracy estimate
without labels: the mean top-class probability (AC, right if the model is calibrated), or with Average Thresholded
Confidence (`atc_threshold`, fitted once on labelled reference data) the fraction of predictions above a threshold.
"""

from __future__ import annotations

import numpy as np

from helpers.serving.drift import softmax
from helpers.training import images_for


def torch_views(model, images: np.ndarray, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """A PyTorch nn.Sequential classifier's view of uint8 images: its logits, softmax probabilities, predicted classes,
    and the penultimate layer's activations (the embedding the final layer classifies)."""
    import torch

    x = torch.from_numpy(images_for("torch", images))
    model.eval()
    with torch.no_grad():
        embedding = torch.cat([model[:-1](x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        logits = model[-1](embedding).numpy()
    probabilities = softmax(logits)
    return {"logits": logits, "probabilities": probabilities, "classes": probabilities.argmax(1), "embedding": embedding.numpy()}


def atc_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Average Thresholded Confidence (Garg et al., ICLR 2022): the confidence t above which the fraction of labelled
    reference predictions equals their accuracy. On new data, the fraction above t estimates the accuracy."""
    return float(np.quantile(confidence, 1.0 - np.mean(correct)))


def estimated_accuracy(confidence: np.ndarray, threshold: float | None = None) -> float:
    """Accuracy estimated without labels: the mean top-class probability (right if the model is calibrated), or with
    an ATC `threshold`, the fraction of predictions more confident than it."""
    return float(np.mean(confidence)) if threshold is None else float(np.mean(confidence > threshold))
