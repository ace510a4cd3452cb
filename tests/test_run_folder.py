"""A run folder as a careful user and a hostile tester meet it: one process per folder,
file-system errors (disk full, read-only, not a folder), the memory check, a divergence
in the first epoch, a second Ctrl-C during the checkpoint write, file modes."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ffnumpy.checkpoint import load_archive, signals_held
from ffnumpy.model import FFNet
from ffnumpy.predict import main as predict_main
from ffnumpy import train
from ffnumpy.train import EXIT_INTERRUPTED, EXIT_IO, EXIT_TERMINATED, LOCK_FILE, main
from tests.conftest import make_tiny_mnist, poison_train_step

REPO = Path(__file__).resolve().parent.parent
TINY = ["mnist", "--epochs", "2", "--batch-size", "64", "--width", "32"]
# 1,200 images, batch 40: 30 steps an epoch
ARGS = ["mnist", "--epochs", "3", "--batch-size", "40", "--width", "48", "--seed", "3"]


@pytest.fixture
def data_dir(tmp_path):
    make_tiny_mnist(tmp_path / "data" / "mnist", n_train=1200, n_test=100)
    return tmp_path / "data"


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def fails_with(code, argv, capsys):
    """Run train's ``main(argv)``, expect exit ``code`` and return its one-line error."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    return one_line_error(capsys)


# --- one process per run folder ---

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ffnumpy.train import run_folder_lock
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(folder):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
""")


@pytest.fixture
def holder():
    """Start a process that owns a run folder (as a training run does); returns a
    function that starts it and returns once it holds the lock."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"  # synchronised: no sleeping
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_resume_while_the_run_trains_is_refused_and_cleans_nothing(data_dir, tmp_path,
                                                                   holder, capsys):
    run = tmp_path / "run"
    main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    live_tmp = run / ".checkpoint.npz.abc123.tmp"  # the live run's write in progress
    live_tmp.write_bytes(b"partial")
    proc = holder(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(run)])
    assert exit_info.value.code == 2
    err = one_line_error(capsys)
    assert f"in use by process {proc.pid}" in err
    assert live_tmp.exists()  # the live run's temporary file was left alone
    proc.stdin.close()
    proc.wait(timeout=60)
    main(["--resume", str(run)])  # the lock dies with its holder
    assert not live_tmp.exists()


def test_two_fresh_runs_on_one_folder(data_dir, tmp_path, holder, capsys):
    """The second of two runs started on one --out is refused before it writes anything,
    even though the first has not yet written its config.json."""
    run = tmp_path / "run"
    proc = holder(run)  # owns the folder, has written nothing yet (as while loading data)
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    assert exit_info.value.code == 2
    assert f"in use by process {proc.pid}" in one_line_error(capsys)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    proc.stdin.close()
    proc.wait(timeout=60)
    main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    assert (run / "model.npz").is_file()


