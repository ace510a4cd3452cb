"""Command line and training loop: ``python -m ffnumpy.train mnist [flags]``.

One line per epoch (loss, test error, seconds); the resolved configuration, the
per-epoch metrics, checkpoints and the final model go to the run folder. The run
survives interruption: SIGINT or SIGTERM finishes the current step, writes a
checkpoint and exits; ``--resume RUN_DIR`` continues from it and, on the NumPy
backend, ends with exactly the weights and metrics of an uninterrupted run.

Randomness: weights and ICP patterns come from ``seed``; epoch e's shuffle and
negative labels come from a generator seeded with ``(seed, e)``, all drawn at the
start of the epoch, so the position (epoch, step) is the whole random state.
"""
import math
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import augment
from .backend import BackendError, device_name, get_xp, synchronize, to_host
from .checkpoint import CheckpointError, load_archive, save_archive, write_json
from .config import Config, config_from_args
from .data import DATA_CACHE, DataError, hold_out, load_dataset, standardize, standardize_images
from .labels import sample_hard_negative_labels, sample_negative_labels
from .model import FFNet
from .saving import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    build_model,
    model_arrays,
    restore_arrays,
    save_model,
)

PROG = "python -m ffnumpy.train"
EXIT_USAGE = 2  # bad flags, data or folder: nothing was written
EXIT_DIVERGED = 3  # NaN guard tripped
RUN_MARKERS = ("config.json", CHECKPOINT_FILE, MODEL_FILE, "metrics.json")


