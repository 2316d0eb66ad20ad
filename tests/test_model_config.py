"""Per-model config.json: parsing and validation, the version policy, version labels and per-model batching.

Unit tests of helpers.serving.model_config first; then ModelRepository with small real ONNX exports in tmp_path (as in
test_repository.py); then the whole app in-process through ASGI, in both protocols."""

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from small_models import make_export

from helpers.fixes import FIXES
from helpers.serving import client as serving_client
from helpers.serving.app import Settings, create_app
from helpers.serving.batching import DirectCalls, DynamicBatcher
from helpers.serving.model_config import (
    NO_CONFIG,
    CallSettings,
    ModelConfig,
    ModelConfigError,
    VersionPolicy,
    parse_config,
    select_versions,
)
from helpers.serving.repository import NOT_IN_POLICY, ModelNotFound, ModelRepository, VersionNotReady, publish

X = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
PATH = "/repo/mnist/config.json"


def parsed(document):
    return parse_config(json.dumps(document).encode(), PATH)


# --------------------------------------------------------------------------- parsing and validation


def test_a_full_config_parses_into_its_settings_policy_and_labels():
    config = parsed({"batching": {"enabled": True, "max_batch_size": 16, "max_delay_ms": 5}, "max_queue": 64,
                     "version_policy": {"latest": {"num_versions": 2}}, "version_labels": {"stable": 1, "canary": 2}})
    assert config.calls == CallSettings(True, 16, 5, 64)
    assert config.policy == VersionPolicy("latest", num_versions=2) and str(config.policy) == "latest 2"
    assert config.labels == {"stable": 1, "canary": 2} and config.path == PATH
    assert parsed({}) == ModelConfig(path=PATH) and NO_CONFIG == ModelConfig()  # every key optional: an empty file changes nothing
    assert parsed({"version_policy": {"specific": {"versions": [3, 1]}}}).policy.versions == {1, 3}


def test_call_settings_override_only_what_the_config_names():
    settings = Settings(repository=Path("."), batching=False, batch_max_size=32, batch_max_delay_ms=2.0, max_queue=256)
    assert CallSettings(True, None, 7.5, 0).effective(settings) == CallSettings(True, 32, 7.5, 0)
    assert CallSettings().effective(settings) == CallSettings(False, 32, 2.0, 256)


BAD = [
    ({"batchng": {}}, "unknown key 'batchng'"),
    ({"batching": True}, "'batching' must be an object"),
    ({"batching": {"enabled": "yes"}}, "'enabled' must be true or false"),
    ({"batching": {"max_batch_size": 0}}, "'max_batch_size' must be a positive integer"),
    ({"batching": {"max_delay_ms": -1}}, "'max_delay_ms' must be a number of milliseconds >= 0"),
    ({"batching": {"size": 4}}, "'batching' has unknown key 'size'"),
    ({"max_queue": -5}, "'max_queue' must be a non-negative integer"),
    ({"max_queue": 2.5}, "'max_queue' must be a non-negative integer"),
    ({"version_policy": {"latest": {"num_versions": 1}, "specific": {"versions": [1]}}}, "must be exactly one of"),
    ({"version_policy": "latest"}, "must be exactly one of"),
    ({"version_policy": {"newest": {}}}, "it names 'newest'"),
    ({"version_policy": {"latest": {"num_versions": 0}}}, "'num_versions' must be a positive integer"),
    ({"version_policy": {"latest": {}}}, "must be an object with exactly 'num_versions'"),
    ({"version_policy": {"all": {"versions": [1]}}}, "'all' must be an object with no keys"),
    ({"version_policy": {"specific": {"versions": []}}}, "non-empty list of distinct positive integers"),
    ({"version_policy": {"specific": {"versions": [1, 1]}}}, "non-empty list of distinct positive integers"),
    ({"version_labels": {"stable": "two"}}, "label 'stable' must name a version number"),
    ({"version_labels": {"stable": True}}, "label 'stable' must name a version number"),
    ({"version_labels": {"stable/1": 1}}, "label 'stable/1' must be letters, digits"),
    ({"version_labels": {"2": 1}}, "label '2' must be letters"),
    ({"version_labels": {"canary": 2}, "version_policy": {"specific": {"versions": [1]}}},
     "label 'canary' names version 2, which the 'specific' policy does not serve"),
    ([1, 2], "it holds a JSON list, not an object"),
]


