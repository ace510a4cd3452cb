"""Command line and training loop: ``python -m ffnumpy.train mnist [flags]``.

One line per epoch (loss, test error, seconds); the resolved configuration, the
per-epoch metrics, checkpoints and the final model go to the run folder. The run
survives interruption: SIGINT or SIGTERM finishes the current step, writes a
checkpoint and exits; ``--resume RUN_DIR`` continues from it and, on the NumPy
backend, ends with exactly the weights and metrics of an uninterrupted run.

Randomness: weights and ICP patterns come from ``seed``; epoch e's shuffle and
negative labels come from a generator seeded with ``(seed, e)``, all drawn at the
start of the epoch, so the position (epoch, step) is the whole random state.

A run folder belongs to one process for its whole life: an exclusive ``flock`` on
its ``.lock`` file (released by the kernel however the process ends) is taken
before anything in the folder is written or cleaned. No file of a run folder is
opened through a symbolic link (:func:`ffnumpy.checkpoint.open_in`); ``--overwrite``
removes every file of the old run before the new one writes; a checkpoint holding
NaN or infinity is never written over the last good one; a finished run without
its model gets it on ``--resume``. Every error is one line on stderr with an exit
code (EXIT_* below, listed in the README); a standard output that cannot be written
is said once and does not stop the run.
"""
import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import augment
from .backend import BackendError, device_name, get_xp, startup_done, synchronize, to_host
from .checkpoint import (
    EXIT_NONFINITE,
    TMP_SUFFIX,
    CheckpointError,
    SymlinkError,
    as_command,
    describe_os_error,
    folder_fd,
    load_archive,
    open_file,
    open_in,
    remove_in,
    save_archive,
    signal_handlers,
    silence_stdout,
    write_json,
)
from .config import Config, ConfigError, config_from_args, config_from_saved
from .data import (
    DATA_CACHE,
    DataError,
    channel_stats,
    hold_out,
    load_dataset,
    standardize,
    standardize_images,
)
from .labels import sample_hard_negative_labels, sample_negative_labels
from .memory import MemoryRefusal, check_memory
from .model import STEP_STATS, FFNet
from .saving import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    build_model,
    check_epoch_arrays,
    check_position,
    config_of,
    model_arrays,
    nonfinite_entries,
    restore_arrays,
    save_model,
)

PROG = "python -m ffnumpy.train"
EXIT_USAGE = 2  # bad flags, data, memory or folder (or the folder is in use): nothing written
EXIT_DIVERGED = EXIT_NONFINITE  # 3: NaN guard tripped, or a checkpoint read holds NaN or inf
EXIT_IO = 4  # a file could not be written (disk full, read-only, not a folder)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # a second Ctrl-C, or one before training started
EXIT_TERMINATED = 128 + signal.SIGTERM  # SIGTERM before training started (as the shell's kill)
SCRIPT = "ffnumpy-train"  # the console script (pyproject [project.scripts])
RUN_MARKERS = ("config.json", CHECKPOINT_FILE, MODEL_FILE, "metrics.json")
LOCK_FILE = ".lock"  # flock'ed by the process that owns the run folder; holds its PID
MAX_NAME_TRIES = 1000  # default run folders of one second: name, name-2, ..., name-1000


