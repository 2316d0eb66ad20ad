"""helpers.processes: a stopped process takes everything under it along, also a grandchild in a session of its own;
`running` stops its process on an error; a sweep stops this process's descendants (adopted orphans included) and never a
process outside its tree, whatever its command line says; the port helpers; nothing but the standard library at import."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from helpers import paths, processes

integration = pytest.mark.integration  # the tests that start real processes

# starts a child in a session of its own whose command line carries argv[2] (a mark), and writes its pid to argv[1]
START_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[2]], start_new_session=True)
open(sys.argv[1], "w").write(f"{child.pid}")
"""
PARENT = START_CHILD + "time.sleep(600)\n"


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether `pid` has exited (a zombie waiting for its parent counts as gone) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def read_when_written(path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise TimeoutError(f"nothing written to {path} within {timeout_s} s")


def start_outside_the_tree(mark: str) -> int:
    """A sleeping Python process whose command line carries `mark`, started through a shell that exits at once (a
    double fork) and in a session of its own: it descends from no process of this test session."""
    code = "import time; time.sleep(600)"
    started = subprocess.run(["sh", "-c", f"{sys.executable} -c '{code}' {mark} >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True)
    return int(started.stdout)


@pytest.fixture
def mark():
    return f"course-test-{uuid.uuid4().hex[:12]}"


def kill_if_marked(pid: int, mark: str) -> None:
    """Clean up after a failed test: kill `pid` if it is still the process the test started."""
    try:
        process = psutil.Process(pid)
        if mark in process.cmdline():
            process.kill()
    except psutil.Error:
        pass


@integration
def test_stop_ends_the_whole_tree_also_a_grandchild_in_a_session_of_its_own(tmp_path, mark):
    pid_file = tmp_path / "grandchild"
    start_parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {PARENT!r}, *sys.argv[1:]])"
    grandparent = subprocess.Popen([sys.executable, "-c", start_parent, str(pid_file), mark])
    grandchild = int(read_when_written(pid_file))
    started = [p.pid for p in psutil.Process(grandparent.pid).children(recursive=True)]  # for the clean-up only
    try:
        assert psutil.Process(grandchild).cmdline()[-1] == mark
        assert os.getsid(grandchild) == grandchild != os.getsid(grandparent.pid)  # out of the group killpg would reach
        listed = [p.pid for p in processes.tree(grandparent.pid)]
        assert listed[0] == grandparent.pid and len(listed) == 3 and grandchild in listed
        processes.stop(grandparent, grace_s=5)
        assert grandparent.returncode == -signal.SIGTERM  # waited for through its Popen: the exit code is kept
        assert gone(grandchild)
    finally:
        for pid in started:  # every command line carries the mark
            kill_if_marked(pid, mark)
        if grandparent.poll() is None:
            grandparent.kill()
            grandparent.wait()


@integration
def test_stop_kills_what_ignores_sigterm_after_the_grace_period():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                                 " print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    started = time.monotonic()
    processes.stop(stubborn, grace_s=0.5)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started < 5
    processes.stop(stubborn)  # already stopped: nothing to do
    stubborn.stdout.close()


SWEEPER = """
import json, subprocess, sys, time
from helpers import processes
mark = sys.argv[1]  # also in this process's own command line: a sweep does not include the sweeping process
adopted = processes.adopt_orphans()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", mark], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
# an orphan: its parent, the shell, exits at once; adopted, it stays a descendant of this process
subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(600)' {mark} >/dev/null 2>&1 &"], check=True)
deadline = time.monotonic() + 30
while len(processes.descendants(mark)) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
found = [p.pid for p in processes.descendants(mark)]
open(sys.argv[2], "w").write(json.dumps(found))  # for the test's clean-up, should this process not get further
processes.sweep(mark, quiet_s=0.5)
left = processes.descendants(mark)
for process in left:  # only if the sweep failed
    process.kill()
print(json.dumps({"adopted": adopted, "found": found, "left": [p.pid for p in left]}))
"""


@integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreapers are Linux's")
def test_the_sweep_stops_adopted_orphans_and_never_a_process_outside_the_tree(tmp_path, mark):
    """The sweep runs in a child process, which becomes a subreaper there and not in the test session."""
    outsider, found_file = start_outside_the_tree(mark), tmp_path / "found.json"
    try:
        assert mark in " ".join(psutil.Process(outsider).cmdline())
        result = subprocess.run([sys.executable, "-c", SWEEPER, mark, str(found_file)], capture_output=True, text=True,
                                timeout=120, cwd=paths.ROOT)
        assert result.returncode == 0, result.stderr
        swept = json.loads(result.stdout)
        assert swept["adopted"] and len(swept["found"]) == 2 and outsider not in swept["found"] and not swept["left"]
        assert all(gone(pid) for pid in swept["found"])
        assert psutil.Process(outsider).is_running() and psutil.Process(outsider).status() != psutil.STATUS_ZOMBIE
    finally:
        for pid in [outsider, *(json.loads(found_file.read_text()) if found_file.exists() else [])]:
            kill_if_marked(pid, mark)  # the test started them, the test stops them


@integration
def test_stop_descendants_stops_only_descendants_that_match(mark):
    outsider = start_outside_the_tree(mark)
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", mark])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "no-mark-here"])
    try:
        assert [p.pid for p in processes.descendants(mark)] == [ours.pid]
        assert processes.stop_descendants(mark) == 1
        assert gone(ours.pid) and ours.poll() is not None  # waited for too: no zombie left
        assert other.poll() is None and psutil.Process(outsider).is_running()
        assert processes.stop_descendants(mark) == 0
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()
        kill_if_marked(outsider, mark)


@integration
def test_running_stops_its_process_and_what_it_started_when_the_block_fails(tmp_path, artifacts_in_tmp, mark):
    pid_file = tmp_path / "child"
    port = processes.free_port()
    server = START_CHILD + ("import http.server\n"
                            f"http.server.test(http.server.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')\n")
    try:
        with pytest.raises(RuntimeError, match="a failing cell"):
            with processes.running([sys.executable, "-c", server, str(pid_file), mark], "/", "tiny", port, timeout_s=60) as (
                    url, process, log):
                assert url == f"http://127.0.0.1:{port}" and log == artifacts_in_tmp / "logs" / f"tiny-{port}.log"
                assert read_when_written(pid_file) and not processes.port_free(port)
                raise RuntimeError("a failing cell")
        assert process.poll() is not None and gone(process.pid) and gone(int(pid_file.read_text()))
        assert processes.port_free(port)
    finally:
        if pid_file.exists() and pid_file.read_text():
            kill_if_marked(int(pid_file.read_text()), mark)


@integration
def test_a_process_that_dies_while_starting_is_reported_with_its_log(artifacts_in_tmp):
    command = [sys.executable, "-c", "import sys; print('no model here', file=sys.stderr); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*no model here.*Fix: "):
        with processes.running(command, "/", "dies", processes.free_port(), timeout_s=30):
            pass


def test_port_helpers():
    port = processes.free_port()
    assert 1024 <= port < 65536 and processes.port_free(port)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert not processes.port_free(port)
    assert processes.port_free(port)


@integration
def test_the_port_helpers_import_without_psutil():
    """`make doctor` imports them on a bare python3, before setup has installed psutil."""
    code = ("import sys; import helpers.processes, helpers.serving.process;"
            " assert 'psutil' not in sys.modules, 'psutil imported'; print(helpers.serving.process.port_free(1))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_serving_module_reexports_the_process_helpers():
    from helpers.serving import process

    assert (process.free_port, process.port_free, process.running, process.stop) == (
        processes.free_port, processes.port_free, processes.running, processes.stop)


def test_adopting_orphans_is_a_no_op_where_there_are_no_subreapers(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert processes.adopt_orphans() is False


def test_a_port_to_bind_later_is_free_and_outside_the_ephemeral_range():
    from helpers.processes import free_port_to_bind_later, port_free

    port = free_port_to_bind_later()
    assert 20000 <= port <= 32000 and port_free(port)
