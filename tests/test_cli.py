"""The training command as a user meets it: help, bad values, run folder, saved model."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ffnumpy.checkpoint import CheckpointError
from ffnumpy.saving import load_model
from ffnumpy.train import main

TINY = ["--epochs", "2", "--batch-size", "64", "--width", "32", "--lr", "0.01"]


def run_cli(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ffnumpy.train", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_help_lists_every_flag():
    out = run_cli(["--help"]).stdout
    for flag in ("--algo", "--labels", "--layers", "--width", "--epochs", "--batch-size", "--lr",
                 "--alpha", "--theta", "--icp-rate", "--goodness", "--seed", "--backend",
                 "--dtype", "--out", "--resume"):
        assert flag in out
    assert "{symba,ff,bp}" in out


@pytest.mark.parametrize("args, message", [
    (["--epochs", "-3"], "--epochs must be at least 1"),
    (["--width", "0"], "--width must be at least 1"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--icp-rate", "0"], "--icp-rate must be in (0, 1]"),
    (["--icp-rate", "1.5"], "--icp-rate must be in (0, 1]"),
    (["--algo", "sgd"], "invalid choice"),
    (["imagenet"], "invalid choice"),
    (["--backend", "tpu"], "invalid choice"),
    (["--epochs", "ten"], "invalid int value"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--seed", "-5"], "--seed must be an integer >= 0"),
])
def test_bad_values_exit_2_with_one_clear_line(tmp_path, args, message):
    out = tmp_path / "run"
    result = run_cli([*args, "--out", str(out)])
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no usage block
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("module", ["ffnumpy.train", "ffnumpy.predict"])
def test_help_gives_each_option_a_text_and_one_default(module):
    import argparse
    import importlib
    import re

    parser = (importlib.import_module("ffnumpy.config").build_parser()
              if module == "ffnumpy.train" else
              importlib.import_module("ffnumpy.predict").build_parser())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != action.dest.replace("_", " "), action.dest
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, timeout=300).stdout
    flat = " ".join(out.split())
    assert not re.search(r"\(default:[^()]*\)\s*\(default:", flat), flat
    assert "(default: None)" not in flat


def test_missing_cupy_or_gpu_is_one_line(tmp_path):
    try:
        import cupy
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: the error path cannot be exercised")
    result = run_cli(["--backend", "cupy", "--out", str(tmp_path / "run")])
    assert result.returncode == 2
    assert "--backend cupy" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("algo, labels", [("symba", "icp"), ("ff", "overlay"), ("bp", "icp")])
def test_smoke_run_writes_the_run_folder(tiny_mnist, tmp_path, algo, labels):
    out = tmp_path / "run"
    metrics = main(["mnist", "--algo", algo, "--labels", labels, *TINY, "--data-dir",
                    str(tiny_mnist), "--out", str(out)])
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    assert all(0.0 <= r["test_error"] <= 1.0 for r in metrics["epochs"])
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.json", "checkpoint.npz",
                                               "model.npz", ".lock"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final_test_error"] == metrics["epochs"][-1]["test_error"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["algo"] == algo and config["config"]["epochs"] == 2
    # the saved model reproduces the logged test error
    model, cfg, _ = load_model(out)
    from ffnumpy.data import load_dataset

    data = load_dataset("mnist", str(tiny_mnist))
    error = float((model.predict(data.x_test) != data.y_test).mean())
    assert error == metrics["final_test_error"]


def test_tiny_symba_learns(tiny_mnist, tmp_path):
    """On a dataset of noisy class templates SymBa must get far below chance (90%)."""
    metrics = main(["mnist", "--epochs", "15", "--batch-size", "32", "--width", "64",
                    "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "run")])
    assert metrics["final_test_error"] < 0.2


def test_refuses_to_overwrite_another_run(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    main(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(out)])
    before = (out / "metrics.json").read_bytes()
    result = run_cli(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(out)])
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert (out / "metrics.json").read_bytes() == before
    main(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(out), "--overwrite"])


def test_same_seed_same_run(tiny_mnist, tmp_path):
    a = main(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "a")])
    b = main(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "b")])
    assert [r["loss"] for r in a["epochs"]] == [r["loss"] for r in b["epochs"]]


def test_damaged_model_file_is_a_clear_error(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    main(["mnist", *TINY, "--data-dir", str(tiny_mnist), "--out", str(out)])
    data = (out / "model.npz").read_bytes()
    (out / "model.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_model(out / "model.npz")
    (out / "model.npz").write_bytes(np.zeros(10).tobytes())
    with pytest.raises(CheckpointError):
        load_model(out / "model.npz")


def test_no_host_transfer_per_step(tiny_mnist, tmp_path, monkeypatch):
    """Device values reach the host once an epoch, however many steps it has: the loop
    never reads a device value per step (which would synchronise a GPU each step)."""
    from ffnumpy import train as train_mod

    counts, real = {}, train_mod.to_host
    for batch in (120, 12):  # 2 and 20 steps an epoch
        calls = []
        monkeypatch.setattr(train_mod, "to_host", lambda a: calls.append(1) or real(a))
        main(["mnist", "--data-dir", str(tiny_mnist), "--epochs", "2", "--width", "16",
              "--batch-size", str(batch), "--out", str(tmp_path / f"b{batch}")])
        counts[batch] = len(calls)
    assert counts[120] == counts[12]