class RunError(RuntimeError):
    """A problem a user can fix; reported as one line, with an exit code."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Diverged(RunError):
    """The NaN guard tripped; :func:`main` adds what exists and what to run."""

    def __init__(self, message):
        super().__init__(message, code=EXIT_DIVERGED)


# --- printed commands ---

def command(*args):
    """A shell command line running ffnumpy.train with the interpreter in use."""
    return shlex.join([sys.executable, "-m", "ffnumpy.train", *map(str, args)])


def predict_command(run_dir):
    """The command that evaluates the model of ``run_dir``."""
    return shlex.join([sys.executable, "-m", "ffnumpy.predict", str(run_dir)])


def train_command(cfg, run_dir, *extra):
    """The command that trains ``cfg`` into ``run_dir``: the flags that differ from the
    defaults, then ``extra``."""
    defaults, args = Config(), [cfg.dataset]
    for field in dataclasses.fields(Config):
        value = getattr(cfg, field.name)
        if field.name in ("dataset", "out") or value == getattr(defaults, field.name):
            continue
        flag = field.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            args += [f"--{flag}", value]
    return command(*args, "--out", run_dir, *extra)


# --- run folder ---

def default_run_dir(cfg):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.dataset}-{cfg.algo}-{cfg.layers}x{cfg.width}-s{cfg.seed}-{stamp}"
    return DATA_CACHE / "runs" / name


def make_run_dir(run_dir, claim):
    """Create ``run_dir`` and its missing parents; returns the folder and the folders made
    (innermost first), for :func:`remove_made_folders`.

    With ``claim`` (a default name) the folder must be new: a name another run took in
    the same second gets "-2", "-3", ... (``mkdir`` decides, so two runs never share one).
    """
    made, probe = [], run_dir.parent
    while not probe.exists() and probe != probe.parent:
        made.append(probe)
        probe = probe.parent
    made.reverse()
    try:
        for n in range(1, MAX_NAME_TRIES + 1) if claim else (1,):
            folder = run_dir if n == 1 else run_dir.with_name(f"{run_dir.name}-{n}")
            try:
                folder.mkdir(parents=True)
            except FileExistsError:
                if not folder.is_dir():
                    raise
                if claim:
                    continue
                return folder, made[::-1]
            return folder, [folder] + made[::-1]
        raise FileExistsError(errno.EEXIST, "every name of this second is taken", str(run_dir))
    except BaseException:
        remove_made_folders(made[::-1])
        raise


def remove_made_folders(made):
    """Remove the folders this process made (innermost first) that hold nothing but, at
    most, its lock file, so a failed start leaves nothing behind."""
    for folder in made:
        with contextlib.suppress(OSError):
            if {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
                remove_in(folder, [LOCK_FILE])
            folder.rmdir()  # only succeeds when empty


def clear_old_run(run_dir):
    """``--overwrite``: remove every file of the run that was in ``run_dir`` (its
    configuration, checkpoint, model, metrics and temporaries), so that nothing of it can
    be taken for the new run. Links are removed, never followed. Returns the names."""
    stale = [p.name for p in run_dir.glob(f".*{TMP_SUFFIX}")]
    return remove_in(run_dir, [*RUN_MARKERS, *stale])


def remove_temporaries(run_dir):
    """Remove the temporary files a write cut short by a kill left in ``run_dir``."""
    remove_in(run_dir, [p.name for p in run_dir.glob(f".*{TMP_SUFFIX}")])


def check_run_dir(run_dir, overwrite):
    """Refuse to write into a folder that holds another run, unless ``overwrite``."""
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken and not overwrite:
        raise RunError(f"{run_dir} already holds a run ({', '.join(taken)}); choose another "
                       f"--out, continue it with --resume {run_dir}, or pass --overwrite")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} exists and is not a folder")


@contextlib.contextmanager
def run_folder_lock(run_dir):
    """Own ``run_dir`` for the block: an exclusive flock on its lock file, which then
    holds this process's PID. The kernel releases the lock however the process ends.

    Raises
    ------
    RunError
        If another process holds the lock (the message names its PID).
    OSError
        If the lock file cannot be created (read-only, not a folder).
    """
    path = run_dir / LOCK_FILE
    try:
        with folder_fd(run_dir) as dfd:  # the lock file is the folder's own, never a link
            fd = open_in(dfd, LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666, run_dir)
    except SymlinkError as exc:
        raise RunError(f"{path} is {exc.strerror.split(';')[0]}, so {run_dir} is not a run "
                       f"folder ffnumpy made; if you trust the folder, remove it "
                       f"(rm {shlex.quote(str(path))}) and run again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if not holder.isdigit():
                raise RunError(f"{run_dir} is in use by another process (its PID is not "
                               "recorded yet); wait for it to end, or choose another "
                               "--out") from None
            raise RunError(f"{run_dir} is in use by process {holder}, which is training in it; "
                           f"wait for it to end (or stop it: kill {holder}), or choose another "
                           "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def check_writable(run_dir):
    """Raise OSError now, before any training, if files cannot be created in ``run_dir``."""
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        exc.filename = exc.filename or str(run_dir)
        raise


# --- standard output ---

def say(text):
    """Print ``text`` on standard output. If it cannot be written (a closed pipe, a full
    disk), say so once on stderr and go on without it: the progress lines are a view of
    what the run folder records, and losing them must not stop or fail a run."""
    try:
        print(text, flush=True)
    except OSError as exc:
        lose_stdout(exc)


def lose_stdout(exc, prog=PROG):
    """Go on without standard output after ``exc``, saying so in one line on stderr."""
    with contextlib.suppress(OSError, ValueError):
        print(f"{prog}: standard output cannot be written ({exc.strerror or exc}); going on "
              "without it (the run folder's metrics.json records every epoch)",
              file=sys.stderr, flush=True)
    silence_stdout()


# --- the data a run reads ---

def dataset_summary(data):
    """What identifies the data a run trains on, saved in its header and compared on
    ``--resume``: the number of training and test images and the per-channel mean of the
    training images (before any hold-out or standardisation)."""
    mean, _ = channel_stats(data.x_train, data.image_shape)
    return {"n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
            "mean": mean}


def check_same_data(saved, data, cfg, source):
    """Raise :class:`RunError` unless ``data`` is the data a checkpoint was trained on
    (``saved``: its :func:`dataset_summary`; None in files that predate it)."""
    if saved is None:
        return
    now = dataset_summary(data)
    same = (saved.get("n_train") == now["n_train"] and saved.get("n_test") == now["n_test"]
            and isinstance(saved.get("mean"), list) and len(saved["mean"]) == len(now["mean"])
            and all(isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
                    for a, b in zip(saved["mean"], now["mean"])))
    if not same:
        where = cfg.data_dir or "the default data folder"
        raise RunError(f"the {cfg.dataset} data in {where} ({now['n_train']} training, "
                       f"{now['n_test']} test images) are not the data {source} was trained "
                       f"on ({saved.get('n_train')} and {saved.get('n_test')}); resume with "
                       "--data-dir naming the folder the run was trained with")


def training_splits(cfg, data):
    """The splits a run uses: ``--validation`` images held out of training, and with
    ``--standardize`` every split standardised with the statistics of the images trained on.

    Returns
    -------
    data : Dataset
        Training images (the held-out ones removed) and test images.
    val : tuple (x_val, y_val) or None
    input_stats : dict with "mean" and "std", or None
        The statistics, saved with the model so that its ``predict`` applies them.
    """
    val = input_stats = None
    if cfg.validation:
        data, x_val, y_val = hold_out(data, cfg.validation, cfg.seed)
        val = (x_val, y_val)
    if cfg.standardize:
        data, input_stats = standardize(data)
        if val is not None:
            val = (standardize_images(val[0], input_stats), val[1])
    return data, val, input_stats


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """The arrays the loop reads, moved to the device once (images in ``cfg.dtype``)."""

    x_train: object  # (N, D_img)
    y_train: object  # (N,)
    x_test: object  # (N_test, D_img)
    y_test: object  # (N_test,)
    x_val: object = None  # (N_val, D_img), with --validation
    y_val: object = None  # (N_val,)

    @classmethod
    def move(cls, data, val, xp, dtype):
        """The training and test splits of ``data`` and ``val`` (x_val, y_val) or None,
        on ``xp``'s device."""
        x_val, y_val = (None, None) if val is None else (xp.asarray(val[0], dtype=dtype),
                                                         xp.asarray(val[1]))
        return cls(xp.asarray(data.x_train, dtype=dtype), xp.asarray(data.y_train),
                   xp.asarray(data.x_test, dtype=dtype), xp.asarray(data.y_test), x_val, y_val)


