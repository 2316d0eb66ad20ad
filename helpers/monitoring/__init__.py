"""Watching a deployed model (chapter 07): a real Prometheus, and data-drift detectors measured as detectors should be.

    prometheus   start a real Prometheus (scrape config + monitoring/alerts.yml), PromQL queries, waits, alerts;
                 check_rules: promtool check/test rules; rule: one rule of a rules file;
                 read_metrics/metric: the server's /metrics page without Prometheus
    shifts       simulated drift: rotation, noise, dimming, blur, thickness (SHIFTS, apply_shift), class-prior shift,
                 severity_for_drop (the severity that costs a chosen accuracy drop)
    detectors    drift tests: KS, PSI, MMD (+ PCA embeddings); their detection and false-alarm rates; flagged_in_a_row
    label_free   torch_views (logits, probabilities, classes, embedding) and accuracy estimated without labels (AC, ATC)
    traffic      Traffic: a simulated production day against the server, and its per-request/per-window frames

The drift monitor the server itself runs (DRIFT_REFERENCE, add_drift_reference, drift_score, DriftMonitor, KSDetector,
softmax) lives in helpers.serving.drift and is re-exported here, as is every public name above: `monitoring.X` works
for all of them.
"""

from helpers.monitoring.detectors import (
    PCA,
    MMDDetector,
    PSIDetector,
    detection_rate,
    false_alarm_rate,
    flagged_in_a_row,
    gaussian_kernel,
    ks_test,
    median_bandwidth,
    psi,
    squared_distances,
)
from helpers.monitoring.label_free import atc_threshold, estimated_accuracy, torch_views
from helpers.monitoring.prometheus import (
    RULES,
    alerts,
    api_result,
    check_rules,
    metric,
    prometheus_available,
    query,
    query_range,
    read_metrics,
    record_alerts,
    rule,
    running_prometheus,
    wait_for_first_scrape,
    wait_for_value,
    write_config,
)
from helpers.monitoring.shifts import (
    SHIFTS,
    apply_shift,
    blur,
    class_prior_shift,
    dim,
    noise,
    rotate,
    severity_for_drop,
    thicken,
)
from helpers.monitoring.traffic import Traffic
from helpers.serving.drift import DRIFT_REFERENCE, DriftMonitor, KSDetector, add_drift_reference, drift_score, softmax

__all__ = [
    # prometheus
    "RULES", "prometheus_available", "write_config", "running_prometheus", "api_result", "query", "query_range",
    "wait_for_first_scrape", "wait_for_value", "alerts", "record_alerts", "read_metrics", "metric", "check_rules", "rule",
    # shifts
    "rotate", "noise", "dim", "blur", "thicken", "SHIFTS", "apply_shift", "class_prior_shift", "severity_for_drop",
    # detectors
    "KSDetector", "ks_test", "psi", "PSIDetector", "squared_distances", "gaussian_kernel", "median_bandwidth",
    "MMDDetector", "PCA", "detection_rate", "false_alarm_rate", "flagged_in_a_row",
    # label_free
    "torch_views", "atc_threshold", "estimated_accuracy",
    # traffic
    "Traffic",
    # the server's drift monitor (helpers.serving.drift)
    "DRIFT_REFERENCE", "softmax", "add_drift_reference", "drift_score", "DriftMonitor",
]
