"""Monitoring (chapter 07): the alerting rules pass promtool, a real Prometheus scrapes a real server, and the drift
detectors hold their false-alarm rate on undrifted data and detect real shifts."""

import shutil
import subprocess
import time

import numpy as np
import pytest

from helpers import monitoring, paths

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (apt-get install prometheus)")


@needs_promtool
@pytest.mark.integration  # real promtool, Prometheus or server processes
def test_the_alerting_rules_are_valid_and_their_unit_tests_pass():
    for command in (["promtool", "check", "rules", "alerts.yml"], ["promtool", "test", "rules", "alerts_test.yml"]):
        result = subprocess.run(command, cwd=paths.ROOT / "monitoring", capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


@needs_promtool
@pytest.mark.integration  # real promtool, Prometheus or server processes
def test_check_rules_passes_the_course_rules_and_refuses_a_rule_that_breaks_its_test(tmp_path):
    assert "SUCCESS" in monitoring.check_rules(monitoring.RULES, monitoring.RULES.parent / "alerts_test.yml")
    broken = monitoring.RULES.read_text().replace("model_drift_flagged_in_a_row) >= 2", "model_drift_flagged_in_a_row) >= 1")
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(monitoring.RULES.parent / "alerts_test.yml", tmp_path / "alerts_test.yml")
    monitoring.check_rules(tmp_path / "alerts.yml")  # still valid PromQL
    with pytest.raises(ValueError, match="DataDriftDetected"):
        monitoring.check_rules(tmp_path / "alerts.yml", tmp_path / "alerts_test.yml")


def test_rule_reads_one_rule_of_the_course_file():
    drift = monitoring.rule("DataDriftDetected")
    assert drift["expr"].strip() == "max by (model) (model_drift_flagged_in_a_row) >= 2" and drift["for"] == "250ms"
    with pytest.raises(KeyError):
        monitoring.rule("NoSuchAlert")


@pytest.mark.integration  # real promtool, Prometheus or server processes
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


def test_the_ks_statistic_and_p_value_match_scipy_including_ties():
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(100):
        decimals = rng.integers(0, 3)  # rounding makes ties, inside and across the samples
        reference = np.round(rng.normal(size=(rng.integers(5, 400), 3)), decimals)
        window = np.round(rng.normal(0.2, 1.0, size=(rng.integers(3, 80), 3)), decimals)
        expected = [stats.ks_2samp(reference[:, j], window[:, j], method="asymp") for j in range(3)]
        np.testing.assert_allclose(monitoring.KSDetector(reference).statistics(window), [e.statistic for e in expected])
        bonferroni = min(1.0, 3 * min(e.pvalue for e in expected))
        assert monitoring.ks_test(reference, window) == pytest.approx(bonferroni, rel=1e-9, abs=1e-12)


def test_each_detector_holds_its_false_alarm_rate_and_detects_a_shift():
    rng = np.random.default_rng(0)
    same = rng.dirichlet(np.full(10, 0.3), 6000)  # class-probability-like rows
    shifted = rng.dirichlet(np.full(10, 1.0), 3000)
    classes, prior = rng.integers(0, 10, 6000), rng.choice(10, 3000, p=[0.46] + [0.06] * 9)
    for build, rows, drifted in [(monitoring.KSDetector, same, shifted),
                                 (lambda r: monitoring.MMDDetector(r[:200], permutations=100), same[:, :4], shifted[:, :4]),
                                 (monitoring.PSIDetector, classes, prior)]:
        assert monitoring.false_alarm_rate(build, rows, window=50, windows=200) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)
        assert monitoring.detection_rate(build(rows[:3000]), drifted, window=50, windows=60) >= 0.9


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    classes = np.repeat(np.arange(10), 100)
    assert monitoring.psi(classes, classes) == pytest.approx(0.0)
    skewed = np.concatenate([classes, np.zeros(200, int)])
    assert 0 < monitoring.psi(classes, skewed) < monitoring.psi(classes, np.concatenate([classes, np.zeros(1000, int)]))
    assert monitoring.psi(classes, np.zeros(5, int)) < 10  # empty classes in a small window do not blow it up


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
    def accuracy_at(severity):  # a made-up model losing 2 points per unit of severity
        return 0.99 - 0.02 * severity

    assert monitoring.severity_for_drop(accuracy_at, 0.01, 0.0, 4.0) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="raise `high`"):
        monitoring.severity_for_drop(accuracy_at, 0.5, 0.0, 1.0)


def test_a_drift_monitor_scores_each_full_window_and_the_alert_rule_needs_two_in_a_row():
    rng = np.random.default_rng(0)
    reference_logits = rng.normal(size=(2000, 10)) * 3
    monitor = monitoring.DriftMonitor(monitoring.softmax(reference_logits), window=50)
    assert monitor.observe(reference_logits[:30]) == []  # no full window yet
    (p_clean, confidence), = monitor.observe(rng.normal(size=(20, 10)) * 3)
    assert p_clean > 0.01 and monitor.flagged_in_a_row == 0
    (p_drift, _), (p_drift_2, _) = monitor.observe(rng.normal(size=(100, 10)) * 12)  # far more confident: drift
    assert p_drift < 1e-6 and p_drift_2 < 1e-6 and 0.1 < confidence <= 1 and monitor.flagged_in_a_row == 2
    monitor.observe(rng.normal(size=(50, 10)) * 3)
    assert monitor.flagged_in_a_row == 0
    assert monitoring.drift_score(1.0) == 0.0 and str(monitoring.drift_score(1.0)) == "0.0"  # no "-0.0" on the dashboard
    assert monitoring.drift_score(0.001) == pytest.approx(3.0)
    assert monitoring.flagged_in_a_row([0.1, 3.0, 0.2, 3.0, 2.5, 9.0]) == 4
    assert monitoring.flagged_in_a_row([0.1, 3.0, 0.2, None, 3.0]) is None