class RunError(RuntimeError):
    """A problem a user can fix; reported as one line, with an exit code."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --- run folder ---

def default_run_dir(cfg):
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{cfg.dataset}-{cfg.algo}-{cfg.layers}x{cfg.width}-s{cfg.seed}-{stamp}"
    return DATA_CACHE / "runs" / name


def check_run_dir(run_dir, overwrite):
    """Refuse to write into a folder that holds another run, unless ``overwrite``."""
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken and not overwrite:
        raise RunError(f"{run_dir} already holds a run ({', '.join(taken)}); choose another "
                       f"--out, continue it with --resume {run_dir}, or pass --overwrite")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} exists and is not a folder")


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


def evaluate(model, x, y):
    """Test error of ``model`` on (x, y); for FF nets also each layer's own error and the
    fraction of dead ReLUs per layer (silent on every test image with its true label)."""
    if isinstance(model, FFNet):
        per_layer = model.goodness_per_label(x, per_layer=True)  # (L, N, C)
        pred = model.sum_layers(per_layer).argmax(axis=1)
        layer_err = [float((per_layer[l].argmax(axis=1) != y).mean())
                     for l in range(model.n_layers)]
        return {"test_error": float((pred != y).mean()), "layer_test_error": layer_err,
                "dead_relu_fraction": to_host(model.dead_fraction(x, y)).tolist()}
    return {"test_error": float((model.predict(x) != y).mean())}


# --- the loop ---

def run(cfg, run_dir, data, resume_state=None):
    """Train ``cfg`` on ``data`` in ``run_dir``; returns the metrics dict (module docstring)."""
    xp = get_xp(cfg.backend)
    input_stats = None
    x_val = y_val = None
    if cfg.validation:
        data, x_val, y_val = hold_out(data, cfg.validation, cfg.seed)
    if cfg.standardize:  # statistics of the images trained on, applied to every split
        data, input_stats = standardize(data)
        if x_val is not None:
            x_val = standardize_images(x_val, input_stats, data.image_shape)
    model = build_model(cfg, data.n_classes, data.image_shape, xp)
    x_train = xp.asarray(data.x_train, dtype=cfg.dtype)  # (N, D_img)
    y_train_dev = xp.asarray(data.y_train)
    x_test = xp.asarray(data.x_test, dtype=cfg.dtype)
    y_test = xp.asarray(data.y_test)
    if x_val is not None:
        x_val, y_val = xp.asarray(x_val, dtype=cfg.dtype), xp.asarray(y_val)  # (N_val, D_img)
    n_steps = math.ceil(data.x_train.shape[0] / cfg.batch_size)
    header = {"config": cfg.as_dict(), "n_classes": data.n_classes,
              "image_shape": list(data.image_shape), "standardization": input_stats}

    metrics = {"config": cfg.as_dict(), "device": device_name(xp), "epochs": []}
    epoch, step, stats_sum, seconds_so_far = 1, 0, None, 0.0
    saved_y_neg = None  # a hard-negative epoch interrupted midway keeps its labels
    hard = cfg.negatives == "hard" and isinstance(model, FFNet)
    if resume_state is not None:
        arrays, meta = resume_state
        restore_arrays(model, arrays, with_optimizer=True, source=str(run_dir / CHECKPOINT_FILE))
        metrics = meta["metrics"]
        epoch, step = meta["next_epoch"], meta["next_step"]
        seconds_so_far = meta.get("epoch_seconds_so_far", 0.0)
        if "stats_sum" in arrays:
            stats_sum = xp.asarray(arrays["stats_sum"])
        if step > 0 and "epoch_y_neg" in arrays:
            saved_y_neg = arrays["epoch_y_neg"]
    else:
        write_json(run_dir / "config.json", {**header, "device": device_name(xp)})

    def checkpoint(next_epoch, next_step, stats, seconds):
        arrays = model_arrays(model, with_optimizer=True)
        if stats is not None:
            arrays["stats_sum"] = to_host(stats)
            if hard:
                arrays["epoch_y_neg"] = y_neg
        save_archive(run_dir / CHECKPOINT_FILE, arrays, {
            **header, "kind": "checkpoint", "next_epoch": next_epoch, "next_step": next_step,
            "epoch_seconds_so_far": seconds, "metrics": metrics})

    print(f"run folder: {run_dir}  device: {metrics['device']}", flush=True)
    with StopFlag() as stop:
        while epoch <= cfg.epochs:
            synchronize(xp)
            t0 = time.perf_counter()  # train_seconds include scoring for hard negatives
            perm, y_neg, aug = epoch_plan(cfg, data.y_train, data.n_classes, epoch)
            if hard:
                y_neg = (saved_y_neg if saved_y_neg is not None else
                         hard_negatives(cfg, model, x_train, data.y_train, perm, epoch))
                saved_y_neg = None
            perm_dev, y_neg_dev = xp.asarray(perm), xp.asarray(y_neg)
            for opt in model.optimizers:
                opt.lr = cfg.lr_at(epoch)
            bar = tqdm(range(step, n_steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                       disable=None, file=sys.stderr, initial=step, total=n_steps)
            for s in bar:
                sl = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
                idx = perm_dev[sl]
                if aug is None:
                    xb = x_train[idx]
                else:  # crop and flip on the host, then one transfer
                    xb = xp.asarray(augment.apply(data.x_train[perm[sl]], data.image_shape,
                                                  aug[sl]), dtype=cfg.dtype)
                stats = model.train_step(xb, y_train_dev[idx], y_neg_dev[sl])
                stats_sum = stats if stats_sum is None else stats_sum + stats
                if stop.signum is not None:
                    synchronize(xp)
                    seconds = seconds_so_far + time.perf_counter() - t0
                    checkpoint(epoch, s + 1, stats_sum, seconds)
                    bar.close()
                    name = signal.Signals(stop.signum).name
                    print(f"\n{name} received: stopped at epoch {epoch}, step {s + 1}/{n_steps}; "
                          f"checkpoint written. Resume with: {PROG} --resume {run_dir}",
                          flush=True)
                    raise SystemExit(128 + stop.signum)
            bar.close()
            synchronize(xp)
            train_seconds = seconds_so_far + time.perf_counter() - t0
            record = epoch_record(epoch, to_host(stats_sum) / n_steps, train_seconds)
            _check_finite(model, record, epoch, run_dir)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t1 = time.perf_counter()
                record.update(evaluate(model, x_test, y_test))
                if x_val is not None:
                    record["val_error"] = float((model.predict(x_val) != y_val).mean())
                record["eval_seconds"] = time.perf_counter() - t1
            metrics["epochs"].append(record)
            print(epoch_line(record, cfg.epochs), flush=True)
            epoch, step, stats_sum, seconds_so_far = epoch + 1, 0, None, 0.0
            write_json(run_dir / "metrics.json", metrics)
            if (epoch - 1) % cfg.checkpoint_every == 0 or epoch > cfg.epochs:
                checkpoint(epoch, 0, None, 0.0)
    evaluated = [r for r in metrics["epochs"] if "test_error" in r]
    metrics["final_test_error"] = evaluated[-1]["test_error"] if evaluated else None
    write_json(run_dir / "metrics.json", metrics)
    save_model(run_dir / MODEL_FILE, model, cfg, {k: v for k, v in header.items()
                                                   if k != "config"})
    return metrics


def epoch_record(epoch, stats, train_seconds):
    """Per-epoch metrics from the mean of the per-step statistics (L, 3) or (1, 1)."""
    record = {"epoch": epoch, "train_seconds": train_seconds, "loss": stats[:, 0].tolist()}
    if stats.shape[1] == 3:  # FF/SymBa: per-layer mean |dL/dG_pos|, |dL/dG_neg| per pair
        record["mean_abs_dg_pos"] = stats[:, 1].tolist()
        record["mean_abs_dg_neg"] = stats[:, 2].tolist()
    return record


def epoch_line(record, epochs):
    loss = " ".join(f"{v:.4f}" for v in record["loss"])
    err = f"test error {100 * record['test_error']:.2f}%" if "test_error" in record else ""
    if "val_error" in record:
        err += f"  validation error {100 * record['val_error']:.2f}%"
    return (f"epoch {record['epoch']:3d}/{epochs}  loss {loss}  {err}  "
            f"{record['train_seconds']:.1f}s train").rstrip()


def _check_finite(model, record, epoch, run_dir):
    """NaN guard: stop with a clear message if any loss or weight is not finite."""
    xp = model.xp
    for l in range(model.n_layers):
        finite = (math.isfinite(record["loss"][min(l, len(record["loss"]) - 1)])
                  and bool(xp.isfinite(model.W[l]).all()) and bool(xp.isfinite(model.b[l]).all()))
        if not finite:
            raise RunError(
                f"non-finite loss or weights in layer {l + 1} at epoch {epoch}; training "
                f"stopped, the last good checkpoint in {run_dir} is intact. Try a smaller "
                "--lr, a larger --icp-rate, or --dtype float64", code=EXIT_DIVERGED)


# --- entry point ---

def main(argv=None):
    """CLI entry point; returns the metrics dict (tests call it in-process)."""
    cfg, control = config_from_args(argv)
    try:
        if control["resume"]:
            run_dir = Path(control["resume"])
            arrays, meta = load_archive(run_dir / CHECKPOINT_FILE)
            cfg = Config.from_dict(meta["config"])
            if meta["next_epoch"] > cfg.epochs:
                print(f"{run_dir}: the run is already complete ({cfg.epochs} epochs)")
                return meta["metrics"]
            print(f"resuming {run_dir} at epoch {meta['next_epoch']}, step {meta['next_step']}")
            for stale in run_dir.glob(".*.tmp"):  # left by a write that a kill cut short
                stale.unlink()
            resume_state = (arrays, meta)
        else:
            run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
            check_run_dir(run_dir, control["overwrite"])
            resume_state = None
        get_xp(cfg.backend)  # fail on a missing GPU or missing data before making the folder
        data = load_dataset(cfg.dataset, cfg.data_dir)
        if cfg.validation >= data.x_train.shape[0]:
            raise RunError(f"--validation {cfg.validation} leaves no training images: "
                           f"{cfg.dataset} has {data.x_train.shape[0]}; hold out fewer")
        run_dir.mkdir(parents=True, exist_ok=True)
        print("config: " + " ".join(f"{k}={v}" for k, v in cfg.as_dict().items()), flush=True)
        return run(cfg, run_dir, data, resume_state)
    except (BackendError, DataError, CheckpointError, RunError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(getattr(exc, "code", EXIT_USAGE)) from None


if __name__ == "__main__":
    main()
