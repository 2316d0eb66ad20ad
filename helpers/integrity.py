"""Hashes and the refusal to load a file that changed since it was written."""

from __future__ import annotations

import hashlib
from pathlib import Path


class IntegrityError(RuntimeError):
    """A file's content is not what was recorded when it was written."""


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
            f"refusing to load {path}: its sha256 is {actual} but {expected_sha256} was recorded when it was saved. "
            "The file is corrupt or was changed; delete it to rebuild it."
        )
