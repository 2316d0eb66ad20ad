"""Chapter 12's attacks and defences: FGSM and PGD against their definitions and against ART, fast adversarial training,
and model extraction through the API. The models are small and trained here on a few thousand real digits."""

import copy
import sys

import numpy as np
import pytest
import torch

from helpers import adversarial, extraction, models, paths, training
from helpers.losses import softmax

TRAIN_IMAGES, EVAL_IMAGES = 5_000, 500


def quick_train(model, x, y, epochs: int, seed: int = 0):
    recipe = training.Recipe(epochs=epochs, batch_size=128, peak_lr=5e-3, seed=seed)
    training.train_torch(model, x, y, None, None, recipe, run_dir=None)
    for p in model.parameters():
        p.grad = None  # so a test can see that an attack leaves none behind
    return model.eval()


@pytest.fixture(scope="module")
def victim(real_mnist):
    """better_cnn trained for 3 epochs on the first TRAIN_IMAGES training digits (about 97 % accurate)."""
    torch.manual_seed(0)
    x = training.images_for("torch", real_mnist.x_train[:TRAIN_IMAGES])
    return quick_train(models.torch_model("better_cnn"), x, real_mnist.y_train[:TRAIN_IMAGES], epochs=3)


@pytest.fixture(scope="module")
def test_digits(real_mnist):
    x, y = adversarial.as_tensors(real_mnist.x_test[-EVAL_IMAGES:], real_mnist.y_test[-EVAL_IMAGES:])
    return x, y


# --------------------------------------------------------------------------- the attacks


def test_fgsm_moves_every_pixel_by_exactly_eps_or_clips(victim, test_digits):
    x, y = test_digits
    eps = 0.1
    victim.train()
    adv = adversarial.fgsm(victim, x, y, eps)
    assert not victim.training, "the attack is on the model in eval mode"
    assert all(p.grad is None for p in victim.parameters()), "no gradient is left on the parameters"
    moved = (adv - x).abs()
    gradient = adversarial.input_gradient(victim, x, y)
    clipped = ((adv == 0) & (gradient < 0)) | ((adv == 1) & (gradient > 0))
    exactly_eps = torch.isclose(moved, torch.tensor(eps), atol=1e-6)
    still = (moved == 0) & (gradient == 0)  # sign(0) = 0: a pixel the loss does not depend on stays
    assert torch.all(exactly_eps | clipped | still)
    assert exactly_eps.float().mean() > 0.2 and clipped.float().mean() > 0.2  # MNIST: most pixels are 0, many clip
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_stays_in_the_eps_ball_and_pixel_range_and_is_seeded(victim, test_digits):
    x, y = test_digits
    eps = 0.2
    adv = adversarial.pgd(victim, x[:100], y[:100], eps, generator=torch.Generator().manual_seed(1))
    assert (adv - x[:100]).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    again = adversarial.pgd(victim, x[:100], y[:100], eps, generator=torch.Generator().manual_seed(1))
    other = adversarial.pgd(victim, x[:100], y[:100], eps, generator=torch.Generator().manual_seed(2))
    assert torch.equal(adv, again) and not torch.equal(adv, other)


def test_pgd_with_one_full_step_and_no_random_start_is_fgsm(victim, test_digits):
    x, y = test_digits
    one_step = adversarial.pgd(victim, x, y, 0.15, steps=1, step_size=0.15, random_start=False)
    assert torch.equal(one_step, adversarial.fgsm(victim, x, y, 0.15))


def test_pgd_lowers_accuracy_more_than_fgsm(victim, test_digits):
    x, y = test_digits
    clean = adversarial.accuracy(victim, x, y)
    fgsm = adversarial.robust_accuracy(victim, x, y, 0.1, attack="fgsm")
    pgd = adversarial.robust_accuracy(victim, x, y, 0.1, attack="pgd")
    assert clean > 0.93 and pgd < fgsm - 0.05 and fgsm < clean
    assert adversarial.robust_accuracy(victim, x.numpy(), y.numpy(), 0.0) == clean  # numpy in; eps 0 is clean
    frame = adversarial.accuracy_against_eps(victim, x[:100], y[:100], (0, 0.1), attack="fgsm")
    assert list(frame.columns) == ["eps", "attack", "accuracy"] and frame.accuracy.is_monotonic_decreasing


