"""Rolling a version out (helpers/serving/rollout.py, chapter 11), in process through httpx's ASGI transport: version
labels in both protocols, the traffic split's proportions (binomial tolerance), sticky assignment by X-Routing-Key, a
canary that cannot answer giving its share to the others, shadow traffic that is never on the response path and never
fails a request, its comparisons and metrics, and a config.json rewritten under traffic (every answer 200, each
request served by the config in force: the swap is atomic). The configs' checks are in test_model_config.py's style:
every refusal names the problem."""

import asyncio
import functools
import json
import threading
import time

import httpx
import numpy as np
import pytest
from metrics_text import metric

from helpers.serving import client as serving_client
from helpers.serving import rollout
from helpers.serving.app import Settings, create_app
from helpers.serving.backends import Backend, TensorSpec
from helpers.serving.model_config import ModelConfigError, parse_config
from helpers.serving.repository import ModelVersions, VersionState, publish, write_config

X = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)


class Answers(Backend):
    """Answers class `top` for every row (or the first ten pixels, with top=None), after `delay_s`; raises if `fail`."""

    platform = "fake"
    input = TensorSpec("images", (-1, 1, 28, 28))
    output = TensorSpec("logits", (-1, 10))

    def __init__(self, top: int | None = None, delay_s: float = 0.0, fail: bool = False):
        self.top, self.delay_s, self.fail, self.calls = top, delay_s, fail, 0

    def predict(self, x):
        if x.any():  # not the warm-up's zeros
            self.calls += 1
            time.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("the shadow is broken")
        y = x.reshape(len(x), -1)[:, :10].copy()
        if self.top is not None:
            y[:, self.top] = 10.0
        return y


def config(**document):
    return parse_config(json.dumps(document).encode(), "config.json")


def synchronously(test):
    """An async test run on an event loop of its own (the suite has no async plugin)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def serving(tmp_path, backends: dict[int, Backend], **document):
    """An app serving `backends` as mnist's versions, with the config `document` (put in by hand: no files, no scan)."""
    app = create_app(Settings(repository=tmp_path))
    server = app.app.state.server
    states = {v: VersionState(v, "AVAILABLE" if b is not None else "UNAVAILABLE", backend=b) for v, b in backends.items()}
    server.repository.models = {"mnist": ModelVersions(states, config(**document))}
    return app, server


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server", timeout=60)


async def version_of(http, path="/v2/models/mnist/infer", key=None, x=X) -> int:
    content, headers = serving_client.infer_request(x, "images", binary=False)
    answer = await http.post(path, content=content, headers={**headers, **({"X-Routing-Key": key} if key else {})})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["model_version"])


LABELS = {"version_labels": {"stable": 1, "canary": 2}}


# --------------------------------------------------------------------------- the config file

@pytest.mark.parametrize("document,problem", [
    ({**LABELS, "traffic_split": {"stable": 90, "canary": 20}}, "add up to 100, they add up to 110"),
    ({**LABELS, "traffic_split": {"stable": 90, "beta": 10}}, "'beta' is not a label"),
    ({**LABELS, "traffic_split": {"stable": 110, "canary": -10}}, "percentage >= 0"),
    ({**LABELS, "traffic_split": {}}, "must be an object like"),
    ({"traffic_split": {"stable": 100}}, "'stable' is not a label"),
    ({**LABELS, "shadow": "beta"}, "'shadow' must name a label"),
    ({**LABELS, "shadow": ["canary"]}, "'shadow' must name a label"),
])
def test_a_bad_split_or_shadow_is_refused_naming_the_problem(document, problem):
    with pytest.raises(ModelConfigError, match="refusing config.json") as refused:
        config(**document)
    assert problem in str(refused.value)


def test_a_split_keeps_the_files_order_and_a_shadow_its_label():
    parsed = config(**LABELS, traffic_split={"stable": 99.5, "canary": 0.5}, shadow="canary")
    assert parsed.split == (("stable", 99.5), ("canary", 0.5)) and parsed.shadow == "canary"


def test_split_label_lays_the_shares_along_the_unit_interval_in_order():
    split = (("stable", 90.0), ("canary", 10.0))
    assert [rollout.split_label(split, p) for p in (0.0, 0.8999, 0.9, 0.9999, 1.0)] == \
        ["stable", "stable", "canary", "canary", "canary"]
    assert rollout.split_label((("stable", 100.0), ("canary", 0.0)), 0.99999999) == "stable"


# --------------------------------------------------------------------------- labels and the split, over HTTP

