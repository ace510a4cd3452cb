"""Runs that survive: kill-and-resume equality, graceful SIGTERM, the NaN guard, damaged
checkpoints, and the predict command."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ffnumpy.checkpoint import CheckpointError, load_archive, save_archive
from ffnumpy.predict import main as predict_main
from ffnumpy.train import main
from tests.conftest import make_tiny_mnist, poison_train_step

# 1,200 images, batch 40: 30 steps an epoch, long enough to be interrupted mid-epoch
ARGS = ["mnist", "--epochs", "6", "--batch-size", "40", "--width", "96", "--lr", "0.01",
        "--seed", "3"]


@pytest.fixture
def data_dir(tmp_path):
    make_tiny_mnist(tmp_path / "data" / "mnist", n_train=1200, n_test=100)
    return tmp_path / "data"


def start(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ffnumpy.train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_same_run(dir_a, dir_b):
    a, meta_a = load_archive(dir_a / "model.npz")
    b, meta_b = load_archive(dir_b / "model.npz")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    arch_a, ma = load_archive(dir_a / "checkpoint.npz")
    arch_b, mb = load_archive(dir_b / "checkpoint.npz")
    for key in arch_a:  # weights and the Adam moments
        np.testing.assert_array_equal(arch_a[key], arch_b[key], err_msg=key)
    for ra, rb in zip(ma["metrics"]["epochs"], mb["metrics"]["epochs"], strict=True):
        assert (ra["epoch"], ra["loss"], ra["test_error"]) == (rb["epoch"], rb["loss"],
                                                                rb["test_error"])


# A child that trains as `python -m ffnumpy.train` does, but holds still at a chosen moment
# (before its N-th training step, or inside its N-th checkpoint write: the temporary file
# written and synced, not yet renamed) and says so in a marker file. The test then signals it
# at that moment, whatever the machine's speed: no sleep decides where the run is.
HELD_CHILD = r"""
import os, runpy, signal, sys
from pathlib import Path
from ffnumpy import bp, model

marker, kind, n, args = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
calls = [0]

def hold():
    marker.write_text("held")
    signal.pause()  # until a signal arrives (SIGKILL ends it here; SIGTERM lets it go on)

def counted(original, is_the_call):
    def wrapper(*a, **k):
        if is_the_call(*a):
            calls[0] += 1
            if calls[0] == n:
                hold()
        return original(*a, **k)
    return wrapper

if kind == "step":
    for cls in (model.FFNet, bp.BPNet):
        cls.train_step = counted(cls.train_step, lambda *a: True)
else:  # "checkpoint": os.replace is the rename that publishes a written temporary file
    os.replace = counted(os.replace, lambda src, dst, *a: str(dst).endswith("checkpoint.npz"))
sys.argv = ["ffnumpy.train", *args]
runpy.run_module("ffnumpy.train", run_name="__main__")
"""


def start_held(args, marker, kind, n):
    """The training command ``args`` in a child held at its ``n``-th ``kind`` ("step" or
    "checkpoint"); returns once it is held there."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HELD_CHILD, str(marker), kind, str(n),
                             *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not marker.exists():  # no deadline needed: the child either holds or ends
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before its {kind} {n}: {out}{err}")
        time.sleep(0.01)
    return proc


# 12 epochs of 30 steps, a checkpoint after every epoch (--checkpoint-seconds 0)
KILL_AT = [("step", 31), ("step", 197), ("checkpoint", 2), ("checkpoint", 7)]


@pytest.mark.parametrize("algo", ["symba", "bp"])
@pytest.mark.parametrize("kind, n", KILL_AT, ids=[f"{k}{n}" for k, n in KILL_AT])
def test_sigkill_then_resume_is_identical(data_dir, tmp_path, algo, kind, n):
    """kill -9 between two steps of an epoch, or in the middle of a checkpoint write (its
    temporary written, not renamed), then --resume: the same weights, moments and metrics
    as a run that was never interrupted, and no stale temporary left."""
    args = [*ARGS, "--epochs", "12", "--algo", algo, "--data-dir", str(data_dir),
            "--checkpoint-seconds", "0"]
    ref = tmp_path / "ref"
    main([*args, "--out", str(ref)])
    run = tmp_path / "killed"
    proc = start_held([*args, "--out", str(run)], tmp_path / "held", kind, n)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model.npz").exists()
    if kind == "checkpoint":  # killed between the write and the rename
        assert [p for p in run.iterdir() if p.name.endswith(".tmp")]
    main(["--resume", str(run)])
    assert_same_run(ref, run)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # stale temporaries gone


