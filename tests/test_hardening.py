"""Files an attacker or an accident can hand ffnumpy, and the writes that must never be
lost: links in a run folder, sizes that a file declares, non-finite state, the old run under
--overwrite, a finished run without its model, moved data, signals at start-up, a closed
standard output, and a dataset folder that is not ffnumpy's own."""
import errno
import fcntl
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ffnumpy import train
from ffnumpy.checkpoint import CheckpointError, load_archive, save_archive
from ffnumpy.data import DataError, load_dataset, read_idx
from ffnumpy.download import UnsafeFileError, load_pickle
from ffnumpy.model import FFNet
from ffnumpy.predict import main as predict_main
from ffnumpy.train import main
from tests.conftest import (finished_tiny_run, make_tiny_cifar, make_tiny_mnist,
                            poison_train_step)

REPO = Path(__file__).resolve().parent.parent
# 240 training images in batches of 64: 4 steps an epoch
TINY = ["mnist", "--epochs", "1", "--batch-size", "64", "--width", "16", "--seed", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run and its data folder, trained once for the module."""
    return finished_tiny_run(tmp_path_factory.mktemp("hardening"), TINY)


@pytest.fixture
def data_dir(finished_run):
    return finished_run.parent / "data"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of the finished run that a test may change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def exits_with(code, entry, argv, capsys):
    """Run ``entry(argv)``, expect exit ``code``; returns its one-line stderr."""
    with pytest.raises(SystemExit) as exit_info:
        entry(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def unfinished(run, change=None):
    """Make ``run``'s checkpoint one that --resume continues (one more epoch to go),
    after ``change(arrays, meta)``."""
    arrays, meta = load_archive(run / "checkpoint.npz")
    meta["config"]["epochs"] = 2
    if change:
        change(arrays, meta)
    save_archive(run / "checkpoint.npz", arrays, meta)
    (run / "model.npz").unlink(missing_ok=True)


def snapshot(folder):
    """Every path under ``folder`` with its modification time."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_mtime_ns)
                  for p in [folder, *folder.rglob("*")])


# --- links in a run folder ---

@pytest.mark.parametrize("how", ["--resume", "--out"])
def test_lock_that_is_a_symlink_is_refused_not_followed(tmp_path, data_dir, capsys, how):
    """A .lock that is a symlink is refused, not followed: the file it points at keeps
    its contents, with --resume and with a fresh --out."""
    run, precious = tmp_path / "r", tmp_path / "v"
    run.mkdir()
    precious.write_text("precious\n")
    (run / ".lock").symlink_to(precious)
    argv = ["--resume", str(run)] if how == "--resume" else \
        [*TINY, "--data-dir", str(data_dir), "--out", str(run)]
    exits_with(2, main, argv, capsys)
    assert precious.read_text() == "precious\n"


def test_checkpoint_that_is_a_symlink_is_not_read(run_copy, tmp_path, capsys):
    """A run folder's checkpoint.npz that is a symlink to a file elsewhere is refused."""
    unfinished(run_copy)
    outside = tmp_path / "elsewhere.npz"
    os.replace(run_copy / "checkpoint.npz", outside)
    (run_copy / "checkpoint.npz").symlink_to(outside)
    err = exits_with(2, main, ["--resume", str(run_copy)], capsys)
    assert "symbolic link" in err


# --- --overwrite and a finished run's model ---

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_overwrite_removes_every_file_of_the_old_run(run_copy, data_dir, monkeypatch, capsys):
    """--overwrite removes the old run's checkpoint, model and metrics, so a new run that
    fails early cannot be taken for it."""
    poison_train_step(monkeypatch, layer=0, at_call=1)  # the new run diverges at once
    exits_with(3, main, [*TINY, "--lr", "0.02", "--data-dir", str(data_dir),
                         "--out", str(run_copy), "--overwrite"], capsys)
    left = {p.name for p in run_copy.iterdir()}
    assert not left & {"checkpoint.npz", "model.npz", "metrics.json"}, left
    assert json.loads((run_copy / "config.json").read_text())["config"]["lr"] == 0.02


def test_resume_of_a_finished_run_without_its_model_writes_it(run_copy, capsys):
    """A finished run whose model.npz is missing (a failed last write, or a kill -9 after
    the final checkpoint) gets it from --resume, and predict then evaluates the model."""
    metrics = json.loads((run_copy / "metrics.json").read_text())
    (run_copy / "model.npz").unlink()
    main(["--resume", str(run_copy)])
    assert "wrote it from the final checkpoint" in capsys.readouterr().out
    assert (run_copy / "model.npz").is_file()
    error = predict_main([str(run_copy)])
    out = capsys.readouterr().out
    assert "unfinished" not in out and error == metrics["final_test_error"]