# --- one epoch ---

class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass
class Position:
    """Where training stands: the epoch under way and its next step; for an epoch a
    checkpoint stopped midway, the sum of its steps' statistics so far (a device array),
    the seconds it has trained and, with hard negatives, its negative labels."""

    epoch: int = 1
    step: int = 0
    stats_sum: object = None  # (L, 3) or (1, 1)
    seconds: float = 0.0
    y_neg: object = None  # (N,), aligned with the epoch's shuffle


def epoch_plan(cfg, y_train, n_classes, epoch):
    """The epoch's shuffle, negative labels and augmentation (or None), all drawn from a
    generator seeded with (seed, epoch); row i of each belongs to image ``perm[i]``."""
    rng = np.random.default_rng([cfg.seed, epoch])
    perm = rng.permutation(y_train.shape[0])  # (N,)
    y_neg = sample_negative_labels(y_train[perm], n_classes, rng)  # (N,), aligned with perm
    aug = augment.draw(perm.shape[0], rng) if cfg.augmented else None
    return perm, y_neg, aug


def hard_negatives(cfg, model, x_train, y_train, perm, epoch):
    """Hard negative labels for the epoch (aligned with ``perm``), from the current model."""
    scores = to_host(model.goodness_per_label(x_train))  # (N, C)
    rng = np.random.default_rng([cfg.seed, epoch, 1])  # a stream apart from epoch_plan's
    return sample_hard_negative_labels(scores[perm], y_train[perm], rng)


