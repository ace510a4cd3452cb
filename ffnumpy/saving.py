"""Build a model from a configuration, and move its whole state to and from files.

A model file (``model.npz``) holds the weights, the label codes (the ICP patterns)
and the configuration, enough to predict. A checkpoint adds the optimiser state
and the position in training. Both are archives of :mod:`ffnumpy.checkpoint`.
"""
import math
from pathlib import Path

import numpy as np

from .backend import get_xp, to_host
from .bp import BPNet
from .checkpoint import CheckpointError, NonFiniteError, load_archive, save_archive
from .config import ConfigError, config_from_saved
from .data import standardize_images
from .labels import LabelEncoder, make_encoder
from .memory import check_model_memory
from .model import FFNet

MODEL_FILE = "model.npz"
CHECKPOINT_FILE = "checkpoint.npz"
NUMBER_KINDS = "fiu"  # dtype kinds an array of weights, state or codes may have
DIVERGED = ("the run had diverged when it was written; train it again (e.g. with a smaller "
            "--lr) instead of resuming or evaluating it")


# --- the standardisation a loaded model applies ---

class InputStats(dict):
    """The per-channel "mean" and "std" lists of a ``--standardize`` run, as saved in its
    header (a dict, and equal to it), which a loaded model's ``predict`` applies to raw
    images with :meth:`apply`, exactly as training standardised them. The statistics bring
    their own arithmetic, so that a model module need not import the data module.
    """

    def apply(self, x):
        """``(x - mean) / std`` per colour channel (:func:`ffnumpy.data.standardize_images`).

        Parameters
        ----------
        x : array of shape (N, D_img), NumPy or CuPy

        Returns
        -------
        array of shape (N, D_img)
        """
        return standardize_images(x, self)


# --- checks of what a file holds ---

def nonfinite_entries(arrays):
    """Names of the floating-point arrays in ``arrays`` that hold NaN or infinity."""
    return [name for name, a in arrays.items()
            if a.dtype.kind == "f" and not np.isfinite(a).all()]


def check_numbers(name, a, source, shape=None):
    """Raise unless ``a`` is a numeric array (of ``shape``) without NaN or infinity.

    Raises
    ------
    CheckpointError
        If ``a`` is not numeric or has another shape.
    NonFiniteError
        If it holds NaN or infinity (exit code 3).
    """
    if not isinstance(a, np.ndarray) or a.dtype.kind not in NUMBER_KINDS:
        kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise CheckpointError(f"{source}: entry {name!r} is of type {kind}, not numbers; the "
                              "file was damaged or edited, use an earlier checkpoint or retrain")
    if shape is not None and a.shape != tuple(shape):
        raise CheckpointError(f"{source}: entry {name!r} has shape {a.shape}, the model "
                              f"expects {tuple(shape)}")
    if nonfinite_entries({name: a}):
        raise NonFiniteError(f"{source}: entry {name!r} holds NaN or infinity: {DIVERGED}")


def build_model(cfg, n_classes, image_shape, xp):
    """A freshly initialised model for ``cfg``; weights and ICP patterns drawn from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    widths = [cfg.width] * cfg.layers
    d_image = int(np.prod(image_shape))
    if cfg.algo == "bp":
        return BPNet(d_image, widths, n_classes, xp, rng, cfg.optimizer, cfg.lr, cfg.dtype)
    encoder = make_encoder(cfg.labels, n_classes, image_shape, cfg.icp_rate, rng, cfg.dtype,
                           per_channel=cfg.icp_per_channel)
    return FFNet(encoder, widths, xp, rng, algo=cfg.algo, goodness_kind=cfg.goodness,
                 norm=cfg.norm, theta=cfg.theta, alpha=cfg.alpha, optimizer=cfg.optimizer,
                 lr=cfg.lr, skip_first_layer=cfg.skip_first_layer, dtype=cfg.dtype)


def model_arrays(model, with_optimizer=False):
    """Host copies of the model's arrays (and optionally its optimiser state), by name."""
    arrays = {}
    for l, (W, b) in enumerate(zip(model.W, model.b)):
        arrays[f"W{l}"], arrays[f"b{l}"] = to_host(W), to_host(b)
    if isinstance(model, FFNet):
        arrays["codes"] = model.encoder.codes
    if with_optimizer:
        for k, opt in enumerate(model.optimizers):
            state = opt.state_dict()
            arrays[f"opt{k}_t"] = np.array(state["t"])
            for name in ("m", "v"):
                for i, a in enumerate(state.get(name, [])):
                    arrays[f"opt{k}_{name}{i}"] = to_host(a)
    return arrays


