"""A soak test with faults: a real server process under many concurrent clients while its repository is churned every
few hundred milliseconds (versions published, republished under the same number, corrupted in place and restored,
deleted; the model unloaded and loaded again), with batching on and off.

What must hold, whatever the interleaving:
* every request is answered before its timeout: no client error, no 504 (no request stranded by a closing batcher);
* no 5xx but deliberate 503 sheds, each with Retry-After; a 404 only while an operator has the model unloaded (a
  republish or a corrupted file never makes the model disappear);
* every 200 carries the outputs of the version it names, computed in this process, and that version was published at
  that moment (give or take the scan that notices a deletion);
* the server's thread count and resident memory stay bounded over the run.

`COURSE_SOAK_SECONDS` sets each run's length (15 s by default, so the two runs take about 30 s); `make soak` runs them
for five minutes each.
"""

import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
import pytest
from small_models import make_export
from test_repository import flip_a_bit

from helpers.serving.client import infer_request, parse_infer_response
from helpers.serving.process import running_server
from helpers.serving.repository import MISSING_GRACE_S, publish

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("COURSE_SOAK_SECONDS", "15"))
CLIENTS = 16
POLL_S = 0.1  # the server's repository scan interval
REQUEST_TIMEOUT_S = 5.0
X = np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)
CHURNED = (2, 3)  # version 1 is never deleted, so requests pinned to it always have an answer


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> dict[int, tuple[Path, np.ndarray]]:
    """Three exports with different weights: version -> (folder, its logits for X)."""
    tmp = tmp_path_factory.mktemp("soak")
    return {v: make_export(tmp, seed=10 + v, x=X) for v in (1, 2, 3)}


@dataclass
class Answer:
    started: float
    ended: float
    status: int
    pinned: int | None
    version: int | None = None
    correct: bool = True
    retry_after: bool = False
    error: str = ""


@dataclass
class Timeline:
    """What the fault thread did, when: the windows in which each churned version was on disk, and the unloads."""
    published: dict[int, list[list[float]]] = field(default_factory=lambda: {v: [] for v in CHURNED})
    unloaded: list[list[float]] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1

    def was_published(self, version: int, started: float, ended: float) -> bool:
        """On disk at some moment of [started, ended], allowing the grace and the scan in which a deletion is noticed."""
        slack = MISSING_GRACE_S + 3 * POLL_S
        return any(begin <= ended and (end is None or end + slack >= started)
                   for begin, end in self.published[version])

    def in_unload(self, started: float, ended: float) -> bool:
        return any(begin - 0.05 <= ended and (end is None or end + 0.05 >= started) for begin, end in self.unloaded)


def ask(http: httpx.Client, rng: random.Random, references) -> Answer:
    """One request: a random image, protocol (v2 binary, v2 JSON, TF Serving rows) and pin (none, or version 1)."""
    i, pinned, kind = rng.randrange(len(X)), rng.choice([None, None, 1]), rng.choice(["v2-binary", "v2-json", "tfs"])
    prefix = f"/versions/{pinned}" if pinned else ""
    started = time.perf_counter()
    try:
        if kind == "tfs":
            body = orjson.dumps({"instances": X[i : i + 1]}, option=orjson.OPT_SERIALIZE_NUMPY)
            reply = http.post(f"/v1/models/mnist{prefix}:predict", content=body, headers={"Content-Type": "application/json"})
        else:
            body, headers = infer_request(X[i : i + 1], "images", binary=kind == "v2-binary")
            reply = http.post(f"/v2/models/mnist{prefix}/infer", content=body, headers=headers)
    except httpx.HTTPError as error:
        return Answer(started, time.perf_counter(), 0, pinned, error=f"{type(error).__name__}: {error}")
    answer = Answer(started, time.perf_counter(), reply.status_code, pinned, retry_after="retry-after" in reply.headers)
    if reply.status_code == 200:
        if kind == "tfs":  # TF Serving's answer names no version: it is the pinned one, or whichever the outputs match
            y = np.asarray(reply.json()["predictions"], np.float32)
            candidates = [pinned] if pinned else list(references)
            answer.version = next((v for v in candidates if np.allclose(y, references[v][i : i + 1], atol=1e-4)), None)
            answer.correct = answer.version is not None
        else:
            document = parse_infer_response(reply.content, reply.headers.get("inference-header-content-length"))
            answer.version = int(document["model_version"])
            y = next(iter(document["outputs"].values()))
            answer.correct = bool(np.allclose(y, references[answer.version][i : i + 1], atol=1e-4))
    elif reply.status_code != 503:
        answer.error = reply.text[:200]
    return answer


def clients(url: str, references, stop: threading.Event, answers: list) -> list[threading.Thread]:
    def run(seed):
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S + 5) as http:
            while not stop.is_set():
                answers.append(ask(http, rng, references))

    return [threading.Thread(target=run, args=(seed,), daemon=True) for seed in range(CLIENTS)]


