"""A model repository in the TF Serving layout, watched for new versions: `<root>/<model>/<version>/`.

Every numbered version folder is verified (its signature, with a `verify` hook: the server's --trusted-key; then its
sha256 manifest), loaded into its backend and warmed up before it can answer a request; only then is it swapped in, so requests in flight keep the version they started with. A new version that
fails is recorded with its error (the status endpoints report it) and the previous ones keep serving; it is retried
when its files change. The latest available version answers requests that name none.

A version that already serves keeps serving when its files change and the new ones fail (republished under the same
number, or corrupted in place), as in TF Serving and Triton: the verified copy in memory answers, the version's status
error says what is wrong on disk, the failure is logged and counted (`on_load(model, version, False)`), and the files
are tried again only when they change again. A version missing from disk is unloaded only once it has stayed missing
for `missing_grace_s` (see MISSING_GRACE_S: replacing a folder takes two renames).

Threads: the watcher scans in its own thread, the admin routes call `load` and `unload` from worker threads, requests
read on the event loop. See ModelRepository for the two locks.

A model's `config.json` (helpers.serving.model_config) is read on each scan of the model and applied when its content
changes: its version policy chooses the versions loaded (the others are END, "not in the version policy"), its labels
name versions, and its batching and queue settings travel with each version state (`VersionState.calls`). A config is
committed with the versions it selected, in the same swap (ModelVersions), so a reader sees either the old config and
its versions or the new ones. An invalid file is refused: the config in force stays, and its error is reported with
every version's status. A version the policy drops keeps serving while no version the policy selects is available
(TF Serving's availability-preserving loading): a new version that fails to load never causes an outage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from helpers.serving.backends import Backend, load_backend
from helpers.serving.model_config import (
    CONFIG,
    NO_CONFIG,
    CallSettings,
    ModelConfig,
    ModelConfigError,
    parse_config,
    select_versions,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # no path separators, no leading dot, no ".."
VERSION = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True), and small enough for an int64
log = logging.getLogger("helpers.serving")

# Why the watcher tolerates a missing version instead of publish() swapping folders atomically: POSIX cannot replace a
# non-empty folder in one step (Linux's renameat2(RENAME_EXCHANGE) and macOS's renamex_np(RENAME_SWAP) differ and are
# not in Python; a symlink per version would change the layout every other tool reads), anyone replacing a version by
# hand (`mv 1 1.old && mv new 1`) or with another tool leaves the same gap, and a directory listing taken while an
# entry is renamed may miss it (POSIX leaves readdir's answer unspecified then). So "missing" is a claim to confirm: a
# version is unloaded on the first scan at least this long after the first scan that missed it. The price: a deleted
# version stops serving about one poll later.
MISSING_GRACE_S = 1.0
NOT_IN_POLICY = "not in the version policy"


class ModelNotFound(LookupError):
    pass


class VersionNotReady(LookupError):
    pass


@dataclass
class VersionState:
    version: int
    state: str  # "AVAILABLE", "UNAVAILABLE" (failed to load), "END" (unloaded)
    error: str = ""  # why it is UNAVAILABLE; for an AVAILABLE one, why its files on disk are not what it serves
    backend: Backend | None = None
    fingerprint: tuple = ()  # of the files this state was loaded from (or refused)
    loaded_at: float = field(default_factory=time.time)
    refused: tuple = ()  # of the files that failed to replace this serving copy: not retried until they change
    calls: CallSettings = CallSettings()  # the model config's batching and queue overrides this state's caller is built with

    @property
    def failed(self) -> bool:
        """Its files failed to load: it is UNAVAILABLE, or it serves a copy loaded before they changed (`refused`)."""
        return self.state == "UNAVAILABLE" or bool(self.refused)

    def last_seen(self) -> tuple:
        """The fingerprint of the files last tried for this version: a scan tries them again only if they differ."""
        return self.refused or self.fingerprint


class ModelVersions(dict):
    """One model's entry in `ModelRepository.models`: its version states (version -> VersionState), with the config in
    force, the error of a refused config.json (or ""), and the bytes of the file last read (None: no file). Built
    whole and never changed, like the dictionaries around it."""

    def __init__(self, states: dict, config: ModelConfig = NO_CONFIG, config_error: str = "", config_raw: bytes | None = None):
        super().__init__(states)
        self.config, self.config_error, self.config_raw = config, config_error, config_raw


def config_of(versions: dict) -> ModelConfig:
    """The config in force for a model's versions (a plain dict, as tests build by hand, has none)."""
    return getattr(versions, "config", NO_CONFIG)