def test_killed_holder_releases_the_folder(data_dir, tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    proc.kill()
    proc.wait(timeout=60)
    main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    assert (run / "model.npz").is_file()


# --- file-system errors ---

def test_out_under_a_file_is_one_line(data_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--data-dir", str(data_dir), "--out", str(tmp_path / "afile" / "sub")])
    assert exit_info.value.code == EXIT_IO
    err = one_line_error(capsys)
    assert str(tmp_path / "afile" / "sub") in err and "Not a directory" in err


def in_namespace(script):
    """Run a shell script as root in a private mount namespace (its mounts vanish with
    it); skip, visibly, where that is not permitted."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: cannot mount a private tmpfs")
    probe = subprocess.run(["unshare", "-m", "true"] if os.geteuid() == 0 else
                           ["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"private mount namespaces not permitted here: {probe.stderr.strip()}")
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    env = {**os.environ, "PY": sys.executable}
    return subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)


def test_disk_full_keeps_the_last_checkpoint(data_dir, tmp_path):
    """ENOSPC on a tmpfs that holds one checkpoint but not a second beside it: the
    write of epoch 2's checkpoint fails, epoch 1's stays, and the message says so."""
    sizing = tmp_path / "sizing"
    main([*ARGS, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(sizing)])
    room = (sizing / "checkpoint.npz").stat().st_size * 3 // 2  # one checkpoint, not two
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    result = in_namespace(
        f"mount -t tmpfs -o size={room} tmpfs {disk} || exit 99; "
        f"$PY -m ffnumpy.train {shlex.join(ARGS)} --data-dir {data_dir} --out {disk}/run; "
        f"echo $? > {tmp_path}/rc; cp -a {disk}/run {copy}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rc").read_text().strip() == str(EXIT_IO)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in err[0] and "checkpoint.npz" in err[0]
    assert "(after epoch 1 of 3) is intact" in err[0] and "--resume" in err[0]
    arrays, meta = load_archive(copy / "checkpoint.npz")
    assert (meta["next_epoch"], meta["next_step"]) == (2, 0)
    assert not [p for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_read_only_folder_is_found_before_training(data_dir, tmp_path):
    """EROFS: --resume and a fresh --out on a read-only mount fail at once, one line."""
    run = tmp_path / "run"
    main([*TINY, "--epochs", "1", "--data-dir", str(data_dir), "--out", str(run)])
    load = tmp_path / "ro"
    load.mkdir()
    for name in ("config.json", "checkpoint.npz"):
        shutil.copy(run / name, load / name)
    result = in_namespace(
        f"mount --bind {load} {load} && mount -o remount,bind,ro {load} || exit 99; "
        f"$PY -m ffnumpy.train --resume {load} > {tmp_path}/out1 2> {tmp_path}/err1; "
        f"echo $? > {tmp_path}/rc1; "
        f"$PY -m ffnumpy.train {shlex.join(TINY)} --data-dir {data_dir} --out {load}/new "
        f"> {tmp_path}/out2 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2")
    assert result.returncode == 0, result.stderr
    for k in ("1", "2"):
        assert (tmp_path / f"rc{k}").read_text().strip() == str(EXIT_IO)
        err = (tmp_path / f"err{k}").read_text().strip().splitlines()
        assert len(err) == 1 and "Read-only file system" in err[0], err
        assert "epoch   1" not in (tmp_path / f"out{k}").read_text()  # nothing was trained
    assert f"cannot write {load / LOCK_FILE}" in (tmp_path / "err1").read_text()
    assert f"cannot write {load / 'new'}" in (tmp_path / "err2").read_text()


def test_predict_save_into_a_missing_folder_fails_before_evaluating(data_dir, tmp_path,
                                                                    capsys):
    run = tmp_path / "run"
    main([*TINY, "--data-dir", str(data_dir), "--out", str(run)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(run), "--save", str(tmp_path / "missing" / "p.npy")])
    assert exit_info.value.code == EXIT_IO
    captured = capsys.readouterr()
    assert "test error" not in captured.out  # refused before the evaluation
    assert len(captured.err.strip().splitlines()) == 1
    assert str(tmp_path / "missing") in captured.err


# --- memory ---

def test_a_run_that_cannot_fit_is_refused_before_anything_is_made(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["mnist", "--layers", "1000", "--width", "100000", "--data-dir", str(data_dir),
              "--out", str(out)])
    assert exit_info.value.code == 2
    err = one_line_error(capsys)
    assert "not enough memory" in err and "TiB" in err and "available" in err
    assert not out.exists()


def test_memory_estimate_errs_high(data_dir, tmp_path):
    """Everything a tiny run allocates (tracemalloc sees NumPy's buffers) stays under the
    estimate."""
    import tracemalloc

    from ffnumpy.config import Config
    from ffnumpy.data import load_dataset
    from ffnumpy.memory import estimate

    for algo in ("symba", "bp"):
        cfg = Config(algo=algo, epochs=1, batch_size=200, width=64, layers=3)
        data = load_dataset("mnist", str(data_dir))
        parts = estimate(cfg, 1200, 100, (1, 28, 28), 10)
        tracemalloc.start()
        main(["mnist", "--algo", algo, "--epochs", "1", "--batch-size", "200", "--width", "64",
              "--layers", "3", "--data-dir", str(data_dir), "--out", str(tmp_path / algo)])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < sum(parts.values()) + data.x_train.nbytes, (algo, peak, parts)


# --- divergence and interruption ---

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the injected NaN
def test_nan_in_the_first_epoch_says_what_exists_and_what_to_run(data_dir, tmp_path,
                                                                 monkeypatch, capsys):
    original = FFNet.train_step
    poison_train_step(monkeypatch, layer=0, at_call=1)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS, "--data-dir", str(data_dir), "--out", str(run)])
    assert exit_info.value.code == 3
    err = one_line_error(capsys)
    assert "no checkpoint exists yet" in err and "intact" not in err
    suggested = shlex.split(err.split("start again with a smaller --lr: ")[1])
    assert suggested[:3] == [sys.executable, "-m", "ffnumpy.train"]
    assert "--overwrite" in suggested and suggested[suggested.index("--lr") + 1] == "0.001"
    monkeypatch.setattr(FFNet, "train_step", original)
    main(suggested[3:])  # the suggested command runs as printed
    assert (run / "model.npz").is_file()


def test_second_ctrl_c_during_the_checkpoint_write(data_dir, tmp_path, monkeypatch, capsys):
    """The first SIGINT stops the run at the end of the step; a second one that arrives
    while the checkpoint is written waits for the write: no traceback, a valid checkpoint."""
    steps, real_savez = {"n": 0}, np.savez
    original = FFNet.train_step

    def interrupted(self, *args):
        steps["n"] += 1
        if steps["n"] == 40:  # epoch 2, step 10
            signal.raise_signal(signal.SIGINT)
        return original(self, *args)

    def savez_interrupted(*args, **kwargs):
        if steps["n"] >= 40:
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, mid-write
        return real_savez(*args, **kwargs)

    monkeypatch.setattr(FFNet, "train_step", interrupted)
    monkeypatch.setattr(np, "savez", savez_interrupted)
    run = tmp_path / "run"
    err = fails_with(EXIT_INTERRUPTED, [*ARGS, "--data-dir", str(data_dir), "--out", str(run)],
                     capsys)
    assert "(epoch 2 of 3, step 10) is intact" in err and "--resume" in err
    _, meta = load_archive(run / "checkpoint.npz")
    assert (meta["next_epoch"], meta["next_step"]) == (2, 10)
    monkeypatch.undo()
    # predict says which file and which epoch it evaluates
    predict_main([str(run), "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert "checkpoint.npz" in out and "epoch 2 of 3, stopped after step 10" in out
    metrics = main(["--resume", str(run)])
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3]


def test_sigterm_before_training_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    """A SIGTERM before the loop's handler is in place -- during the data load, or held
    back while config.json is written -- ends with one line and exit 143, never silently."""
    real_load, real_write = train.load_dataset, train.write_json

    def load_then_sigterm(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train, "load_dataset", load_then_sigterm)
    run = tmp_path / "early"
    err = fails_with(EXIT_TERMINATED, [*TINY, "--data-dir", str(data_dir), "--out", str(run)],
                     capsys)
    assert "terminated (SIGTERM)" in err
    assert not run.exists()  # nothing was written
    monkeypatch.setattr(train, "load_dataset", real_load)

    def write_with_sigterm(path, obj):
        with signals_held():  # the signal arrives mid-write and waits for the file
            signal.raise_signal(signal.SIGTERM)
            real_write(path, obj)

    monkeypatch.setattr(train, "write_json", write_with_sigterm)
    run = tmp_path / "config"
    err = fails_with(EXIT_TERMINATED, [*TINY, "--data-dir", str(data_dir), "--out", str(run)],
                     capsys)
    assert "terminated (SIGTERM)" in err and "no checkpoint" in err, err
    assert json.loads((run / "config.json").read_text())["config"]["width"] == 32
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


def test_output_files_honour_the_umask(data_dir, tmp_path):
    previous = os.umask(0o027)
    try:
        main([*TINY, "--data-dir", str(data_dir), "--out", str(tmp_path / "run")])
    finally:
        os.umask(previous)
    for name in ("config.json", "metrics.json", "checkpoint.npz", "model.npz", LOCK_FILE):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o640, name