# --- moved data ---

def test_relative_data_dir_is_saved_resolved_and_resume_takes_data_dir(finished_run, tmp_path,
                                                                      monkeypatch, capsys):
    """A relative --data-dir is saved as an absolute path; --resume takes a --data-dir
    (the data moved) and refuses one whose data differ from the run's."""
    shutil.copytree(finished_run.parent / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    main([*TINY, "--data-dir", "data", "--out", "run"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["data_dir"]
    assert saved == str(tmp_path / "data")
    unfinished(tmp_path / "run")
    os.replace(tmp_path / "data", tmp_path / "moved")
    make_tiny_mnist(tmp_path / "other" / "mnist", n_train=120)
    err = exits_with(2, main, ["--resume", "run", "--data-dir", "other"], capsys)
    assert "not the data" in err
    metrics = main(["--resume", "run", "--data-dir", "moved"])
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]


# --- sizes a file declares ---

class _ZeroStrides:
    """Pickles as numpy.ndarray(shape, dtype, buffer, offset, strides): 200,000 images
    declared over one byte."""

    def __reduce__(self):
        return (np.ndarray, ((200000, 3072), np.dtype(np.uint8), b"\0", 0, (0, 0)))


def test_pickle_array_with_zero_strides_is_refused(tmp_path):
    """A CIFAR pickle that calls numpy.ndarray(shape, dtype, buffer, offset, strides) to
    declare 200,000 images over one byte is refused before anything is allocated."""
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _ZeroStrides(), b"labels": [0]}, protocol=2))
    with pytest.raises(UnsafeFileError, match="a form data files never use"):
        load_pickle(path)


