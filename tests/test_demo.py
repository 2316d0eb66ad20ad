"""`make demo` (helpers.demo): a room reaches the page only with the API key the demo prints, and however the demo is
stopped no process of it is left behind.

The room is two network namespaces this test makes (root only), joined by a veth pair with private addresses: the demo
bound to 0.0.0.0 runs in one, and from the other (another machine, as far as the network goes) the page's requests
without the key are refused, with it they are answered, and the page opened from the printed address answers in
Chromium. The stopping tests start `make demo` and `python -m helpers.demo`, signal them, and ask that the port be free
and every process of the demo gone within a few seconds. Every test uses the quick smoke-mode model, built once in a
temporary artifacts folder."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from helpers import browser, processes
from helpers.paths import ROOT
from helpers.serving.__main__ import API_KEY_ENV

pytestmark = pytest.mark.integration  # starts real processes and trains a (smoke) model

MAKE = shutil.which("make")
IP = shutil.which("ip")
STOPPED_WITHIN_S = 8.0  # a stopped demo: its server answers SIGTERM at once; the stop's SIGKILL comes only after 10 s
SERVER_IP, CLIENT_IP = "10.213.0.1", "10.213.0.2"  # private (10/8), on a /30 that exists only inside the namespaces
ROOM_PORT = 8500  # the demo's default: in a namespace of its own, no other run on this machine can hold it


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A temporary artifacts folder holding the demo's repository (smoke-mode model, its export and int8 variant)."""
    root = tmp_path_factory.mktemp("demo-artifacts")
    built = subprocess.run([sys.executable, "-c", "from helpers import demo; demo.build_repository(smoke=True)"],
                           env=demo_env(root), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    return root


def demo_env(artifacts: Path, **extra) -> dict:
    """The environment a demo runs in here: the test's artifacts, no API key from the caller's shell, output unbuffered."""
    return os.environ | {"COURSE_ARTIFACTS": str(artifacts), API_KEY_ENV: "", "PYTHONUNBUFFERED": "1"} | extra


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_answering(url: str, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the demo exited with code {process.returncode} before it answered"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def kill_all(members: list) -> None:
    """The clean-up: SIGKILL whatever of `members` (processes this test started and listed) still runs."""
    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=5)


# ---------------------------------------------------------------------------------------------- stopping the demo


def course_venv() -> Path | None:
    """The venv running these tests (`make test` runs them with the repository's .venv), for `make demo VENV=...`."""
    return Path(sys.prefix) if sys.prefix != sys.base_prefix and (Path(sys.prefix) / "bin" / "python").exists() else None


def make_demo(port: int) -> list[str]:
    """`make demo PORT=...`, the learner's command, with this venv. `-o` its stamp: a venv set up before the Makefile's
    last edit is used as it is, not set up again (after `make test` the stamp is fresh and -o changes nothing). PORT
    carries `--smoke` too, so the recipe's command line gets one flag more: the quick model instead of the full one."""
    venv = course_venv()
    return [MAKE, "--no-print-directory", "-o", str(venv / ".installed"), "demo", f"VENV={venv}", f"PORT={port} --smoke"]


def module_demo(port: int) -> list[str]:
    return [sys.executable, "-m", "helpers.demo", "--smoke", "--port", str(port)]


# runs argv[1:] with SIGHUP back to its default action: a demo started with SIGHUP ignored (`nohup`) keeps ignoring it
# and outlives its parent on purpose, so a test session run under nohup would otherwise test that instead
HANGUP_AS_USUAL = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])"]


@pytest.mark.parametrize("how, sig, to", [("make", signal.SIGTERM, "make"), ("make", signal.SIGKILL, "make"),
                                          ("make", signal.SIGINT, "group"), ("module", signal.SIGINT, "module"),
                                          ("module", signal.SIGTERM, "module"), ("module", signal.SIGHUP, "module")],
                         ids=["make-SIGTERM", "make-SIGKILL", "make-Ctrl-C", "module-SIGINT", "module-SIGTERM", "module-SIGHUP"])
