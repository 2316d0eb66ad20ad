"""Monitoring (chapter 07): the alerting rules pass promtool, a real Prometheus scrapes a real server, and the drift
detectors hold their false-alarm rate on undrifted data and detect real shifts."""

import shutil
import subprocess

import numpy as np
import pytest

from helpers import monitoring, paths

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")


@needs_promtool
def test_the_alerting_rules_are_valid_and_their_unit_tests_pass():
    for command in (["promtool", "check", "rules", "alerts.yml"], ["promtool", "test", "rules", "alerts_test.yml"]):
        result = subprocess.run(command, cwd=paths.ROOT / "monitoring", capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


@pytest.mark.skipif(not monitoring.prometheus_available(), reason="prometheus is not installed (apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_server_and_answers_promql(tmp_path, artifacts_in_tmp):
    import httpx
    import torch

    from helpers import export, models
    from helpers.serving.client import infer_request
    from helpers.serving.process import running_server
    from helpers.serving.repository import publish

    torch.manual_seed(0)
    directory = export.export_torch_onnx(models.torch_model("source_cnn").eval(), "source_cnn", 1, {"file_sha256": "d" * 64})
    publish(directory, tmp_path / "repository", "mnist", 1)
    body, headers = infer_request(np.zeros((1, 1, 28, 28), np.float32), "images", binary=False)
    with running_server(tmp_path / "repository") as server:
        for _ in range(20):
            assert httpx.post(f"{server.url}/v2/models/mnist/infer", content=body, headers=headers).status_code == 200
        with monitoring.running_prometheus([server.url.removeprefix("http://")]) as prometheus:
            monitoring.wait_for_first_scrape(prometheus)
            counted = monitoring.query(prometheus, 'sum(inference_requests_total{endpoint="v2_infer", code="200"})')
            assert counted and counted[0]["value"] >= 20
            rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} >= {"HighErrorRatio", "DataDriftDetected", "ModelLoadFailed"}


def test_the_drift_tests_hold_their_false_alarm_rate_and_detect_a_shift():
    rng = np.random.default_rng(0)
    reference, same = rng.dirichlet(np.full(10, 0.3), 1000), rng.dirichlet(np.full(10, 0.3), 5000)
    shifted = rng.dirichlet(np.full(10, 1.0), 5000)
    assert monitoring.detection_rate(monitoring.ks_test, reference, same, window=50, windows=200) <= 0.1
    assert monitoring.detection_rate(monitoring.ks_test, reference, shifted, window=50, windows=100) >= 0.9
    embedded, moved = rng.normal(size=(200, 4)), rng.normal(0.5, 1.0, size=(2000, 4))
    null = rng.normal(size=(2000, 4))
    assert monitoring.detection_rate(lambda r, w: monitoring.mmd_test(r, w, 50), embedded, null, window=50, windows=40) <= 0.15
    assert monitoring.detection_rate(lambda r, w: monitoring.mmd_test(r, w, 50), embedded, moved, window=50, windows=20) >= 0.9


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    classes = np.repeat(np.arange(10), 100)
    assert monitoring.psi(classes, classes) == pytest.approx(0.0)
    skewed = np.concatenate([classes, np.zeros(200, int)])
    assert 0 < monitoring.psi(classes, skewed) < monitoring.psi(classes, np.concatenate([classes, np.zeros(1000, int)]))


@pytest.mark.parametrize("name", sorted(monitoring.SHIFTS))
def test_every_shift_keeps_the_image_format_and_grows_with_its_severity(real_mnist, name):
    images = real_mnist.x_test[:50]
    severities = {"rotation": (5, 30), "noise": (10, 60), "dimming": (0.1, 0.6), "blur": (0.5, 2.0), "thickness": (0.5, 2.0)}[name]
    mild, strong = (monitoring.apply_shift(name, images, s) for s in severities)
    assert mild.dtype == np.uint8 and mild.shape == images.shape
    change = [np.abs(x.astype(int) - images).mean() for x in (mild, strong)]
    assert 0 < change[0] < change[1]
    assert np.array_equal(monitoring.apply_shift(name, images, severities[0], seed=3), monitoring.apply_shift(name, images, severities[0], seed=3))


def test_pca_embeds_into_the_requested_dimensions():
    x = np.random.default_rng(0).normal(size=(100, 28, 28))
    pca = monitoring.PCA(x, 5)
    assert pca(x[:7]).shape == (7, 5)
    np.testing.assert_allclose(pca(x).mean(axis=0), 0, atol=1e-9)


def test_severity_calibration_finds_the_level_that_costs_the_target_drop():
    accuracy_at = lambda severity: 0.99 - 0.02 * severity  # a made-up model losing 2 points per unit of severity
    assert monitoring.severity_for_drop(accuracy_at, 0.01, 0.0, 4.0) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="raise `high`"):
        monitoring.severity_for_drop(accuracy_at, 0.5, 0.0, 1.0)
