"""The course's MNIST classifiers, defined once for Keras and once for PyTorch, layer for layer the same (chapter 02).

* `source_cnn`: the source document's model (§5.2): Conv(32, 3x3) -> MaxPool(2) -> Dense(10). The document ends it with a
  softmax *and* trains with `from_logits=True`; here it outputs logits (`source_softmax=True` rebuilds the bug for chapter 02).
* `better_cnn`: still small, two conv blocks and dropout: Conv(32) -> MaxPool -> Conv(64) -> MaxPool -> Dropout -> Dense(128)
  -> Dropout -> Dense(10).

Inputs are float images in [0, 1]: Keras takes NHWC (N, 28, 28, 1), PyTorch NCHW (N, 1, 28, 28).
Both output logits.
"""

from __future__ import annotations

ARCHITECTURES = ("source_cnn", "better_cnn")


def check_name(name: str) -> None:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {ARCHITECTURES}")


def keras_model(name: str, source_softmax: bool = False):
    import keras
    from keras import layers

    check_name(name)
    if name == "source_cnn":
        body = [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten()]
        head = [layers.Dense(10, activation="softmax" if source_softmax else None)]
    else:
        body = [
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dropout(0.25), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        ]
        head = [layers.Dense(10)]
    return keras.Sequential([keras.Input((28, 28, 1)), *body, *head], name=name)


def torch_model(name: str, source_softmax: bool = False):
    from torch import nn

    check_name(name)
    if name == "source_cnn":
        layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 13 * 13, 10)]
        layers += [nn.Softmax(dim=1)] if source_softmax else []
    else:
        layers = [
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 10),
        ]
    model = nn.Sequential(*layers)
    model.name = name
    return model


def count_parameters(model) -> int:
    """All parameters (weights and biases) of a Keras or PyTorch model."""
    if hasattr(model, "count_params"):
        return int(model.count_params())
    return sum(p.numel() for p in model.parameters())


def keras_weight_shapes(model) -> list[tuple[int, ...]]:
    """Weight shapes in PyTorch's layout (Conv: out, in, kh, kw; Dense: out, in), for comparing the two frameworks."""
    shapes = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        if len(shape) == 4:  # Keras conv kernel (kh, kw, in, out)
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif len(shape) == 2:  # Keras dense kernel (in, out)
            shape = (shape[1], shape[0])
        shapes.append(shape)
    return shapes


def torch_weight_shapes(model) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in model.parameters()]
