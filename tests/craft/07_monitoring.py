"""Chapter 07: the Kolmogorov-Smirnov drift test (scipy's ks_2samp per class probability, Bonferroni) and the drift
alerting rule with its promtool unit test, each written in the notebook and checked against the helper; and the
answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "ks drift test": "helpers.serving.drift.KSDetector",
    "alerting rule": "helpers.monitoring.prometheus.check_rules",
}

EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "the largest window that reaches 95 %": '''
powers = pd.Series({size: monitoring.detection_rate(writer_detectors["KS on outputs"], all_views["outputs"][5000:], size,
                                                  WINDOWS, ALPHA, seed=SEED)
                    for size in [25, 50, 75, 100, 150, 200, 300, 400, 600]})
smallest_window = int(powers.index[powers >= 0.95][-1])
''',
            "powers in percent": '''
powers = pd.Series({size: 100 * monitoring.detection_rate(writer_detectors["KS on outputs"], all_views["outputs"][5000:],
                                                        size, WINDOWS, ALPHA, seed=SEED)
                    for size in [25, 50, 75, 100, 150, 200, 300, 400, 600]})
smallest_window = int(powers.index[powers >= 95][0])
''',
            "the detector that also sees the inputs": '''
powers = pd.Series({size: monitoring.detection_rate(writer_detectors["KS on inputs + outputs"], all_views["inputs + outputs"][5000:],
                                                  size, WINDOWS, ALPHA, seed=SEED)
                    for size in [25, 50, 75, 100, 150, 200, 300, 400, 600]})
smallest_window = int(powers.index[powers >= 0.95][0])
''',
            "windows drawn from the reference half": '''
powers = pd.Series({size: monitoring.detection_rate(writer_detectors["KS on outputs"], all_views["outputs"][:5000], size,
                                                  WINDOWS, ALPHA, seed=SEED)
                    for size in [25, 50, 75, 100, 150, 200, 300, 400, 600]})
reached = powers.index[powers >= 0.95]
smallest_window = int(reached[0]) if len(reached) else None
''',
        },
        "right": {
            "stops at the first size that reaches 95 %": '''
powers = {}
for size in [25, 50, 75, 100, 150, 200, 300, 400, 600]:
    powers[size] = monitoring.detection_rate(writer_detectors["KS on outputs"], all_views["outputs"][5000:], size, WINDOWS, ALPHA, seed=SEED)
    if powers[size] >= 0.95:
        break
powers = pd.Series(powers)
smallest_window = int(powers.index[-1])
''',
            "a fresh KSDetector, another seed": '''
ks = monitoring.KSDetector(all_views["outputs"][:5000])
powers = pd.Series([monitoring.detection_rate(ks, all_views["outputs"][5000:], w, WINDOWS, ALPHA, seed=123)
                    for w in [25, 50, 75, 100, 150, 200, 300, 400, 600]], index=[25, 50, 75, 100, 150, 200, 300, 400, 600])
smallest_window = next(w for w, p in powers.items() if p >= 0.95)
''',
        }},
    2: {"kind": "code",
        "wrong": {
            "no 'for': fires on the first evaluation": '''
folder = paths.artifacts() / "exercises" / "traffic_rule"
folder.mkdir(parents=True, exist_ok=True)
(folder / "exercise_rules.yml").write_text("""groups:
  - name: traffic
    rules:
      - alert: TrafficDropped
        expr: sum(rate(inference_requests_total[1m])) < 0.5 * sum(rate(inference_requests_total[1m] offset 1h))
        labels: {severity: page}