def _npy_entry(shape, dtype="<f4", data=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def test_npz_entry_declaring_a_huge_shape_is_refused(run_copy, capsys):
    """A checkpoint entry whose header declares shape (10^7, 10^7) is refused from the
    bytes present, in --resume and in predict, before anything is allocated."""
    path = run_copy / "checkpoint.npz"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("W0_bogus.npy", _npy_entry((10**7, 10**7), data=b"\0" * 16))
    with pytest.raises(CheckpointError, match="declares shape"):
        load_archive(path)
    (run_copy / "model.npz").unlink()
    exits_with(2, main, ["--resume", str(run_copy)], capsys)
    exits_with(2, predict_main, [str(run_copy)], capsys)


def test_model_header_that_needs_terabytes_is_refused_by_predict(run_copy, capsys):
    """predict checks the memory a model's header implies (here a 10^5 x 10^5 image)
    before it builds anything, as train does for a run."""
    arrays, meta = load_archive(run_copy / "model.npz")
    meta["image_shape"] = [1, 100000, 100000]
    save_archive(run_copy / "model.npz", arrays, meta)
    err = exits_with(2, predict_main, [str(run_copy)], capsys)
    assert "not enough memory" in err


# --- non-finite state ---

def test_nan_weights_are_refused_when_read(run_copy, capsys):
    """A model or checkpoint whose weights hold NaN is an error (exit 3), not 90% error."""
    arrays, meta = load_archive(run_copy / "model.npz")
    arrays["W0"][0, 0] = np.nan
    save_archive(run_copy / "model.npz", arrays, meta)
    err = exits_with(3, predict_main, [str(run_copy)], capsys)
    assert "NaN" in err
    unfinished(run_copy, lambda arrays, meta: arrays["opt0_m0"].__setitem__((0, 0), np.inf))
    exits_with(3, main, ["--resume", str(run_copy)], capsys)


def test_nan_statistics_are_refused_when_read(run_copy, capsys):
    """Standardisation statistics holding NaN are refused (exit 3)."""
    arrays, meta = load_archive(run_copy / "model.npz")
    meta["standardization"] = {"mean": [float("nan")], "std": [1.0]}
    save_archive(run_copy / "model.npz", arrays, meta)
    exits_with(3, predict_main, [str(run_copy)], capsys)


def test_checkpoint_with_nan_is_not_written_over_the_last_good_one(tmp_path, data_dir,
                                                                  monkeypatch, capsys):
    """A signal after a step that made the weights NaN writes no checkpoint: the last good
    one stays, and the run stops as diverged (exit 3)."""
    original = FFNet.train_step
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        stats = original(self, *args)
        if calls["n"] == 6:  # epoch 2, step 2: NaN weights, then a Ctrl-C
            self.W[0][0, 0] = np.nan
            signal.raise_signal(signal.SIGINT)
        return stats

    monkeypatch.setattr(FFNet, "train_step", poisoned)
    run = tmp_path / "run"
    exits_with(3, main, [*TINY, "--epochs", "2", "--checkpoint-seconds", "0",
                         "--data-dir", str(data_dir), "--out", str(run)], capsys)
    arrays, meta = load_archive(run / "checkpoint.npz")
    assert (meta["next_epoch"], meta["next_step"]) == (2, 0)
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


# --- damaged checkpoint headers and entries ---

def _set(path, value):
    def change(arrays, meta):
        *keys, last = path
        target = meta
        for key in keys:
            target = target[key]
        target[last] = value
    return change


def _array(name, value):
    """Set the entry ``name`` to ``value``, or to ``value(entry)`` when it is callable."""
    def change(arrays, meta):
        arrays[name] = value(arrays[name]) if callable(value) else value
    return change


def _strings(a):
    return np.full(a.shape, "x")  # the right shape, the wrong type


DAMAGED = {
    "metrics.epochs of the wrong type": _set(("metrics", "epochs"), [1, 2]),
    "metrics without device": lambda arrays, meta: meta["metrics"].pop("device"),
    "a header nested 100,000 deep": None,  # written by hand below
    "a string-typed W": _array("W0", _strings),
    "string-typed codes": _array("codes", _strings),
    "a negative step count": _array("opt0_t", np.array(-3)),
    "a NaN step count": _array("opt0_t", np.array(np.nan)),
    "a step count that is not a scalar": _array("opt0_t", np.array([1, 2])),
    "statistics of the wrong shape": _array("stats_sum", np.zeros((5, 5), np.float32)),
    "negative labels out of range": _array("epoch_y_neg", np.full(240, 99)),
    "negative labels of float type": _array("epoch_y_neg", np.zeros(240)),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_checkpoint_entries_are_one_line(run_copy, capsys, name):
    """Checkpoint header and array entries are checked for type and value, not only shape:
    each damage below is one line and exit 2, never a traceback."""
    def change(arrays, meta):
        DAMAGED[name](arrays, meta)
        if name.startswith(("statistics", "negative labels")):  # mid-epoch entries
            meta["next_epoch"], meta["next_step"] = 2, 1
            arrays.setdefault("stats_sum", np.zeros((2, 3), np.float32))

    if name == "a header nested 100,000 deep":
        arrays, meta = load_archive(run_copy / "checkpoint.npz")
        meta["config"]["epochs"] = 2
        text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
        arrays["__meta__"] = np.array(text)
        np.savez(run_copy / "checkpoint.npz", **arrays)
        (run_copy / "model.npz").unlink()
    else:
        unfinished(run_copy, change)
    exits_with(2, main, ["--resume", str(run_copy)], capsys)


# --- dataset files ---

def test_idx_dimensions_whose_product_overflows_are_refused(tmp_path):
    """IDX dimension sizes whose product overflows int64 are refused as implausible."""
    path = tmp_path / "x-idx4-ubyte"
    path.write_bytes(struct.pack(">HBB", 0, 8, 4) + struct.pack(">4I", *[65536] * 4))
    with pytest.raises(DataError, match="implausibly large"):
        read_idx(path)


def test_test_set_of_no_images_is_refused(tmp_path, capsys):
    """A test set of 0 images is a data error (exit 2), not a NaN test error."""
    make_tiny_mnist(tmp_path / "data" / "mnist", n_test=0)
    with pytest.raises(DataError, match="no images"):
        load_dataset("mnist", tmp_path / "data")
    exits_with(2, main, [*TINY, "--data-dir", str(tmp_path / "data"),
                         "--out", str(tmp_path / "run")], capsys)
    assert not (tmp_path / "run").exists()


def test_harmless_pickle_of_empty_bytes_loads(tmp_path):
    """A protocol-2 pickle holding b'' (written by Python 3 as bytes()) is not malicious."""
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"batch_label": b""}, protocol=2))
    assert load_pickle(path) == {b"batch_label": b""}


def test_cifar_batch_with_mixed_key_types_is_a_data_error(tmp_path):
    """A CIFAR batch whose keys mix bytes and str is reported, not a TypeError."""
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"x": 1, "y": 2}, protocol=2))
    with pytest.raises(DataError, match="expected a dict"):
        load_dataset("cifar10", root)


