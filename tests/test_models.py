import numpy as np
import pytest
import torch

from helpers import models


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_keras_and_torch_versions_have_the_same_layers_and_parameter_count(name):
    keras_model, torch_model = models.keras_model(name), models.torch_model(name)
    assert models.count_parameters(keras_model) == models.count_parameters(torch_model)
    assert models.keras_weight_shapes(keras_model) == models.torch_weight_shapes(torch_model)


def test_the_source_model_has_the_documents_parameter_count():
    # Conv2D(32, 3x3) on 1 channel: 32*9 + 32 = 320; Dense(10) on 13*13*32 = 5408 inputs: 54090
    assert models.count_parameters(models.torch_model("source_cnn")) == 320 + 54090


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_both_output_ten_logits_per_image(name):
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    assert models.keras_model(name)(x[..., None]).shape == (3, 10)
    assert models.torch_model(name).eval()(torch.from_numpy(x[:, None])).shape == (3, 10)


def test_the_documents_softmax_variant_outputs_probabilities():
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    out = np.asarray(models.keras_model("source_cnn", source_softmax=True)(x))
    assert np.allclose(out.sum(axis=1), 1, atol=1e-6)


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.torch_model("resnet9000")
