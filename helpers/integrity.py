"""Hashes and the refusal to load a file that changed since it was written."""

from __future__ import annotations

import hashlib
from pathlib import Path


class IntegrityError(RuntimeError):
    """A file's content is not what was recorded when it was written. Its text ends with the learner's fix (added when
    shown, not stored: a pickled copy, as Ray and spawned processes make, does not repeat it)."""

    def __str__(self) -> str:
        from helpers.fixes import with_fix

        return with_fix(super().__str__(), "tampered")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise IntegrityError naming the file and both hashes unless `path` hashes to `expected_sha256`."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise IntegrityError(
            f"refusing to load {path}: its sha256 is {actual} but {expected_sha256} was recorded when it was saved: "
            "the file is corrupt or was changed."
        )


# --------------------------------------------------------------------------- manifests for exported artifacts

MANIFEST = "manifest.json"


def write_manifest(directory: Path, **fields) -> Path:
    """manifest.json in `directory`: every file's size and sha256 (walking subfolders), plus `fields` (format, io, card...)."""
    import json

    directory = Path(directory)
    files = {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    path = directory / MANIFEST
    path.write_text(json.dumps({**fields, "files": files}, indent=2, default=str))
    return path


def verify_manifest(directory: Path, required: tuple[str, ...] = ()) -> dict:
    """The manifest of `directory`, after checking every file in the folder against it.

    Refused (IntegrityError naming the file): no manifest; a `required` file the manifest does not list; a listed file
    missing or changed; a file in the folder the manifest does not list (an added file could be loaded unchecked).
    """
    import json

    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise IntegrityError(f"refusing to load {directory}: it has no {MANIFEST}, so its files cannot be checked")
    manifest = json.loads(manifest_path.read_text())
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise IntegrityError(f"refusing to load {directory}: its {MANIFEST} lists no files")
    for name in required:
        if name not in listed:
            raise IntegrityError(f"refusing to load {directory}: {name} is not listed in its {MANIFEST}")
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    if unlisted := sorted(present - set(listed)):
        raise IntegrityError(f"refusing to load {directory}: {unlisted[0]} is not listed in its {MANIFEST}")
    for name, expected in listed.items():
        path = directory / name
        if not path.exists():
            raise IntegrityError(f"refusing to load {directory}: {name} is listed in {MANIFEST} but missing")
        verify_file(path, expected["sha256"])
    return manifest


def total_bytes(manifest: dict) -> int:
    return sum(f["bytes"] for f in manifest["files"].values())
