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


def finished_tiny_run(root, args):
    """A finished run of the train command ``args`` on tiny MNIST, both made under
    ``root``: its data in ``root/data``, the run in ``root/run`` (returned)."""
    from ffnumpy.train import main as train_main

    make_tiny_mnist(root / "data" / "mnist")
    run = root / "run"
    train_main([*args, "--data-dir", str(root / "data"), "--out", str(run)])
    return run


@pytest.fixture
def tiny_mnist(tmp_path):
    """Path of a data folder holding a tiny MNIST in mnist/ (for --data-dir)."""
    make_tiny_mnist(tmp_path / "data" / "mnist")
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """No test may reach the network: downloads are off unless a test turns them back on."""
    monkeypatch.setenv("FFNUMPY_OFFLINE", "1")


def cifar_batch(n, n_classes, rng, label_key=b"labels"):
    """A batch dict in the official CIFAR python-version layout; class k is bright in
    the k-th of n_classes stripes, so a tiny net can learn it."""
    y = rng.integers(0, n_classes, size=n)
    images = rng.integers(0, 60, size=(n, 3, 32, 32), dtype=np.uint8)
    rows = (np.arange(32) * n_classes) // 32  # (32,), stripe index of each row
    stripe = rows[None, :] == y[:, None]  # (n, 32): the rows of each image's class
    images += (180 * stripe[:, None, :, None]).astype(np.uint8)
    return {b"batch_label": b"tiny", b"data": images.reshape(n, 3072),
            label_key: [int(v) for v in y], b"filenames": [b"x.png"] * n}


def make_tiny_cifar(root, name="cifar10", n_train=200, n_test=50, seed=0, tar=True):
    """Write a tiny CIFAR-10/100 in the official layout under root/<name>/: the extracted
    folder, and with ``tar`` instead the official tarball. Returns the data root."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    if name == "cifar10":
        top, n_classes, key = "cifar-10-batches-py", 10, b"labels"
        files = {f"data_batch_{i}": n_train // 5 for i in range(1, 6)}
        files["test_batch"] = n_test
        archive = "cifar-10-python.tar.gz"
    else:
        top, n_classes, key = "cifar-100-python", 100, b"fine_labels"
        files = {"train": n_train, "test": n_test}
        archive = "cifar-100-python.tar.gz"
    blobs = {f: pickle.dumps(cifar_batch(n, n_classes, rng, key), protocol=2)
             for f, n in files.items()}
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if tar:
        with tarfile.open(folder / archive, "w:gz") as t:
            for f, blob in blobs.items():
                info = tarfile.TarInfo(f"{top}/{f}")
                info.size = len(blob)
                t.addfile(info, io.BytesIO(blob))
    else:
        (folder / top).mkdir()
        for f, blob in blobs.items():
            (folder / top / f).write_bytes(blob)
    return root


def poison_train_step(monkeypatch, layer, at_call):
    """Make FFNet's ``at_call``-th training step (1-based) start from a NaN weight in
    ``layer`` (0-based), so the NaN guard has something to find."""
    from ffnumpy.model import FFNet

    calls = {"n": 0}
    original = FFNet.train_step

    def poisoned(self, *args):
        calls["n"] += 1
        if calls["n"] == at_call:
            self.W[layer][0, 0] = np.nan
        return original(self, *args)

    monkeypatch.setattr(FFNet, "train_step", poisoned)