def test_our_pgd_agrees_with_art_within_two_points(victim, test_digits):
    x, y = test_digits
    art_imported_before = "art" in sys.modules
    eps = 0.1  # where accuracy is in between (about 40 %), so a weaker or stronger attack would show
    ours = adversarial.robust_accuracy(victim, x, y, eps, attack="pgd")
    art = adversarial.art_pgd_accuracy(victim, x, y, eps)
    assert abs(ours - art) <= 0.02 and 0.1 < ours < 0.9, (ours, art)
    if not art_imported_before:  # ART's config went to the artifacts, not the learner's home
        assert (paths.artifacts() / "art" / ".art" / "config.json").exists()


# --------------------------------------------------------------------------- the defence


def test_cyclic_learning_rate_is_one_triangle():
    rates = [adversarial.cyclic_lr(step, 100, 1e-3, peak_at=0.4) for step in range(101)]
    assert rates[0] == 0 and rates[40] == pytest.approx(1e-3) and rates[100] == 0
    assert max(rates) == rates[40] and all(a <= b for a, b in zip(rates[:40], rates[1:41]))


def test_fast_adversarial_training_raises_robust_accuracy(victim, real_mnist, test_digits):
    x, y = test_digits
    defended = copy.deepcopy(victim)
    train_x, train_y = real_mnist.x_train[:TRAIN_IMAGES], real_mnist.y_train[:TRAIN_IMAGES]
    check_x, check_y = real_mnist.x_test[:200], real_mnist.y_test[:200]  # not the evaluation digits
    history = adversarial.train_fast_adversarial(defended, train_x, train_y, eps=0.2, epochs=2, progress=False,
                                                 x_check=check_x, y_check=check_y)
    assert not history.catastrophic_overfitting and len(history.rows) == 2
    assert {"check_clean", "check_fgsm", "check_pgd", "seconds"} <= set(history.frame().columns)
    before = adversarial.robust_accuracy(victim, x, y, 0.15)
    after = adversarial.robust_accuracy(defended, x, y, 0.15)
    assert after > before + 0.15, (before, after)


def test_catastrophic_overfitting_is_detected_and_the_best_weights_restored(victim, real_mnist, monkeypatch):
    """PGD accuracy on the check batch that collapses after epoch 2 (scripted here) stops training at epoch 2 with
    epoch 1's weights."""
    pgd_per_check = iter([0.5, 0.6, 0.1, 0.1])  # before training, then after epochs 1, 2, 3
    monkeypatch.setattr(adversarial, "check_row", lambda *a, **k: {"check_clean": 1.0, "check_fgsm": 0.9, "check_pgd": next(pgd_per_check)})
    model, snapshots = copy.deepcopy(victim), []
    history = adversarial.train_fast_adversarial(model, real_mnist.x_train[:600], real_mnist.y_train[:600], eps=0.2,
                                                 epochs=3, progress=False,
                                                 log=lambda *_: snapshots.append(copy.deepcopy(model.state_dict())))
    assert history.catastrophic_overfitting and [r["epoch"] for r in history.rows] == [1, 2]
    epoch_1, epoch_2 = snapshots[0], snapshots[1]  # logged at the end of each epoch
    assert all(torch.equal(v, epoch_1[k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, epoch_2[k]) for k, v in model.state_dict().items())


def test_the_smoke_fine_tune_runs_in_seconds_and_leaves_the_base_alone(victim, real_mnist):
    before = copy.deepcopy(victim.state_dict())
    robust, history = adversarial.fine_tune_robust(victim, real_mnist, smoke=True, progress=False)
    assert len(history.rows) == 1 and history.total_seconds < 10 and robust is not victim
    assert all(torch.equal(v, before[k]) for k, v in victim.state_dict().items())


# --------------------------------------------------------------------------- extraction


class FakeClient:
    """Answers infer like a ServingClient would, from a function of the batch; remembers each request's size."""

    def __init__(self, answer):
        self.answer, self.sizes = answer, []

    def infer(self, model, x, input_name, binary=False):
        assert model == "mnist" and input_name == "images" and x.dtype == np.float32 and binary
        self.sizes.append(len(x))
        return {"model_version": "1", "outputs": self.answer(x)}


def test_query_probabilities_softmaxes_logits_keeps_one_hot_answers_and_counts_queries():
    images = np.random.default_rng(0).random((250, 1, 28, 28), dtype=np.float32)
    logits = images.reshape(250, -1)[:, :10] * 10
    client = FakeClient(lambda x: {"logits": x.reshape(len(x), -1)[:, :10] * 10})
    spent = extraction.QueryCount()
    probs = extraction.query_probabilities(client, "mnist", "images", images, batch_size=100, count=spent)
    np.testing.assert_allclose(probs, softmax(logits), rtol=1e-5)
    assert client.sizes == [100, 100, 50] and (spent.images, spent.requests) == (250, 3)
    one_hot = FakeClient(lambda x: {"logits": np.eye(10, dtype=np.float32)[np.arange(len(x)) % 10]})
    answers = extraction.query_probabilities(one_hot, "mnist", "images", images[:20], count=spent)
    assert np.array_equal(answers, np.eye(10)[np.arange(20) % 10]) and spent.images == 270


@pytest.mark.integration  # starts the course's server
def test_query_probabilities_against_the_real_server(tmp_path):
    from small_models import make_export, repository_of

    from helpers.serving.client import ServingClient
    from helpers.serving.process import running_server

    images = np.random.default_rng(1).random((30, 1, 28, 28), dtype=np.float32)
    directory, logits = make_export(tmp_path, seed=3, x=images)
    spent = extraction.QueryCount()
    with running_server(repository_of(directory, tmp_path)) as server, ServingClient(server.url) as client:
        probs = extraction.query_probabilities(client, "mnist", "images", images, batch_size=16, count=spent)
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64)), atol=1e-5)
    assert (spent.images, spent.requests) == (30, 2)