@synchronously
async def test_labels_name_versions_in_both_protocols(tmp_path):
    app, _ = serving(tmp_path, {1: Answers(1), 2: Answers(2)}, **LABELS)
    async with client(app) as http:
        assert await version_of(http, "/v2/models/mnist/versions/canary/infer") == 2
        assert await version_of(http, "/v2/models/mnist/versions/stable/infer") == 1
        assert await version_of(http, "/v2/models/mnist/versions/1/infer") == 1
        tfs = await http.post("/v1/models/mnist/labels/canary:predict", json={"instances": X.tolist()})
        assert tfs.status_code == 200 and np.argmax(tfs.json()["predictions"][0]) == 2
        unknown = await http.post("/v2/models/mnist/versions/beta/infer", json={})
        assert unknown.status_code == 404 and "no version label 'beta'" in unknown.json()["error"]
        meta = await http.get("/v2/models/mnist/versions/canary")
        assert meta.status_code == 200


@pytest.mark.parametrize("canary_percent", [10.0, 50.0])
@synchronously
async def test_unpinned_requests_follow_the_split_within_binomial_tolerance(tmp_path, canary_percent):
    app, server = serving(tmp_path, {1: Answers(1), 2: Answers(2)}, **LABELS,
                          traffic_split={"stable": 100 - canary_percent, "canary": canary_percent})
    n = 2000
    async with client(app) as http:
        versions = [await version_of(http) for _ in range(n)]
    p = canary_percent / 100
    share = versions.count(2) / n
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n), share  # a wrong split (or none) is 10+ sigma off
    routed = server.metrics.routed.labels("mnist", "canary", "2")._value.get()
    assert routed == versions.count(2)


@synchronously
async def test_without_a_split_the_latest_version_answers(tmp_path):
    app, _ = serving(tmp_path, {1: Answers(1), 2: Answers(2)}, **LABELS)
    async with client(app) as http:
        assert {await version_of(http) for _ in range(20)} == {2}


@synchronously
async def test_a_routing_key_is_sticky_and_a_growing_canary_keeps_its_users(tmp_path):
    app, server = serving(tmp_path, {1: Answers(1), 2: Answers(2)}, **LABELS, traffic_split={"stable": 90, "canary": 10})
    keys = [f"user-{i}" for i in range(300)]
    async with client(app) as http:
        first = {key: await version_of(http, key=key) for key in keys}
        again = {key: await version_of(http, key=key) for key in keys}
        assert first == again  # the same key, the same side, request after request
        assert 10 < list(first.values()).count(2) < 55  # about 10 % of 300 keys: the key decides, not always one side
        server.repository.models = {"mnist": ModelVersions(server.repository.models["mnist"],
                                                           config(**LABELS, traffic_split={"stable": 50, "canary": 50}))}
        wider = {key: await version_of(http, key=key) for key in keys}
    assert all(wider[key] == 2 for key, version in first.items() if version == 2)
    assert list(wider.values()).count(2) > list(first.values()).count(2)


@synchronously
async def test_a_canary_that_cannot_answer_gives_its_share_to_the_others(tmp_path):
    app, _ = serving(tmp_path, {1: Answers(1), 2: None}, **LABELS, traffic_split={"stable": 50, "canary": 50})  # 2 failed
    async with client(app) as http:
        assert {await version_of(http) for _ in range(50)} == {1}
        pinned = await http.post("/v2/models/mnist/versions/canary/infer", json={})
        assert pinned.status_code == 503  # asked for by name, it says why it cannot answer


# --------------------------------------------------------------------------- shadow traffic

