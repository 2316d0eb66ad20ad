"""The inference server, started for real on a free 127.0.0.1 port: both protocols against their specifications, bad
requests, hot reload, the API key, metrics. Timing only appears as generous timeouts."""

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pytest
from metrics_text import metric
from small_models import make_export, repository_of

from helpers.serving import client as serving_client
from helpers.serving.__main__ import main as server_main
from helpers.serving.process import running_server

pytestmark = pytest.mark.integration  # starts real processes or trains and exports models

RNG = np.random.default_rng(0)
X = RNG.random((4, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    v1, reference = make_export(tmp, seed=1, x=X)
    v2, reference_v2 = make_export(tmp, seed=2, x=X)
    return {"root": repository_of(v1, tmp), "v2": v2, "reference": reference, "reference_v2": reference_v2}


@pytest.fixture(scope="module")
def server(repository):
    with running_server(repository["root"]) as running:
        yield running


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def post_json(http, path, document):
    return http.post(path, content=orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), headers={"Content-Type": "application/json"})


# --------------------------------------------------------------------------- health and metadata


def test_health_and_server_metadata(http):
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").status_code == 200
    metadata = http.get("/v2").json()
    assert "binary_tensor_data" in metadata["extensions"] and metadata["name"]


# --------------------------------------------------------------------------- TensorFlow Serving REST API


def test_tf_serving_status_metadata_and_predict_in_both_formats(http, repository):
    status = http.get("/v1/models/mnist").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert http.get("/v1/models/mnist/versions/1").json() == status
    signature = http.get("/v1/models/mnist/metadata").json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict" and "images" in signature["inputs"]
    rows = post_json(http, "/v1/models/mnist:predict", {"instances": X})
    assert rows.status_code == 200 and set(rows.json()) == {"predictions"}
    np.testing.assert_allclose(rows.json()["predictions"], repository["reference"], atol=1e-4)
    named = post_json(http, "/v1/models/mnist/versions/1:predict", {"instances": [{"images": x} for x in X]})
    np.testing.assert_allclose(named.json()["predictions"], repository["reference"], atol=1e-4)
    columns = post_json(http, "/v1/models/mnist:predict", {"inputs": {"images": X}})
    assert set(columns.json()) == {"outputs"}
    np.testing.assert_allclose(columns.json()["outputs"], repository["reference"], atol=1e-4)


# --------------------------------------------------------------------------- Open Inference Protocol (KServe v2)


def test_v2_metadata_and_ready(http):
    metadata = http.get("/v2/models/mnist").json()
    assert metadata == {"name": "mnist", "versions": ["1"], "platform": "onnxruntime_onnx",
                        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
                        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}
    assert http.get("/v2/models/mnist/versions/1").json() == metadata
    assert http.get("/v2/models/mnist/ready").json() == {"name": "mnist", "ready": True}
    assert http.get("/v2/models/mnist/versions/1/ready").status_code == 200
    assert http.get("/v2/models/nope/ready").status_code == 404


def test_v2_infer_in_json_and_with_binary_tensors(http, repository):
    document = {"id": "req-7", "inputs": [{"name": "images", "shape": [4, 1, 28, 28], "datatype": "FP32", "data": X.reshape(-1)}]}
    answer = post_json(http, "/v2/models/mnist/infer", document)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["model_name"] == "mnist" and body["model_version"] == "1" and body["id"] == "req-7"
    (output,) = body["outputs"]
    assert output["name"] == "logits" and output["datatype"] == "FP32" and output["shape"] == [4, 10]
    np.testing.assert_allclose(np.reshape(output["data"], (4, 10)), repository["reference"], atol=1e-4)
    nested = {"inputs": [{"name": "images", "shape": [4, 1, 28, 28], "datatype": "FP32", "data": X}]}  # nested data is accepted too
    assert post_json(http, "/v2/models/mnist/versions/1/infer", nested).status_code == 200

    content, headers = serving_client.infer_request(X, "images", binary=True)
    binary = http.post("/v2/models/mnist/infer", content=content, headers=headers)
    assert binary.status_code == 200 and binary.headers["content-type"] == "application/octet-stream"
    length = int(binary.headers["Inference-Header-Content-Length"])
    header = orjson.loads(binary.content[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4 * 10 * 4} and "data" not in header["outputs"][0]
    logits = np.frombuffer(binary.content[length:], "<f4").reshape(4, 10)
    np.testing.assert_allclose(logits, repository["reference"], atol=1e-4)
    # binary input, JSON output (the default when no output asks for binary)
    json_out = dict(orjson.loads(content[: int(headers["Inference-Header-Content-Length"])]))
    json_out.pop("parameters")
    header_bytes = orjson.dumps(json_out)
    raw = np.ascontiguousarray(X, "<f4").tobytes()
    mixed = http.post("/v2/models/mnist/infer", content=header_bytes + raw,
                      headers={"Inference-Header-Content-Length": str(len(header_bytes))})
    np.testing.assert_allclose(np.reshape(mixed.json()["outputs"][0]["data"], (4, 10)), repository["reference"], atol=1e-4)


# --------------------------------------------------------------------------- bad input


def v2(data=None, shape=(1, 1, 28, 28), name="images", datatype="FP32", **extra):
    tensor = {"name": name, "shape": list(shape), "datatype": datatype, "data": X[:1].reshape(-1) if data is None else data}
    return {"inputs": [tensor], **extra}


V2_PATH, V1_PATH = "/v2/models/mnist/infer", "/v1/models/mnist:predict"
MALFORMED = [
    # (what, method, path, body as bytes or a document, expected status)
    ("malformed JSON", "POST", V2_PATH, b'{"inputs": [', 400),
    ("a JSON array, not an object", "POST", V2_PATH, b"[1, 2]", 400),
    ("empty body", "POST", V1_PATH, b"", 400),
    ("NaN token", "POST", V1_PATH, b'{"instances": [NaN]}', 400),
    ("no inputs", "POST", V2_PATH, {"outputs": []}, 400),
    ("two inputs", "POST", V2_PATH, {"inputs": v2()["inputs"] * 2}, 400),
    ("wrong input name", "POST", V2_PATH, v2(name="pixels"), 400),
    ("unsupported datatype", "POST", V2_PATH, v2(datatype="INT64"), 400),
    ("shape not a list of ints", "POST", V2_PATH, v2(shape=("a", 1, 28, 28)), 400),
    ("shape and data disagree", "POST", V2_PATH, v2(shape=(2, 1, 28, 28)), 400),
    ("wrong image size", "POST", V2_PATH, v2(data=np.zeros(27 * 27), shape=(1, 1, 27, 27)), 400),
    ("strings as data", "POST", V2_PATH, v2(data=["x"] * 784), 400),
    ("raw 0-255 pixels", "POST", V2_PATH, v2(data=X[:1].reshape(-1) * 255), 400),
    ("negative values", "POST", V2_PATH, v2(data=-X[:1].reshape(-1)), 400),
    ("empty batch", "POST", V2_PATH, v2(data=[], shape=(0, 1, 28, 28)), 400),
    ("oversized batch", "POST", V1_PATH, {"instances": np.zeros((300, 1, 28, 28), np.float32)}, 400),
    ("both instances and inputs", "POST", V1_PATH, {"instances": X[:1], "inputs": X[:1]}, 400),
    ("neither instances nor inputs", "POST", V1_PATH, {"signature_name": "serving_default"}, 400),
    ("ragged instances", "POST", V1_PATH, {"instances": [[0.1, 0.2], [0.3]]}, 400),
    ("unknown signature", "POST", V1_PATH, {"signature_name": "classify", "instances": X[:1]}, 400),
    ("unsupported verb", "POST", "/v1/models/mnist:classify", {"instances": X[:1]}, 400),
    ("unknown model", "POST", "/v2/models/nope/infer", v2(), 404),
    ("unknown version", "POST", "/v2/models/mnist/versions/9/infer", v2(), 404),
    ("non-numeric version", "POST", "/v2/models/mnist/versions/1.5/infer", v2(), 400),
    ("unknown version label", "POST", "/v2/models/mnist/versions/latest/infer", v2(), 404),
    ("path traversal in the name", "POST", "/v1/models/..%2F..%2Fetc:predict", {"instances": X[:1]}, 400),
    ("request output that does not exist", "POST", V2_PATH, v2(outputs=[{"name": "probabilities"}]), 400),
    ("binary size mismatch", "BINARY", V2_PATH, None, 400),
    ("datatype not a string", "POST", V2_PATH, v2(datatype=["FP32"]), 400),
    ("parameters not an object", "POST", V2_PATH, {**v2(), "parameters": [1]}, 400),
    ("a non-ASCII digit as version", "POST", "/v2/models/mnist/versions/%C2%B2/infer", v2(), 400),
    ("a 5,000-digit version", "POST", "/v2/models/mnist/versions/" + "9" * 5000 + "/infer", v2(), 400),
    ("no such path", "POST", "/v3/models/mnist/infer", v2(), 404),
    ("wrong method (PUT)", "PUT", V2_PATH, v2(), 404),  # the inference routes exist for POST only
    ("body over the size limit", "POST", V1_PATH, b"{" + b" " * (5 * 1024 * 1024) + b"}", 413),
]


@pytest.mark.parametrize("what,method,path,body,status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_bad_request_gets_a_json_4xx_and_the_server_keeps_serving(http, repository, what, method, path, body, status):
    if method == "BINARY":
        content, headers = serving_client.infer_request(X[:1], "images", binary=True)
        answer = http.post(path, content=content[:-4], headers=headers)  # 4 bytes short of what the header declares
    elif method == "PUT":
        answer = http.put(path, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    elif isinstance(body, bytes):
        answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        answer = post_json(http, path, body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    message = answer.json()["error"]
    assert isinstance(message, str) and len(message) > 10
    good = post_json(http, V2_PATH, v2(data=X[:1].reshape(-1)))
    assert good.status_code == 200
    np.testing.assert_allclose(np.reshape(good.json()["outputs"][0]["data"], (1, 10)), repository["reference"][:1], atol=1e-4)


# --------------------------------------------------------------------------- metrics


def test_metrics_count_requests_and_model_loads(http):
    before = metric(http.get("/metrics").text, "inference_requests_total", model="mnist", endpoint="v2_infer", code="200")
    assert post_json(http, V2_PATH, v2()).status_code == 200
    text = http.get("/metrics").text
    assert metric(text, "inference_requests_total", model="mnist", endpoint="v2_infer", code="200") == before + 1
    assert metric(text, "model_loads_total", model="mnist", version="1", result="success") >= 1
    assert metric(text, "inference_request_duration_seconds_count", endpoint="v2_infer") >= 1
    assert metric(text, "inference_batch_size_count", model="mnist") >= 1
    assert metric(text, "model_versions_available", model="mnist") == 1
    assert post_json(http, "/v2/models/made-up-name/infer", v2()).status_code == 404
    text = http.get("/metrics").text
    assert metric(text, "inference_requests_total", model="unknown", endpoint="v2_infer", code="404") >= 1
    assert "made-up-name" not in text  # clients cannot create metric series


# --------------------------------------------------------------------------- hot reload, API key, batching


def wait_for(condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_new_version_is_swapped_in_and_a_corrupt_one_refused(repository, tmp_path):
    root = tmp_path / "repository"
    shutil.copytree(repository["root"], root)
    with running_server(root, poll_interval_s=0.2) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        staging = root / "mnist" / ".2.staging"  # copied under a hidden name, then renamed: the server never sees half a version
        shutil.copytree(repository["v2"], staging)
        staging.rename(root / "mnist" / "2")
        assert wait_for(lambda: post_json(http, V2_PATH, v2(data=X.reshape(-1), shape=X.shape)).json()["model_version"] == "2")
        answer = post_json(http, V2_PATH, v2(data=X.reshape(-1), shape=X.shape)).json()
        np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (4, 10)), repository["reference_v2"], atol=1e-4)

        corrupt = root / "mnist" / ".3.staging"
        shutil.copytree(repository["v2"], corrupt)
        data = bytearray((corrupt / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0x01
        (corrupt / "model.onnx").write_bytes(bytes(data))
        corrupt.rename(root / "mnist" / "3")
        assert wait_for(lambda: len(http.get("/v1/models/mnist").json()["model_version_status"]) == 3)
        status = {s["version"]: s for s in http.get("/v1/models/mnist").json()["model_version_status"]}
        assert status["3"]["state"] == "END" and "IntegrityError" in status["3"]["status"]["error_message"]  # TF Serving's word
        assert post_json(http, V2_PATH, v2()).json()["model_version"] == "2"  # the latest *valid* version answers
        refused = post_json(http, "/v2/models/mnist/versions/3/infer", v2())
        assert refused.status_code == 503 and "not available" in refused.json()["error"]
        loads = metric(http.get("/metrics").text, "model_loads_total", model="mnist", version="3", result="failure")
        assert loads >= 1


def test_the_api_key_guards_inference_but_not_health(repository):
    with running_server(repository["root"], api_key="s3cret-key") as running, httpx.Client(base_url=running.url, timeout=30) as http:
        refused = post_json(http, V2_PATH, v2())
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer" and "API key" in refused.json()["error"]
        wrong = http.post(V2_PATH, content=orjson.dumps(v2(), option=orjson.OPT_SERIALIZE_NUMPY), headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401
        assert http.post(V2_PATH, content=orjson.dumps(v2(), option=orjson.OPT_SERIALIZE_NUMPY),
                         headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert http.post(V2_PATH, content=orjson.dumps(v2(), option=orjson.OPT_SERIALIZE_NUMPY),
                         headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert http.get("/v1/models/mnist").status_code == 401
        assert http.get("/v2/health/ready").status_code == 200 and http.get("/metrics").status_code == 200


def test_metrics_need_the_key_when_asked_and_are_open_on_loopback_by_default(repository):
    with running_server(repository["root"], api_key="s3cret-key", metrics_access="key") as running, \
            httpx.Client(base_url=running.url, timeout=30) as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401 and "API key" in refused.json()["error"] and "mnist" not in refused.text
        assert "inference_requests_total" in http.get("/metrics", headers={"Authorization": "Bearer s3cret-key"}).text
        assert http.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("host, access, key, needs_key", [
    ("127.0.0.1", "auto", "k", False), ("0.0.0.0", "auto", "k", True), ("10.1.2.3", "auto", "k", True),
    ("0.0.0.0", "open", "k", False), ("127.0.0.1", "key", "k", True), ("127.0.0.1", "auto", None, False)])
def test_who_may_read_the_metrics(host, access, key, needs_key):
    from helpers.serving.__main__ import metrics_need_key, parse_args

    args = parse_args(["--repository", ".", "--host", host, "--metrics-access", access])
    assert metrics_need_key(args, key) is needs_key


def test_metrics_behind_a_key_need_a_key(repository, capsys, monkeypatch):
    monkeypatch.delenv("COURSE_SERVING_API_KEY", raising=False)
    assert server_main(["--repository", str(repository["root"]), "--metrics-access", "key"]) == 2
    assert "needs an API key" in capsys.readouterr().err


def test_the_server_refuses_a_public_address_without_a_key(repository, capsys, monkeypatch):
    monkeypatch.delenv("COURSE_SERVING_API_KEY", raising=False)
    assert server_main(["--repository", str(repository["root"]), "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_with_batching_concurrent_callers_each_get_their_own_answer(repository):
    # a long delay and a barrier: the 32 requests arrive well within one batching window, however busy the machine
    with running_server(repository["root"], batching=True, batch_max_delay_ms=500) as running:
        barrier = threading.Barrier(32)

        def call(i):
            with serving_client.ServingClient(running.url) as c:
                barrier.wait(timeout=60)
                return c.infer("mnist", X[i % 4 : i % 4 + 1], "images", binary=i % 2 == 0)["outputs"]["logits"]

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(call, range(32)))
        for i, y in enumerate(results):
            np.testing.assert_allclose(y, repository["reference"][i % 4 : i % 4 + 1], atol=1e-4)
        with httpx.Client(base_url=running.url) as http:
            text = http.get("/metrics").text
        assert metric(text, "inference_batch_size_sum", model="mnist") == 32
        assert metric(text, "inference_batch_size_count", model="mnist") < 32  # some calls carried several requests


def test_a_server_that_cannot_start_says_why_and_a_finished_one_is_gone(repository, tmp_path):
    with pytest.raises(RuntimeError, match="no model repository"):
        with running_server(tmp_path / "missing"):
            pass
    with running_server(repository["root"]) as running:
        pid = running.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_operators_can_list_unload_and_load_a_model(repository):
    with running_server(repository["root"]) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        index = http.post("/v2/repository/index").json()
        assert index == [{"name": "mnist", "version": "1", "state": "READY", "reason": ""}]
        assert http.post("/v2/repository/models/mnist/unload").status_code == 200
        assert post_json(http, V2_PATH, v2()).status_code == 404
        assert http.post("/v2/repository/models/mnist/load").status_code == 200
        assert post_json(http, V2_PATH, v2()).status_code == 200
        assert http.post("/v2/repository/models/nope/load").status_code == 404


def test_a_version_replaced_under_the_same_number_is_served_by_its_new_model_with_batching(repository, tmp_path):
    from helpers.serving.repository import publish

    root = tmp_path / "repository"
    shutil.copytree(repository["root"], root)
    with running_server(root, batching=True, poll_interval_s=0.2) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        first = np.reshape(post_json(http, V2_PATH, v2(data=X.reshape(-1), shape=X.shape)).json()["outputs"][0]["data"], (4, 10))
        np.testing.assert_allclose(first, repository["reference"], atol=1e-4)
        publish(repository["v2"], root, "mnist", 1)  # other weights, same version number

        def answers_new_model():
            y = np.reshape(post_json(http, V2_PATH, v2(data=X.reshape(-1), shape=X.shape)).json()["outputs"][0]["data"], (4, 10))
            return np.allclose(y, repository["reference_v2"], atol=1e-4)

        assert wait_for(answers_new_model)


def test_a_deleted_model_folder_unloads_the_model(repository, tmp_path):
    root = tmp_path / "repository"
    shutil.copytree(repository["root"], root)
    (root / "other").mkdir()
    shutil.copytree(repository["root"] / "mnist" / "1", root / "other" / "1")
    with running_server(root, poll_interval_s=0.2) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        assert http.get("/v2/models/other/ready").status_code == 200
        shutil.rmtree(root / "other")
        assert wait_for(lambda: http.get("/v2/models/other/ready").status_code == 404)
        assert 'model_versions_available{model="other"}' not in http.get("/metrics").text
        assert http.get("/v2/models/mnist/ready").status_code == 200


def test_the_floor_endpoints_keep_the_body_limit_and_the_key(repository):
    with running_server(repository["root"], api_key="k", max_body_bytes=1000) as running, httpx.Client(base_url=running.url) as http:
        for path in ("/empty", "/empty-route"):
            assert http.post(path, content=b"{}").status_code == 401
            assert http.post(path, content=b"x" * 2000, headers={"X-API-Key": "k"}).status_code == 413
            assert http.post(path, content=b"{}", headers={"Authorization": "bearer k"}).status_code == 200  # scheme case-insensitive