@pytest.mark.parametrize("document, problem", BAD, ids=[problem for _, problem in BAD])
def test_each_bad_config_is_refused_naming_the_file_the_problem_and_the_fix(document, problem):
    with pytest.raises(ModelConfigError) as refused:
        parsed(document)
    text = str(refused.value)
    assert text.startswith(f"refusing {PATH}: ") and problem in text, text
    assert text.endswith("Fix: " + FIXES["model-config"].fix)


@pytest.mark.parametrize("raw, problem", [(b"{\"max_queue\": 1,}", "not valid JSON"), (b"\xff{}", "not UTF-8"),
                                          (b'{"max_queue": 1, "max_queue": 2}', "'max_queue' is given twice"),
                                          (b" " * 70_000, "more than a config's limit")])
def test_a_file_that_is_not_a_json_object_is_refused_too(raw, problem):
    with pytest.raises(ModelConfigError, match=problem) as refused:
        parse_config(raw, PATH)
    assert PATH in str(refused.value)


def test_the_error_lists_every_problem_not_just_the_first():
    with pytest.raises(ModelConfigError) as refused:
        parsed({"max_queue": -1, "colour": "blue", "batching": {"enabled": 1}, "version_labels": {"a": 0}})
    text = str(refused.value)
    for problem in ("'max_queue'", "unknown key 'colour'", "'enabled'", "label 'a' must name a version number"):
        assert problem in text, (problem, text)


def test_select_versions_follows_tf_servings_policies():
    on_disk = {1, 2, 3, 5}
    assert select_versions(VersionPolicy("latest", num_versions=2), on_disk) == {3, 5}  # numbers, not load order
    assert select_versions(VersionPolicy("latest", num_versions=9), on_disk) == on_disk
    assert select_versions(VersionPolicy("all"), on_disk) == on_disk
    assert select_versions(VersionPolicy("specific", versions=frozenset({1, 4})), on_disk) == {1}  # 4: not on disk yet
    assert select_versions(VersionPolicy("latest", num_versions=1), set()) == set()


# --------------------------------------------------------------------------- the repository: policy and config changes


@dataclass(frozen=True)
class Exports:
    v1: Path
    reference_v1: np.ndarray
    v2: Path
    reference_v2: np.ndarray
    corrupt: Path  # v2 with one byte changed in model.onnx: fails verification


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Exports:
    tmp = tmp_path_factory.mktemp("model-config")
    v1, reference_v1 = make_export(tmp, seed=1, x=X)
    v2, reference_v2 = make_export(tmp, seed=2, x=X)
    corrupt = tmp / "corrupt"
    shutil.copytree(v2, corrupt)
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (corrupt / "model.onnx").write_bytes(bytes(data))
    return Exports(v1, reference_v1, v2, reference_v2, corrupt)


def repository_with(tmp_path, versions: dict, config=None, model: str = "mnist") -> Path:
    """A repository root holding `model` with `versions` (number -> export folder) and, if given, its config.json."""
    root = tmp_path / "repository"
    for version, source in versions.items():
        publish(source, root, model, version)
    if config is not None:
        write_config(root, config, model)
    return root


def write_config(root: Path, config, model: str = "mnist") -> None:
    (root / model / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))


def states(repository: ModelRepository, model: str = "mnist") -> dict[int, str]:
    return {v: s.state for v, s in repository.versions(model).items()}


def latest(n: int) -> dict:
    return {"version_policy": {"latest": {"num_versions": n}}}


def test_latest_n_loads_only_the_newest_and_unloads_the_oldest_when_a_newer_one_arrives(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2}, latest(1))
    loads = []
    repository = ModelRepository(root, on_load=lambda model, version, ok: loads.append(version))
    repository.scan()
    assert states(repository) == {1: "END", 2: "AVAILABLE"} and loads == [2]  # version 1 is never even read
    assert repository.versions("mnist")[1].backend is None and repository.versions("mnist")[1].error == NOT_IN_POLICY
    with pytest.raises(ModelNotFound, match="version 1 is not loaded: not in the version policy"):
        repository.get("mnist", 1)
    write_config(root, latest(2))
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"}
    publish(exports.v1, root, "mnist", 3)
    repository.scan()
    assert states(repository) == {1: "END", 2: "AVAILABLE", 3: "AVAILABLE"} and repository.get("mnist").version == 3


def test_specific_serves_only_the_versions_it_lists(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2, 3: exports.v1},
                           {"version_policy": {"specific": {"versions": [1, 3]}}})
    loads = []
    repository = ModelRepository(root, on_load=lambda model, version, ok: loads.append(version))
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "END", 3: "AVAILABLE"} and loads == [1, 3]