def epoch_negatives(cfg, model, x_train, y_train, perm, y_neg, at):
    """The negative labels epoch ``at.epoch`` trains with, and whether a checkpoint in its
    middle must save them.

    The plan's random ``y_neg``; with ``--negatives hard`` (FF nets) the labels the model
    scores highest at the start of the epoch, which scoring later cannot find again (the
    model has moved): an epoch resumed midway takes them from its checkpoint (``at.y_neg``).
    """
    if cfg.negatives != "hard" or not isinstance(model, FFNet):
        return y_neg, False
    if at.y_neg is not None:
        return at.y_neg, True
    return hard_negatives(cfg, model, x_train, y_train, perm, at.epoch), True


def augmented_batch(data, rows, aug, xp, dtype):
    """Training images ``rows`` (host indices) cropped and flipped as ``aug`` says, on the
    host, then moved to the device in one transfer."""
    return xp.asarray(augment.apply(data.x_train[rows], data.image_shape, aug), dtype=dtype)


def train_epoch(cfg, model, data, dev, at, n_steps, stop, run_dir, save):
    """Train epoch ``at.epoch`` from step ``at.step`` to its end.

    Returns the sum of the steps' statistics (a device array; ``at.stats_sum`` included)
    and the seconds the epoch has trained (``at.seconds`` and hard-negative scoring
    included). After SIGINT or SIGTERM the step under way finishes, ``save`` (a
    :func:`write_checkpoint`) writes the position, and the process ends with status
    128 + the signal's number.
    """
    xp = model.xp
    synchronize(xp)
    t0 = time.perf_counter()
    perm, y_neg, aug = epoch_plan(cfg, data.y_train, data.n_classes, at.epoch)
    y_neg, keep_y_neg = epoch_negatives(cfg, model, dev.x_train, data.y_train, perm, y_neg, at)
    perm_dev, y_neg_dev = xp.asarray(perm), xp.asarray(y_neg)  # (N,), (N,)
    for opt in model.optimizers:
        opt.lr = cfg.lr_at(at.epoch)
    stats_sum = at.stats_sum
    bar = tqdm(range(at.step, n_steps), desc=f"epoch {at.epoch}/{cfg.epochs}", leave=False,
               disable=None, file=sys.stderr, initial=at.step, total=n_steps)
    for s in bar:
        # --- the step ---
        rows = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
        idx = perm_dev[rows]  # (B,)
        xb = (dev.x_train[idx] if aug is None else  # (B, D_img)
              augmented_batch(data, perm[rows], aug[rows], xp, cfg.dtype))
        # each layer: forward, loss, backward, update (FFNet.train_step, BPNet.train_step)
        stats = model.train_step(xb, dev.y_train[idx], y_neg_dev[rows])  # (L, 3) or (1, 1)
        stats_sum = stats if stats_sum is None else stats_sum + stats

        # --- stop on a signal ---
        if stop.signum is not None:
            synchronize(xp)
            save(at.epoch, s + 1, stats_sum, at.seconds + time.perf_counter() - t0,
                 y_neg if keep_y_neg else None)
            bar.close()
            name = signal.Signals(stop.signum).name
            say(f"\n{name} received: stopped at epoch {at.epoch}, step {s + 1}/{n_steps}; "
                f"checkpoint written. Resume with: {command('--resume', run_dir)}")
            raise SystemExit(128 + stop.signum)
    bar.close()
    synchronize(xp)
    return stats_sum, at.seconds + time.perf_counter() - t0


# --- the end of an epoch: record, NaN guard, evaluation ---

def epoch_record(epoch, stats, train_seconds):
    """Per-epoch metrics from the mean of the per-step statistics: (L, 3) for FF/SymBa,
    one column per name of :data:`ffnumpy.model.STEP_STATS`, or (1, 1) for backprop (its
    loss)."""
    record = {"epoch": epoch, "train_seconds": train_seconds, "loss": stats[:, 0].tolist()}
    if stats.shape[1] == len(STEP_STATS):  # FF/SymBa: also the mean |dL/dG| per pair
        for column, name in enumerate(STEP_STATS):
            record[name] = stats[:, column].tolist()
    return record


def _check_finite(model, record, epoch):
    """NaN guard: stop with a clear message if any loss or weight is not finite."""
    xp = model.xp
    for l in range(model.n_layers):
        finite = (math.isfinite(record["loss"][min(l, len(record["loss"]) - 1)])
                  and bool(xp.isfinite(model.W[l]).all()) and bool(xp.isfinite(model.b[l]).all()))
        if not finite:
            raise Diverged(f"non-finite loss or weights in layer {l + 1} at epoch {epoch}; "
                           "training stopped")