def valid_name(name: str) -> bool:
    return bool(NAME.match(name)) and ".." not in name


def fingerprint(directory: Path) -> tuple:
    """Names, sizes, modification and change times and inodes of a folder's files: changes when a copy completes or a
    file is replaced or rewritten. The change time (ctime) matters with --trusted-key: whoever rewrites a file between
    its signature check and its load can keep its size and set its mtime back (os.utime), but not its ctime, which
    the kernel sets on every write; load_version refuses a version whose fingerprint changed meanwhile."""
    def marks(path: Path) -> tuple:
        info = path.stat()
        return str(path.relative_to(directory)), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino

    return tuple(sorted(marks(p) for p in directory.rglob("*") if p.is_file()))


class ModelRepository:
    """The versions being served: `models[model][version]` is a VersionState; `models[model]` is a ModelVersions,
    which also carries the model's config (so one read of `models` gives a model's versions and its config together).

    `lock` guards `models` and `unloaded`: every change to them is made under it, held for a dictionary swap only, never
    during a load. They are never changed in place: a change builds a new dictionary (or frozenset) and assigns it, so
    a reader takes `self.models` once (or `snapshot()`), without the lock, and has a consistent view (one attribute
    read is atomic). The one field changed in place is a serving state's report about its files (`error`, `refused`):
    the copy that answers stays the same, so whatever is keyed by the state (batchers, drift monitors) carries on.

    `scan_lock` makes the loads take turns (the watcher's scan of a model, an operator's `load`); it can be held for
    seconds. `unload` never takes it: it swaps the model out at once, and a scan that was loading the model drops what
    it loaded (`commit`).
    """

    def __init__(self, root: Path, on_load=None, missing_grace_s: float = MISSING_GRACE_S, verify=None):
        self.root = Path(root)
        # verify(model, version, directory) raises unless the folder may be loaded (Server.verify_signature); None: no
        # check beyond the manifest's
        self.verify = verify
        self.models: dict[str, dict[int, VersionState]] = {}
        self.unloaded: frozenset[str] = frozenset()  # unloaded by an operator: the watcher leaves them alone
        self.lock = threading.Lock()
        self.scan_lock = threading.Lock()
        self.on_load = on_load or (lambda model, version, ok: None)  # metrics hook
        self.missing_grace_s = missing_grace_s
        self.missing_since: dict[str, dict[int, float]] = {}  # model -> version -> when a scan first missed it (scan_lock)

    # ------------------------------------------------------------------ scanning and loading

    def scan(self) -> None:
        """Load new or changed versions, retry failed ones whose files changed, drop versions (and models) whose folder
        is gone. A problem with one model is logged and does not stop the others. `scan_lock` is taken per model, so an
        operator's load waits for one model's scan, not for all of them."""
        on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and valid_name(p.name)} if self.root.is_dir() else set()
        for model in sorted(on_disk | set(self.models)):
            with self.scan_lock:
                if model in self.unloaded:
                    continue
                try:
                    self.scan_model(model)
                except Exception:
                    log.exception("scanning model %s failed; the versions already loaded keep serving", model)

    def scan_model(self, model: str) -> None:
        """(Re)load one model's versions as its config selects them and swap the result in; call with `scan_lock` held."""
        on_disk = self.versions_on_disk(model)
        previous = self.models.get(model, {})
        config, config_error, config_raw = self.read_config(model, previous)
        selected = select_versions(config.policy, on_disk)
        known = dict(previous)
        for version, directory in sorted(on_disk.items()):
            if model in self.unloaded:  # unloaded meanwhile: loading its other versions would be wasted
                return
            if version in selected:
                self.refresh(model, version, directory, known)
        self.drop_missing(model, known, on_disk)
        self.retire_unselected(model, known, set(on_disk) - selected)
        # new batching or queue settings give the versions new states (same backend), so new callers: see Server.caller
        states = {v: s if s.calls == config.calls else replace(s, calls=config.calls) for v, s in known.items()}
        self.commit(model, ModelVersions(states, config, config_error, config_raw))

    def read_config(self, model: str, previous: dict) -> tuple[ModelConfig, str, bytes | None]:
        """The model's config in force, the error of a refused config.json ("" if none) and the file's bytes (None:
        no file). Parsed only when the bytes differ from those read before (a config is small: its bytes are its
        fingerprint); a refused file keeps the config in force and is logged once, when it is first read."""
        path = self.root / model / CONFIG
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return NO_CONFIG, "", None
        if raw == getattr(previous, "config_raw", None):
            return previous.config, previous.config_error, raw
        try:
            config = parse_config(raw, path)
        except ModelConfigError as error:
            log.error("model %s: %s", model, error)
            return config_of(previous), str(error), raw
        log.info("model %s: %s applied (version policy: %s)", model, path, config.policy)
        return config, "", raw

    def retire_unselected(self, model: str, known: dict[int, VersionState], unselected: set[int]) -> None:
        """Mark the versions on disk outside the policy END, unloading those that served; but while no version the
        policy selects is available, the ones serving keep serving (never an outage for a policy's sake)."""
        selected_available = any(s.state == "AVAILABLE" for v, s in known.items() if v not in unselected)
        for version in sorted(unselected):
            current = known.get(version)
            if current is not None and (current.state == "END" or (current.state == "AVAILABLE" and not selected_available)):
                continue
            if current is not None and current.state == "AVAILABLE":
                log.info("model %s version %d: %s, unloaded", model, version, NOT_IN_POLICY)
            known[version] = VersionState(version, "END", error=NOT_IN_POLICY)

    def versions_on_disk(self, model: str) -> dict[int, Path]:
        model_dir = self.root / model
        try:
            return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and VERSION.fullmatch(p.name)}
        except (FileNotFoundError, NotADirectoryError):  # removed (or replaced) while we looked
            return {}

    def refresh(self, model: str, version: int, directory: Path, known: dict[int, VersionState]) -> None:
        """Load `version` into `known` if its files are new or changed since they were last tried. A serving version
        whose new files fail keeps its copy in memory (keep_serving)."""
        try:
            marks = fingerprint(directory)
        except FileNotFoundError:  # a file vanished while we looked (a version being replaced): next scan
            return
        current = known.get(version)
        if current is not None and current.last_seen() == marks:
            return
        loaded = self.load_version(model, version, directory, marks)
        if loaded is None:
            return
        if loaded.state == "AVAILABLE" or current is None or current.state != "AVAILABLE":
            known[version] = loaded
        else:
            self.keep_serving(model, current, loaded)

    def load_version(self, model: str, version: int, directory: Path, marks: tuple) -> VersionState | None:
        """The loaded version, or an UNAVAILABLE state saying why it failed; None if its files changed while it was
        being loaded (a copy or a replacement in progress: the next scan tries the files as they will be then)."""
        try:
            if self.verify is not None:  # first: not a byte of a version that fails it is parsed by a runtime
                self.verify(model, version, directory)
            backend = load_backend(directory)
        except Exception as error:  # anything: a bad version must never take the server down
            if changed(directory, marks):
                log.info("model %s version %d changed while being loaded; trying again on the next scan", model, version)
                return None
            message = f"{type(error).__name__}: {error}"
            log.error("model %s version %d refused: %s", model, version, message)
            self.on_load(model, version, False)
            return VersionState(version, "UNAVAILABLE", error=message, fingerprint=marks)
        if self.verify is not None and changed(directory, marks):  # replaced between the check and the load: the
            # bytes loaded may not be the bytes checked, so they are not served; the next scan checks the new files
            log.info("model %s version %d changed while being loaded; trying again on the next scan", model, version)
            return None
        log.info("model %s version %d loaded (%s)", model, version, backend.platform)
        self.on_load(model, version, True)
        return VersionState(version, "AVAILABLE", backend=backend, fingerprint=marks)

    def keep_serving(self, model: str, current: VersionState, failed: VersionState) -> None:
        """The files of a serving version changed and failed to load: its verified copy in memory keeps answering (an
        outage would be worse than the version already served), and its status says what is wrong on disk."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(current.loaded_at))
        with self.lock:
            current.error = (f"its files on disk changed and failed to load, so the copy loaded at {since} still serves: "
                             f"{failed.error}")
            current.refused = failed.fingerprint
        log.error("model %s version %d: still serving the copy loaded at %s; its files are tried again when they change",
                  model, current.version, since)

    def drop_missing(self, model: str, known: dict[int, VersionState], on_disk: dict[int, Path]) -> None:
        """Remove from `known` the versions whose folder has been missing for `missing_grace_s` (see MISSING_GRACE_S)."""
        now, first_missed = time.monotonic(), self.missing_since.get(model, {})
        missing = {v: first_missed.get(v, now) for v in known if v not in on_disk}
        for version in [v for v, since in missing.items() if now - since >= self.missing_grace_s]:
            known.pop(version)
            missing.pop(version)
            log.info("model %s version %d: folder removed, unloaded", model, version)
        if missing:
            self.missing_since[model] = missing
        else:
            self.missing_since.pop(model, None)

    def commit(self, model: str, known: ModelVersions) -> None:
        """Swap in a scan's result for `model` (no versions left: the model is removed), unless an operator unloaded
        the model while it was being scanned: the latest word is theirs."""
        with self.lock:
            if model in self.unloaded:
                return
            models = dict(self.models)
            removed = not known and models.pop(model, None) is not None
            if known:
                models[model] = known
            self.models = models
        if removed:
            log.info("model %s: folder removed, unloaded", model)

    def load(self, model: str) -> None:
        """Operators' explicit load: (re)scan one model even if it was unloaded. Waits for the scan of the model being
        scanned, if any (so call it from a worker thread, not the event loop)."""
        if not valid_name(model) or not (self.root / model).is_dir():
            raise ModelNotFound(f"model '{model}' is not in the repository")
        with self.scan_lock:
            with self.lock:
                self.unloaded = self.unloaded - {model}
            self.scan_model(model)

    def unload(self, model: str) -> None:
        """Operators' explicit unload: stop serving `model` now, and leave it alone until `load`. Never waits for a scan
        (see the class docstring)."""
        with self.lock:
            if model not in self.models:
                raise ModelNotFound(f"model '{model}' is not loaded")
            self.unloaded = self.unloaded | {model}
            self.models = {m: versions for m, versions in self.models.items() if m != model}
        log.info("model %s unloaded by an operator", model)

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

    # ------------------------------------------------------------------ lookups: no lock (see the class docstring)

    def snapshot(self) -> dict[str, ModelVersions]:
        """Every loaded model's versions as they are now: a view that no later change touches. Do not modify it."""
        return self.models

    def entry(self, model: str) -> ModelVersions:
        """The model's versions with its config, as one consistent view. Do not modify it."""
        models = self.models
        if model not in models:
            raise ModelNotFound(f"model '{model}' is not loaded" if valid_name(model) else "invalid model name")
        return models[model]

    def versions(self, model: str) -> dict[int, VersionState]:
        return dict(self.entry(model))

    def get(self, model: str, version: int | None = None, label: str | None = None) -> VersionState:
        """The requested version (by number or by its config's version label), or the latest available one; raises if
        it cannot answer: ModelNotFound if it is not loaded (unknown, or outside the version policy), VersionNotReady
        if it failed to load."""
        versions = self.entry(model)
        what = f"version {version}"
        if label is not None:
            version = labelled(model, versions, label)
            what = f"label '{label}' names version {version}, which"
        if version is None:
            available = [v for v, s in versions.items() if s.state == "AVAILABLE"]
            if not available:
                raise VersionNotReady(f"model '{model}' has no available version")
            return versions[max(available)]
        if version not in versions:
            raise ModelNotFound(f"model '{model}' has no version {version}" if label is None else f"model '{model}' {what} "
                                "is not loaded")
        if versions[version].state == "END":
            raise ModelNotFound(f"model '{model}' {what} is not loaded: {versions[version].error}")
        if versions[version].state != "AVAILABLE":
            raise VersionNotReady(f"model '{model}' {what} is not available: {versions[version].error}")
        return versions[version]

    def reports(self, versions: dict) -> dict[int, str]:
        """What each version's status says (TF Serving's error_message, the v2 index's reason): a refused config.json
        first, then why the version does not serve, or serves although the policy drops it, or what is wrong on disk."""
        config_error = getattr(versions, "config_error", "")
        selected = select_versions(config_of(versions).policy, versions)
        messages = {}
        for version, state in versions.items():
            note = state.error
            if state.state == "AVAILABLE" and version not in selected:
                note = "; ".join(filter(None, [f"{NOT_IN_POLICY}: serving until a version it selects is available", note]))
            messages[version] = "; ".join(filter(None, [config_error, note]))
        return messages

    def ready(self) -> bool:
        return any(s.state == "AVAILABLE" for versions in self.models.values() for s in versions.values())


