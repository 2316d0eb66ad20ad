"""Pruning a PyTorch model (chapter 05): unstructured magnitude pruning, and channel pruning as the contrast.

Unstructured pruning zeroes the smallest weights wherever they are: the tensors keep their shape, so a dense file is
as large and a dense kernel as slow as before (zeros compress, though). Channel pruning removes whole convolution
filters and the inputs of the next layer that read them: a genuinely smaller model.
"""

from __future__ import annotations

import copy
import gzip
import io


def prunable(model) -> list[tuple]:
    """(module, "weight") for every convolution and linear layer: what magnitude pruning competes over."""
    from torch import nn

    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_magnitude(model, sparsity: float):
    """A copy of `model` with the `sparsity` fraction of smallest-magnitude weights, counted over all layers together
    (global L1 pruning), masked to zero. The masks stay during fine-tuning; `make_permanent` bakes them in."""
    from torch.nn.utils import prune

    pruned = copy.deepcopy(model)
    prune.global_unstructured(prunable(pruned), pruning_method=prune.L1Unstructured, amount=sparsity)
    return pruned


def make_permanent(model):
    """Replace each weight_orig * mask by a plain weight tensor with the zeros in it (the saved file has no masks)."""
    from torch.nn.utils import prune

    for module, name in prunable(model):
        if prune.is_pruned(module):
            prune.remove(module, name)
    return model


def sparsity(model) -> float:
    """The fraction of prunable weights that are exactly zero."""
    weights = [getattr(m, name) for m, name in prunable(model)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


def layer_sparsity(model) -> dict[str, float]:
    return {f"{type(m).__name__} {tuple(getattr(m, n).shape)}": float((getattr(m, n) == 0).float().mean())
            for m, n in prunable(model)}


def prune_channels(model, keep: float):
    """A new, smaller source_cnn keeping the `keep` fraction of convolution filters with the largest L1 norms.

    The linear layer reads the flattened (channels, 13, 13) feature map, so each removed filter also removes its 169
    input columns there.
    """
    import torch
    from torch import nn

    conv, linear = model[0], model[4]
    if not (isinstance(conv, nn.Conv2d) and isinstance(linear, nn.Linear)):
        raise ValueError("prune_channels expects the source_cnn layout: Conv2d, ReLU, MaxPool2d, Flatten, Linear")
    n_keep = max(1, round(conv.out_channels * keep))
    kept = conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:n_keep].sort().values
    positions = linear.in_features // conv.out_channels  # 13 x 13 = 169 per channel
    small = nn.Sequential(nn.Conv2d(conv.in_channels, n_keep, conv.kernel_size), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(n_keep * positions, linear.out_features))
    columns = (kept[:, None] * positions + torch.arange(positions)).reshape(-1)
    with torch.no_grad():
        small[0].weight.copy_(conv.weight[kept])
        small[0].bias.copy_(conv.bias[kept])
        small[4].weight.copy_(linear.weight[:, columns])
        small[4].bias.copy_(linear.bias)
    return small.eval()


def file_sizes(model) -> dict[str, int]:
    """Bytes of the model's state_dict saved with torch.save, raw and gzip-compressed."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return {"raw_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9))}