def evaluate(model, x, y):
    """Test error of ``model`` on (x, y); for FF nets also each layer's own error and the
    fraction of dead ReLUs per layer (silent on every test image with its true label), all
    from one forward pass of every image with every label."""
    if isinstance(model, FFNet):
        per_layer, dead = model.goodness_and_dead_fraction(x, y)  # (L, N, C), (L,)
        pred = model.sum_layers(per_layer).argmax(axis=1)  # (N,)
        layer_err = [float((per_layer[l].argmax(axis=1) != y).mean())
                     for l in range(model.n_layers)]
        return {"test_error": float((pred != y).mean()), "layer_test_error": layer_err,
                "dead_relu_fraction": to_host(dead).tolist()}
    return {"test_error": float((model.predict(x) != y).mean())}


def evaluate_splits(model, dev):
    """:func:`evaluate` on the test split, the validation error (with --validation) and
    the seconds both took."""
    t0 = time.perf_counter()
    record = evaluate(model, dev.x_test, dev.y_test)
    if dev.x_val is not None:
        record["val_error"] = float((model.predict(dev.x_val) != dev.y_val).mean())
    record["eval_seconds"] = time.perf_counter() - t0
    return record


def epoch_line(record, epochs):
    loss = " ".join(f"{v:.4f}" for v in record["loss"])
    err = f"test error {100 * record['test_error']:.2f}%" if "test_error" in record else ""
    if "val_error" in record:
        err += f"  validation error {100 * record['val_error']:.2f}%"
    return (f"epoch {record['epoch']:3d}/{epochs}  loss {loss}  {err}  "
            f"{record['train_seconds']:.1f}s train").rstrip()


# --- checkpoints ---

def checkpoint_due(cfg, epoch, epochs_since, seconds_since):
    """Whether the end of ``epoch`` writes a checkpoint.

    Always after the last epoch; otherwise once at least ``cfg.checkpoint_every`` epochs
    and ``cfg.checkpoint_seconds`` seconds have passed since the last checkpoint, so that
    writing them (about 8 MB for MNIST 2 x 500) costs a bounded share of a run of short
    epochs, and a kill -9 loses at most the longer of ``checkpoint_every`` epochs and
    ``checkpoint_seconds`` plus one epoch. SIGINT/SIGTERM always write one (see
    :func:`train_epoch`).
    """
    return epoch >= cfg.epochs or (epochs_since >= cfg.checkpoint_every
                                   and seconds_since >= cfg.checkpoint_seconds)


class CheckpointClock:
    """The epochs and seconds since the last checkpoint, for :func:`checkpoint_due`."""

    def __init__(self, cfg, have_one):
        self.cfg, self.epochs = cfg, 0
        # a fresh run has no checkpoint: as if the last were long ago; a resumed one has one now
        self.last = time.monotonic() if have_one else -math.inf

    def due(self, epoch):
        """Whether the end of ``epoch``, just trained, writes a checkpoint."""
        self.epochs += 1
        return checkpoint_due(self.cfg, epoch, self.epochs, time.monotonic() - self.last)

    def write(self, save, next_epoch):
        """Write the checkpoint of an epoch's end with ``save``; returns the seconds it took."""
        t0 = time.perf_counter()
        save(next_epoch, 0)
        seconds = time.perf_counter() - t0
        self.last, self.epochs = time.monotonic(), 0
        return seconds


def write_checkpoint(run_dir, model, header, metrics, next_epoch, next_step,
                     stats_sum=None, seconds=0.0, y_neg=None):
    """Save the run's position in ``run_dir``'s checkpoint: weights and optimiser state,
    the metrics so far and, for a stop in the middle of an epoch (``next_step`` > 0), the
    epoch's statistics so far, its seconds and its hard negative labels (or None).

    Raises
    ------
    Diverged
        If any of it holds NaN or infinity (:func:`refuse_nonfinite`); the last good
        checkpoint stays.
    """
    arrays = model_arrays(model, with_optimizer=True)
    if stats_sum is not None:
        arrays["stats_sum"] = to_host(stats_sum)
        if y_neg is not None:
            arrays["epoch_y_neg"] = y_neg
    refuse_nonfinite(arrays, next_epoch, next_step)  # never over the last good one
    save_archive(run_dir / CHECKPOINT_FILE, arrays, {
        **header, "kind": "checkpoint", "next_epoch": next_epoch, "next_step": next_step,
        "epoch_seconds_so_far": seconds, "metrics": metrics})


def refuse_nonfinite(arrays, next_epoch, next_step):
    """Raise :class:`Diverged` instead of writing a checkpoint that holds NaN or infinity
    (weights, optimiser state or the epoch's statistics), so the last good one stays."""
    bad = nonfinite_entries(arrays)
    if bad:
        where = f"epoch {next_epoch}, step {next_step}" if next_step else \
            f"the end of epoch {next_epoch - 1}"
        raise Diverged(f"non-finite values in {', '.join(bad[:3])} at {where}; that "
                       "checkpoint was not written")


