"""Sign a model version folder with a private key, and refuse to load one whose signature fails (chapter 12).

A manifest's sha256 sums (helpers.integrity) catch a file that changed by accident: a truncated copy, a flipped bit.
They do not stop an attacker who can write to the model repository: whoever swaps model.onnx for a backdoored one can
run `write_manifest` too, and the manifest checks out. A signature can only be made with the private key, which
never goes near the repository or the server: the server holds the public half (`--trusted-key`) and refuses any
version that it did not sign as it is on disk.

The signature is the Sigstore model-transparency format (the `model_signing` library, as the OpenSSF model-signing
specification describes it): a DSSE envelope over an in-toto statement listing every file's sha256, signed here with a
local elliptic key (ECDSA P-256) only: no Sigstore, no certificate authority, no network.

    generate_key_pair(directory)            KeyPair(private, public): the PEM files of a new P-256 key
    sign_version(folder, private_key)       writes folder/model.sig, signing every other file in the folder
    verify_version(folder, public_key)      returns, or raises SignatureError with an `outcome` (OUTCOMES)

The signature file lives inside the version folder (SIGNATURE, "model.sig"), so it travels with the version
(`helpers.serving.repository.publish` copies the folder), and it is the one file the signature leaves out: it cannot
sign itself. Every other file is covered, manifest.json included, and nothing else is left out (not even .git files,
which model_signing skips by default): a file added to the folder after signing fails the check as surely as one
changed. helpers.integrity leaves the signature out of the manifest for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.integrity import SIGNATURE, IntegrityError

__all__ = ["OUTCOMES", "SIGNATURE", "KeyPair", "SignatureError", "check_public_key", "generate_key_pair", "prepare",
           "sign_version", "verify_version"]

OUTCOMES = ("valid", "missing", "invalid", "wrong_key")  # what a check can say: the server counts each


@dataclass(frozen=True)
class KeyPair:
    private: Path  # PEM, PKCS#8, unencrypted, readable by its owner only: keep it away from the model repository
    public: Path  # PEM, SubjectPublicKeyInfo: what the server trusts (--trusted-key)


class SignatureError(IntegrityError):
    """A version folder whose signature is missing, fails, or was made with another key. `outcome` says which
    ("missing", "invalid", "wrong_key"); the text names the folder, and ends with the fix (added when shown)."""

    def __init__(self, message: str, outcome: str, folder: Path | str):
        super().__init__(message)
        self.outcome, self.folder = outcome, str(folder)

    def __reduce__(self):  # pickled as it was made (a spawned process, Ray): not with its message alone
        return type(self), (RuntimeError.__str__(self), self.outcome, self.folder)

    def __str__(self) -> str:
        fix = (f"sign the version with the private key whose public half the server trusts, "
               f"`helpers.signing.sign_version({self.folder!r}, private_key)`, then publish it again")
        if self.outcome == "wrong_key":
            fix += " (or, if you trust the key that signed it, start the server with --trusted-key naming its public key)"
        return f"{RuntimeError.__str__(self)}\nFix: {fix}; never serve a version whose signature fails."


def generate_key_pair(directory: Path, name: str = "signing") -> KeyPair:
    """A new ECDSA P-256 key as `<name>.key` (private, mode 0o600) and `<name>.pub` in `directory` (created)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pair = KeyPair(directory / f"{name}.key", directory / f"{name}.pub")
    # owner-only before a byte of the key is written: created 0o600, and an existing file made so first (O_CREAT's
    # mode applies to a new file only)
    descriptor = os.open(pair.private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    pair.public.write_bytes(public_pem(key.public_key()))
    return pair


def public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_public_key(path: Path) -> str:
    """The sha256 of the public key at `path` (what a signature's key hint names), refused with a ValueError naming
    the file unless it is a PEM elliptic-curve public key model_signing can verify with (P-256, P-384 or P-521). A
    server checks its --trusted-key once at start, so that a wrong file stops it there, not at every version."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable PEM public key ({error}); pass the .pub file that "
                         "helpers.signing.generate_key_pair wrote, not the private key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ValueError(f"{path} is not an elliptic-curve P-256, P-384 or P-521 public key; make one with "
                         "helpers.signing.generate_key_pair")
    return hashlib.sha256(public_pem(key)).hexdigest()


def prepare() -> None:
    """Import model_signing now (about 0.1 s, once per process), so that a server's first check is timed for what it
    costs, not for the import; without this the library is imported on first use."""
    from model_signing import hashing, signing, verifying  # noqa: F401


def hashing_config():
    """Every file of the folder but the signature, by sha256 (the same configuration to sign and to verify)."""
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(
        paths=[SIGNATURE], ignore_git_paths=False)


def sign_version(directory: Path, private_key: Path) -> Path:
    """Sign every file in the version folder `directory` with `private_key` (PEM); returns directory/model.sig. Sign
    last, once the folder is final (manifest written, drift reference added): any later change fails the check."""
    from model_signing import signing

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no version folder at {directory} to sign")
    signature = directory / SIGNATURE
    signature.unlink(missing_ok=True)  # never signed (it is ignored), but a stale one must not survive a failure
    signing.Config().use_elliptic_key_signer(private_key=Path(private_key)).set_hashing_config(hashing_config()).sign(
        directory, signature)
    return signature


def verify_version(directory: Path, public_key: Path) -> None:
    """Return if `directory` carries a signature by `public_key` of exactly the files it holds; else SignatureError:

        missing     no model.sig in the folder
        wrong_key   signed, but by another key (its key hint names another public key)
        invalid     a file changed, added or removed since signing (the message names it), or the signature itself is
                    malformed or edited (it does not match what it signs)

    The key hint is read first, and a signature without one is refused: model_signing would accept it after printing
    a warning to stdout, where no server log would show it."""
    directory = Path(directory)
    path = directory / SIGNATURE
    if not path.is_file():
        raise SignatureError(f"refusing to load {directory}: it has no signature ({SIGNATURE}), so nothing vouches "
                             "that its files are the ones that were signed", "missing", directory)
    expected = check_public_key(public_key)
    hint = key_hint(path, directory)
    if hint != expected:
        raise SignatureError(f"refusing to load {directory}: {path.name} was signed with another key (key sha256 "
                             f"{hint[:16]}...), not the trusted key {public_key} ({expected[:16]}...)", "wrong_key",
                             directory)
    check_files(directory, path, public_key)


def key_hint(path: Path, directory: Path) -> str:
    """The sha256 of the public key that the signature says it was made with; SignatureError("invalid") if the file
    is not a signature bundle with one."""
    try:
        hint = json.loads(path.read_text(encoding="utf-8"))["verificationMaterial"]["publicKey"]["hint"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SignatureError(f"refusing to load {directory}: {path.name} is not a model signature bundle "
                             f"({type(error).__name__}: {str(error)[:120]}): it is corrupt or was edited", "invalid",
                             directory) from None
    if not isinstance(hint, str) or not re.fullmatch(r"[0-9a-f]{64}", hint):
        raise SignatureError(f"refusing to load {directory}: {path.name} names no signing key (its key hint is "
                             f"{str(hint)[:80]!r}): it is corrupt, edited, or made by an older model_signing",
                             "invalid", directory)
    return hint


def check_files(directory: Path, path: Path, public_key: Path) -> None:
    """model_signing's check: the signature is the key's, and the files hash to what it lists."""
    from model_signing import verifying

    config = verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key)).set_hashing_config(hashing_config())
    try:
        config.verify(directory, path)
    except Exception as error:  # model_signing raises ValueError, cryptography's InvalidSignature, pydantic's errors...
        raise SignatureError(f"refusing to load {directory}: {what_failed(error)}", "invalid", directory) from None


def what_failed(error: Exception) -> str:
    """model_signing's reason in a sentence: which files differ from the signed ones, or that the signature fails."""
    text = str(error)
    if text.startswith("Signature mismatch"):
        # model_signing's message is str() of a list, so a quote may come escaped (\\') when a digest holds one
        text = text.replace("\\'", "'")
        changed = re.findall(r"Hash mismatch for '([^']+)'", text)
        added = re.findall(r"Extra files found in model '[^']*': ([^\"\]]+)", text)
        removed = re.findall(r"Missing files in model '[^']*': ([^\"\]]+)", text)
        parts = ([f"{', '.join(changed)} changed since it was signed"] if changed else []) + \
                ([f"{', '.join(added)} was added since it was signed"] if added else []) + \
                ([f"{', '.join(removed)} was removed since it was signed"] if removed else [])
        return "; ".join(parts) or text[:300]
    if type(error).__name__ == "InvalidSignature":
        return (f"{SIGNATURE} does not verify with the trusted key: the signature or what it signs was edited (or it "
                "was made with another key and its key hint changed)")
    return f"{SIGNATURE} is malformed ({type(error).__name__}: {text[:200]}): it is corrupt or was edited"
