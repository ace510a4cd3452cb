"""Evaluate a saved model: ``python -m ffnumpy.predict RUN_DIR``.

Loads the run's ``model.npz`` (or, for an unfinished run, its ``checkpoint.npz``,
saying so and at which epoch), measures the test error on the run's dataset, and
optionally writes the predicted labels. The Python API is
:func:`ffnumpy.saving.load_model` plus ``model.predict`` on raw images. The model's
size, read from the file's header, is checked against the memory available before
anything is built, as ``train`` checks a run.

Exit codes: 0 done; 2 bad arguments, not enough memory, or a missing or damaged model
or dataset; 3 the model holds NaN or infinity (the run had diverged); 4 a file or the
standard output could not be written (the message names it and the cause); 130 Ctrl-C.
"""
import errno
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .backend import BACKENDS, BackendError, startup_done, to_host
from .checkpoint import (  # EXIT_NONFINITE: the model holds NaN or infinity
    EXIT_NONFINITE,
    CheckpointError,
    as_command,
    atomic_write,
    describe_os_error,
    silence_stdout,
)
from .config import OneLineParser
from .data import DataError, load_dataset
from .memory import MemoryRefusal
from .saving import CHECKPOINT_FILE, load_model

PROG = "python -m ffnumpy.predict"
SCRIPT = "ffnumpy-predict"  # the console script (pyproject [project.scripts])
EXIT_USAGE = 2  # bad arguments, not enough memory, or a missing or damaged model or dataset
EXIT_IO = 4  # a file (or the standard output) could not be written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def evaluate_run(path, backend=None, data_dir=None):
    """Test error of the model saved at ``path``; returns (error, predictions, cfg)."""
    model, cfg, meta = load_model(path, backend)
    if meta.get("kind") == "checkpoint":
        if meta["next_epoch"] > cfg.epochs:
            run_dir = Path(meta["source"]).parent
            print(f"{meta['source']}: the run is finished but its model.npz is missing, "
                  f"evaluating its final checkpoint (write the model with: python -m "
                  f"ffnumpy.train --resume {run_dir})", flush=True)
        else:
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
    """Raise OSError (naming the file) unless the file np.save will write for ``path`` can
    be created: a name, in an existing folder that can be written, not itself a folder,
    not longer than the file system allows. Checked before the evaluation, so its time
    is not lost; returns that file's path."""
    if not str(path):
        raise FileNotFoundError(errno.ENOENT, "--save needs a file name", "''")
    path = Path(path if str(path).endswith(".npy") else f"{path}.npy")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder (create it first)", str(folder))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder of that name exists", str(path))
    if len(os.fsencode(path.name)) > os.pathconf(folder, "PC_NAME_MAX"):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
    try:
        with tempfile.TemporaryFile(dir=folder):  # can a file be created there?
            pass
    except OSError as exc:
        exc.filename = str(path)
        raise
    return path


def save_predictions(path, pred):
    """Write ``pred`` to ``path`` atomically."""
    atomic_write(path, lambda f: np.save(f, pred))


def build_parser(prog=PROG):
    parser = OneLineParser(prog=prog, description="Evaluate a trained ffnumpy model on its "
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


def main(argv=None, prog=PROG):
    """CLI entry point; returns the test error (tests call it in-process)."""
    startup_done()
    args = build_parser(prog).parse_args(argv)
    try:
        save = check_save_path(args.save) if args.save is not None else None
        error, pred, cfg = evaluate_run(args.path, args.backend, args.data_dir)
        if save:  # before printing: a closed standard output must not lose the file
            save_predictions(save, pred)
        report(f"{cfg.dataset} test error: {100 * error:.2f}% ({cfg.algo}, "
               f"{cfg.layers}x{cfg.width}, {pred.size} images)", save)
    except (BackendError, CheckpointError, DataError, MemoryRefusal) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(getattr(exc, "code", EXIT_USAGE)) from None
    except OSError as exc:
        print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_IO) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    return error


def report(line, saved):
    """Print the result ``line``; a standard output that cannot be written is an error of
    its own (the result is lost, but a --save file is already in place)."""
    try:
        print(line, flush=True)
    except OSError as exc:
        silence_stdout()
        kept = f"; the predictions are saved in {saved}" if saved else \
            "; run again with --save FILE.npy to keep the predictions"
        raise OSError(exc.errno, f"{exc.strerror or exc}{kept}", "the standard output") \
            from None


def cli():
    """Console-script entry point (``ffnumpy-predict``): exit status 0 on success."""
    as_command(lambda: main(prog=SCRIPT))


if __name__ == "__main__":
    as_command(main)