def test_dataset_folder_given_is_left_unchanged(tmp_path):
    """A folder the user points ffnumpy at is only read: after loading CIFAR-10 from its
    archive, the folder's file list and modification times are unchanged."""
    root = make_tiny_cifar(tmp_path / "data")
    before = snapshot(root)
    data = load_dataset("cifar10", root)
    assert data.x_train.shape == (200, 3072)
    assert snapshot(root) == before


# --- signals, environment, standard output ---

def _python(code, env=None, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300, **kwargs)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_startup_is_one_line(sig, code):
    """Ctrl-C or SIGTERM while a command is still loading ends it with one line (no
    KeyboardInterrupt traceback, no silent exit)."""
    proc = _python("import sys; sys.argv = ['ffnumpy-train']\n"
                   "import os, signal\nimport ffnumpy.backend\n"
                   f"os.kill(os.getpid(), {int(sig)})\nprint('survived')")
    assert proc.returncode == code, proc
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "nothing was written" in proc.stderr and "survived" not in proc.stdout


def test_second_ctrl_c_after_a_command_ends_prints_nothing():
    """Once a command has ended, a further Ctrl-C (while the interpreter joins its worker
    threads) is ignored instead of printing an "Exception ignored" traceback."""
    proc = _python("from ffnumpy.checkpoint import as_command\n"
                   "import os, signal\nas_command(lambda: None)\n"
                   "os.kill(os.getpid(), signal.SIGINT)\nprint('ignored')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ignored" and not proc.stderr


def test_bad_thread_count_setting_is_one_line(tmp_path):
    """FFNUMPY_NUM_THREADS=abc is one line and exit 2, not an import traceback."""
    proc = subprocess.run([sys.executable, "-m", "ffnumpy.train", "mnist", "--data-dir",
                           str(tmp_path), "--out", str(tmp_path / "run")], capture_output=True,
                          text=True, env={**os.environ, "FFNUMPY_NUM_THREADS": "abc"},
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "FFNUMPY_NUM_THREADS" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_non_ascii_out_under_an_ascii_only_locale(data_dir, tmp_path):
    """A non-ASCII --out under an ASCII-only locale and output encoding trains and prints
    (escaped), instead of a UnicodeEncodeError."""
    run = tmp_path / "r\u00fcn"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii",
           "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    proc = subprocess.run([sys.executable, "-m", "ffnumpy.train", *TINY, "--data-dir",
                           str(data_dir), "--out", str(run)], capture_output=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.npz").is_file() and b"Traceback" not in proc.stderr


def test_huge_layer_count_is_a_memory_refusal(data_dir, tmp_path, capsys):
    """--layers 10**30 is refused by the memory estimate, not an OverflowError."""
    err = exits_with(2, main, [*TINY, "--layers", str(10**30), "--data-dir", str(data_dir),
                               "--out", str(tmp_path / "run")], capsys)
    assert "not enough memory" in err


@pytest.mark.parametrize("where", ["/dev/full", "a closed pipe"])
def test_unwritable_standard_output_does_not_stop_training(data_dir, tmp_path, where):
    """A standard output that cannot be written (> /dev/full, | head -1) is reported as
    such on stderr, once, not as a file error, and the run finishes with its model."""
    run = tmp_path / "run"
    if where == "/dev/full":
        stdout = os.open(where, os.O_WRONLY)
    else:
        read_end, stdout = os.pipe()
        os.close(read_end)  # the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "ffnumpy.train", *TINY, "--data-dir",
                               str(data_dir), "--out", str(run)], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300)
    finally:
        os.close(stdout)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("standard output cannot be written") == 1
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert (run / "model.npz").is_file()