def restore_arrays(model, arrays, with_optimizer=False, source="file"):
    """Copy saved arrays into ``model`` in place, checking every name, type, shape and
    value (:func:`check_numbers`: NaN or infinity raises :class:`NonFiniteError`)."""
    xp = model.xp

    def take(name, like):
        if name not in arrays:
            raise CheckpointError(f"{source}: entry {name!r} is missing; the file is incomplete")
        check_numbers(name, arrays[name], source, like.shape)
        return xp.asarray(arrays[name], dtype=like.dtype)

    if isinstance(model, FFNet) and "codes" in arrays:  # the label codes: checked alike
        check_numbers("codes", arrays["codes"], source, model.encoder.codes.shape)
    for l in range(model.n_layers):
        model.W[l][...] = take(f"W{l}", model.W[l])
        model.b[l][...] = take(f"b{l}", model.b[l])
    if with_optimizer:
        for k, opt in enumerate(model.optimizers):
            state = {"t": step_count(arrays, f"opt{k}_t", source)}
            for name in ("m", "v"):
                if hasattr(opt, name):
                    state[name] = [take(f"opt{k}_{name}{i}", a)
                                   for i, a in enumerate(getattr(opt, name))]
            opt.load_state_dict(state)


def step_count(arrays, name, source):
    """An optimiser's step count ``t``: a saved integer scalar >= 0 (0 when absent)."""
    t = arrays.get(name, np.array(0))
    if not (t.shape == () and t.dtype.kind in "iu" and int(t) >= 0):
        raise CheckpointError(f"{source}: entry {name!r} is {t.dtype} of shape {t.shape}, "
                              "expected a whole number >= 0; the file was damaged or edited, "
                              "use an earlier checkpoint or retrain")
    return int(t)


def check_epoch_arrays(arrays, model, n_train, n_classes, source):
    """Check a mid-epoch checkpoint's ``stats_sum`` (the epoch's summed per-step statistics,
    (L, 3) for FF/SymBa, (1, 1) for backprop) and ``epoch_y_neg`` (the epoch's hard
    negative labels: ``n_train`` integers in 0..n_classes - 1), where present."""
    if "stats_sum" in arrays:
        shape = (model.n_layers, 3) if isinstance(model, FFNet) else (1, 1)
        check_numbers("stats_sum", arrays["stats_sum"], source, shape)
    if "epoch_y_neg" in arrays:
        y_neg = arrays["epoch_y_neg"]
        if not (y_neg.dtype.kind in "iu" and y_neg.shape == (n_train,)
                and (y_neg.size == 0 or 0 <= y_neg.min() <= y_neg.max() < n_classes)):
            raise CheckpointError(f"{source}: entry 'epoch_y_neg' is not {n_train} integer "
                                  f"labels in 0..{n_classes - 1}; the file was damaged or "
                                  "edited, use an earlier checkpoint or retrain")


def save_model(path, model, cfg, extra=None):
    """Write the model file: weights, label codes and configuration, atomically."""
    save_archive(path, model_arrays(model), {"kind": "model", "config": cfg.as_dict(),
                                             **(extra or {})})


