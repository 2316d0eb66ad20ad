"""The server's :explain (helpers/serving/explainer.py, chapter 13): a version ships its PyTorch twin as weights
(safetensors) and a description of its layers; the twin is checked against the served model when the version loads,
and answers attribution maps over HTTP with the validation, limits and metrics of :predict. The loading checks run in
process; the routes on real servers on free 127.0.0.1 ports."""

import shutil

import httpx
import numpy as np
import orjson
import pytest
import torch
from metrics_text import metric
from small_models import make_export, model_of, repository_of

from helpers import attributions
from helpers.integrity import IntegrityError, read_manifest
from helpers.serving import explainer
from helpers.serving.backends import load_backend
from helpers.serving.client import ServingClient
from helpers.serving.process import running_server

RNG = np.random.default_rng(13)
X = RNG.random((3, 1, 28, 28), dtype=np.float32)
EXPLAIN = "/v1/models/mnist:explain"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """An export of seed 1 with its explainer, and the same export without one."""
    tmp = tmp_path_factory.mktemp("explain")
    plain, _ = make_export(tmp, seed=1, x=X)
    with_explainer = tmp / "with_explainer"
    shutil.copytree(plain, with_explainer)
    explainer.add_explainer(with_explainer, model_of(1))
    return {"tmp": tmp, "plain": plain, "explained": with_explainer}


def post(http, path, document):
    return http.post(path, content=orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
                     headers={"Content-Type": "application/json"})


# --------------------------------------------------------------------------- the explainer, in process


def test_an_explainer_is_weights_and_a_layer_list_listed_in_the_manifest(explained):
    manifest = read_manifest(explained["explained"])
    spec = manifest["explainer"]
    assert spec["file"] == explainer.EXPLAINER and spec["file"] in manifest["files"]
    assert spec["layers"] == [["conv2d", 1, 32, 3], ["relu"], ["maxpool2d", 2], ["flatten"], ["linear", 5408, 10]]
    backend = load_backend(explained["explained"])
    assert backend.explainer is not None and load_backend(explained["plain"]).explainer is None
    expected = attributions.attribute(model_of(1), X, np.array([0, 3, 9]), "saliency")
    got = backend.explainer.explain(X, "saliency", np.array([0, 3, 9]))
    np.testing.assert_allclose(got.attributions, expected, rtol=1e-5, atol=1e-7)


def test_the_default_target_is_the_served_models_top_class_and_ig_reports_its_completeness(explained):
    backend = load_backend(explained["explained"])
    result = backend.explainer.explain(X, "integrated_gradients", steps=64)
    assert list(result.targets) == list(backend.predict(X).argmax(1))
    assert result.deltas is not None and result.deltas.shape == (3,)
    change = backend.predict(X)[np.arange(3), result.targets] - backend.predict(np.zeros_like(X))[0, result.targets]
    np.testing.assert_allclose(result.attributions.reshape(3, -1).sum(1) - change, result.deltas, atol=1e-3)


def test_an_explainer_of_other_weights_is_refused_naming_its_file(explained, tmp_path):
    folder = tmp_path / "mismatched"
    shutil.copytree(explained["plain"], folder)
    explainer.add_explainer(folder, model_of(2))  # passes the manifest: it was written with it
    with pytest.raises(ValueError, match="explainer.safetensors computes other answers than the served model"):
        load_backend(folder)


def test_a_changed_explainer_file_is_refused_by_the_manifest(explained, tmp_path):
    folder = tmp_path / "changed"
    shutil.copytree(explained["explained"], folder)
    data = bytearray((folder / explainer.EXPLAINER).read_bytes())
    data[-5] ^= 0xFF
    (folder / explainer.EXPLAINER).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="explainer.safetensors"):
        load_backend(folder)


@pytest.mark.parametrize("module, message", [
    (torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.Flatten()), "settings"),
    (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Sigmoid()), "cannot be described"),
    (torch.nn.Linear(784, 10), "nn.Sequential"),
])
def test_only_an_allowlist_of_plain_layers_can_be_described(module, message):
    with pytest.raises(ValueError, match=message):
        explainer.describe(module)


