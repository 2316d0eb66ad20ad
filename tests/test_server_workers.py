"""The server with --workers N (helpers/serving/workers.py), started for real: every worker answers, the metrics are
the server's as a whole, a version published under load reaches every worker with no request failed, a worker that
dies is replaced, and stopping the server (or killing its supervisor) leaves no process and no metrics folder."""

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from metrics_text import metric
from small_models import make_export, repository_of

from helpers.serving.__main__ import parse_args
from helpers.serving.client import infer_request, parse_infer_response
from helpers.serving.metrics import LocalGauge, ServerMetrics
from helpers.serving.process import running_server
from helpers.serving.repository import publish

X = np.random.default_rng(3).random((2, 1, 28, 28), dtype=np.float32)
INFER = "/v2/models/mnist/infer"
WORKERS = 2


# --------------------------------------------------------------------------- in process, fast


def test_workers_default_to_one_and_must_be_positive(capsys):
    assert parse_args(["--repository", "."]).workers == 1
    with pytest.raises(SystemExit):
        parse_args(["--repository", ".", "--workers", "0"])
    assert "must be above 0" in capsys.readouterr().err


def test_multiprocess_metrics_refuse_a_process_without_the_shared_folder():
    # this test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: its metrics could not be shared
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        ServerMetrics(multiprocess=True)


def test_a_local_gauge_reports_what_was_set_since_it_was_cleared():
    gauge = LocalGauge("model_versions_available", "Versions able to answer, by model", ["model"])
    gauge.labels("gone").set(1)
    gauge.clear()
    gauge.labels("mnist").set(2)
    (family,) = gauge.collect()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [("model_versions_available", {"model": "mnist"}, 2.0)]


# --------------------------------------------------------------------------- real servers


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    (v1, reference), (v2, reference_v2) = make_export(tmp, seed=1, x=X), make_export(tmp, seed=2, x=X)
    return {"tmp": tmp, "v1": v1, "v2": v2, "references": {1: reference, 2: reference_v2}}


def fresh_repository(exports, name: str) -> Path:
    return repository_of(exports["v1"], exports["tmp"] / name)


@pytest.fixture(scope="module")
def server(exports):
    with running_server(fresh_repository(exports, "shared"), workers=WORKERS) as running:
        yield running


def infer(http: httpx.Client) -> httpx.Response:
    content, headers = infer_request(X, "images", binary=False)
    return http.post(INFER, content=content, headers=headers)


def answer_of(response: httpx.Response) -> tuple[np.ndarray, int]:
    """An inference answer's logits and the version that computed them."""
    parsed = parse_infer_response(response.content, response.headers.get("inference-header-content-length"))
    return parsed["outputs"]["logits"], int(parsed["model_version"])


def on_new_connections(url: str, request, count: int) -> list[httpx.Response]:
    """`request(client)` `count` times, each on a connection of its own: the kernel picks a worker per connection."""
    answers = []
    for _ in range(count):
        with httpx.Client(base_url=url, timeout=30) as http:
            answers.append(request(http))
    return answers


def worker_processes(server) -> dict[int, psutil.Process]:
    """The supervisor's live workers, by index (from their command lines)."""
    found = {}
    for child in psutil.Process(server.pid).children():
        try:
            command = child.cmdline()
        except psutil.Error:  # a worker that died and is not reaped yet
            continue
        if "--worker-index" not in command:  # a zombie not reaped yet lists no command line at all
            continue
        found[int(command[command.index("--worker-index") + 1])] = child
    return found


@pytest.mark.integration
def test_every_worker_answers_with_its_own_copy_of_the_model(server, exports):
    assert sorted(worker_processes(server)) == list(range(WORKERS))
    answers = on_new_connections(server.url, infer, 40)
    assert all(a.status_code == 200 for a in answers)
    by_worker = {}
    for answer in answers:
        by_worker.setdefault(answer.headers["server-worker"], []).append(answer)
    assert sorted(by_worker) == [str(i) for i in range(WORKERS)], {w: len(a) for w, a in by_worker.items()}
    for worker, answered in by_worker.items():
        logits, version = answer_of(answered[0])
        assert version == 1
        np.testing.assert_allclose(logits, exports["references"][1], atol=1e-4, err_msg=f"worker {worker}")
    ready = on_new_connections(server.url, lambda http: http.get("/v2/health/ready"), 10)
    assert all(r.status_code == 200 and r.json() == {"ready": True} for r in ready)


