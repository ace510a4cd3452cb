"""What the training loop hands the model, step by step: negatives that are never the true
label (aligned with the epoch's shuffle), the last partial batch, and the learning rate of
every epoch under linear decay (the validation split: tests/test_validation.py)."""
import numpy as np
import pytest

from ffnumpy import train
from ffnumpy.config import Config
from ffnumpy.data import load_dataset
from ffnumpy.model import FFNet

SMALL = ["--width", "16", "--lr", "0.01"]


def record_steps(monkeypatch):
    """Make every FFNet training step log its batch (host copies) and each layer's rate."""
    steps = []
    original = FFNet.train_step

    def logged(self, x, y, y_neg):
        steps.append({"n": x.shape[0], "y": np.array(y), "y_neg": np.array(y_neg),
                      "lr": [opt.lr for opt in self.optimizers]})
        return original(self, x, y, y_neg)

    monkeypatch.setattr(FFNet, "train_step", logged)
    return steps


# --- negatives and batches ---

def test_epoch_plan_negatives_are_wrong_for_the_shuffled_images():
    """Row i of the epoch's negatives belongs to image perm[i]: never its true label, in
    every epoch (a negative drawn for y instead of y[perm] would often equal y[perm])."""
    cfg = Config()
    y = np.random.default_rng(0).integers(0, 10, 500)
    perms = []
    for epoch in range(1, 6):
        perm, y_neg, _ = train.epoch_plan(cfg, y, 10, epoch)
        assert sorted(perm) == list(range(500))
        assert np.all(y_neg != y[perm]), f"epoch {epoch}: a negative equals its true label"
        perms.append(perm)
    assert not np.array_equal(perms[0], perms[1])  # a new shuffle each epoch


def test_loop_gives_each_step_wrong_negatives_and_keeps_the_partial_batch(tiny_mnist,
                                                                         tmp_path, monkeypatch):
    """240 images in batches of 100: every epoch trains on 100, 100 and the last 40; each
    step's negative labels differ from its true labels, image by image, in every epoch,
    and together the steps of an epoch cover every training image's label once."""
    steps = record_steps(monkeypatch)
    train.main(["--epochs", "3", "--batch-size", "100", *SMALL, "--data-dir", str(tiny_mnist),
                "--out", str(tmp_path / "run")])
    y_train = load_dataset("mnist", str(tiny_mnist)).y_train
    assert [s["n"] for s in steps] == [100, 100, 40] * 3
    for k, s in enumerate(steps):
        assert np.all(s["y_neg"] != s["y"]), f"step {k + 1}: a negative is the true label"
    for epoch in range(3):
        labels = np.concatenate([s["y"] for s in steps[3 * epoch:3 * epoch + 3]])
        np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                      np.bincount(y_train, minlength=10))


# --- the learning rate ---

def test_linear_decay_rate_of_every_epoch():
    """Constant for the first half, then down in equal steps; the last epoch still learns."""
    cfg = Config(lr=0.01, epochs=6, lr_decay="linear")
    rates = [cfg.lr_at(e) for e in range(1, 7)]
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.01, 0.01, 0.01 * 4 / 6, 0.01 * 2 / 6],
                               rtol=1e-12)
    assert rates[-1] > 0
    assert [Config(lr=0.01, epochs=6).lr_at(e) for e in range(1, 7)] == [0.01] * 6


def test_loop_trains_each_epoch_at_its_decayed_rate(tiny_mnist, tmp_path, monkeypatch):
    steps = record_steps(monkeypatch)
    train.main(["--epochs", "4", "--batch-size", "120", "--lr-decay", "linear", *SMALL,
                "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "run")])
    cfg = Config(lr=0.01, epochs=4, lr_decay="linear")
    assert len(steps) == 4 * 2
    for k, s in enumerate(steps):
        epoch = k // 2 + 1
        assert s["lr"] == [pytest.approx(cfg.lr_at(epoch), rel=1e-12)] * 2, f"epoch {epoch}"
    assert steps[-1]["lr"][0] < steps[0]["lr"][0]