@pytest.mark.parametrize("layers", [[["os.system", "touch x"]], [["linear", "784", 10]], [["relu", 1]], [], "conv2d"])
def test_a_layer_list_naming_anything_else_is_refused(layers):
    with pytest.raises(ValueError):
        explainer.build(layers)


# --------------------------------------------------------------------------- :explain over HTTP


@pytest.fixture(scope="module")
def server(explained):
    tmp = explained["tmp"]
    root = repository_of(explained["explained"], tmp / "served")
    shutil.copytree(explained["plain"], root / "plain" / "1")
    with running_server(root, name="explain") as running:
        yield running


def test_explain_answers_a_map_per_instance_for_every_method(server):
    with ServingClient(server.url) as client:
        predicted = client.predict("mnist", X).argmax(1)
        for method in explainer.METHODS:
            answer = client.explain("mnist", X, method=method)
            assert answer["attributions"].shape == X.shape and answer["method"] == method
            assert list(answer["targets"]) == list(predicted)
            assert np.isfinite(answer["attributions"]).all() and np.abs(answer["attributions"]).sum() > 0
            assert (answer["deltas"] is not None) == (method == "integrated_gradients")
        chosen = client.explain("mnist", X, method="saliency", targets=[1, 2, 3], version=1)
        assert list(chosen["targets"]) == [1, 2, 3]
        expected = attributions.attribute(model_of(1), X, np.array([1, 2, 3]), "saliency")
        np.testing.assert_allclose(chosen["attributions"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("document, status, words", [
    ({"instances": X[:1], "method": "lime"}, 400, "unknown method"),
    ({"instances": X[:2], "targets": [1]}, 400, "'targets' must be a list of 2"),
    ({"instances": X[:1], "targets": [10]}, 400, "each 0 to 9"),
    ({"instances": X[:1], "targets": [True]}, 400, "'targets'"),
    ({"instances": X[:1], "steps": 1}, 400, "'steps' must be an integer from 2"),
    ({"instances": X[:1], "steps": 10_000}, 400, "'steps'"),
    ({"instances": np.zeros((17, 1, 28, 28))}, 400, "exceeds this server's limit of 16"),
    ({"inputs": X[:1]}, 400, "'instances' (row format) only"),
    ({"instances": X[:1], "baseline": 0.5}, 400, "unknown field 'baseline'"),
    ({"instances": X[:1] + 1.0}, 400, "outside [0, 1]"),
    ({"instances": []}, 400, ""),
])
def test_bad_explain_requests_get_a_4xx_json_error_and_the_server_keeps_serving(server, document, status, words):
    with httpx.Client(base_url=server.url) as http:
        answer = post(http, EXPLAIN, document)
        assert answer.status_code == status and words in answer.json()["error"], answer.text
        assert post(http, "/v1/models/mnist:predict", {"instances": X[:1]}).status_code == 200


def test_a_version_without_an_explainer_says_how_to_add_one(server):
    with httpx.Client(base_url=server.url) as http:
        answer = post(http, "/v1/models/plain:explain", {"instances": X[:1]})
        assert answer.status_code == 400 and "ships no explainer" in answer.json()["error"]
        assert "add_explainer" in answer.json()["error"]
        assert post(http, "/v1/models/nothing:explain", {"instances": X[:1]}).status_code == 404


def test_explanations_are_counted_under_their_own_endpoint_and_timed_by_method(server):
    with ServingClient(server.url) as client:
        client.explain("mnist", X[:1], method="occlusion")
        text = client.http.get("/metrics").text
    assert metric(text, "inference_requests_total", model="mnist", version="1", endpoint="v1_explain", code="200") >= 1
    assert metric(text, "inference_explain_duration_seconds_count", model="mnist", version="1", method="occlusion") >= 1
    assert metric(text, "inference_requests_total", endpoint="v1_predict", code="200") >= 1  # :predict keeps its name


def test_a_top_class_only_server_refuses_to_explain(explained, tmp_path):
    root = repository_of(explained["explained"], tmp_path)
    with running_server(root, name="explain-top-class", top_class_only=True) as running, \
            httpx.Client(base_url=running.url) as http:
        answer = post(http, EXPLAIN, {"instances": X[:1]})
        assert answer.status_code == 403 and "gradients" in answer.json()["error"]