def test_predict_saves_before_it_prints(finished_run, tmp_path):
    """predict --save writes its file before printing, so a full standard output loses
    the printed line (exit 4, said so) but not the predictions."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "ffnumpy.predict", str(finished_run),
                               "--save", str(tmp_path / "pred.npy")], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 4 and "standard output" in proc.stderr
    assert np.load(tmp_path / "pred.npy").shape == (60,)


@pytest.mark.parametrize("save, message", [("", "needs a file name"),
                                           ("{tmp}/afolder.npy", "a folder"),
                                           ("{tmp}/" + "n" * 300, "too long")])
def test_predict_save_is_checked_before_the_evaluation(finished_run, tmp_path, monkeypatch,
                                                       capsys, save, message):
    """predict --save: an empty name, a folder or an overlong name is refused before the
    evaluation, and the error names the file asked for, not a hidden temporary."""
    (tmp_path / "afolder.npy").mkdir()
    monkeypatch.setattr("ffnumpy.predict.evaluate_run", lambda *a: pytest.fail("evaluated"))
    err = exits_with(4, predict_main, [str(finished_run), "--save",
                                       save.format(tmp=tmp_path)], capsys)
    assert message in err.lower() and ".tmp" not in err


# --- junk left behind and vague messages ---

def test_failed_start_leaves_no_folders(data_dir, tmp_path, monkeypatch, capsys):
    """A full disk at the start of --out a/b/c leaves neither a/ nor a/b/ nor the lock,
    and the message names the folder."""
    def full(run_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir))

    monkeypatch.setattr(train, "check_writable", full)
    out = tmp_path / "a" / "b" / "c"
    err = exits_with(4, main, [*TINY, "--data-dir", str(data_dir), "--out", str(out)], capsys)
    assert str(out) in err and not (tmp_path / "a").exists()


def test_resume_of_a_folder_without_a_checkpoint_says_what_to_run(run_copy, tmp_path, capsys):
    """--resume of an empty folder writes nothing in it; of a run killed before its first
    checkpoint, it gives the command that starts it again."""
    empty = tmp_path / "empty"
    empty.mkdir()
    err = exits_with(2, main, ["--resume", str(empty)], capsys)
    assert not list(empty.iterdir()) and "not a run folder" in err
    for name in ("checkpoint.npz", "model.npz", "metrics.json"):
        (run_copy / name).unlink()
    err = exits_with(2, main, ["--resume", str(run_copy)], capsys)
    assert "start it again with" in err and "--overwrite" in err


def test_lock_held_without_a_pid_names_no_process(data_dir, tmp_path, capsys):
    """A run folder locked by a process that has not yet recorded its PID is reported
    without "process unknown ... kill unknown"."""
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        err = exits_with(2, main, [*TINY, "--data-dir", str(data_dir), "--out", str(run)],
                         capsys)
    finally:
        os.close(fd)
    assert "unknown" not in err and "in use by another process" in err


def test_no_runtime_warnings_before_the_nan_guard(data_dir, tmp_path, monkeypatch, capsys):
    """A divergence prints the NaN guard's one line, without NumPy RuntimeWarnings first."""
    poison_train_step(monkeypatch, layer=0, at_call=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exits_with(3, main, [*TINY, "--data-dir", str(data_dir),
                             "--out", str(tmp_path / "run")], capsys)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_alpha_that_does_not_fit_the_dtype_is_refused(tmp_path, capsys):
    """--alpha 1e308 (infinity in float32) is refused up front, not a divergence that
    advises a smaller --lr."""
    err = exits_with(2, main, [*TINY, "--alpha", "1e308", "--out", str(tmp_path / "run")],
                     capsys)
    assert "--alpha" in err and "float32" in err


def test_two_runs_of_the_same_second_get_their_own_folders(data_dir, tmp_path, monkeypatch):
    """Two identical runs started in the same second without --out get different folders."""
    monkeypatch.setattr(train, "default_run_dir", lambda cfg: tmp_path / "runs" / "same")
    main([*TINY, "--data-dir", str(data_dir)])
    main([*TINY, "--data-dir", str(data_dir)])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["same", "same-2"]


# --- the commands' own words ---

def test_finished_run_says_where_its_model_is_and_how_to_evaluate_it(tmp_path, data_dir,
                                                                     capsys):
    """The closing line of a finished run names its model and the predict command."""
    run = tmp_path / "run"
    main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(run / "model.npz") in last and "-m ffnumpy.predict" in last


@pytest.mark.parametrize("module, script", [("train", "ffnumpy-train"),
                                            ("predict", "ffnumpy-predict")])
def test_console_scripts_name_themselves(module, script):
    """ffnumpy-train and ffnumpy-predict name themselves in usage and errors, as the
    console scripts of pyproject.toml start them; python -m keeps its own name."""
    for flag in ("--no-such-flag", "--help"):
        proc = _python(f"import sys; sys.argv = [{script!r}, {flag!r}]\n"
                       f"from ffnumpy.{module} import cli\ncli()")
        text = proc.stderr if flag == "--no-such-flag" else proc.stdout
        assert text.startswith(f"{script}: error:" if flag == "--no-such-flag" else
                               f"usage: {script}"), proc
    proc = subprocess.run([sys.executable, "-m", f"ffnumpy.{module}", "--no-such-flag"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stderr.startswith(f"python -m ffnumpy.{module}: error:")