def restore_position(model, arrays, meta, data, run_dir):
    """Load a checkpoint's weights and optimiser state into ``model``; returns where it
    stopped (a :class:`Position`) and the metrics so far. ``data``: the training split."""
    source = run_dir / CHECKPOINT_FILE
    restore_arrays(model, arrays, with_optimizer=True, source=str(source))
    check_epoch_arrays(arrays, model, data.x_train.shape[0], data.n_classes, source)
    at = Position(meta["next_epoch"], meta["next_step"],
                  seconds=meta.get("epoch_seconds_so_far", 0.0))
    if "stats_sum" in arrays:
        at.stats_sum = model.xp.asarray(arrays["stats_sum"])
    if at.step > 0 and "epoch_y_neg" in arrays:
        at.y_neg = arrays["epoch_y_neg"]
    return at, meta["metrics"]


# --- the loop ---

def run(cfg, run_dir, data, resume_state=None):
    """Train ``cfg`` on ``data`` in ``run_dir``, from the start or from ``resume_state``
    (a checkpoint's arrays and header); returns the metrics dict (module docstring)."""
    xp = get_xp(cfg.backend)
    summary = dataset_summary(data)  # the data as given: before hold-out and standardisation
    data, val, input_stats = training_splits(cfg, data)
    model = build_model(cfg, data.n_classes, data.image_shape, xp)
    dev = DeviceData.move(data, val, xp, cfg.dtype)
    n_steps = math.ceil(data.x_train.shape[0] / cfg.batch_size)  # the last batch may be short
    header = {"config": cfg.as_dict(), "n_classes": data.n_classes,
              "image_shape": list(data.image_shape), "standardization": input_stats,
              "data": summary}
    metrics = {"config": cfg.as_dict(), "device": device_name(xp), "epochs": []}
    if resume_state is None:
        at = Position()
        write_json(run_dir / "config.json", {**header, "device": metrics["device"]})
    else:
        at, metrics = restore_position(model, *resume_state, data, run_dir)
    save = functools.partial(write_checkpoint, run_dir, model, header, metrics)
    clock = CheckpointClock(cfg, have_one=resume_state is not None)
    say(f"run folder: {run_dir}  device: {metrics['device']}")
    # a step that overflows warns in NumPy; the NaN guard below reports it in one line
    with StopFlag() as stop, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        while at.epoch <= cfg.epochs:
            # --- the epoch's steps (a signal stops them with a checkpoint) ---
            stats_sum, seconds = train_epoch(cfg, model, data, dev, at, n_steps, stop,
                                             run_dir, save)
            record = epoch_record(at.epoch, to_host(stats_sum) / n_steps, seconds)
            _check_finite(model, record, at.epoch)  # the NaN guard

            # --- evaluate ---
            if at.epoch % cfg.eval_every == 0 or at.epoch == cfg.epochs:
                record.update(evaluate_splits(model, dev))
            metrics["epochs"].append(record)
            say(epoch_line(record, cfg.epochs))

            # --- checkpoint ---
            if clock.due(at.epoch):
                record["checkpoint_seconds"] = clock.write(save, at.epoch + 1)
            write_json(run_dir / "metrics.json", metrics)
            at = Position(epoch=at.epoch + 1)
    return finish_run(run_dir, model, cfg, header, metrics)


def finish_run(run_dir, model, cfg, header, metrics):
    """Write a finished run's final metrics and its model file; returns the metrics."""
    evaluated = [r for r in metrics["epochs"] if "test_error" in r]
    metrics["final_test_error"] = evaluated[-1]["test_error"] if evaluated else None
    write_json(run_dir / "metrics.json", metrics)
    save_model(run_dir / MODEL_FILE, model, cfg, {k: v for k, v in header.items()
                                                   if k != "config"})
    return metrics


def finish_from_checkpoint(run_dir, cfg, arrays, meta):
    """A finished run whose model file is missing (its write failed, or a kill came
    between the last checkpoint and it): write the metrics and model from the final
    checkpoint, on the host. Returns the metrics."""
    model = build_model(cfg, meta["n_classes"], tuple(meta["image_shape"]), np)
    restore_arrays(model, arrays, source=str(run_dir / CHECKPOINT_FILE))
    header = {k: meta[k] for k in ("n_classes", "image_shape", "standardization", "data")
              if k in meta}
    return finish_run(run_dir, model, cfg, header, meta["metrics"])


# --- what a stopped run leaves ---