@pytest.mark.parametrize("extra", [[], ["--negatives", "hard"]], ids=["uniform", "hard"])
def test_sigterm_checkpoints_mid_epoch_and_resume_is_identical(data_dir, tmp_path, extra):
    args = [*ARGS, "--epochs", "12", "--data-dir", str(data_dir), *extra]
    ref = tmp_path / "ref"
    main([*args, "--out", str(ref)])
    run = tmp_path / "stopped"
    proc = start_held([*args, "--out", str(run)], tmp_path / "held", "step", 45)  # epoch 2
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"--resume {run}" in out
    _, meta = load_archive(run / "checkpoint.npz")
    assert (meta["next_epoch"], meta["next_step"]) == (2, 15)  # the held step, then stopped
    arrays, _ = load_archive(run / "checkpoint.npz")
    assert ("epoch_y_neg" in arrays) == ("hard" in extra)
    main(["--resume", str(run)])
    assert_same_run(ref, run)


def test_resume_of_a_finished_run_changes_nothing(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    main([*ARGS, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(run)])
    before = (run / "model.npz").read_bytes()
    main(["--resume", str(run)])
    assert "already complete" in capsys.readouterr().out
    assert (run / "model.npz").read_bytes() == before


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the injected NaN
def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch,
                                                            capsys):
    poison_train_step(monkeypatch, layer=1, at_call=45)  # epoch 2 (30 steps an epoch)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS, "--data-dir", str(data_dir), "--out", str(run)])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "layer 2" in err and "epoch 2" in err and "--lr" in err
    arrays, meta = load_archive(run / "checkpoint.npz")
    assert meta["next_epoch"] == 2
    assert all(np.isfinite(a).all() for a in arrays.values())


def test_damaged_checkpoints_get_clear_errors(data_dir, tmp_path):
    run = tmp_path / "run"
    main([*ARGS, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(run)])
    ckpt = run / "checkpoint.npz"
    arrays, meta = load_archive(ckpt)
    save_archive(tmp_path / "v99.npz", arrays, {**meta, "version": 99})
    with pytest.raises(CheckpointError, match="version 99"):
        load_archive(tmp_path / "v99.npz")
    data = ckpt.read_bytes()
    for damaged in (data[:100], data[: len(data) - 50], b"\x00" * len(data)):
        ckpt.write_bytes(damaged)
        result = subprocess.run([sys.executable, "-m", "ffnumpy.train", "--resume", str(run)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "checkpoint" in result.stderr or "corrupted" in result.stderr


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "c.npz"
    save_archive(target, {"a": np.ones(3)}, {"kind": "test"})
    before = target.read_bytes()

    class Boom(Exception):
        pass

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise Boom

    with pytest.raises(Boom):
        save_archive(target, {"a": np.zeros(3), "b": Exploding()}, {"kind": "test"})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_predict_command_reproduces_the_logged_error(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    metrics = main([*ARGS, "--epochs", "2", "--data-dir", str(data_dir), "--out", str(run)])
    error = predict_main([str(run), "--data-dir", str(data_dir), "--save",
                          str(tmp_path / "pred.npy")])
    assert error == metrics["final_test_error"]
    assert np.load(tmp_path / "pred.npy").shape == (100,)
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2


def test_checkpoint_policy_bounds_both_epochs_and_seconds():
    from ffnumpy.config import Config
    from ffnumpy.train import checkpoint_due

    cfg = Config(epochs=10, checkpoint_every=2, checkpoint_seconds=60.0)
    assert not checkpoint_due(cfg, 3, epochs_since=1, seconds_since=500.0)  # too few epochs
    assert not checkpoint_due(cfg, 3, epochs_since=2, seconds_since=59.9)  # too soon
    assert checkpoint_due(cfg, 3, epochs_since=2, seconds_since=60.0)
    assert checkpoint_due(cfg, 10, epochs_since=0, seconds_since=0.0)  # the end, always


@pytest.mark.parametrize("every, seconds, written", [
    ("1", "1e9", [2, 8]),  # by time: the first epoch (none exists yet), then only the end
    ("3", "0", [4, 7, 8]),  # by epochs alone, and the end
])
def test_checkpoints_follow_the_policy(data_dir, tmp_path, monkeypatch, every, seconds, written):
    from ffnumpy import train

    saved = []
    original = train.save_archive

    def spy(path, arrays, meta):
        saved.append(meta["next_epoch"])
        return original(path, arrays, meta)

    monkeypatch.setattr(train, "save_archive", spy)
    metrics = main([*ARGS, "--epochs", "7", "--data-dir", str(data_dir), "--out",
                    str(tmp_path / "run"), "--checkpoint-every", every,
                    "--checkpoint-seconds", seconds])
    assert saved == written
    assert [r["epoch"] + 1 for r in metrics["epochs"] if "checkpoint_seconds" in r] == written
