"""Pruning (chapter 05): magnitude pruning zeroes without shrinking; channel pruning computes the same as zeroing."""

import copy

import numpy as np
import pytest
import torch

from helpers import export, models, pruning

X = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return models.torch_model("source_cnn").eval()


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_magnitude_pruning_zeroes_the_smallest_weights_of_a_copy(model, target):
    original = copy.deepcopy(model.state_dict())
    pruned = pruning.make_permanent(pruning.prune_magnitude(model, target))
    assert pruning.sparsity(pruned) == pytest.approx(target, abs=1e-3)
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())  # the source is untouched
    assert set(pruned.state_dict()) == set(model.state_dict())  # masks baked in: a plain state_dict again
    weights = torch.cat([m.weight.detach().abs().flatten() for m, _ in pruning.prunable(model)])
    kept = torch.cat([m.weight.detach().abs().flatten() for m, _ in pruning.prunable(pruned)])
    assert weights[kept == 0].max() <= weights[kept != 0].min()  # global ranking by magnitude


def test_zeros_do_not_shrink_the_raw_file_but_compress(model):
    dense, sparse = pruning.file_sizes(model), pruning.file_sizes(pruning.make_permanent(pruning.prune_magnitude(model, 0.9)))
    assert abs(sparse["raw_bytes"] - dense["raw_bytes"]) < 200
    assert sparse["gzip_bytes"] < 0.4 * dense["gzip_bytes"]


def test_removing_channels_computes_exactly_what_zeroing_them_does(model):
    small = pruning.prune_channels(model, keep=0.5)
    assert small[0].out_channels == 16 and small[4].in_features == 16 * 169
    norms = model[0].weight.detach().abs().sum(dim=(1, 2, 3))
    removed = norms.argsort(descending=True)[16:]
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for c in removed.tolist():
            zeroed[0].weight[c] = 0
            zeroed[0].bias[c] = 0
            zeroed[4].weight[:, c * 169 : (c + 1) * 169] = 0
    np.testing.assert_allclose(export.torch_predictor(small)(X), export.torch_predictor(zeroed)(X), atol=1e-5)
    assert pruning.file_sizes(small)["raw_bytes"] < 0.55 * pruning.file_sizes(model)["raw_bytes"]


def test_keeping_every_channel_changes_nothing_and_other_layouts_are_refused(model):
    np.testing.assert_allclose(export.torch_predictor(pruning.prune_channels(model, 1.0))(X), export.torch_predictor(model)(X), atol=1e-6)
    with pytest.raises(ValueError, match="source_cnn layout"):
        pruning.prune_channels(models.torch_model("better_cnn"), 0.5)
