"""Chapter 10's adapters for MLServer and BentoML, each run from its own venv: each starts, answers like the model
(with its batching on and off), refuses a request of the wrong shape with a 4xx, and leaves no process behind.
MLServer speaks the Open Inference Protocol's JSON tensors but not its binary tensor extension."""

import importlib

import httpx
import numpy as np
import pytest
from small_models import make_export

pytestmark = pytest.mark.integration

ADAPTERS = ["mlserver", "bentoml"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    x = np.random.default_rng(11).random((3, 1, 28, 28), dtype=np.float32)
    directory, reference = make_export(tmp_path_factory.mktemp("export"), 11, x)
    return directory, x, reference


def gone(pids) -> bool:
    import psutil

    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def adapter_or_skip(name):
    adapter = importlib.import_module(f"helpers.model_servers.{name}")
    if (reason := adapter.missing()) is not None:
        assert adapter.NAME in reason
        pytest.skip(reason)
    return adapter


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
@pytest.mark.parametrize("name", ADAPTERS)
def test_the_server_answers_like_the_model_refuses_a_bad_shape_and_leaves_nothing(name, batching, export,
                                                                                  artifacts_in_tmp):
    from helpers import processes

    adapter = adapter_or_skip(name)
    directory, x, reference = export
    with adapter.running(directory, batching=batching) as served:
        members = [m.pid for pid in served.pids for m in processes.tree(pid)]
        assert served.url.startswith("http://127.0.0.1:") and served.ready_s > 0 and members
        assert served.notes["batching"] is batching
        body, headers = served.encode(x)
        answer = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(served.decode(answer.content), reference, atol=1e-5)
        bad_body, bad_headers = served.encode(x[..., :27])  # (3, 1, 28, 27): the native request, the wrong shape
        bad = httpx.post(served.infer_url, content=bad_body, headers=bad_headers, timeout=60)
        print(f"{adapter.NAME}: a request of the wrong shape -> {bad.status_code} {bad.text[:300]}")
        assert 400 <= bad.status_code < 500, (bad.status_code, bad.text)
        again = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)  # still serving after it
        assert again.status_code == 200
    assert gone(members), [pid for pid in members if not gone([pid])]


def test_mlserver_speaks_open_inference_json_but_not_binary_tensors(export, artifacts_in_tmp):
    from helpers.serving.client import infer_request, parse_infer_response

    mlserver = adapter_or_skip("mlserver")
    directory, x, reference = export
    with mlserver.running(directory) as served:
        assert served.open_inference and served.infer_path == "/v2/models/mnist/infer"
        body, headers = infer_request(x, "images", binary=False)
        answer = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        parsed = parse_infer_response(answer.content, answer.headers.get("Inference-Header-Content-Length"))
        assert parsed["model_version"] == "1"
        np.testing.assert_allclose(parsed["outputs"]["logits"], reference, atol=1e-5)
        body, headers = infer_request(x, "images", binary=True)
        binary = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)
        print(f"MLServer: a binary-tensor request -> {binary.status_code} {binary.text[:200]}")
        assert binary.status_code != 200  # its REST server parses every body as JSON (a 500 in 1.7.1)
        assert httpx.post(served.infer_url, content=infer_request(x, "images", False)[0],
                          headers={"Content-Type": "application/json"}, timeout=60).status_code == 200