def test_a_stopped_demo_leaves_no_process_and_frees_its_port(artifacts, tmp_path, how, sig, to):
    """SIGTERM to `make` only (what `kill` and service managers send; make passes it on to its recipe), SIGKILL to
    `make` (which it cannot pass on: the demo notices that its parent died), Ctrl-C (SIGINT to make's whole process
    group, as a terminal sends it), and SIGINT, SIGTERM or SIGHUP (a closed terminal) to the module alone."""
    if how == "make" and (MAKE is None or course_venv() is None):
        pytest.skip("make demo needs GNU make and the course's venv running these tests (make test)")
    port = processes.free_port()
    command = HANGUP_AS_USUAL + (make_demo(port) if how == "make" else module_demo(port))
    out = tmp_path / "demo.out"
    with open(out, "wb") as sink:
        # a session of its own: a process group to send Ctrl-C's SIGINT to, and no signal of the test session reaches it
        started = subprocess.Popen(command, cwd=ROOT, env=demo_env(artifacts), stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    listed = []
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/v2/health/ready", started)
        listed = processes.tree(started.pid)  # make (or the module), the module, the server: listed while they run
        commands = [" ".join(p.cmdline()) for p in listed]
        assert any("helpers.serving" in c for c in commands), commands  # the test saw the server it then asks about
        assert any("helpers.demo" in c for c in commands), commands
        os.killpg(started.pid, sig) if to == "group" else os.kill(started.pid, sig)
        deadline = time.monotonic() + STOPPED_WITHIN_S
        while time.monotonic() < deadline and not (all(gone(p) for p in listed) and processes.port_free(port)):
            time.sleep(0.1)
        left = [f"{p.pid} {' '.join(p.cmdline())}" for p in listed if not gone(p)]
        assert not left, f"still running {STOPPED_WITHIN_S:.0f} s after {sig.name}: {left}\n{out.read_text()[-2000:]}"
        assert processes.port_free(port), f"port {port} still taken after {sig.name}"
        assert "Stopped" in out.read_text(), out.read_text()[-2000:]  # it stopped its server, it was not just killed
    finally:
        kill_all(listed or processes.tree(started.pid))
        started.wait(10)


def test_a_launcher_learns_that_its_parent_died(tmp_path):
    """signal_when_parent_dies: a process whose parent is SIGKILLed gets the signal it asked for, both ways (Linux's
    prctl and the thread other systems use); a parent that lives on sends nothing."""
    child = (
        "import signal, sys, time\n"
        "from helpers import processes\n"
        "if sys.argv[1] == 'thread': processes.prctl = lambda option, value: False\n"
        "signal.signal(signal.SIGUSR1, lambda *a: (open(sys.argv[2], 'w').write('signalled'), sys.exit(0)))\n"
        "open(sys.argv[2], 'w').write(processes.signal_when_parent_dies(signal.SIGUSR1))\n"
        "time.sleep(60)\n")
    expected = {"prctl": "prctl" if sys.platform.startswith("linux") else "thread", "thread": "thread"}
    for way in ("prctl", "thread"):
        report = tmp_path / f"{way}.txt"
        # the parent: a Python that starts the child and sleeps; the child's pid is its only output
        parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; child = subprocess.Popen(sys.argv[1:]);"
                                   " print(child.pid, flush=True); time.sleep(60)", sys.executable, "-c", child, way, str(report)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        child_process = psutil.Process(int(parent.stdout.readline()))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (report.exists() and report.read_text()):
                time.sleep(0.05)
            assert report.read_text() == expected[way]
            time.sleep(2 * processes.PARENT_POLL_S)
            assert not gone(child_process), "signalled while its parent still ran"
            parent.kill()
            parent.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and report.read_text() != "signalled":
                time.sleep(0.05)
            assert report.read_text() == "signalled", way
        finally:
            kill_all([child_process])
            parent.kill()
            parent.wait()
            parent.stdout.close()


# ---------------------------------------------------------------------------------------------- the room


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=30)


def in_namespace(namespace: str, *command: str) -> list[str]:
    return [IP, "netns", "exec", namespace, *command]


def why_no_room() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if os.geteuid() != 0:
        return "making network namespaces (ip netns add) needs root"
    if IP is None:
        return "the ip command (iproute2) is not installed"
    return None