def checkpoint_position(run_dir):
    """"after epoch 3 of 120" (or "epoch 4 of 120, step 7") for the run's checkpoint, or
    None when it has none that can be read."""
    try:
        _, meta = load_archive(run_dir / CHECKPOINT_FILE)
        epoch, step = meta["next_epoch"], meta["next_step"]
        epochs = meta["config"]["epochs"]
    except (CheckpointError, KeyError, TypeError):
        return None
    return f"after epoch {epoch - 1} of {epochs}" if step == 0 else \
        f"epoch {epoch} of {epochs}, step {step}"


OS_FIXES = {  # errno -> what to do before running again
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.EROFS: "make the folder writable or choose another --out",
    errno.EACCES: "make the folder writable or choose another --out",
    errno.EPERM: "make the folder writable or choose another --out",
    errno.ENOTDIR: "--out names a path under a file; choose another",
    errno.EEXIST: "--out names a path under a file; choose another",
}


def what_remains(run_dir, cfg, fix=""):
    """What a run stopped by an error leaves, and what to run (after ``fix``, e.g.
    "free some space")."""
    then = f"{fix}, then " if fix else ""
    if run_dir is None or not run_dir.is_dir():
        return f"nothing was written; {fix}" if fix else "nothing was written"
    position = checkpoint_position(run_dir)
    if position is None:
        return (f"no checkpoint was written in {run_dir}; {then}start again with: "
                f"{train_command(cfg, run_dir, '--overwrite')}")
    return (f"the last checkpoint in {run_dir} ({position}) is intact; {then}continue with: "
            f"{command('--resume', run_dir)}")


def divergence_advice(run_dir, cfg):
    """What exists after a divergence, and a command that starts again with a smaller --lr."""
    retry = train_command(cfg.replace(lr=cfg.lr / 10), run_dir, "--overwrite")
    position = checkpoint_position(run_dir)
    if position is None:
        return (f"no checkpoint exists yet (the run diverged before its first), so there is "
                f"nothing to resume; start again with a smaller --lr: {retry}")
    return (f"the last good checkpoint in {run_dir} ({position}) is intact, but resuming "
            f"repeats the same steps; start again with a smaller --lr: {retry} (or try a "
            "larger --icp-rate, or --dtype float64)")


# --- entry point ---