def _is_int(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number_list(value, length):
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def config_of(meta, source):
    """The configuration saved in a model or checkpoint header, checked like the command line.

    Checks the header's configuration (:func:`ffnumpy.config.config_from_saved`), the
    dataset shape (``n_classes``, ``image_shape``), the standardisation statistics and,
    for a checkpoint, the position (``next_epoch``, ``next_step``) and the metrics.
    Whether ``next_step`` lies inside an epoch needs the dataset's size:
    :func:`check_position`.

    Raises
    ------
    CheckpointError
        One line naming ``source``, the bad entry and what to do.
    """
    def bad(what):
        return CheckpointError(f"{source}: {what}; the file was damaged or edited, use an "
                               "earlier checkpoint or retrain")

    if "config" not in meta:
        raise bad("the header has no 'config' entry")
    try:
        cfg = config_from_saved(meta["config"])
    except ConfigError as exc:
        raise bad(f"saved configuration: {exc}") from None
    n_classes, shape = meta.get("n_classes"), meta.get("image_shape")
    if not _is_int(n_classes, 2):
        raise bad(f"n_classes is {n_classes!r}, expected an integer >= 2")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v, 1) for v in shape)):
        raise bad(f"image_shape is {shape!r}, expected [channels, height, width]")
    stats = meta.get("standardization")
    if stats is not None and not (isinstance(stats, dict)
                                  and _is_number_list(stats.get("mean"), shape[0])
                                  and _is_number_list(stats.get("std"), shape[0])
                                  and all(not v <= 0 for v in stats["std"])):
        raise bad(f"standardization is {stats!r}, expected null or mean and std lists of "
                  f"{shape[0]} numbers (std > 0)")
    if stats is not None and not all(map(math.isfinite, stats["mean"] + stats["std"])):
        raise NonFiniteError(f"{source}: the standardisation statistics hold NaN or "
                             f"infinity: {DIVERGED}")
    if meta.get("kind") == "checkpoint":
        for key, low in (("next_epoch", 1), ("next_step", 0)):
            if not _is_int(meta.get(key), low):
                raise bad(f"{key} is {meta.get(key)!r}, expected an integer >= {low}")
        seconds = meta.get("epoch_seconds_so_far", 0.0)
        if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                and seconds >= 0):
            raise bad(f"epoch_seconds_so_far is {seconds!r}, expected a number >= 0")
        metrics = meta.get("metrics")
        if not (isinstance(metrics, dict) and isinstance(metrics.get("epochs"), list)
                and isinstance(metrics.get("device"), str)):
            raise bad("metrics is missing, or has no list of epochs or no device")
        if not all(isinstance(r, dict) and _is_int(r.get("epoch"), 1)
                   and isinstance(r.get("test_error", 0.0), (int, float))
                   for r in metrics["epochs"]):
            raise bad("metrics.epochs holds an entry that is not an epoch's record")
    return cfg


def check_position(meta, arrays, n_steps, source):
    """Raise :class:`CheckpointError` unless a checkpoint's ``next_step`` lies in an epoch of
    ``n_steps`` steps (``n_steps`` itself: stopped after the epoch's last step) and a
    mid-epoch checkpoint holds the epoch's statistics so far."""
    step = meta["next_step"]
    if step > n_steps:
        raise CheckpointError(f"{source}: next_step is {step}, past the end of an epoch of "
                              f"{n_steps} steps; the file was damaged or edited, use an earlier "
                              "checkpoint or retrain")
    if step > 0 and "stats_sum" not in arrays:
        raise CheckpointError(f"{source}: stopped at step {step} but the entry 'stats_sum' is "
                              "missing; the file is incomplete, use an earlier checkpoint or "
                              "retrain")


def load_model(path, backend=None):
    """Load a saved model (a ``model.npz``, a checkpoint, or a run folder holding one).

    Parameters
    ----------
    path : str or Path
        A file, or a run folder (its ``model.npz``, else its ``checkpoint.npz``).
    backend : {"numpy", "cupy"}, optional
        Overrides the backend the model was trained with.

    Returns
    -------
    model : FFNet or BPNet
        Its ``predict`` takes raw images: a ``--standardize`` run's statistics are saved
        with the model and applied by ``predict`` itself.
    cfg : Config
    meta : dict
        The file's header; ``meta["source"]`` is the file read.

    Raises
    ------
    CheckpointError
        If no file is found, or it is damaged, or its header fails :func:`config_of`.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / MODEL_FILE, path / CHECKPOINT_FILE]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise CheckpointError(f"{path}: holds neither {MODEL_FILE} nor {CHECKPOINT_FILE}; "
                                  "is it a run folder?")
        path = found[0]
    arrays, meta = load_archive(path)
    cfg = config_of(meta, path)
    if backend is not None:
        cfg = cfg.replace(backend=backend)
    xp = get_xp(cfg.backend)
    shape = tuple(meta["image_shape"])
    is_checkpoint = meta.get("kind") == "checkpoint"
    check_model_memory(cfg, meta["n_classes"], shape, xp, with_optimizer=is_checkpoint)
    model = build_model(cfg, meta["n_classes"], shape, xp)
    if isinstance(model, FFNet):
        codes = arrays.get("codes")
        if codes is None:
            raise CheckpointError(f"{path}: entry 'codes' (the label codes) is missing; the "
                                  "file is incomplete")
        check_numbers("codes", codes, path, model.encoder.codes.shape)
        model.set_encoder(LabelEncoder.from_state(cfg.labels, codes.astype(cfg.dtype),
                                                  model.encoder.d_image))
    restore_arrays(model, arrays, with_optimizer=is_checkpoint, source=str(path))
    stats = meta.get("standardization")
    model.input_stats = None if stats is None else InputStats(stats)  # predict applies them
    return model, cfg, {**meta, "source": str(path)}
