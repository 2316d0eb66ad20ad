"""A model repository in the TF Serving layout, watched for new versions: `<root>/<model>/<version>/`.

Every numbered version folder is verified (sha256 manifest), loaded into its backend and warmed up before it can answer
a request; only then is it swapped in, under a lock, so requests in flight keep the version they started with. A
version that fails is recorded with its error (the status endpoints report it) and the previous ones keep serving; it
is retried when its files change. The latest available version answers requests that name none.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.serving.backends import Backend, load_backend

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # no path separators, no leading dot, no ".."
VERSION = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True), and small enough for an int64
log = logging.getLogger("helpers.serving")


class ModelNotFound(LookupError):
    pass


class VersionNotReady(LookupError):
    pass


@dataclass
class VersionState:
    version: int
    state: str  # "AVAILABLE", "UNAVAILABLE" (failed to load), "END" (unloaded)
    error: str = ""
    backend: Backend | None = None
    fingerprint: tuple = ()
    loaded_at: float = field(default_factory=time.time)


def valid_name(name: str) -> bool:
    return bool(NAME.match(name)) and ".." not in name


def fingerprint(directory: Path) -> tuple:
    """Names, sizes and modification times of a folder's files: changes when a copy completes or a file is replaced."""
    return tuple(sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in directory.rglob("*") if p.is_file()))


class ModelRepository:
    def __init__(self, root: Path, on_load=None):
        self.root = Path(root)
        self.models: dict[str, dict[int, VersionState]] = {}
        self.unloaded: set[str] = set()
        self.lock = threading.Lock()  # guards `models` for readers: held for a dictionary swap, never during a load
        self.scan_lock = threading.Lock()  # one scan, load or unload at a time (the watch thread and the admin routes)
        self.on_load = on_load or (lambda model, version, ok: None)  # metrics hook

    # ------------------------------------------------------------------ scanning and loading

    def scan(self) -> None:
        """Load new or changed versions, retry failed ones whose files changed, drop versions (and models) whose folder
        is gone. A problem with one model is logged and does not stop the others."""
        on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and valid_name(p.name)} if self.root.is_dir() else set()
        with self.scan_lock:
            for model in sorted(on_disk | set(self.models)):
                if model in self.unloaded:
                    continue
                try:
                    self.scan_model(model)
                except Exception:
                    log.exception("scanning model %s failed; the versions already loaded keep serving", model)

    def scan_model(self, model: str) -> None:
        """(Re)load one model's versions; call with `scan_lock` held."""
        model_dir = self.root / model
        on_disk = {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and VERSION.fullmatch(p.name)} if model_dir.is_dir() else {}
        known = dict(self.models.get(model, {}))
        for version, directory in sorted(on_disk.items()):
            try:
                marks = fingerprint(directory)
            except FileNotFoundError:  # a file vanished while we looked (a version being replaced): next scan
                continue
            current = known.get(version)
            if current is not None and current.fingerprint == marks:
                continue
            known[version] = self.load_version(model, version, directory, marks)
        for version in set(known) - set(on_disk):
            known.pop(version)
            log.info("model %s version %d: folder removed, unloaded", model, version)
        with self.lock:
            if known:
                self.models[model] = known
            elif self.models.pop(model, None) is not None:
                log.info("model %s: folder removed, unloaded", model)

    def load_version(self, model: str, version: int, directory: Path, marks: tuple) -> VersionState:
        try:
            backend = load_backend(directory)
        except Exception as error:  # anything: a bad version must never take the server down
            message = f"{type(error).__name__}: {error}"
            log.error("model %s version %d refused: %s", model, version, message)
            self.on_load(model, version, False)
            return VersionState(version, "UNAVAILABLE", error=message, fingerprint=marks)
        log.info("model %s version %d loaded (%s)", model, version, backend.platform)
        self.on_load(model, version, True)
        return VersionState(version, "AVAILABLE", backend=backend, fingerprint=marks)

    def load(self, model: str) -> None:
        """Operators' explicit load: (re)scan one model even if it was unloaded."""
        if not valid_name(model) or not (self.root / model).is_dir():
            raise ModelNotFound(f"model '{model}' is not in the repository")
        with self.scan_lock:
            self.unloaded.discard(model)
            self.scan_model(model)

    def unload(self, model: str) -> None:
        with self.scan_lock:
            if model not in self.models:
                raise ModelNotFound(f"model '{model}' is not loaded")
            self.unloaded.add(model)
            with self.lock:
                self.models.pop(model)

    def watch(self, interval_s: float, stop: threading.Event) -> threading.Thread:
        """Scan every `interval_s` seconds in a background thread until `stop` is set (TF Serving polls the same way)."""
        def loop():
            while not stop.wait(interval_s):
                try:
                    self.scan()
                except Exception:  # a scan error is logged and retried next time
                    log.exception("repository scan failed")

        thread = threading.Thread(target=loop, name="repository-watch", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ lookups

    def versions(self, model: str) -> dict[int, VersionState]:
        with self.lock:
            if model not in self.models:
                raise ModelNotFound(f"model '{model}' is not loaded" if valid_name(model) else "invalid model name")
            return dict(self.models[model])

    def get(self, model: str, version: int | None = None) -> VersionState:
        """The requested version, or the latest available one; raises if it cannot answer."""
        versions = self.versions(model)
        if version is None:
            available = [v for v, s in versions.items() if s.state == "AVAILABLE"]
            if not available:
                raise VersionNotReady(f"model '{model}' has no available version")
            return versions[max(available)]
        if version not in versions:
            raise ModelNotFound(f"model '{model}' has no version {version}")
        if versions[version].state != "AVAILABLE":
            raise VersionNotReady(f"model '{model}' version {version} is not available: {versions[version].error}")
        return versions[version]

    def ready(self) -> bool:
        with self.lock:
            return any(s.state == "AVAILABLE" for versions in self.models.values() for s in versions.values())


def publish(source: Path, root: Path, model: str, version: int) -> Path:
    """Copy an export folder into the repository as `<root>/<model>/<version>/`: under a hidden name first, then one
    rename, so a watching server never sees half a version (TF Serving asks the same of whoever deploys)."""
    if not valid_name(model):
        raise ValueError(f"invalid model name {model!r}")
    final = Path(root) / model / str(version)
    staging, old = final.with_name(f".{version}.staging"), final.with_name(f".{version}.old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, staging)
    if final.exists():
        final.rename(old)  # replaced by two renames, not a slow delete: the version is missing for microseconds
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