""")
(folder / "exercise_test.yml").write_text("""rule_files: [exercise_rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - {series: 'inference_requests_total{code="200"}', values: '0+1500x360 540000x240'}
    alert_rule_test:
      - {eval_time: 100m, alertname: TrafficDropped, exp_alerts: [{exp_labels: {severity: page}}]}
""")
traffic_rule_result = subprocess.run(["promtool", "test", "rules", "exercise_test.yml"], cwd=folder, capture_output=True).returncode if HAVE_PROMTOOL else None
''',
            "an absolute bar instead of half the rate an hour earlier": '''
folder = paths.artifacts() / "exercises" / "traffic_rule"
folder.mkdir(parents=True, exist_ok=True)
(folder / "exercise_rules.yml").write_text("""groups:
  - name: traffic
    rules:
      - alert: TrafficDropped
        # an hour earlier (offset 1h) was ~100/s: half of it
        expr: sum(rate(inference_requests_total[1m])) < 1
        for: 2m
        labels: {severity: page}
""")
(folder / "exercise_test.yml").write_text("""rule_files: [exercise_rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - {series: 'inference_requests_total{code="200"}', values: '0+1500x360 540000x240'}
    alert_rule_test:
      - {eval_time: 100m, alertname: TrafficDropped, exp_alerts: [{exp_labels: {severity: page}}]}
""")
traffic_rule_result = subprocess.run(["promtool", "test", "rules", "exercise_test.yml"], cwd=folder, capture_output=True).returncode if HAVE_PROMTOOL else None
''',
            "the comparison the wrong way round": '''
folder = paths.artifacts() / "exercises" / "traffic_rule"
folder.mkdir(parents=True, exist_ok=True)
(folder / "exercise_rules.yml").write_text("""groups:
  - name: traffic
    rules:
      - alert: TrafficDropped
        expr: 0.5 * sum(rate(inference_requests_total[1m])) < sum(rate(inference_requests_total[1m] offset 1h))
        for: 2m
        labels: {severity: page}
""")
(folder / "exercise_test.yml").write_text("""rule_files: [exercise_rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - {series: 'inference_requests_total{code="200"}', values: '0+1500x360 540000x240'}
    alert_rule_test:
      - {eval_time: 100m, alertname: TrafficDropped, exp_alerts: [{exp_labels: {severity: page}}]}
""")
traffic_rule_result = subprocess.run(["promtool", "test", "rules", "exercise_test.yml"], cwd=folder, capture_output=True).returncode if HAVE_PROMTOOL else None
''',
        },
        "right": {
            "a ratio, increase() and 'for: 120s'": '''
folder = paths.artifacts() / "exercises" / "traffic_rule"
folder.mkdir(parents=True, exist_ok=True)
(folder / "exercise_rules.yml").write_text("""groups:
  - name: traffic
    rules:
      - alert: TrafficDropped
        expr: |
          sum(increase(inference_requests_total[1m]))
            / sum(increase(inference_requests_total[1m] offset 1h)) < 0.5
        for: 120s
        labels:
          severity: page
        annotations:
          summary: "Traffic fell below half of what it was an hour ago"
""")
(folder / "exercise_test.yml").write_text("""rule_files: [exercise_rules.yml]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      - series: 'inference_requests_total{code="200"}'
        values: '0+3000x300'
    alert_rule_test:
      - {eval_time: 140m, alertname: TrafficDropped, exp_alerts: []}
""")
traffic_rule_result = None
if HAVE_PROMTOOL:
    traffic_rule_result = subprocess.run(["promtool", "test", "rules", "exercise_test.yml"], cwd=folder,
                                         capture_output=True).returncode
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "the two columns swapped": '''
ks_pixels = monitoring.KSDetector(pixel_pca(x_test[reference_idx]))
pixels_vs_embedding = pd.DataFrame({shift: {
    "embedding": monitoring.detection_rate(ks_pixels, pixel_pca(stream_drifted_by(shift, one_point[shift])), WINDOW, WINDOWS, ALPHA, seed=SEED),
    "pixels": monitoring.detection_rate(detectors["KS on embedding"], pools[shift]["embedding"], WINDOW, WINDOWS, ALPHA, seed=SEED)}
    for shift in ["rotation", "thickness"]}).T
''',
            "rates in percent": '''
ks_pixels = monitoring.KSDetector(pixel_pca(x_test[reference_idx]))
pixels_vs_embedding = 100 * pd.DataFrame({shift: {
    "pixels": monitoring.detection_rate(ks_pixels, pixel_pca(stream_drifted_by(shift, one_point[shift])), WINDOW, WINDOWS, ALPHA, seed=SEED),
    "embedding": monitoring.detection_rate(detectors["KS on embedding"], pools[shift]["embedding"], WINDOW, WINDOWS, ALPHA, seed=SEED)}
    for shift in ["rotation", "thickness"]}).T
''',
            "pixels tested on the clean stream": '''
ks_pixels = monitoring.KSDetector(pixel_pca(x_test[reference_idx]))
pixels_vs_embedding = pd.DataFrame({shift: {
    "pixels": monitoring.detection_rate(ks_pixels, pixel_pca(x_test[stream_idx]), WINDOW, WINDOWS, ALPHA, seed=SEED),
    "embedding": monitoring.detection_rate(detectors["KS on embedding"], pools[shift]["embedding"], WINDOW, WINDOWS, ALPHA, seed=SEED)}
    for shift in ["rotation", "thickness"]}).T
''',
        },
        "right": {
            "columns in the other order, another seed, an extra column": '''
ks_pixels = monitoring.KSDetector(pixel_pca(x_test[reference_idx]))
rows = {}
for shift in ["thickness", "rotation"]:
    rows[shift] = {"embedding": monitoring.detection_rate(detectors["KS on embedding"], pools[shift]["embedding"], WINDOW, WINDOWS, ALPHA, seed=7),
                   "pixels": monitoring.detection_rate(ks_pixels, pixel_pca(stream_drifted_by(shift, one_point[shift])), WINDOW, WINDOWS, ALPHA, seed=7),
                   "severity": one_point[shift]}
pixels_vs_embedding = pd.DataFrame.from_dict(rows, orient="index")
''',
        }},
    4: {"kind": "code",
        "wrong": {
            "log10 instead of the natural log": '''
def population_stability_index(reference_classes, window_classes):
    p = (np.bincount(reference_classes, minlength=10) + 0.5) / (len(reference_classes) + 5)
    q = (np.bincount(window_classes, minlength=10) + 0.5) / (len(window_classes) + 5)
    return float(np.sum((q - p) * np.log10(q / p)))


rng = np.random.default_rng(SEED)
psi_undrifted = np.array([population_stability_index(reference_view["classes"], rng.choice(stream_view["classes"], WINDOW, replace=False))
                          for _ in range(FALSE_ALARM_WINDOWS)])
rule_of_thumb_false_alarms = float(np.mean(psi_undrifted > 0.25))
''',
            "a tiny floor instead of half a count": '''
def population_stability_index(reference_classes, window_classes):
    p = np.maximum(np.bincount(reference_classes, minlength=10) / len(reference_classes), 1e-4)
    q = np.maximum(np.bincount(window_classes, minlength=10) / len(window_classes), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


rng = np.random.default_rng(SEED)
psi_undrifted = np.array([population_stability_index(reference_view["classes"], rng.choice(stream_view["classes"], WINDOW, replace=False))
                          for _ in range(FALSE_ALARM_WINDOWS)])
rule_of_thumb_false_alarms = float(np.mean(psi_undrifted > 0.25))
''',
            "KL divergence: no (q - p)": '''
def population_stability_index(reference_classes, window_classes):
    p = (np.bincount(reference_classes, minlength=10) + 0.5) / (len(reference_classes) + 5)
    q = (np.bincount(window_classes, minlength=10) + 0.5) / (len(window_classes) + 5)
    return float(np.sum(q * np.log(q / p)))


rng = np.random.default_rng(SEED)
psi_undrifted = np.array([population_stability_index(reference_view["classes"], rng.choice(stream_view["classes"], WINDOW, replace=False))
                          for _ in range(FALSE_ALARM_WINDOWS)])
rule_of_thumb_false_alarms = float(np.mean(psi_undrifted > 0.25))
''',
            "the 0.1 'stable' bar instead of 0.25": '''
def population_stability_index(reference_classes, window_classes):
    p = (np.bincount(reference_classes, minlength=10) + 0.5) / (len(reference_classes) + 5)
    q = (np.bincount(window_classes, minlength=10) + 0.5) / (len(window_classes) + 5)
    return float(np.sum((q - p) * np.log(q / p)))


rng = np.random.default_rng(SEED)
psi_undrifted = np.array([population_stability_index(reference_view["classes"], rng.choice(stream_view["classes"], WINDOW, replace=False))
                          for _ in range(FALSE_ALARM_WINDOWS)])
rule_of_thumb_false_alarms = float(np.mean(psi_undrifted > 0.1))
''',
            "windows of 500 rows": '''
def population_stability_index(reference_classes, window_classes):
    p = (np.bincount(reference_classes, minlength=10) + 0.5) / (len(reference_classes) + 5)
    q = (np.bincount(window_classes, minlength=10) + 0.5) / (len(window_classes) + 5)
    return float(np.sum((q - p) * np.log(q / p)))


rng = np.random.default_rng(SEED)
psi_undrifted = np.array([population_stability_index(reference_view["classes"], rng.choice(stream_view["classes"], 500, replace=False))
                          for _ in range(FALSE_ALARM_WINDOWS)])
rule_of_thumb_false_alarms = float(np.mean(psi_undrifted > 0.25))
''',
        },
        "right": {
            "pandas counts, a list, another seed": '''
def population_stability_index(reference_classes, window_classes):
    classes = range(10)
    ref = pd.Series(reference_classes).value_counts().reindex(classes, fill_value=0)
    win = pd.Series(window_classes).value_counts().reindex(classes, fill_value=0)
    p, q = (ref + 0.5) / (ref.sum() + 5), (win + 0.5) / (win.sum() + 5)
    return float(((q - p) * np.log(q / p)).sum())


generator = np.random.default_rng(2024)
psi_undrifted = []
for _ in range(FALSE_ALARM_WINDOWS + 100):
    rows = generator.permutation(len(stream_view["classes"]))[:WINDOW]
    psi_undrifted.append(population_stability_index(reference_view["classes"], stream_view["classes"][rows]))
rule_of_thumb_false_alarms = sum(v > 0.25 for v in psi_undrifted) / len(psi_undrifted)
''',
        }},
}
