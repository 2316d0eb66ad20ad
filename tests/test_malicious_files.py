"""helpers.malicious_files: every malicious sample really runs its payload when loaded the unsafe way, and nothing
else (building, scanning, the safe loaders) ever does. The payload only creates a marker file in a temporary folder."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import malicious_files as mf
from helpers import paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("malicious")
    marker = folder / "PAYLOAD_RAN"
    samples = mf.build_corpus(folder / "corpus", marker)
    assert not marker.exists(), "building the corpus ran a payload"
    return samples, marker


@pytest.fixture(scope="module")
def table(corpus):
    samples, marker = corpus
    marker.unlink(missing_ok=True)
    verdicts = {}
    result = mf.detection_table(samples, verdicts=verdicts)
    assert not marker.exists(), "scanning the corpus ran a payload"
    return result, verdicts


def by_name(samples):
    return {s.name: s for s in samples}


def test_the_corpus_has_enough_of_both_kinds(corpus):
    samples, _ = corpus
    assert sum(s.malicious for s in samples) >= 12
    assert sum(not s.malicious for s in samples) >= 4
    assert len({s.name for s in samples}) == len(samples)
    assert all(s.path.is_file() and s.technique and s.format for s in samples)


# Loading the unsafe way runs each payload for real, so it happens in a process of its own: a payload may change the
# process that runs it (the sub-interpreter one leaves it in a state where torch's autograd refuses to run, which
# failed later tests when this ran in the test process).
UNSAFE_LOADS = """
import json, sys
from pathlib import Path
from helpers import malicious_files as mf
folder, marker = Path(sys.argv[1]), Path(sys.argv[2])
ran = {}
for sample in mf.build_corpus(folder, marker):
    if sample.malicious:
        marker.unlink(missing_ok=True)
        try:
            mf.load_unsafely(sample)
        except Exception:
            pass  # some variants run their payload, then make the loader fail: what counts is the marker
        ran[sample.name] = marker.exists()
marker.unlink(missing_ok=True)
print(json.dumps(ran))
"""


def test_every_malicious_sample_runs_its_payload_when_loaded_unsafely(corpus, tmp_path):
    samples, _ = corpus
    result = subprocess.run([sys.executable, "-c", UNSAFE_LOADS, str(tmp_path / "corpus"), str(tmp_path / "RAN")],
                            capture_output=True, text=True, timeout=300, cwd=paths.ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(ran) == {s.name for s in samples if s.malicious}
    silent = [name for name, marked in ran.items() if not marked]
    assert not silent, f"these samples did not run their payload, so they are not malicious: {silent}"


def test_scanning_never_runs_a_payload_and_gives_allowed_values(corpus, table):
    samples, marker = corpus
    result, _ = table
    assert not marker.exists()
    assert list(result["name"]) == [s.name for s in samples]
    for scanner in mf.SCANNERS:
        for malicious, value in zip(result["malicious"], result[scanner]):
            allowed = mf.MALICIOUS_OUTCOMES if malicious else mf.BENIGN_OUTCOMES
            assert value in allowed or (value.startswith("error (") and malicious), (scanner, value)


def test_each_scanner_catches_the_plain_os_system_pickle(table):
    result, verdicts = table
    row = result.set_index("name").loc["os_system"]
    for scanner in mf.SCANNERS:
        assert row[scanner] == "caught", (scanner, verdicts["os_system", scanner])


def test_scan_takes_a_path_too(corpus):
    samples, marker = corpus
    path = by_name(samples)["os_system"].path
    assert mf.scan(path, "picklescan").flagged is True
    assert not marker.exists()


def test_catch_rates_count_errors_and_skips_as_missed(table):
    result, _ = table
    rates = mf.catch_rates(result)
    n_malicious = int(result["malicious"].sum())
    assert list(rates.index) == list(mf.SCANNERS)
    for _, row in rates.iterrows():
        assert row["caught"] + row["missed (incl. errors, skips)"] == n_malicious
        assert row["of which errors"] + row["of which not scanned"] <= row["missed (incl. errors, skips)"]
        assert 0 <= row["catch rate"] <= 1
        assert row["false alarms"] <= int((~result["malicious"]).sum())


def test_safe_loaders_refuse_every_payload_and_run_nothing(corpus, monkeypatch):
    samples, marker = corpus
    marker.unlink(missing_ok=True)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # would turn weights_only=True off: safe_loading clears it
    result = mf.safe_loading_table(samples, marker)
    assert not result["marker written"].any()
    assert not marker.exists()
    for malicious, outcome in zip(result["malicious"], result["safe loader"]):
        assert outcome.startswith("refused" if malicious else ("refused", "loaded")), outcome
    import os

    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # restored afterwards


def test_benign_files_load_with_their_normal_loaders(corpus):
    import torch
    from safetensors.numpy import load_file

    samples, marker = corpus
    named = by_name(samples)
    state = torch.load(named["state_dict"].path, weights_only=True)
    np.testing.assert_array_equal(state["dense.weight"].numpy(), mf.WEIGHTS["dense.weight"])
    with open(named["numpy_dict_pickle"].path, "rb") as f:
        np.testing.assert_array_equal(pickle.load(f)["dense.bias"], mf.WEIGHTS["dense.bias"])
    np.testing.assert_array_equal(load_file(str(named["safetensors_weights"].path))["dense.weight"], mf.WEIGHTS["dense.weight"])

    import onnx

    model = onnx.load(named["onnx_model"].path)
    onnx.checker.check_model(model)
    x = np.ones((1, 3), np.float32)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        session = ort.InferenceSession(str(named["onnx_model"].path), providers=["CPUExecutionProvider"])
        expected = x @ mf.WEIGHTS["dense.weight"].T + mf.WEIGHTS["dense.bias"]
        np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-6)

    import keras

    keras_model = keras.saving.load_model(named["keras_plain"].path)  # safe_mode=True is the default
    assert keras_model.predict(x, verbose=0).shape == (1, 2)
    assert not marker.exists()


STATE_DICT_GLOBALS = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"}


def test_pickle_globals_reads_every_import_the_unpickler_would_make(corpus):
    samples, marker = corpus
    found = {s.name: set().union(*map(mf.pickle_globals, mf.pickle_programs(s))) for s in samples if mf.pickle_programs(s)}
    assert found["state_dict"] == STATE_DICT_GLOBALS
    assert found["stack_global_memo_confusion"] == {"posix.system"}  # the operands come from the memo, not the last pushes
    assert found["stack_global_bytes_operands"] == {"posix.system"}
    assert mf.UNREADABLE in found["payload_then_garbage"] and "posix.system" in found["payload_then_garbage"]
    assert found["import_module_methodcaller"] == {"importlib.import_module", "operator.methodcaller"}
    # an allowlist of a state_dict's imports refuses every malicious pickle in the corpus, whatever its trick
    for sample in samples:
        if sample.malicious and sample.name in found:
            assert not found[sample.name] <= STATE_DICT_GLOBALS, sample.name
    assert not marker.exists()


def test_pickle_globals_reports_operands_it_cannot_name():
    assert mf.pickle_globals(mf.PROTO4 + b"K\x01K\x02" + mf.STACK_GLOBAL + mf.STOP) == {"?.?"}  # two ints: no name
    assert mf.pickle_globals(pickle.dumps([1, "a", {"b": 2.0}], protocol=4)) == set()
    assert mf.pickle_programs(mf.Sample("x", Path("m.onnx"), False, "", "onnx")) == []
