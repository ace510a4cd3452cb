"""The IDX reader and the MNIST loader: good files load, bad files get clear errors."""
import gzip
import hashlib
import struct

import numpy as np
import pytest

from ffnumpy import data as data_mod
from ffnumpy.data import DataError, load_dataset, load_mnist, read_idx
from tests.conftest import write_idx

SHA256 = {  # decompressed contents, from ../shared/datasets/README.md
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def test_round_trip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)


def test_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="magic number") as exc_info:
        read_idx(tmp_path / "x")
    assert str(tmp_path / "x") in str(exc_info.value)  # names the file


def test_to_unit_allocates_only_its_result():
    """uint8 -> float32 writes one result array: no float64 or second float32 copy."""
    import tracemalloc

    from ffnumpy.data import _to_unit

    a = np.random.default_rng(0).integers(0, 256, size=(2000, 28, 28), dtype=np.uint8)
    tracemalloc.start()
    x = _to_unit(a)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert x.dtype == np.float32 and x.shape == (2000, 784)
    np.testing.assert_array_equal(x, a.reshape(2000, -1) / np.float32(255))
    assert peak < 1.05 * x.nbytes, (peak, x.nbytes)


def test_truncated_file(tmp_path):
    write_idx(tmp_path / "x", np.zeros((10, 28, 28), dtype=np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x")


def test_file_longer_than_header_says(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 4), dtype=np.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes() + b"junk")
    with pytest.raises(DataError, match="longer"):
        read_idx(tmp_path / "x")


def test_forged_header_claiming_billions_of_items(tmp_path):
    header = struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 4_000_000_000, 28, 28)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(header + bytes(10))
    with pytest.raises(DataError, match="implausibly large"):
        read_idx(tmp_path / "x.gz")


def test_not_gzip_despite_name(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match="cannot be read"):
        read_idx(tmp_path / "x.gz")


def test_missing_file_names_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DATA_CACHE", tmp_path / "cache")  # no verified copy there
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist(tmp_path)


def test_labels_out_of_range(tiny_mnist):
    write_idx(tiny_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz", np.full(60, 12, np.uint8))
    with pytest.raises(DataError, match="labels 12..12"):
        load_mnist(tiny_mnist)


def test_unknown_dataset():
    with pytest.raises(DataError, match="mnist"):
        load_dataset("imagenet")


def test_shipped_mnist_is_the_real_one():
    """data_cache/mnist/ holds MNIST: checksums, sizes, and the published statistics."""
    from ffnumpy.data import DATA_CACHE

    for stem, digest in SHA256.items():
        with gzip.open(DATA_CACHE / "mnist" / f"{stem}.gz") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest
    data = load_mnist(DATA_CACHE)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() < data.x_train.max() <= 1
    assert data.x_train.mean() == pytest.approx(0.1307, abs=1e-4)
    assert data.x_train.std() == pytest.approx(0.3081, abs=1e-4)
    assert np.bincount(data.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                  6265, 5851, 5949]
