"""Trained models on disk, each with a JSON model card beside it, rebuilt through the same code when missing.

    artifacts/models/keras/<name>.keras   + <name>.json
    artifacts/models/torch/<name>.pt      + <name>.json   (a state_dict, loaded with torch.load(weights_only=True))

Chapter 02 trains and saves them; later chapters call `ensure_model(framework, name)`, which loads the saved model or,
on a fresh clone, trains it with chapter 02's recipe first. Loading checks the file's sha256 against its card.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from helpers import data, env, models, paths, training
from helpers.integrity import sha256_file, verify_file

FRAMEWORKS = ("keras", "torch")
SUFFIX = {"keras": ".keras", "torch": ".pt"}
VERSIONED_PACKAGES = {"keras": ("numpy", "tensorflow-cpu", "keras"), "torch": ("numpy", "torch")}


def model_path(framework: str, name: str) -> Path:
    models.check_name(name)
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    return paths.artifacts() / "models" / framework / f"{name}{SUFFIX[framework]}"


def card_path(framework: str, name: str) -> Path:
    return model_path(framework, name).with_suffix(".json")


def layer_summary(model, framework: str) -> list[str]:
    if framework == "keras":
        return [f"{layer.__class__.__name__} -> {tuple(layer.output.shape)}" for layer in model.layers]
    return [str(layer) for layer in model]


def make_card(model, framework: str, name: str, history: training.History, recipe: training.Recipe,
              test_accuracy: float, n_train: int, smoke: bool) -> dict:
    return {
        "name": name,
        "framework": framework,
        "architecture": layer_summary(model, framework),
        "parameters": models.count_parameters(model),
        "test_accuracy": test_accuracy,
        "recipe": asdict(recipe),
        "seconds_per_epoch": history.seconds_per_epoch,
        "training_seconds": history.total_seconds,
        "data": {"dataset": "MNIST", "train_images": n_train, "test_images": 10_000, "sha256": data.ARRAY_SHA256},
        "versions": {p: env.installed_version(p) for p in VERSIONED_PACKAGES[framework]},
        "seed": recipe.seed,
        "smoke": smoke,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save(model, framework: str, name: str, card: dict) -> Path:
    """Write the model and its card (with the model file's sha256)."""
    path = model_path(framework, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if framework == "keras":
        model.save(path)
    else:
        import torch

        torch.save(model.state_dict(), path)
    card = {**card, "file": path.name, "file_sha256": sha256_file(path)}
    card_path(framework, name).write_text(json.dumps(card, indent=2))
    return path


def load(framework: str, name: str):
    """(model, card), after checking the file is the one the card describes."""
    card = json.loads(card_path(framework, name).read_text())
    path = model_path(framework, name)
    verify_file(path, card["file_sha256"])
    if framework == "keras":
        import keras

        # compile=False: for inference; the training schedule is not needed (nor importable without this module)
        return keras.saving.load_model(path, compile=False), card
    import torch

    model = models.torch_model(name)
    model.load_state_dict(torch.load(path, weights_only=True))  # weights only: no pickled code runs
    return model.eval(), card


def test_accuracy(model, framework: str, mnist: data.Mnist) -> float:
    x = training.images_for(framework, mnist.x_test)
    logits = training.keras_logits(model, x) if framework == "keras" else training.torch_logits(model, x)
    return float(np.mean(logits.argmax(1) == mnist.y_test))


def train_and_save(framework: str, name: str, smoke: bool = False, mnist: data.Mnist | None = None):
    """Train `name` in `framework` with chapter 02's recipe, save it with its card; returns (model, history, card)."""
    mnist = mnist or data.load_mnist()
    recipe = training.smoke(training.RECIPES[name]) if smoke else training.RECIPES[name]
    n_train = training.SMOKE_TRAIN_IMAGES if smoke else len(mnist.x_train)
    x, y = training.images_for(framework, mnist.x_train[:n_train]), mnist.y_train[:n_train]
    x_test = training.images_for(framework, mnist.x_test)
    run_dir = paths.artifacts() / "runs" / framework / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun replaces its curves instead of adding a second set
    env.seed_everything(recipe.seed)  # before the model is built: its initial weights are random draws too
    if framework == "keras":
        model = models.keras_model(name)
        history = training.train_keras(model, x, y, x_test, mnist.y_test, recipe, run_dir)
    else:
        model = models.torch_model(name)
        history = training.train_torch(model, x, y, x_test, mnist.y_test, recipe, run_dir)
    card = make_card(model, framework, name, history, recipe, test_accuracy(model, framework, mnist), n_train, smoke)
    save(model, framework, name, card)
    return model, history, card


def ensure_model(framework: str, name: str, smoke: bool = False):
    """(model, card): the saved model if there is one, else trained now by chapter 02's recipe and saved."""
    card = card_path(framework, name)
    if not card.exists() or not model_path(framework, name).exists():
        print(f"No saved {framework} {name}: training it with chapter 02's recipe ...")
        train_and_save(framework, name, smoke=smoke)
    elif json.loads(card.read_text()).get("smoke") != smoke:  # never serve a smoke-trained model as the real one
        print(f"The saved {framework} {name} was trained with smoke={not smoke}: training it again with smoke={smoke} ...")
        train_and_save(framework, name, smoke=smoke)
    return load(framework, name)
