"""Triton, from a model repository (tritonserver) and through PyTriton's Python API: each starts in Triton's own venv,
answers the Open Inference Protocol in JSON and in binary tensors with the model's logits, rejects a wrong shape with a
4xx and a JSON error, counts what it ran, and leaves no process behind."""

import httpx
import numpy as np
import psutil
import pytest
from small_models import make_export

from helpers.model_servers import pytriton, triton
from helpers.serving.protocols import BINARY_HEADER

pytestmark = pytest.mark.integration

SERVERS = {"triton": triton, "pytriton": pytriton}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    directory, reference = make_export(tmp_path_factory.mktemp("triton-export"), seed=7, x=x)
    return directory, x, reference


@pytest.mark.parametrize("name", SERVERS)
def test_serves_the_model_and_stops(name, export):
    server = SERVERS[name]
    reason = server.missing()
    if reason:
        pytest.skip(reason)
    directory, x, reference = export
    with server.running(directory) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        assert served.open_inference and served.url.startswith("http://127.0.0.1:") and served.ready_s > 0
        body, headers = served.encode(x)  # JSON tensors
        answer = client.post(served.infer_path, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(served.decode(answer.content), reference, atol=1e-5)

        body, headers = server.encode(x, binary=True)  # Triton's binary tensor extension, both ways
        answer = client.post(served.infer_path, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers.get(BINARY_HEADER)
        np.testing.assert_allclose(server.decode(answer.content, answer.headers[BINARY_HEADER]), reference, atol=1e-5)

        body, headers = served.encode(x[:, 0])  # (N, 28, 28): no channel axis
        answer = client.post(served.infer_path, content=body, headers=headers)
        assert 400 <= answer.status_code < 500
        assert "unexpected shape for input 'images'" in answer.json()["error"]

        stats = server.model_statistics(served)
        assert stats["requests"] == 2 and stats["inference_count"] == 2 * len(x)
        assert 1 <= stats["execution_count"] <= 2 and set(stats["batch_sizes"]) == {len(x)}
        assert stats["stages"]["compute_infer"]["mean_ms"] > 0
        members = [p for pid in served.pids for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]]
        assert any("triton_python_backend_stub" in " ".join(p.cmdline()) for p in members)
    gone, alive = psutil.wait_procs(members, timeout=1)
    assert not alive, f"{name} left processes: {alive}"


def test_config_without_batching():
    config = triton.model_config(batching=False)
    assert "dynamic_batching" not in config and "max_batch_size: 32" in config
    assert str(triton.common.ENVS_DIR / "triton") in config
    assert "dynamic_batching { max_queue_delay_microseconds: 2000 }" in triton.model_config(batching=True)
