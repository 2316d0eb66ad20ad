"""Explanations of a served model (chapter 13): what `POST /v1/models/<m>[/versions/<n>]:explain` computes.

An attribution map says how much each input pixel contributed to one class's score. The methods that compute one
(helpers.attributions, with Captum) need the model's gradients, and the served file cannot give them: ONNX Runtime
computes outputs, not gradients. So a version that should be explainable ships its PyTorch model beside the served
one, as data, never as code:

    explainer.safetensors   the weights (safetensors: tensors and their names only, nothing that can run)
    manifest.json           "explainer": {"file": "explainer.safetensors", "layers": [["conv2d", 1, 32, 3], ...], ...}

`layers` describes an nn.Sequential from an allowlist of layer types (`LAYERS`), so loading an explainer builds known
PyTorch layers and fills in tensors: no pickle, no import by name, nothing an attacker's file could make run (chapter
12). The file is listed in the manifest, so it is checked like the model (and signed with it, with --trusted-key), and
at load time `load_explainer` checks that it computes what the served model computes: an explainer of other weights
would explain another model. A version that fails the check is refused like any bad version.

`add_explainer(directory, module)` adds one to an export folder (as drift.add_drift_reference adds a drift reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers import attributions
from helpers.integrity import verify_manifest, write_manifest

EXPLAINER = "explainer.safetensors"
METHODS = attributions.METHODS
DEFAULT_METHOD = "integrated_gradients"
MAX_STEPS = 256  # Integrated Gradients' steps per request: each is a forward and a backward pass per instance
PARITY_TOLERANCE = 1e-3  # largest difference allowed between the explainer's logits and the served model's, relative
# to the logits' scale: float32 runtimes differ in their last digits, other weights differ in the first

# layer type -> (nn class name, the constructor arguments the description carries, in order)
LAYERS = {
    "conv2d": ("Conv2d", ("in_channels", "out_channels", "kernel_size")),
    "linear": ("Linear", ("in_features", "out_features")),
    "relu": ("ReLU", ()),
    "maxpool2d": ("MaxPool2d", ("kernel_size",)),
    "flatten": ("Flatten", ()),
    "dropout": ("Dropout", ("p",)),  # inactive in eval mode, kept so that the weights' names match the model's
}


def describe(module) -> list[list]:
    """The `layers` description of an nn.Sequential built from LAYERS, refused (ValueError) for anything else."""
    import torch

    if not isinstance(module, torch.nn.Sequential):
        raise ValueError(f"an explainer must be an nn.Sequential of {sorted(LAYERS)}, got {type(module).__name__}")
    by_class = {cls: (kind, fields) for kind, (cls, fields) in LAYERS.items()}
    layers = []
    for layer in module:
        kind, fields = by_class.get(type(layer).__name__, (None, None))
        if kind is None or type(layer) is not getattr(torch.nn, type(layer).__name__):
            raise ValueError(f"layer {layer} cannot be described: an explainer holds only {sorted(LAYERS)}")
        values = [getattr(layer, f) for f in fields]
        layers.append([kind, *[v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v for v in values]])
    if repr(build(layers)) != repr(module):  # a stride, padding or missing bias the description does not carry
        raise ValueError(f"{module} has layer settings an explainer's description cannot carry (only {sorted(LAYERS)} "
                         "with their default stride, padding and bias)")
    return layers


def build(layers) -> object:
    """The nn.Sequential a `layers` description names (see LAYERS), with fresh weights; ValueError for anything else."""
    import torch

    if not isinstance(layers, list) or not layers:
        raise ValueError("'layers' must be a non-empty list of [type, arguments...]")
    built = []
    for entry in layers:
        if not isinstance(entry, list) or not entry or entry[0] not in LAYERS:
            raise ValueError(f"unknown layer {entry!r}: an explainer may hold only {sorted(LAYERS)}")
        cls, fields = LAYERS[entry[0]]
        arguments = entry[1:]
        if len(arguments) != len(fields) or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                     for a in arguments):
            raise ValueError(f"layer {entry!r}: expected {len(fields)} numbers ({', '.join(fields) or 'none'})")
        built.append(getattr(torch.nn, cls)(*arguments))
    return torch.nn.Sequential(*built)


def add_explainer(directory: Path, module) -> Path:
    """Ship `module` (the PyTorch model the version was exported from) as the version's explainer: its weights in
    explainer.safetensors, its layers in the manifest, which is rewritten to list both. Returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    fields = {k: v for k, v in verify_manifest(directory).items() if k != "files"}
    layers = describe(module)
    save_file({name: tensor.detach().contiguous() for name, tensor in module.state_dict().items()}, directory / EXPLAINER)
    fields["explainer"] = {"file": EXPLAINER, "framework": "torch", "layers": layers,
                           "of": "the served model's weights, for gradients (:explain)"}
    write_manifest(directory, **fields)
    return directory


@dataclass(frozen=True)
class Explanation:
    attributions: np.ndarray  # float32, the shape of the instances
    targets: np.ndarray  # the class each map explains
    deltas: np.ndarray | None  # Integrated Gradients only: sum of the map minus the score's change from the baseline


class Explainer:
    """The PyTorch twin of a served version, for :explain. Its parameters never need gradients (only the input
    does), so concurrent requests from the server's thread pool share it safely; torch runs each on one thread: the
    server's parallelism comes from requests, as with ONNX Runtime (backends.OnnxBackend)."""

    def __init__(self, module):
        self.module = attributions.prepare(module)

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    def explain(self, x: np.ndarray, method: str = DEFAULT_METHOD, targets: np.ndarray | None = None,
                steps: int = 32) -> Explanation:
        """Attribution maps of `x` for `targets` (default: each instance's top class by this model)."""
        targets = self.logits(x).argmax(1) if targets is None else np.asarray(targets, np.int64)
        if method == "integrated_gradients":
            maps, deltas = attributions.integrated_gradients_with_delta(self.module, x, targets, steps=steps)
            return Explanation(maps, targets, deltas)
        return Explanation(attributions.attribute(self.module, x, targets, method, steps=steps), targets, None)


def load_explainer(directory: Path, spec: dict, predict, example_shape: tuple[int, ...]) -> Explainer:
    """The version's explainer (its manifest, already verified, lists the file and its sha256), checked against the
    served model's `predict` on a few images: ValueError, naming the file, if it computes something else."""
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(1)  # see Explainer
    path = Path(directory) / spec["file"]
    module = build(spec["layers"])
    try:
        module.load_state_dict(load_file(path), strict=True)
    except RuntimeError as error:  # names missing, unexpected or of another shape
        raise ValueError(f"{path.name}: its weights do not fit the layers the manifest describes: {str(error)[:300]}") from None
    explainer = Explainer(module)
    probe = np.random.default_rng(0).random((8, *example_shape), dtype=np.float32)  # fixed: the same check every load
    served, own = np.asarray(predict(probe)), explainer.logits(probe)
    scale = max(1.0, float(np.abs(served).max()))
    if own.shape != served.shape or float(np.abs(own - served).max()) > PARITY_TOLERANCE * scale:
        difference = float(np.abs(own - served).max()) if own.shape == served.shape else float("nan")
        raise ValueError(f"{path.name} computes other answers than the served model (largest logit difference "
                         f"{difference:.3g}): export the explainer from the model this version serves "
                         "(helpers.serving.explainer.add_explainer)")
    return explainer