def test_all_and_no_config_at_all_serve_every_version(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2})
    repository = ModelRepository(root)
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"}  # without a config: today's behaviour, every version
    write_config(root, {"version_policy": {"all": {}}})
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"}


def test_a_policy_change_unloads_and_loads_on_the_next_scan(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2})
    repository = ModelRepository(root)
    repository.scan()
    write_config(root, latest(1))
    repository.scan()
    assert states(repository) == {1: "END", 2: "AVAILABLE"}
    write_config(root, {"version_policy": {"specific": {"versions": [1]}}})
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "END"}
    assert np.allclose(repository.get("mnist").backend.predict(X), exports.reference_v1, atol=1e-4)  # loaded again
    (root / "mnist" / "config.json").unlink()  # no file: the server's defaults again, every version
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"}


def test_a_version_the_policy_drops_keeps_serving_while_its_successor_fails_to_load(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1}, latest(1))
    repository = ModelRepository(root)
    repository.scan()
    publish(exports.corrupt, root, "mnist", 2)
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "UNAVAILABLE"} and repository.get("mnist").version == 1
    assert "serving until a version it selects is available" in repository.reports(repository.entry("mnist"))[1]
    publish(exports.v2, root, "mnist", 2)
    repository.scan()
    assert states(repository) == {1: "END", 2: "AVAILABLE"}


def test_an_invalid_config_keeps_the_previous_one_in_force_and_is_reported_and_logged_once(exports, tmp_path, caplog):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2}, latest(1))
    repository = ModelRepository(root)
    repository.scan()
    serving = repository.get("mnist", 2)
    write_config(root, {"version_policy": {"latest": {"num_versions": -1}}, "max_queu": 3})
    with caplog.at_level(logging.ERROR, logger="helpers.serving"):
        repository.scan()
        repository.scan()
    entry = repository.entry("mnist")
    assert states(repository) == {1: "END", 2: "AVAILABLE"} and repository.get("mnist", 2) is serving  # latest 1 stays
    assert str(root / "mnist" / "config.json") in entry.config_error and "'num_versions'" in entry.config_error
    assert "unknown key 'max_queu'" in entry.config_error
    assert all(entry.config_error in report for report in repository.reports(entry).values())
    assert sum("config.json" in r.message for r in caplog.records) == 1  # once, not once per scan
    write_config(root, latest(2))
    repository.scan()
    assert repository.entry("mnist").config_error == "" and states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"}


def test_an_invalid_config_with_none_before_it_serves_with_the_servers_settings(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2}, "{not json")
    repository = ModelRepository(root)
    repository.scan()
    assert states(repository) == {1: "AVAILABLE", 2: "AVAILABLE"} and "not valid JSON" in repository.entry("mnist").config_error


def test_a_config_change_makes_new_states_for_new_callers_only_when_batching_or_queue_change(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1})
    repository = ModelRepository(root)
    repository.scan()
    first = repository.get("mnist", 1)
    write_config(root, {"version_labels": {"stable": 1}})
    repository.scan()
    assert repository.get("mnist", 1) is first and repository.get("mnist", label="stable") is first
    write_config(root, {"version_labels": {"stable": 1}, "max_queue": 3})
    repository.scan()
    second = repository.get("mnist", 1)
    assert second is not first and second.backend is first.backend and second.calls.max_queue == 3  # not reloaded


# --------------------------------------------------------------------------- the app, both protocols


def app_over(root: Path, **settings):
    app = create_app(Settings(repository=root, request_timeout_s=60, **settings))
    server = app.app.state.server
    server.repository.scan()  # ASGITransport runs no lifespan: the first scan by hand
    return app, server


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server", timeout=60)


async def predict(http, path: str, x=X) -> httpx.Response:
    return await http.post(path, content=orjson.dumps({"instances": x.tolist()}), headers={"Content-Type": "application/json"})


async def infer(http, server, path: str = "/v2/models/mnist/infer", x=X) -> httpx.Response:
    content, headers = serving_client.infer_request(x, server.repository.get("mnist").backend.input.name, binary=False)
    return await http.post(path, content=content, headers=headers)


def v2_outputs(answer: httpx.Response) -> np.ndarray:
    (tensor,) = answer.json()["outputs"]
    return np.reshape(tensor["data"], tensor["shape"])