class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop: stops the command like Ctrl-C, with its message."""


def _raise_terminated(signum, frame):
    raise Terminated


def sigterm_stops():
    """SIGTERM raises :class:`Terminated` for the block (main thread only), so a SIGTERM
    before the loop's own handler is in place, or one held back during a file write and
    delivered afterwards, ends in one line rather than a silent exit."""
    return signal_handlers({signal.SIGTERM: _raise_terminated})


def main(argv=None, prog=PROG):
    """CLI entry point; returns the metrics dict (tests call it in-process)."""
    cfg, control = config_from_args(argv, prog)
    run_dir, made, locked = None, [], False
    startup_done()  # from here on SIGINT and SIGTERM end in what_remains' one line
    try:
        with sigterm_stops(), contextlib.ExitStack() as owned:
            if control["resume"]:
                run_dir = Path(control["resume"])
                cfg, (arrays, meta) = open_checkpoint(run_dir, control["data_dir"], owned)
                source = run_dir / CHECKPOINT_FILE
                if meta["next_epoch"] > cfg.epochs:
                    return complete_run(run_dir, cfg, arrays, meta)
                say(f"resuming {run_dir} at epoch {meta['next_epoch']}, step {meta['next_step']}")
                resume_state = (arrays, meta)
            else:
                run_dir = Path(cfg.out) if cfg.out else None
                if run_dir is not None:
                    check_run_dir(run_dir, control["overwrite"])  # early: before the data load
                resume_state = None
            xp = get_xp(cfg.backend)  # a missing GPU or data fails before the folder is made
            data = load_dataset(cfg.dataset, cfg.data_dir)
            n_train = data.x_train.shape[0] - cfg.validation  # images trained on
            if n_train < 1:
                raise RunError(f"--validation {cfg.validation} leaves no training images: "
                               f"{cfg.dataset} has {data.x_train.shape[0]}; hold out fewer")
            if resume_state is not None:
                check_same_data(meta.get("data"), data, cfg, source)
                check_position(meta, arrays, math.ceil(n_train / cfg.batch_size), source)
            check_memory(cfg, data, xp)
            if resume_state is None:
                run_dir, made = make_run_dir(run_dir or default_run_dir(cfg), claim=not cfg.out)
            try:
                if resume_state is None:
                    owned.enter_context(run_folder_lock(run_dir))
                    locked = True
                    check_run_dir(run_dir, control["overwrite"])  # again, now that it is ours
                    if control["overwrite"]:
                        removed = clear_old_run(run_dir)
                        if removed:
                            say(f"--overwrite: removed the old run's {', '.join(removed)}")
                check_writable(run_dir)
                say("config: " + " ".join(f"{k}={v}" for k, v in cfg.as_dict().items()))
                metrics = run(cfg, run_dir, data, resume_state)
            except BaseException as exc:
                if locked or not isinstance(exc, RunError):  # not another process's folder
                    remove_made_folders(made)  # the folders this process made, still empty
                raise
            say(f"done: the model is in {run_dir / MODEL_FILE}; evaluate it with: "
                f"{predict_command(run_dir)}")
            return metrics
    except Diverged as exc:
        _fail(f"{exc}; {divergence_advice(run_dir, cfg)}", exc.code, prog)
    except (BackendError, DataError, CheckpointError, RunError, MemoryRefusal) as exc:
        _fail(str(exc), getattr(exc, "code", EXIT_USAGE), prog)
    except OSError as exc:
        fix = OS_FIXES.get(exc.errno, "")
        _fail(f"{describe_os_error(exc)}; {what_remains(run_dir, cfg, fix)}", EXIT_IO, prog)
    except Terminated:
        _fail(f"terminated (SIGTERM); {what_remains(run_dir, cfg)}", EXIT_TERMINATED, prog)
    except KeyboardInterrupt:
        _fail(f"interrupted; {what_remains(run_dir, cfg)}", EXIT_INTERRUPTED, prog)


def check_resumable(run_dir):
    """Raise :class:`RunError` unless ``run_dir`` holds a checkpoint to resume; the message
    says what to run instead (a run stopped before its first checkpoint starts again)."""
    if not run_dir.is_dir():
        raise RunError(f"--resume {run_dir}: no such run folder")
    if os.path.lexists(run_dir / CHECKPOINT_FILE):
        return
    saved = saved_config(run_dir)
    if saved is None:
        raise RunError(f"--resume {run_dir}: it holds no {CHECKPOINT_FILE} and no readable "
                       "config.json, so it is not a run folder; start a run with: "
                       f"{command('--out', run_dir)}")
    raise RunError(f"--resume {run_dir}: the run stopped before its first checkpoint, so "
                   f"there is nothing to resume; start it again with: "
                   f"{train_command(saved, run_dir, '--overwrite')}")


def open_checkpoint(run_dir, data_dir, owned):
    """``--resume``: own ``run_dir`` (its lock joins the ExitStack ``owned``), remove what
    a write cut short by a kill left, and read its checkpoint. Returns the run's
    configuration (with ``data_dir`` when given: the data moved, which :func:`main` checks
    against the checkpoint) and the checkpoint's (arrays, meta)."""
    check_resumable(run_dir)  # before the lock: nothing made in a non-run folder
    owned.enter_context(run_folder_lock(run_dir))  # before reading or cleaning
    remove_temporaries(run_dir)
    source = run_dir / CHECKPOINT_FILE
    arrays, meta = load_archive(source)
    cfg = config_of(meta, source)
    if data_dir is not None:
        cfg = cfg.replace(data_dir=data_dir)
    return cfg, (arrays, meta)


def saved_config(run_dir):
    """The configuration in ``run_dir``'s config.json, or None if it cannot be read."""
    try:
        with os.fdopen(open_file(run_dir / "config.json"), "rb") as f:
            return config_from_saved(json.loads(f.read()).get("config"))
    except (OSError, ValueError, AttributeError, RecursionError, ConfigError):
        return None


def complete_run(run_dir, cfg, arrays, meta):
    """``--resume`` of a run whose last epoch is done: nothing to train, but a missing
    model file is written from the final checkpoint. Returns the metrics."""
    if os.path.lexists(run_dir / MODEL_FILE):
        say(f"{run_dir}: the run is already complete ({cfg.epochs} epochs); evaluate it "
            f"with: {predict_command(run_dir)}")
        return meta["metrics"]
    metrics = finish_from_checkpoint(run_dir, cfg, arrays, meta)
    say(f"{run_dir}: the run is complete ({cfg.epochs} epochs) but had no {MODEL_FILE}; "
        f"wrote it from the final checkpoint. Evaluate it with: {predict_command(run_dir)}")
    return metrics


def _fail(message, code, prog=PROG):
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code) from None


def cli():
    """Console-script entry point (``ffnumpy-train``): exit status 0 on success."""
    as_command(lambda: main(prog=SCRIPT))


if __name__ == "__main__":
    as_command(main)