@pytest.fixture(scope="module")
def room():
    """Two network namespaces, the demo's machine and a phone, joined by a veth pair: 10.213.0.1/30 and 10.213.0.2/30.
    Deleted afterwards (with every process still in them: only this test starts any), also when a test fails."""
    if reason := why_no_room():
        pytest.skip(reason)
    tag = os.getpid()
    server, client = f"course-demo-{tag}-server", f"course-demo-{tag}-client"
    made = []
    try:
        for namespace in (server, client):
            added = ip("netns", "add", namespace, check=False)
            if added.returncode != 0:
                pytest.skip(f"ip netns add failed here (a container without CAP_SYS_ADMIN?): {added.stderr.strip()}")
            made.append(namespace)
        ip("link", "add", f"vd{tag}s", "netns", server, "type", "veth", "peer", "name", f"vd{tag}c", "netns", client)
        for namespace, device, address in ((server, f"vd{tag}s", SERVER_IP), (client, f"vd{tag}c", CLIENT_IP)):
            ip("-n", namespace, "addr", "add", f"{address}/30", "dev", device)
            ip("-n", namespace, "link", "set", device, "up")
            ip("-n", namespace, "link", "set", "lo", "up")  # the demo polls its own readiness on 127.0.0.1
        yield {"server": server, "client": client}
    finally:
        for namespace in made:
            inside = [psutil.Process(int(pid)) for pid in ip("netns", "pids", namespace, check=False).stdout.split()
                      if psutil.pid_exists(int(pid))]
            kill_all(inside)
            ip("netns", "del", namespace, check=False)  # takes its end of the veth pair, and so the pair, along


@pytest.fixture(scope="module")
def demo_in_room(room, artifacts, tmp_path_factory):
    """`python -m helpers.demo --host 0.0.0.0` on the demo's machine: its printed output, key and room address."""
    out = tmp_path_factory.mktemp("room") / "demo.out"
    with open(out, "wb") as sink:
        demo = subprocess.Popen(in_namespace(room["server"], sys.executable, "-m", "helpers.demo", "--host", "0.0.0.0",
                                             "--smoke", "--port", str(ROOM_PORT)),
                                cwd=ROOT, env=demo_env(artifacts), stdout=sink, stderr=subprocess.STDOUT)
    listed = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "Warning:" not in out.read_text() and demo.poll() is None:
            time.sleep(0.2)
        printed = out.read_text()
        assert "Warning:" in printed, printed[-3000:]
        listed = processes.tree(demo.pid)
        yield {"printed": printed, "process": demo, "listed": listed, "artifacts": artifacts,
               "urls": re.findall(r"http://\S+", printed)}
        demo.send_signal(signal.SIGTERM)
        demo.wait(STOPPED_WITHIN_S)
        assert all(gone(p) for p in listed)
    finally:
        kill_all(listed)
        demo.kill()
        demo.wait()


def the_room_url(demo_in_room) -> tuple[str, str]:
    """(http://10.213.0.1:8500, key) from the one room address the demo printed (the namespace has one interface)."""
    room_urls = [u for u in demo_in_room["urls"] if SERVER_IP in u]
    assert len(room_urls) == 1, demo_in_room["printed"]
    match = re.fullmatch(rf"(http://{re.escape(SERVER_IP)}:{ROOM_PORT})/demo/\?key=([A-Za-z0-9_-]+)", room_urls[0])
    assert match, room_urls[0]
    return match.group(1), match.group(2)


CLIENT = """
import hashlib, json, sys
import httpx
base, key = sys.argv[1], sys.argv[2]
keys = {"none": {}, "wrong": {"X-API-Key": "not-" + key}, "right": {"X-API-Key": key}}
meta = httpx.get(f"{base}/v2/models/mnist", headers=keys["right"], timeout=30).json()
body = {"inputs": [{"name": meta["inputs"][0]["name"], "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
requests = {"page": ("GET", "/demo/", None), "model file": ("GET", "/demo/models/mnist/model.onnx", None),
            "models": ("POST", "/v2/repository/index", None), "metadata": ("GET", "/v2/models/mnist", None),
            "inference": ("POST", "/v2/models/mnist/infer", body)}
answers = []
for what, (method, path, payload) in requests.items():
    for name, headers in keys.items():
        answer = httpx.request(method, base + path, headers=headers, json=payload, timeout=30)
        is_json = answer.headers.get("content-type", "").startswith("application/json")
        answers.append({"what": what, "key": name, "status": answer.status_code, "json": answer.json() if is_json else None,
                        "sha256": hashlib.sha256(answer.content).hexdigest()})
print(json.dumps(answers))
"""


