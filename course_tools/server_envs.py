"""Build each model server's own venv (chapter 10): build/servers/<name>/ from servers/<name>/requirements.txt.

Some servers pin what the course's stack cannot share (Triton's Python backend needs numpy 1.x; MLServer caps
fastapi and protobuf; BentoML caps cattrs), and each would be deployed in its own environment anyway. `make setup`
runs this after the course's venv is made: a venv whose requirements did not change since it was built is kept (its
`.installed` stamp holds the requirements' sha256), others are built anew, and `install.json` beside it records the
install time and size the chapter reports. A server that fails to install is reported by name and skipped by the
chapter; it does not stop the setup.

A requirements file may name the Python it needs on a line `# python: 3.11` (Triton's Python-backend stub embeds 3.11).

    python -m course_tools.server_envs            build what is missing or out of date
    python -m course_tools.server_envs --check    list each server's state, build nothing

COURSE_SERVER_ENVS=0 in the environment skips building (tests/test_platforms.py sets it: it checks the course's own
stack on other Pythons, and chapter 10's servers pin theirs apart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "servers"
ENVS = ROOT / "build" / "servers"


def requirement_files() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(SERVERS.glob("*/requirements.txt"))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wanted_python(requirements: Path) -> str | None:
    """The Python version a requirements file asks for (`# python: 3.11`), or None for the course's own."""
    match = re.search(r"^#\s*python:\s*(3\.\d+)\s*$", requirements.read_text(), re.M)
    return match.group(1) if match else None


def find_python(version: str | None) -> str | None:
    """An interpreter of `version` (pyenv's, python<version> on PATH, or this one if it is that version)."""
    if version is None or f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in [*sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True), shutil.which(f"python{version}")]:
        if candidate and subprocess.run([str(candidate), "-c", "import venv"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


def up_to_date(name: str, requirements: Path) -> bool:
    stamp = ENVS / name / ".installed"
    return stamp.exists() and stamp.read_text().strip() == digest(requirements)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def pip_source_flags() -> list[str]:
    """With OFFLINE=1 the Makefile exports COURSE_WHEELHOUSE: install from it and nothing else."""
    wheelhouse = os.environ.get("COURSE_WHEELHOUSE")
    return ["--no-index", "--find-links", wheelhouse] if wheelhouse else []


def build(name: str, requirements: Path) -> str:
    """Build one server's venv; returns a line saying what happened (a failure is a line too, not an exception)."""
    version = wanted_python(requirements)
    python = find_python(version)
    if python is None:
        return f"Note: {name} needs Python {version}, not found (pyenv install {version}); chapter 10 skips {name}."
    target = ENVS / name
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    steps = [[python, "-m", "venv", str(target)],
             [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--progress-bar", "off",
              "--disable-pip-version-check", *pip_source_flags(), "-r", str(requirements)]]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return f"Note: {name}'s venv failed to install ({' / '.join(tail)}); chapter 10 skips {name}."
    seconds = time.perf_counter() - started
    record = {"seconds": round(seconds, 1), "bytes": folder_bytes(target),
              "python": subprocess.run([str(target / "bin" / "python"), "-c", "import sys; print(sys.version.split()[0])"],
                                       capture_output=True, text=True).stdout.strip()}
    (target / "install.json").write_text(json.dumps(record, indent=1) + "\n")
    (target / ".installed").write_text(digest(requirements) + "\n")
    return f"{name}: venv build/servers/{name}/ built in {seconds:.0f} s, {record['bytes'] / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list each server venv's state; build nothing")
    args = parser.parse_args(argv)
    if os.environ.get("COURSE_SERVER_ENVS") == "0" and not args.check:
        print("COURSE_SERVER_ENVS=0: chapter 10's server venvs are not built")
        return 0
    for name, requirements in requirement_files().items():
        if up_to_date(name, requirements):
            if args.check:
                print(f"{name}: up to date")
            continue
        if args.check:
            print(f"{name}: {'out of date' if (ENVS / name).exists() else 'not built'}")
            continue
        print(f"Building {name}'s own venv (chapter 10) ...", flush=True)
        print(build(name, requirements), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
