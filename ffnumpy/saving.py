"""Build a model from a configuration, and move its whole state to and from files.

A model file (``model.npz``) holds the weights, the label codes (the ICP patterns)
and the configuration, enough to predict. A checkpoint adds the optimiser state
and the position in training. Both are archives of :mod:`ffnumpy.checkpoint`.
"""
from pathlib import Path

import numpy as np

from .backend import get_xp, to_host
from .bp import BPNet
from .checkpoint import CheckpointError, load_archive, save_archive
from .config import Config
from .labels import LabelEncoder, make_encoder
from .model import FFNet

MODEL_FILE = "model.npz"
CHECKPOINT_FILE = "checkpoint.npz"


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
    """Copy saved arrays into ``model`` in place, checking every name and shape."""
    xp = model.xp

    def take(name, like):
        if name not in arrays:
            raise CheckpointError(f"{source}: entry {name!r} is missing; the file is incomplete")
        a = arrays[name]
        if a.shape != like.shape:
            raise CheckpointError(f"{source}: entry {name!r} has shape {a.shape}, the model "
                                  f"expects {like.shape}")
        return xp.asarray(a, dtype=like.dtype)

    for l in range(model.n_layers):
        model.W[l][...] = take(f"W{l}", model.W[l])
        model.b[l][...] = take(f"b{l}", model.b[l])
    if with_optimizer:
        for k, opt in enumerate(model.optimizers):
            state = {"t": int(arrays.get(f"opt{k}_t", 0))}
            for name in ("m", "v"):
                if hasattr(opt, name):
                    state[name] = [take(f"opt{k}_{name}{i}", a)
                                   for i, a in enumerate(getattr(opt, name))]
            opt.load_state_dict(state)


def save_model(path, model, cfg, extra=None):
    """Write the model file: weights, label codes and configuration, atomically."""
    save_archive(path, model_arrays(model), {"kind": "model", "config": cfg.as_dict(),
                                             **(extra or {})})


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
    cfg : Config
    meta : dict
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
    cfg = Config.from_dict(meta["config"])
    if backend is not None:
        cfg = cfg.replace(backend=backend)
    xp = get_xp(cfg.backend)
    shape = tuple(meta["image_shape"])
    model = build_model(cfg, int(meta["n_classes"]), shape, xp)
    if isinstance(model, FFNet):
        codes = arrays.get("codes")
        if codes is None or codes.shape != model.encoder.codes.shape:
            raise CheckpointError(f"{path}: label codes missing or of the wrong shape")
        model.set_encoder(LabelEncoder.from_state(cfg.labels, codes.astype(cfg.dtype),
                                                  model.encoder.d_image))
    restore_arrays(model, arrays, with_optimizer=meta.get("kind") == "checkpoint",
                   source=str(path))
    return model, cfg, meta
