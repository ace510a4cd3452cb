"""--validation: a held-out split that depends on the seed only and is never trained on."""
import numpy as np
import pytest

from ffnumpy.config import Config
from ffnumpy.data import Dataset, DataError, hold_out, load_dataset
from ffnumpy.model import FFNet
from ffnumpy.train import main

TINY = ["--epochs", "2", "--batch-size", "64", "--width", "32", "--lr", "0.01"]


def _numbered(n_train=50, n_test=5):
    """A dataset whose image i holds the value i, so a split can be traced image by image."""
    x_train = np.arange(n_train, dtype=np.float32)[:, None].repeat(4, axis=1)  # (N, 4)
    y_train = np.arange(n_train) % 3
    x_test = np.zeros((n_test, 4), dtype=np.float32)
    return Dataset(x_train, y_train, x_test, np.zeros(n_test, dtype=np.int64), 3, (1, 2, 2),
                   "numbered")


def test_split_is_disjoint_complete_and_set_by_the_seed():
    data = _numbered()
    rest, x_val, y_val = hold_out(data, 12, seed=3)
    val_ids, rest_ids = x_val[:, 0].astype(int), rest.x_train[:, 0].astype(int)
    assert len(val_ids) == 12 and len(rest_ids) == 38
    assert not set(val_ids) & set(rest_ids)
    assert sorted([*val_ids, *rest_ids]) == list(range(50))
    np.testing.assert_array_equal(y_val, val_ids % 3)  # labels travel with their images
    np.testing.assert_array_equal(rest.y_train, rest_ids % 3)
    again = hold_out(data, 12, seed=3)[1][:, 0].astype(int)
    other = hold_out(data, 12, seed=4)[1][:, 0].astype(int)
    np.testing.assert_array_equal(val_ids, again)
    assert set(val_ids) != set(other)
    assert rest.x_test is data.x_test


@pytest.mark.parametrize("n_val", [-1, 50, 51])
def test_impossible_sizes_are_refused(n_val):
    with pytest.raises(DataError, match="--validation"):
        hold_out(_numbered(), n_val, seed=0)


def test_run_logs_validation_error_of_the_held_out_images(tiny_mnist, tmp_path, monkeypatch):
    """Each epoch's val_error is the error of the predictions made on exactly the held-out
    split (not the test or the training images), logged beside the test error."""
    seen = []
    original = FFNet.predict

    def logged(self, x):
        pred = original(self, x)
        seen.append((np.array(x), np.array(pred)))
        return pred

    monkeypatch.setattr(FFNet, "predict", logged)
    metrics = main([*TINY, "--validation", "40", "--data-dir", str(tiny_mnist),
                    "--out", str(tmp_path / "run")])
    _, x_val, y_val = hold_out(load_dataset("mnist", str(tiny_mnist)), 40, Config().seed)
    assert len(seen) == len(metrics["epochs"]) == 2
    for record, (x, pred) in zip(metrics["epochs"], seen):
        np.testing.assert_array_equal(x, x_val.astype(x.dtype))
        assert record["val_error"] == float((pred != y_val).mean())
        assert 0.0 <= record["test_error"] <= 1.0
    assert metrics["config"]["validation"] == 40


def test_validation_leaving_no_training_images_is_one_line(tiny_mnist, tmp_path, capsys):
    n_train = load_dataset("mnist", str(tiny_mnist)).x_train.shape[0]
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--validation", str(n_train), "--data-dir", str(tiny_mnist),
              "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "leaves no training images" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
