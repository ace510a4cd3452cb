"""The real datasets load with the published per-channel statistics, and the CLI trains on
them. MNIST ships with the repository; Fashion-MNIST is read from Debian's package and
CIFAR-10 from ../shared/datasets/cifar10/ where present (each test says so when skipped)."""
from pathlib import Path

import numpy as np
import pytest

from ffnumpy import data as data_mod
from ffnumpy.data import channel_stats, load_dataset
from ffnumpy.train import main

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"

# Published per-channel mean and std of the training images on [0, 1].
PUBLISHED = {
    "mnist": ([0.1307], [0.3081]),
    "fashion-mnist": ([0.2860], [0.3530]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
}


def _data_dir(name):
    if name == "mnist":
        return None
    if name == "fashion-mnist":
        if not (data_mod.DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file():
            pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
        return None
    if not (SHARED / "cifar10" / "cifar-10-python.tar.gz").is_file():
        pytest.skip(f"no CIFAR-10 copy at {SHARED / 'cifar10'}")
    return str(SHARED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_channel_statistics(name):
    data = load_dataset(name, _data_dir(name))
    n_train, n_test = (50000, 10000) if name == "cifar10" else (60000, 10000)
    assert data.x_train.shape[0] == n_train and data.x_test.shape[0] == n_test
    assert np.bincount(data.y_test).min() > 0
    mean, std = channel_stats(data.x_train, data.image_shape)
    np.testing.assert_allclose(mean, PUBLISHED[name][0], atol=6e-4)
    np.testing.assert_allclose(std, PUBLISHED[name][1], atol=6e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_cli_trains_one_epoch_on_the_real_copy(name, tmp_path):
    args = [name, "--epochs", "1", "--width", "64", "--batch-size", "512", "--lr", "0.001",
            "--out", str(tmp_path / "run")]
    data_dir = _data_dir(name)
    if data_dir:
        args += ["--data-dir", data_dir]
    metrics = main(args)
    # chance is 90%. Measured on this project's CPU, seed 0: CIFAR-10 77.2% after this one
    # epoch (SymBa is slow to start on CIFAR), Fashion-MNIST far lower.
    assert metrics["final_test_error"] < 0.85
