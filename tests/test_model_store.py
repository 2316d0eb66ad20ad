import json

import numpy as np
import pytest
import torch

from helpers import model_store, models
from helpers.integrity import IntegrityError

pytestmark = pytest.mark.usefixtures("artifacts_in_tmp")


CARD = {"name": "source_cnn", "test_accuracy": 0.5}


def test_a_torch_model_round_trips_with_its_card():
    model = models.torch_model("source_cnn").eval()
    path = model_store.save(model, "torch", "source_cnn", CARD)
    loaded, card = model_store.load("torch", "source_cnn")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert card["file"] == path.name and len(card["file_sha256"]) == 64 and card["test_accuracy"] == 0.5


def test_a_keras_model_round_trips():
    model = models.keras_model("source_cnn")
    model_store.save(model, "keras", "source_cnn", CARD)
    loaded, _ = model_store.load("keras", "source_cnn")
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert np.allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


@pytest.mark.parametrize("framework", model_store.FRAMEWORKS)
def test_a_changed_model_file_is_refused_with_both_hashes(framework):
    build = models.keras_model if framework == "keras" else models.torch_model
    path = model_store.save(build("source_cnn"), framework, "source_cnn", CARD)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    recorded = json.loads(model_store.card_path(framework, "source_cnn").read_text())["file_sha256"]
    with pytest.raises(IntegrityError) as info:
        model_store.load(framework, "source_cnn")
    assert str(path) in str(info.value) and recorded in str(info.value)


def test_an_unknown_framework_is_refused():
    with pytest.raises(ValueError, match="unknown framework"):
        model_store.model_path("jax", "source_cnn")


def test_a_smoke_trained_model_is_never_returned_as_the_full_one(monkeypatch):
    model_store.save(models.torch_model("source_cnn"), "torch", "source_cnn", {**CARD, "smoke": True})
    retrained = []
    monkeypatch.setattr(model_store, "train_and_save", lambda framework, name, smoke: retrained.append(smoke) or
                        model_store.save(models.torch_model(name), framework, name, {**CARD, "smoke": smoke}))
    _, card = model_store.ensure_model("torch", "source_cnn", smoke=False)
    assert retrained == [False] and card["smoke"] is False
    model_store.ensure_model("torch", "source_cnn", smoke=False)
    assert retrained == [False]  # the full model is now reused


def test_a_name_outside_the_known_architectures_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        model_store.model_path("torch", "../../etc/passwd")
