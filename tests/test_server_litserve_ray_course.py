"""Chapter 10's adapters for LitServe, Ray Serve and the course's own server: each starts, answers like the model,
refuses a malformed request with a 4xx, and leaves no process behind."""

import importlib

import httpx
import numpy as np
import pytest
from small_models import make_export

pytestmark = pytest.mark.integration

ADAPTERS = ["litserve", "ray_serve", "course"]
BAD_BODY = b'{"images": [1, 2, 3], "inputs": [{"name": "images", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}'


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    x = np.random.default_rng(10).random((3, 1, 28, 28), dtype=np.float32)
    directory, reference = make_export(tmp_path_factory.mktemp("export"), 10, x)
    return directory, x, reference


def gone(pids) -> bool:
    import psutil

    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_server_answers_like_the_model_refuses_a_bad_request_and_leaves_nothing(name, export, artifacts_in_tmp):
    from helpers import processes

    adapter = importlib.import_module(f"helpers.model_servers.{name}")
    if (reason := adapter.missing()) is not None:
        pytest.skip(reason)
    directory, x, reference = export
    with adapter.running(directory, batching=True) as served:
        members = [m.pid for pid in served.pids for m in processes.tree(pid)]
        assert served.url.startswith("http://127.0.0.1:") and served.ready_s > 0 and members
        body, headers = served.encode(x)
        answer = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(served.decode(answer.content), reference, atol=1e-5)
        bad = httpx.post(served.infer_url, content=BAD_BODY, headers={"Content-Type": "application/json"}, timeout=60)
        print(f"{adapter.NAME}: a bad request -> {bad.status_code} {bad.text[:300]}")
        assert 400 <= bad.status_code < 500, (bad.status_code, bad.text)
        again = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)  # still serving after it
        assert again.status_code == 200
    assert gone(members), [pid for pid in members if not gone([pid])]


def test_the_course_server_answers_binary_tensors_too(export, artifacts_in_tmp):
    from helpers.model_servers import course

    directory, x, reference = export
    with course.running(directory, binary=True) as served:
        body, headers = served.encode(x)
        answer = httpx.post(served.infer_url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/octet-stream")
        np.testing.assert_allclose(served.decode(answer.content), reference, atol=1e-5)