def labelled(model: str, versions: dict, label: str) -> int:
    """The version that the model's config labels `label` (TF Serving's version_labels)."""
    labels = config_of(versions).labels
    if label not in labels:
        known = ", ".join(f"'{name}'" for name in sorted(labels)) or "none"
        raise ModelNotFound(f"model '{model}' has no version label '{label[:64]}' (its labels: {known}; they are set in "
                            f"its {CONFIG}'s version_labels)")
    return labels[label]


def changed(directory: Path, marks: tuple) -> bool:
    """Whether a folder's files are no longer those fingerprinted as `marks` (or the folder is gone)."""
    try:
        return not directory.is_dir() or fingerprint(directory) != marks
    except FileNotFoundError:
        return True


def publish(source: Path, root: Path, model: str, version: int) -> Path:
    """Copy an export folder into the repository as `<root>/<model>/<version>/`: under a hidden name first, then one
    rename, so a watching server never sees half a version (TF Serving asks the same of whoever deploys). Replacing a
    version takes two renames, with the version missing for a moment between them: the watcher waits before believing
    a version is gone (MISSING_GRACE_S)."""
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


def write_config(root: Path, model: str, document: dict | None) -> str | None:
    """Write `<root>/<model>/config.json` (None: delete it) in one step, as the watcher must see it: a scan that read a
    half-written file would refuse it. Returns the sha256 of what was written, which the server's
    GET /v2/models/<model>/config reports once it has read the file (None once it has seen it deleted)."""
    path = Path(root) / model / CONFIG
    if document is None:
        path.unlink(missing_ok=True)
        return None
    raw = (json.dumps(document, indent=2) + "\n").encode()
    staging = path.with_name(f".{CONFIG}.staging")
    staging.write_bytes(raw)
    os.replace(staging, path)
    return hashlib.sha256(raw).hexdigest()