def test_accuracy_estimates_without_labels_recover_a_calibrated_models_accuracy():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    correct = rng.random(200_000) < confidence  # calibrated: right with the probability it states
    threshold = monitoring.atc_threshold(confidence[:100_000], correct[:100_000])
    assert 0.5 < threshold < 1.0
    new = slice(100_000, None)
    assert monitoring.estimated_accuracy(confidence[new]) == pytest.approx(correct[new].mean(), abs=0.006)
    assert monitoring.estimated_accuracy(confidence[new], threshold) == pytest.approx(correct[new].mean(), abs=0.006)


def test_a_drift_reference_travels_in_the_manifest_and_a_tampered_one_is_refused(tmp_path, artifacts_in_tmp):
    import torch

    from helpers import export, models
    from helpers.integrity import IntegrityError
    from helpers.serving.backends import load_backend

    torch.manual_seed(0)
    directory = export.export_torch_onnx(models.torch_model("source_cnn").eval(), "source_cnn", 1, {"file_sha256": "d" * 64})
    monitoring.add_drift_reference(directory, np.random.default_rng(0).normal(size=(300, 10)))
    backend = load_backend(directory)
    assert backend.drift_reference.shape == (300, 10)
    np.testing.assert_allclose(backend.drift_reference.sum(axis=1), 1.0, rtol=1e-5)
    reference = directory / monitoring.DRIFT_REFERENCE
    tampered = np.load(reference)
    tampered[0, 0] += 0.5
    np.save(reference, tampered)
    with pytest.raises(IntegrityError, match="drift_reference.npy"):
        load_backend(directory)
    # a reference that does not match the model's outputs refuses the version at load time, not at its 50th request
    other = export.export_torch_onnx(models.torch_model("source_cnn").eval(), "source_cnn", 2, {"file_sha256": "d" * 64})
    monitoring.add_drift_reference(other, np.zeros((300, 3)))
    with pytest.raises(ValueError, match="10 probabilities"):
        load_backend(other)


@pytest.mark.integration  # real promtool, Prometheus or server processes
def test_the_server_scores_drift_on_live_traffic_and_a_new_version_brings_its_own_reference(real_mnist, tmp_path, artifacts_in_tmp):
    import torch

    from helpers import export, models, training
    from helpers.serving.process import running_server
    from helpers.serving.repository import publish

    torch.manual_seed(0)
    model = models.torch_model("source_cnn").eval()
    x = real_mnist.x_test
    def logits(images):
        return training.torch_logits(model, training.images_for("torch", images))

    directory = export.export_torch_onnx(model, "source_cnn", 1, {"file_sha256": "d" * 64})
    monitoring.add_drift_reference(directory, logits(x[:2000]))
    publish(directory, tmp_path / "repository", "mnist", 1)
    noisy = monitoring.apply_shift("noise", x[2000:2100], 120.0)
    windows = [(x[2000:2050], real_mnist.y_test[2000:2050]), (noisy[:50], real_mnist.y_test[2000:2050]),
               (noisy[50:], real_mnist.y_test[2050:2100])]
    with running_server(tmp_path / "repository", poll_interval_s=0.2) as server:
        traffic = monitoring.Traffic(server.url, "mnist", windows, window_seconds=0.05).start()
        traffic.join(60)
        scores = [s["drift_score"] for s in traffic.scores]
        assert scores[0] < 2 < scores[1] and scores[2] > 2, scores
        values = monitoring.read_metrics(server.url)
        assert monitoring.metric(values, "model_drift_flagged_in_a_row", model="mnist") == 2
        assert monitoring.metric(values, "model_drift_windows_total", model="mnist") == 3
        requests, per_window = traffic.frames()
        assert (requests.status == 200).all() and len(per_window) == 3 and set(requests.version) == {1}
        # version 2: the same model with the noisy images as its reference; the noisy traffic is its normal
        directory = export.export_torch_onnx(model, "source_cnn", 2, {"file_sha256": "d" * 64})
        monitoring.add_drift_reference(directory, logits(monitoring.apply_shift("noise", x[3000:5000], 120.0, seed=1)))
        publish(directory, tmp_path / "repository", "mnist", 2)
        deadline = time.time() + 30
        while monitoring.metric(monitoring.read_metrics(server.url), "model_versions_available", model="mnist") != 2:
            assert time.time() < deadline, "version 2 was not loaded"
            time.sleep(0.1)
        traffic = monitoring.Traffic(server.url, "mnist", windows[1:], window_seconds=0.05).start()
        traffic.join(60)
        assert all(s["drift_score"] < 2 for s in traffic.scores), traffic.scores
        assert set(traffic.frames()[0].version) == {2}
        assert monitoring.metric(monitoring.read_metrics(server.url), "model_drift_flagged_in_a_row", model="mnist") == 0
        # a refused version shows in model_versions_failed, which the ModelLoadFailed alert watches
        (tmp_path / "repository" / "mnist" / "3").mkdir()
        (tmp_path / "repository" / "mnist" / "3" / "model.onnx").write_bytes(b"not a model")
        deadline = time.time() + 30
        while monitoring.metric(monitoring.read_metrics(server.url), "model_versions_failed", model="mnist") != 1:
            assert time.time() < deadline, "the broken version 3 was not reported"
            time.sleep(0.1)