def metric(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def close(server) -> None:
    await asyncio.gather(*(caller.close() for _, caller in server.callers.values()))
    server.pool.shutdown()


def test_labels_answer_tf_serving_status_metadata_and_predict(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2, 4: exports.corrupt},
                           {"version_labels": {"stable": 1, "canary": 2, "ghost": 3, "broken": 4}})
    app, server = app_over(root)

    async def main():
        async with client(app) as http:
            answers = {
                "status": await http.get("/v1/models/mnist/labels/stable"),
                "metadata": await http.get("/v1/models/mnist/labels/canary/metadata"),
                "stable": await predict(http, "/v1/models/mnist/labels/stable:predict"),
                "canary": await predict(http, "/v1/models/mnist/labels/canary:predict"),
                "ghost": await predict(http, "/v1/models/mnist/labels/ghost:predict"),
                "ghost_status": await http.get("/v1/models/mnist/labels/ghost"),
                "broken": await predict(http, "/v1/models/mnist/labels/broken:predict"),
                "broken_status": await http.get("/v1/models/mnist/labels/broken"),
                "unknown": await http.get("/v1/models/mnist/labels/nope/metadata"),
            }
        await close(server)
        return answers

    a = asyncio.run(main())
    (status,) = a["status"].json()["model_version_status"]
    assert a["status"].status_code == 200 and status["version"] == "1" and status["state"] == "AVAILABLE"
    assert a["metadata"].status_code == 200 and a["metadata"].json()["model_spec"]["version"] == "2"
    np.testing.assert_allclose(a["stable"].json()["predictions"], exports.reference_v1, atol=1e-4)
    np.testing.assert_allclose(a["canary"].json()["predictions"], exports.reference_v2, atol=1e-4)
    assert a["ghost"].status_code == 404 and "label 'ghost' names version 3, which is not loaded" in a["ghost"].json()["error"]
    assert a["ghost_status"].status_code == 404 and "label 'ghost' names version 3" in a["ghost_status"].json()["error"]
    assert a["broken"].status_code == 503
    assert "label 'broken' names version 4, which is not available: IntegrityError" in a["broken"].json()["error"]
    assert a["broken_status"].json()["model_version_status"][0]["state"] == "END"  # TF Serving's word for a failed load
    assert a["unknown"].status_code == 404
    assert "no version label 'nope' (its labels: 'broken', 'canary', 'ghost', 'stable'" in a["unknown"].json()["error"]


def test_an_invalid_config_is_reported_in_both_protocols_and_in_the_metrics(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1}, {"max_queue": "many"})
    app, server = app_over(root)

    async def main():
        async with client(app) as http:
            status = await http.get("/v1/models/mnist")
            index = await http.post("/v2/repository/index")
            before = (await http.get("/metrics")).text
            write_config(root, {"max_queue": 8})
            await asyncio.to_thread(server.repository.scan)
            after = (await http.get("/metrics")).text
            fixed = await http.get("/v1/models/mnist")
        await close(server)
        return status, index, before, after, fixed

    status, index, before, after, fixed = asyncio.run(main())
    message = status.json()["model_version_status"][0]["status"]["error_message"]
    assert "config.json" in message and "'max_queue' must be a non-negative integer" in message
    (row,) = index.json()
    assert row["state"] == "READY" and "'max_queue' must be a non-negative integer" in row["reason"]
    assert metric(before, "model_config_errors", model="mnist") == 1.0
    assert metric(after, "model_config_errors", model="mnist") == 0.0
    assert fixed.json()["model_version_status"][0]["status"]["error_message"] == ""


def test_the_version_policy_applies_to_the_v2_protocol_too(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1, 2: exports.v2}, latest(1))
    app, server = app_over(root)

    async def main():
        async with client(app) as http:
            pinned = await infer(http, server, "/v2/models/mnist/versions/1/infer")
            unpinned = await infer(http, server)
            index = await http.post("/v2/repository/index")
        await close(server)
        return pinned, unpinned, index

    pinned, unpinned, index = asyncio.run(main())
    assert pinned.status_code == 404 and "not in the version policy" in pinned.json()["error"]
    np.testing.assert_allclose(v2_outputs(unpinned), exports.reference_v2, atol=1e-4)
    assert [(r["version"], r["state"], r["reason"]) for r in index.json()] == [
        ("1", "UNAVAILABLE", NOT_IN_POLICY), ("2", "READY", "")]