@pytest.mark.integration
def test_the_metrics_count_every_workers_requests_whichever_worker_is_scraped(server):
    def scrape():
        return on_new_connections(server.url, lambda http: http.get("/metrics"), 6)

    def count(text):
        return metric(text, "inference_requests_total", model="mnist", endpoint="v2_infer", code="200")

    (before,) = {count(r.text) for r in scrape()}  # every worker reports the same total
    requests = 30
    answers = on_new_connections(server.url, infer, requests)
    assert all(a.status_code == 200 for a in answers)
    assert len({a.headers["server-worker"] for a in answers}) == WORKERS  # the requests were shared out
    for text in (s.text for s in scrape()):
        assert count(text) == before + requests
        assert metric(text, "inference_request_duration_seconds_count", endpoint="v2_infer") >= requests
        assert metric(text, "model_loads_total", model="mnist", version="1", result="success") == WORKERS  # one each
        assert metric(text, "model_versions_available", model="mnist") == 1  # the answering worker's, not a sum
        assert text.count('model_versions_available{model="mnist"}') == 1


@pytest.mark.integration
def test_model_unload_is_refused_with_workers(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        refused = http.post("/v2/repository/models/mnist/unload")
        assert refused.status_code == 501 and "--workers" in refused.json()["error"]
        assert infer(http).status_code == 200


@pytest.mark.integration
def test_a_version_published_under_load_reaches_every_worker_and_no_request_fails(exports):
    root = fresh_repository(exports, "reload")
    results, errors, stop = [], [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                with httpx.Client(base_url=running.url, timeout=30) as http:  # a new connection every 10 requests
                    for _ in range(10):
                        answer = infer(http)
                        if answer.status_code != 200:
                            results.append((time.monotonic(), answer.headers.get("server-worker"), None, False))
                            continue
                        logits, version = answer_of(answer)
                        right = np.allclose(logits, exports["references"][version], atol=1e-4)
                        results.append((time.monotonic(), answer.headers["server-worker"], version, right))
            except Exception as error:  # a connection refused or reset: a failed request
                errors.append(repr(error))

    with running_server(root, workers=WORKERS, batching=True, poll_interval_s=0.2) as running:
        clients = [threading.Thread(target=hammer) for _ in range(6)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(1.0)
            published = time.monotonic()
            publish(exports["v2"], root, "mnist", 2)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until every worker has answered with version 2
                served = {w for t, w, v, _ in list(results) if t > published and v == 2}
                if len(served) == WORKERS:
                    break
                time.sleep(0.1)
            time.sleep(1.0)  # and a little longer under load
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
        after = on_new_connections(running.url, infer, 20)

    assert not errors, errors[:5]
    assert len(results) > 100 and all(ok for *_, ok in results), [r for r in results if not r[3]][:5]
    assert {w for _, w, v, _ in results if v == 1} == {w for _, w, v, _ in results if v == 2} == {"0", "1"}
    assert {a.headers["server-worker"] for a in after} == {"0", "1"}
    assert {answer_of(a)[1] for a in after} == {2}


@pytest.mark.integration
def test_a_worker_that_dies_is_replaced_and_its_requests_stay_counted(exports):
    with running_server(fresh_repository(exports, "restart"), workers=WORKERS) as running:
        answers = on_new_connections(running.url, infer, 20)
        assert {a.headers["server-worker"] for a in answers} == {"0", "1"}
        victim = worker_processes(running)[1]
        victim.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # replaced, and the new worker serving
            replacement = worker_processes(running).get(1)
            if replacement is not None and replacement.pid != victim.pid:
                seen = {a.headers["server-worker"] for a in on_new_connections(running.url, infer, 4)}
                if "1" in seen:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError(f"worker 1 was not replaced; log:\n{running.log.read_text()[-3000:]}")
        text = httpx.get(running.url + "/metrics", timeout=30).text
        # the killed worker's 200s are still counted: at least the 20 above, plus those that found the replacement
        assert metric(text, "inference_requests_total", model="mnist", endpoint="v2_infer", code="200") >= 21
    assert "worker 1 (pid" in running.log.read_text() and "starting another" in running.log.read_text()


def metrics_folder(process: psutil.Process) -> Path:
    return Path(process.environ()["PROMETHEUS_MULTIPROC_DIR"])


@pytest.mark.integration
def test_stopping_the_server_stops_every_worker_and_removes_the_metrics_folder(exports):
    with running_server(fresh_repository(exports, "stop"), workers=WORKERS) as running:
        workers = list(worker_processes(running).values())
        folder = metrics_folder(workers[0])
        assert folder.is_dir() and any(folder.glob("*.db"))
        pids = [running.pid, *(w.pid for w in workers)]
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert not folder.exists()


@pytest.mark.integration
def test_no_worker_outlives_a_killed_supervisor(exports):
    with running_server(fresh_repository(exports, "killed"), workers=WORKERS) as running:
        workers = list(worker_processes(running).values())
        folder = metrics_folder(workers[0])
        os.kill(running.pid, signal.SIGKILL)  # no chance to stop them: the kernel tells each worker (PDEATHSIG)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [w.pid for w in alive]
    shutil.rmtree(folder, ignore_errors=True)  # a killed supervisor cannot remove it: the one thing left behind
