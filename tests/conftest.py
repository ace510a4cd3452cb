"""Shared fixtures: a seeded generator, the array modules, tiny datasets on disk."""
import gzip
import struct

import numpy as np
import pytest

from ffnumpy.backend import BackendError, get_xp


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _cupy_or_skip():
    try:
        return get_xp("cupy")
    except BackendError as exc:
        pytest.skip(f"CuPy backend unavailable: {exc}")


@pytest.fixture
def cupy():
    return _cupy_or_skip()


def write_idx(path, array):
    """Write a uint8 array in IDX format, gzip-compressed when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def make_tiny_mnist(folder, n_train=240, n_test=60, seed=0):
    """A learnable MNIST-format dataset: each class is a noisy copy of its own template."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 28, 28)) < 0.2

    def split(n):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.random((n, 28, 28)) < 0.05
        images = (templates[y] ^ noise).astype(np.uint8) * 255
        return images, y

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, y = split(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture
def tiny_mnist(tmp_path):
    """Path of a data folder holding a tiny MNIST in mnist/ (for --data-dir)."""
    make_tiny_mnist(tmp_path / "data" / "mnist")
    return tmp_path / "data"