def test_the_attacker_pool_is_never_trained_on_nor_evaluated_on(real_mnist):
    pool = extraction.attacker_pool(real_mnist, size=6_000, seed=0)
    assert pool.images.shape == (6_000, 1, 28, 28) and pool.images.dtype == np.float32
    assert pool.origin.max() < extraction.POOL_IMAGES  # test set's first half only; the evaluation half is the rest
    assert not pool.transformed[:5_000].any() and pool.transformed[5_000:].all()
    originals = training.images_for("torch", real_mnist.x_test[pool.origin])
    assert np.array_equal(pool.images[:5_000], originals[:5_000])
    assert not np.allclose(pool.images[5_000:], originals[5_000:])  # shifted and rotated copies
    x_eval, y_eval = extraction.evaluation_split(real_mnist)
    assert len(x_eval) == 5_000 and np.array_equal(y_eval, real_mnist.y_test[5_000:])


def test_top1_mode_accepts_labels_one_hot_rows_and_probabilities():
    probs = softmax(np.random.default_rng(0).normal(size=(8, 10)))
    labels = probs.argmax(1)
    for targets in (labels, np.eye(10)[labels], probs):
        assert torch.equal(extraction.training_targets(targets, "top1"), torch.from_numpy(labels))
    with pytest.raises(ValueError):
        extraction.training_targets(labels, "probabilities")


def test_agreement_rises_with_the_budget_and_soft_labels_are_no_worse(victim, real_mnist, monkeypatch):
    monkeypatch.setattr(extraction, "MIN_STEPS", 200)  # half the course's floor, for time; small budgets lose little
    pool = extraction.attacker_pool(real_mnist, size=2_000, seed=0)
    victim_probs = extraction.victim_probabilities(victim, pool.images)
    x_eval, y_eval = extraction.evaluation_split(real_mnist)
    x_eval, y_eval = x_eval[:1_000], y_eval[:1_000]
    victim_labels = extraction.predicted_classes(victim, x_eval)
    curve = extraction.extraction_curve(pool.images, victim_probs, budgets=(100, 2_000), x_eval=x_eval,
                                        victim_eval_labels=victim_labels, y_eval_true=y_eval, progress_bar=False)
    assert list(curve.columns) == ["budget", "mode", "agreement", "accuracy", "seconds"] and len(curve) == 4
    agreement = curve.set_index(["mode", "budget"]).agreement
    for mode in extraction.MODES:
        assert agreement[mode, 2_000] > agreement[mode, 100] + 0.05, curve
    assert agreement["probabilities", 2_000] >= agreement["top1", 2_000] - 0.005, curve
    assert agreement["probabilities", 2_000] > 0.9, curve
    print(curve)
