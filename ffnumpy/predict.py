"""Evaluate a saved model: ``python -m ffnumpy.predict RUN_DIR``.

Loads the run's ``model.npz`` (or, for an unfinished run, its ``checkpoint.npz``),
measures the test error on the run's dataset, and optionally writes the predicted
labels. The Python API is :func:`ffnumpy.saving.load_model` plus ``model.predict``.
"""
import argparse
import sys

import numpy as np

from .backend import BACKENDS, BackendError, to_host
from .checkpoint import CheckpointError
from .data import DataError, load_dataset, standardize
from .saving import load_model

PROG = "python -m ffnumpy.predict"


def evaluate_run(path, backend=None, data_dir=None):
    """Test error of the model saved at ``path``; returns (error, predictions, cfg)."""
    model, cfg, meta = load_model(path, backend)
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir)
    if meta.get("standardization"):
        data, _ = standardize(data, meta["standardization"])
    x_test = model.xp.asarray(data.x_test, dtype=cfg.dtype)
    pred = to_host(model.predict(x_test))
    return float((pred != data.y_test).mean()), pred, cfg


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description="Evaluate a trained ffnumpy model "
                                     "on its dataset's test set.")
    parser.add_argument("path", help="a run folder, or a model.npz / checkpoint.npz file")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="compute on this backend instead of the one the run used")
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets")
    parser.add_argument("--save", metavar="FILE.npy", default=None,
                        help="write the predicted test labels to this .npy file")
    args = parser.parse_args(argv)
    try:
        error, pred, cfg = evaluate_run(args.path, args.backend, args.data_dir)
    except (BackendError, CheckpointError, DataError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{cfg.dataset} test error: {100 * error:.2f}% ({cfg.algo}, "
          f"{cfg.layers}x{cfg.width}, {pred.size} images)")
    if args.save:
        np.save(args.save, pred)
    return error


if __name__ == "__main__":
    main()
