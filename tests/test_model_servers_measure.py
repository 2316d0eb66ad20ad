"""helpers.model_servers.measure: CPU time and memory of real process trees, and the load-test row built on them."""

import subprocess
import sys
import time

import pytest

from helpers import processes
from helpers.model_servers import measure

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def started(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cpu_seconds_grow_while_a_process_burns_cpu():
    process = started(BURN.format(s=0.6) + "time.sleep(60)")
    try:
        first = measure.cpu_seconds([process.pid])
        wait_for(lambda: measure.cpu_seconds([process.pid]) >= 0.6)
        assert measure.cpu_seconds([process.pid]) - first > 0.3
    finally:
        processes.stop(process, grace_s=0)


def test_a_running_child_is_counted_in_its_parents_tree():
    child = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {BURN.format(s=0.6) + 'time.sleep(60)'!r}])\ntime.sleep(60)"
    process = started(child)
    try:
        wait_for(lambda: len(processes.tree(process.pid)) == 2)
        wait_for(lambda: measure.cpu_seconds([process.pid]) >= 0.6)
        own = process_own_cpu(process.pid)
        assert own < 0.3 and measure.cpu_seconds([process.pid]) - own >= 0.55  # the child's 0.6 s
    finally:
        processes.stop(process, grace_s=0)


def test_an_exited_child_still_counts_once_its_parent_has_reaped_it():
    code = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BURN.format(s=0.6)!r}])\ntime.sleep(60)"
    process = started(code)
    try:
        wait_for(lambda: measure.cpu_seconds([process.pid]) >= 0.6 and len(processes.tree(process.pid)) == 1)
    finally:
        processes.stop(process, grace_s=0)


def process_own_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def test_resident_bytes_sum_the_tree_and_pss_splits_what_it_shares():
    hold = "import time\nx = bytearray(80 * 1024 * 1024)\nx[::4096] = b'1' * len(x[::4096])\ntime.sleep(60)"
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {hold!r}])\ntime.sleep(60)"
    process = started(code)
    try:
        wait_for(lambda: len(processes.tree(process.pid)) == 2 and measure.resident_bytes([process.pid]) > 80 * measure.MIB)
        if measure.pss_available():
            assert measure.resident_bytes([process.pid], "pss") <= measure.resident_bytes([process.pid])
        assert measure.resident_bytes([process.pid, process.pid]) < 2 * 80 * measure.MIB  # a tree is counted once
    finally:
        processes.stop(process, grace_s=0)
    assert measure.cpu_seconds([process.pid]) == 0.0 and measure.resident_bytes([process.pid]) == 0  # gone: nothing


def test_load_row_adds_the_servers_cpu_per_request_and_memory(monkeypatch):
    from helpers.model_servers.common import Served

    process = started("import time\ntime.sleep(60)")
    burner = []

    def fake_run(url, body, headers, connections, seconds):  # the "server" spends 0.5 s of CPU during the run
        assert url == "http://127.0.0.1:1/predict" and connections == 4
        burner.append(subprocess.Popen([sys.executable, "-c", BURN.format(s=0.5) + "time.sleep(60)"]))
        wait_for(lambda: measure.cpu_seconds([burner[0].pid]) >= 0.5)
        return {"connections": connections, "requests": 100, "requests_per_s": 50.0}

    monkeypatch.setattr(measure.loadgen, "run", fake_run)
    served = Served("fake", "http://127.0.0.1:1", "/predict", None, None, [process.pid], None, 0.0)
    try:  # the fake server's processes: the sleeper, and the burner once it exists
        monkeypatch.setattr(measure, "members", lambda p: [m for pid in [*p, *(b.pid for b in burner)]
                                                            for m in processes.tree(pid)])
        row = measure.load_row(served, b"{}", {}, 4, 2.0)
    finally:
        for member in [process, *burner]:
            processes.stop(member, grace_s=0)
    assert row["server"] == "fake" and row["requests"] == 100
    assert row["cpu_ms_per_request"] == pytest.approx(5.0, abs=2.5)  # 0.5 s / 100 requests
    assert row["rss_mib"] > 1 and row["processes"] == 2


def test_py_spy_frames_are_attributed_to_their_package(tmp_path):
    from helpers import paths
    from helpers.model_servers import profile

    site = "/x/.venv/lib/python3.11/site-packages"
    assert profile.package_of(f"run ({site}/onnxruntime/capi/onnxruntime_inference_collection.py:266)") == "onnxruntime"
    assert profile.package_of(f"__call__ ({site}/starlette/routing.py:73)") == "starlette"
    assert profile.package_of(f"infer ({paths.ROOT}/helpers/serving/routes_v2.py:40)") == "helpers.serving"
    assert profile.package_of(f"predict ({paths.ROOT}/servers/litserve/server.py:38)") == "servers/litserve"
    assert profile.package_of("select (/usr/lib/python3.11/selectors.py:468)") == "python: selectors"
    assert profile.package_of("run_once (/usr/lib/python3.11/asyncio/base_events.py:1922)") == "python: asyncio"
    assert profile.package_of('process 28218:"python -m helpers.serving"') == "native code (no Python frame)"
    raw = tmp_path / "1.txt"
    raw.write_text(f"main (a.py:1);run ({site}/onnxruntime/x.py:2) 3\nmain (a.py:1);get ({site}/starlette/y.py:5) 1\n")
    frames = profile.innermost_frames([raw])
    assert profile.shares(frames) == {"onnxruntime": 0.75, "starlette": 0.25}
    assert profile.functions(frames, "starlette") == {"y.py:get": 0.25}


def test_cpu_is_split_by_what_each_process_does():
    import subprocess
    import sys
    import time

    from helpers.model_servers import measure

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-m', 'json.tool', "
                               "'--help'], capture_output=True); sum(range(10**7)); import time; time.sleep(5)"])
    try:
        time.sleep(2)
        roles = measure.cpu_by_role([parent.pid])
        assert roles.get("python -c", 0) > 0.05, roles  # the parent's own loop, and its exited child's time
    finally:
        parent.kill()
        parent.wait()