async def wait_for_shadow(server, rows: int, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while sum(r["rows"] for r in server.shadow.report("mnist")["comparisons"]) < rows:
        assert time.monotonic() < deadline, server.shadow.report("mnist")
        await asyncio.sleep(0.01)
    return server.shadow.report("mnist")


@synchronously
async def test_a_slow_shadow_never_delays_the_caller_and_its_answers_are_never_returned(tmp_path):
    shadow = Answers(7, delay_s=0.2)
    app, server = serving(tmp_path, {1: Answers(1), 2: shadow}, version_labels={"stable": 1, "candidate": 2},
                          traffic_split={"stable": 100}, shadow="candidate")
    async with client(app) as http:
        started = time.perf_counter()
        versions = [await version_of(http) for _ in range(20)]
        took = time.perf_counter() - started
        assert versions == [1] * 20 and took < 1.0, took  # 20 shadow calls on the path would take 4 s at least
        report = await wait_for_shadow(server, 20)
    outcomes = {r["outcome"]: r["rows"] for r in report["comparisons"]}
    assert outcomes == {"disagree": 20} and shadow.calls < 20  # batched: several copies per shadow call
    assert {(d["served"]["class"], d["shadow"]["class"]) for d in report["disagreements"]} == {(1, 7)}
    assert np.allclose(report["disagreements"][0]["input"], X.ravel())


@synchronously
async def test_a_failing_shadow_never_fails_a_request_and_is_counted(tmp_path, caplog):
    app, server = serving(tmp_path, {1: Answers(1), 2: Answers(fail=True)}, version_labels={"stable": 1, "candidate": 2},
                          shadow="candidate")
    async with client(app) as http:
        assert {await version_of(http, "/v2/models/mnist/versions/stable/infer") for _ in range(5)} == {1}
        assert server.shadow.report("mnist")["comparisons"] == []  # a pinned request is never shadowed
        # without a split the latest (2) would answer, and a version is never its own shadow: pin the split to stable
        server.repository.models = {"mnist": ModelVersions(server.repository.models["mnist"], config(
            version_labels={"stable": 1, "candidate": 2}, traffic_split={"stable": 100}, shadow="candidate"))}
        assert {await version_of(http) for _ in range(10)} == {1}
        report = await wait_for_shadow(server, 10)
        scraped = await http.get("/metrics")
    assert {r["outcome"] for r in report["comparisons"]} == {"error"}
    assert metric(scraped.text, "inference_shadow_total", model="mnist", version="1", shadow_version="2", outcome="error") == 10
    assert "shadow version 2 of model mnist failed" in caplog.text


@synchronously
async def test_shadow_agreement_is_counted_by_top_class_and_reported(tmp_path):
    app, server = serving(tmp_path, {1: Answers(), 2: Answers()}, version_labels={"stable": 1, "candidate": 2},
                          traffic_split={"stable": 100}, shadow="candidate")
    async with client(app) as http:
        for _ in range(15):
            await version_of(http)
        report = await wait_for_shadow(server, 15)
        answer = await http.get("/v2/models/mnist/shadow")
        missing = await http.get("/v2/models/nothing/shadow")
    assert {r["outcome"]: r["rows"] for r in report["comparisons"]} == {"agree": 15}
    assert answer.status_code == 200 and answer.json()["disagreements"] == []
    assert missing.status_code == 404


def test_a_full_shadow_queue_drops_the_copy_at_once(monkeypatch):
    counted = []
    monkeypatch.setattr(rollout, "SHADOW_QUEUE", 1)
    gate = threading.Event()

    class Held(Answers):
        def predict(self, x):
            gate.wait(10)
            return super().predict(x)

    shadow = rollout.Shadow(lambda *args: counted.append(args))
    state = VersionState(2, "AVAILABLE", backend=Held())
    started = time.perf_counter()
    for _ in range(5):  # the thread holds one, the queue one: the other three are dropped
        shadow.submit("mnist", state, 1, X, X.reshape(1, -1)[:, :10])
    assert time.perf_counter() - started < 0.05
    gate.set()
    shadow.close()
    dropped = sum(rows for *_, outcome, rows in counted if outcome == "dropped")
    assert 3 <= dropped <= 4 and sum(rows for *_, rows in counted) == 5


# --------------------------------------------------------------------------- per-version class counts

@synchronously
async def test_answers_are_counted_by_version_and_top_class(tmp_path):
    app, _ = serving(tmp_path, {1: Answers(3), 2: Answers(8)}, **LABELS)
    async with client(app) as http:
        for _ in range(4):
            await version_of(http, "/v2/models/mnist/versions/stable/infer")
        await version_of(http, "/v2/models/mnist/versions/canary/infer", x=np.repeat(X, 3, axis=0))
        scraped = (await http.get("/metrics")).text
    assert metric(scraped, "inference_predictions_total", model="mnist", version="1", **{"class": "3"}) == 4
    assert metric(scraped, "inference_predictions_total", model="mnist", version="2", **{"class": "8"}) == 3


# --------------------------------------------------------------------------- a config rewritten under traffic

def test_a_config_rewritten_under_traffic_switches_atomically(tmp_path):
    """A real repository (two small ONNX exports), scanned by hand after each rewrite of the split: while requests
    keep coming, every one is answered 200, and after each scan every request goes where the new config says."""
    from small_models import make_export

    root = tmp_path / "repository"
    for version in (1, 2):
        directory, _ = make_export(tmp_path, version, X)
        publish(directory, root, "mnist", version)
    app = create_app(Settings(repository=root))
    server = app.app.state.server
    sides = {"stable": {"stable": 100, "canary": 0}, "canary": {"stable": 0, "canary": 100}}
    write_config(root, "mnist", {**LABELS, "traffic_split": sides["stable"]})
    server.repository.scan()

    async def traffic(stop: asyncio.Event, seen: list):
        async with client(app) as http:
            while not stop.is_set():
                seen.append(await version_of(http))
                await asyncio.sleep(0)  # an in-process request may never suspend: let the flips run

    async def flips():
        stop, seen = asyncio.Event(), []
        running = asyncio.create_task(traffic(stop, seen))
        async with client(app) as http:
            for flip in range(6):
                side = "canary" if flip % 2 == 0 else "stable"
                write_config(root, "mnist", {**LABELS, "traffic_split": sides[side]})
                await asyncio.to_thread(server.repository.scan)
                assert {await version_of(http) for _ in range(10)} == {2 if side == "canary" else 1}
        stop.set()
        await running
        return seen

    seen = asyncio.run(flips())
    assert len(seen) > 0 and set(seen) <= {1, 2}  # version_of asserted a 200 for each
