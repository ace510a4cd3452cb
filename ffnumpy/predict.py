"""Evaluate a saved model: ``python -m ffnumpy.predict RUN_DIR``.

Loads the run's ``model.npz`` (or, for an unfinished run, its ``checkpoint.npz``,
saying so and at which epoch), measures the test error on the run's dataset, and
optionally writes the predicted labels. The Python API is
:func:`ffnumpy.saving.load_model` plus ``model.predict`` on raw images.

Exit codes: 0 done; 2 bad arguments, or a missing or damaged model or dataset;
4 a file could not be written (the message names it and the cause); 130 Ctrl-C.
"""
import os
import sys
from pathlib import Path

import numpy as np

from .backend import BACKENDS, BackendError, to_host
from .checkpoint import CheckpointError, atomic_write, describe_os_error
from .config import OneLineParser
from .data import DataError, load_dataset
from .saving import CHECKPOINT_FILE, load_model

PROG = "python -m ffnumpy.predict"
EXIT_USAGE = 2  # bad arguments, or a missing or damaged model or dataset
EXIT_IO = 4  # a file could not be written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def evaluate_run(path, backend=None, data_dir=None):
    """Test error of the model saved at ``path``; returns (error, predictions, cfg)."""
    model, cfg, meta = load_model(path, backend)
    if meta.get("kind") == "checkpoint":
        print(f"{meta['source']}: the run is unfinished, evaluating its checkpoint "
              f"({position(meta, cfg.epochs)})", flush=True)
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir)
    x_test = model.xp.asarray(data.x_test, dtype=cfg.dtype)  # raw images: the model standardises
    pred = to_host(model.predict(x_test))
    return float((pred != data.y_test).mean()), pred, cfg


def position(meta, epochs):
    """Where a checkpoint stands, e.g. "after epoch 3 of 120" or "epoch 4 of 120, step 7"."""
    epoch, step = meta["next_epoch"], meta["next_step"]
    if step == 0:
        return f"after epoch {epoch - 1} of {epochs}"
    return f"epoch {epoch} of {epochs}, stopped after step {step}"


def check_save_path(path):
    """Raise OSError unless ``path``'s folder exists and can be written (checked before the
    evaluation, so its time is not lost); returns the file np.save will write."""
    path = Path(path if str(path).endswith(".npy") else f"{path}.npy")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(2, "no such folder (create it first)", str(folder))
    if not os.access(folder, os.W_OK):
        raise PermissionError(13, "folder not writable", str(folder))
    return path


def save_predictions(path, pred):
    """Write ``pred`` to ``path`` atomically."""
    atomic_write(path, lambda f: np.save(f, pred))


def build_parser():
    parser = OneLineParser(prog=PROG, description="Evaluate a trained ffnumpy model on its "
                           "dataset's test set.")
    parser.add_argument("path", help="a run folder (its model.npz, else its "
                        f"{CHECKPOINT_FILE}), or a model.npz / checkpoint.npz file")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="compute on this backend instead of the one the run used")
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets "
                        "(default: the run's --data-dir, else data_cache/ or $FFNUMPY_DATA_DIR)")
    parser.add_argument("--save", metavar="FILE.npy", default=None,
                        help="write the predicted test labels to this .npy file (its folder "
                        "must exist)")
    return parser


def main(argv=None):
    """CLI entry point; returns the test error (tests call it in-process)."""
    args = build_parser().parse_args(argv)
    try:
        save = check_save_path(args.save) if args.save else None
        error, pred, cfg = evaluate_run(args.path, args.backend, args.data_dir)
        print(f"{cfg.dataset} test error: {100 * error:.2f}% ({cfg.algo}, "
              f"{cfg.layers}x{cfg.width}, {pred.size} images)")
        if save:
            save_predictions(save, pred)
    except (BackendError, CheckpointError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except OSError as exc:
        print(f"{PROG}: error: {describe_os_error(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_IO) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    return error


def cli():
    """Console-script entry point (``ffnumpy-predict``): exit status 0 on success."""
    main()


if __name__ == "__main__":
    main()