def churn(url: str, root: Path, versions, stop: threading.Event, timeline: Timeline) -> None:
    """Every 0.2-0.4 s one fault, chosen at random among those that apply."""
    rng = random.Random(0)
    on_disk = {1}
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.wait(rng.uniform(0.2, 0.4)):
            missing, present = [v for v in CHURNED if v not in on_disk], sorted(on_disk)
            fault = rng.choice(["publish"] * bool(missing) + ["republish", "corrupt", "unload"] + ["delete"] * any(v in on_disk for v in CHURNED))
            if fault == "publish":
                version = rng.choice(missing)
                publish(versions[version][0], root, "mnist", version)
                timeline.published[version].append([time.perf_counter(), None])
                on_disk.add(version)
            elif fault == "republish":  # the same files again, under the same number: a new copy, a new batcher
                version = rng.choice(present)
                publish(versions[version][0], root, "mnist", version)
            elif fault == "corrupt":  # one bit flipped in place; the verified copy in memory keeps serving; restored later
                version = rng.choice(present)
                flip_a_bit(root / "mnist" / str(version) / "model.onnx")
                stop.wait(rng.uniform(0.2, 0.4))
                publish(versions[version][0], root, "mnist", version)
            elif fault == "delete":
                version = rng.choice([v for v in CHURNED if v in on_disk])
                timeline.published[version][-1][1] = time.perf_counter()
                shutil.rmtree(root / "mnist" / str(version))
                on_disk.discard(version)
            else:  # an operator's unload, then load: a planned outage, the one time a 404 is right
                window = [time.perf_counter(), None]
                timeline.unloaded.append(window)
                assert http.post("/v2/repository/models/mnist/unload").status_code == 200
                stop.wait(rng.uniform(0.1, 0.3))
                assert http.post("/v2/repository/models/mnist/load").status_code == 200
                window[1] = time.perf_counter()
            timeline.count(fault)


def resources(pid: int, stop: threading.Event, samples: list) -> None:
    process = psutil.Process(pid)
    while not stop.wait(0.25):
        try:
            samples.append((process.num_threads(), process.memory_info().rss))
        except psutil.NoSuchProcess:
            return


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batching"])
def test_a_server_under_load_and_faults_answers_every_request_correctly(versions, tmp_path, batching):
    root = tmp_path / "repository"
    publish(versions[1][0], root, "mnist", 1)
    references = {v: reference for v, (_, reference) in versions.items()}
    answers, timeline, samples = [], Timeline(), []
    stop_traffic, stop_faults = threading.Event(), threading.Event()
    with running_server(root, batching=batching, batch_max_delay_ms=5, poll_interval_s=POLL_S,
                        request_timeout_s=REQUEST_TIMEOUT_S, max_queue=32, name="soak") as server:
        watcher = threading.Thread(target=resources, args=(server.pid, stop_traffic, samples), daemon=True)
        faults = threading.Thread(target=churn, args=(server.url, root, versions, stop_faults, timeline), daemon=True)
        traffic = clients(server.url, references, stop_traffic, answers)
        for thread in [watcher, *traffic]:
            thread.start()
        time.sleep(1.0)  # traffic first: the resource baseline is a server already busy
        faults.start()
        time.sleep(SECONDS)
        stop_faults.set()
        faults.join(60)
        time.sleep(1.0)  # the last fault's effects, under traffic
        stop_traffic.set()
        for thread in [watcher, *traffic]:
            thread.join(REQUEST_TIMEOUT_S + 10)
    assert not faults.is_alive() and not any(t.is_alive() for t in traffic)

    statuses = {s: sum(a.status == s for a in answers) for s in {a.status for a in answers}}
    print(f"\n{len(answers)} requests {statuses}; faults {timeline.faults}")
    assert len(timeline.faults) == 5 and sum(timeline.faults.values()) >= SECONDS, timeline.faults
    unanswered = [a for a in answers if a.status == 0]
    assert not unanswered, unanswered[:5]
    assert max(a.ended - a.started for a in answers) < REQUEST_TIMEOUT_S, "a request waited for its timeout"
    unexpected = [a for a in answers if a.status not in (200, 503, 404)]
    assert not unexpected, unexpected[:5]
    assert all(a.retry_after for a in answers if a.status == 503)
    stray_404 = [a for a in answers if a.status == 404 and not timeline.in_unload(a.started, a.ended)]
    assert not stray_404, stray_404[:5]

    served = [a for a in answers if a.status == 200]
    wrong = [a for a in served if not a.correct]
    assert not wrong, wrong[:5]
    ghosts = [a for a in served if a.version in CHURNED and not timeline.was_published(a.version, a.started, a.ended)]
    assert not ghosts, ghosts[:5]
    assert {a.version for a in served} & set(CHURNED) and 1 in {a.version for a in served}  # the churn reached the clients
    assert len(served) >= 0.8 * len(answers)

    threads, rss = np.array(samples).T
    early, late = slice(0, len(samples) // 3), slice(-(len(samples) // 3), None)
    assert threads.max() <= threads[early].max() + 8, f"threads grew from {threads[early].max()} to {threads.max()}"
    assert rss[late].max() <= rss[early].max() + 150 * 2**20, f"memory grew by {(rss[late].max() - rss[early].max()) / 2**20:.0f} MiB"