def test_a_model_with_batching_in_its_config_is_batched_while_the_global_settings_are_not(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1},
                           {"batching": {"enabled": True, "max_batch_size": 8, "max_delay_ms": 1}, "max_queue": 7})
    publish(exports.v2, root, "plain", 1)  # no config.json: the global settings
    app, server = app_over(root, batching=False)

    async def main():
        async with client(app) as http:
            v2 = await infer(http, server)
            v1 = await predict(http, "/v1/models/mnist:predict")
            plain = await predict(http, "/v1/models/plain:predict")
            callers = {(model, state.version): caller for state, caller in server.callers.values()
                       for model, versions in server.repository.models.items() if versions.get(state.version) is state}
        await close(server)
        return v2, v1, plain, callers

    v2, v1, plain, callers = asyncio.run(main())
    np.testing.assert_allclose(v2_outputs(v2), exports.reference_v1, atol=1e-4)
    np.testing.assert_allclose(v1.json()["predictions"], exports.reference_v1, atol=1e-4)
    np.testing.assert_allclose(plain.json()["predictions"], exports.reference_v2, atol=1e-4)
    batcher = callers[("mnist", 1)]
    assert isinstance(batcher, DynamicBatcher) and batcher.max_batch_size == 8 and batcher.max_delay_s == 0.001
    assert batcher.queue.maxsize == 7
    assert isinstance(callers[("plain", 1)], DirectCalls)


def test_a_config_change_gives_the_version_a_new_caller_and_strands_no_request(exports, tmp_path):
    # the batcher waits a minute for companions; the config changes meanwhile: the old batcher must answer at once
    root = repository_with(tmp_path, {1: exports.v1}, {"batching": {"enabled": True, "max_batch_size": 64,
                                                                    "max_delay_ms": 60_000}})
    app, server = app_over(root)

    async def main():
        async with client(app) as http:
            waiting = asyncio.ensure_future(infer(http, server))
            for _ in range(2000):
                if server.callers and next(iter(server.callers.values()))[1].taken:
                    break
                await asyncio.sleep(0.005)
            (old_state, old_batcher), = server.callers.values()
            write_config(root, {"batching": {"enabled": True, "max_batch_size": 64, "max_delay_ms": 1}})
            await asyncio.to_thread(server.repository.scan)
            second = await asyncio.wait_for(infer(http, server), 30)  # its new caller closes the old one
            first = await asyncio.wait_for(waiting, 30)  # before the old caller was closed: stranded for a minute
            new_state = server.repository.get("mnist", 1)
            new_caller = server.callers[id(new_state)][1]
        await close(server)
        return first, second, old_state, old_batcher, new_state, new_caller

    first, second, old_state, old_batcher, new_state, new_caller = asyncio.run(main())
    assert first.status_code == 200 and second.status_code == 200
    np.testing.assert_allclose(v2_outputs(first), exports.reference_v1, atol=1e-4)
    np.testing.assert_allclose(v2_outputs(second), exports.reference_v1, atol=1e-4)
    assert old_batcher.closed and new_caller is not old_batcher and new_caller.max_delay_s == 0.001
    assert new_state is not old_state and new_state.backend is old_state.backend  # the same model: not reloaded
    assert id(old_state) not in server.callers


def test_unpinned_and_pinned_errors_still_read_as_before(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1})
    repository = ModelRepository(root)
    repository.scan()
    with pytest.raises(ModelNotFound, match="has no version 5"):
        repository.get("mnist", 5)
    publish(exports.corrupt, root, "mnist", 2)
    repository.scan()
    with pytest.raises(VersionNotReady, match="version 2 is not available"):
        repository.get("mnist", 2)


def test_the_config_route_shows_the_config_in_force_and_a_refused_files_error(exports, tmp_path):
    root = repository_with(tmp_path, {1: exports.v1}, {"max_queue": 8, "version_labels": {"stable": 1}})
    app, server = app_over(root, batch_max_delay_ms=3)

    async def main():
        async with client(app) as http:
            applied = (await http.get("/v2/models/mnist/config")).json()
            write_config(root, {"batching": {"enabled": True, "max_delay_ms": 7}, "max_qeue": 4})  # a typo: refused
            await asyncio.to_thread(server.repository.scan)
            refused = (await http.get("/v2/models/mnist/config")).json()
            unknown = await http.get("/v2/models/fashion/config")
        await close(server)
        return applied, refused, unknown

    applied, refused, unknown = asyncio.run(main())
    assert applied["file"].endswith("config.json") and applied["error"] == "" and applied["max_queue"] == 8
    assert applied["batching"] == {"enabled": False, "max_batch_size": 32, "max_delay_ms": 3}  # the server's settings
    assert applied["version_labels"] == {"stable": 1} and applied["version_policy"] == "all"
    assert "max_qeue" in refused["error"] and refused["max_queue"] == 8 and refused["batching"]["enabled"] is False
    assert unknown.status_code == 404