def test_the_room_reaches_the_model_only_with_the_printed_key(room, demo_in_room):
    printed = demo_in_room["printed"]
    base, key = the_room_url(demo_in_room)
    assert len(key) >= 43, "a generated key has 32 random bytes"
    assert re.search(r"^Warning: anyone with this address .* can use the model", printed, re.M), printed
    assert f"http://127.0.0.1:{ROOM_PORT}/demo/?key={key}" in printed  # for the instructor's own browser
    result = subprocess.run(in_namespace(room["client"], sys.executable, "-c", CLIENT, base, key), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = {(a["what"], a["key"]): a for a in json.loads(result.stdout)}
    export = demo_in_room["artifacts"] / "demo-repository" / "mnist" / "1" / "model.onnx"
    for what in ("model file", "models", "metadata", "inference"):
        for refused in ("none", "wrong"):
            answer = answers[what, refused]
            assert answer["status"] == 401 and "API key" in answer["json"]["error"], (what, refused, answer)
        assert answers[what, "right"]["status"] == 200, (what, answers[what, "right"])
    assert answers["model file", "right"]["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()
    outputs = answers["inference", "right"]["json"]["outputs"]
    assert outputs[0]["shape"] == [1, 10] and len(outputs[0]["data"]) == 10
    assert all(answers["page", k]["status"] == 200 for k in ("none", "wrong", "right"))  # the page holds no model


def test_the_key_is_printed_in_the_addresses_only(demo_in_room):
    """Not in the server's log, not on any command line (ps shows those to every user), not in any other output."""
    _, key = the_room_url(demo_in_room)
    lines = [line for line in demo_in_room["printed"].splitlines() if key in line]
    assert lines and all(re.fullmatch(rf"\s*(or, on this machine, )?http://\S+/demo/\?key={key}", line) for line in lines), lines
    for process in demo_in_room["listed"]:
        assert key not in " ".join(process.cmdline()), process.pid
    log = demo_in_room["artifacts"] / "logs" / f"demo-{ROOM_PORT}.log"
    assert log.exists() and key not in log.read_text()


PAGE = """
import json, sys
from helpers import browser
base, key = sys.argv[1], sys.argv[2]
with browser.running_browser() as chromium:
    with browser.DemoPage(chromium, base, key=key) as page:
        page.draw([[[90, 60], [190, 60], [140, 230]]])  # a 7
        answers = {path: page.classify(path) for path in ("device", "server")}
        info = page.info
    try:
        browser.DemoPage(chromium, base).close()
        without = None
    except Exception as error:
        without = str(error)
print(json.dumps({"info": info, "without": without,
                  "answers": {path: {k: a[k] for k in ("path", "digit", "probs")} for path, a in answers.items()}}))
"""


@pytest.mark.skipif(browser.missing() is not None, reason=f"the page test needs Chromium and ONNX Runtime Web: {browser.missing()}")
def test_the_page_opened_from_the_printed_address_answers_on_another_machine(room, demo_in_room):
    """Chromium in the other namespace opens the printed address: the page sends the key, loads the model and answers
    on both paths; the same page without the key says what to open instead."""
    base, key = the_room_url(demo_in_room)
    result = subprocess.run(in_namespace(room["client"], sys.executable, "-c", PAGE, base, key), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert seen["info"]["deviceError"] is None, seen["info"]
    device, server = seen["answers"]["device"], seen["answers"]["server"]
    assert device["path"] == "device" and server["path"] == "server" and device["digit"] == server["digit"]
    assert max(abs(a - b) for a, b in zip(device["probs"], server["probs"])) <= 1e-5
    assert "401" in seen["without"] and "open the address the demo printed" in seen["without"], seen["without"]


def test_the_server_refuses_the_room_without_a_key(room, demo_in_room):
    """The server's own check, with no key given and none generated: it exits before binding, and nothing answers."""
    repository = demo_in_room["artifacts"] / "demo-repository"
    refused = subprocess.run(in_namespace(room["server"], sys.executable, "-m", "helpers.serving", "--host", "0.0.0.0",
                                          "--port", str(ROOM_PORT + 1), "--repository", str(repository), "--demo"),
                             cwd=ROOT, env=demo_env(demo_in_room["artifacts"]), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "refusing to bind 0.0.0.0 without an API key" in refused.stderr, refused.stderr
    probe = "import httpx, sys\ntry: httpx.get(sys.argv[1], timeout=5)\nexcept httpx.ConnectError: print('refused')"
    reached = subprocess.run(in_namespace(room["client"], sys.executable, "-c", probe,
                                          f"http://{SERVER_IP}:{ROOM_PORT + 1}/demo/"),
                             capture_output=True, text=True, timeout=60)
    assert reached.stdout.strip() == "refused", reached.stdout + reached.stderr
