"""Every training setting in one frozen dataclass, with the source of each default.

argparse flags are generated from the fields, so the CLI, the saved configuration
and the code cannot drift apart. :func:`validate` rejects impossible values before
anything is read or written.
"""
import argparse
import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from .backend import BACKENDS
from .data import DATASETS
from .labels import LABEL_KINDS
from .layers import NORMS
from .losses import GOODNESS_KINDS
from .optim import OPTIMIZERS

ALGOS = ("symba", "ff", "bp")
DTYPES = ("float32", "float64")
LR_DECAYS = ("none", "linear")
NEGATIVES = ("uniform", "hard")


class ConfigError(ValueError):
    """An impossible setting; the message says which and what is allowed."""


@dataclass(frozen=True)
class Config:
    dataset: str = "mnist"  # paper Sec. 4.1
    algo: str = "symba"  # the paper's method
    labels: str = "icp"  # paper Sec. 3.3: SymBa uses intrinsic class patterns
    layers: int = 2  # paper Table 1: 2 x 500 headline row
    width: int = 500  # paper Table 1
    epochs: int = 120  # paper Sec. 4.1
    batch_size: int = 4096  # paper Sec. 4.1
    optimizer: str = "adam"  # paper Sec. 4.1
    lr: float = 0.01  # paper sweeps {0.001, 0.01}; 0.01 measured better for SymBa (README)
    lr_decay: str = "none"  # paper: constant; "linear" decays to 0 over the second half
    alpha: float = 4.0  # paper Sec. 4.1: alpha = 4 reported for all experiments
    theta: float = 2.0  # paper Table 1: FF threshold 2.0
    icp_rate: float = 0.1  # paper Sec. 4.3: best ICP rate
    icp_per_channel: bool = False  # one pattern channel (default) or one per colour channel
    goodness: str = "sum"  # paper Eq. (1) writes the sum of squares
    norm: str = "l2"  # length normalisation between layers (Hinton 2022, Sec. 2.1)
    skip_first_layer: bool = False  # paper counts every layer at prediction (Sec. 3.3)
    negatives: str = "uniform"  # paper: a random wrong label; "hard": Hinton's reference code
    standardize: bool = False  # paper: raw pixels in [0, 1]
    augment: bool | None = None  # None: on for CIFAR (paper Sec. 4), off for the MNIST family
    validation: int = 0  # not in the paper: training images held out to pick settings honestly
    seed: int = 0
    backend: str = "numpy"
    dtype: str = "float32"
    eval_every: int = 1  # test error after every epoch (Figure 3 needs each epoch)
    checkpoint_every: int = 1  # at least this many epochs between checkpoints ...
    checkpoint_seconds: float = 60.0  # ... and this many seconds (a kill -9 loses at most ~1 min)
    data_dir: str | None = None  # default: data_cache/, or $FFNUMPY_DATA_DIR
    out: str | None = None  # default: data_cache/runs/<dataset>-<algo>-<L>x<W>-s<seed>-<time>

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def as_dict(self):
        return dataclasses.asdict(self)

    @property
    def augmented(self):
        """Whether training images are cropped and flipped (``augment``, else CIFAR only)."""
        return self.augment if self.augment is not None else self.dataset.startswith("cifar")

    def lr_at(self, epoch):
        """The learning rate of epoch ``epoch`` (1-based) under ``lr_decay``."""
        if self.lr_decay == "linear":
            return self.lr * min(1.0, 2.0 * (self.epochs - epoch + 1) / self.epochs)
        return self.lr

    @classmethod
    def from_dict(cls, values):
        """A Config from a saved dict; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


CHOICES = {"dataset": DATASETS, "algo": ALGOS, "labels": LABEL_KINDS, "optimizer": OPTIMIZERS,
           "goodness": GOODNESS_KINDS, "norm": NORMS, "backend": BACKENDS, "dtype": DTYPES,
           "lr_decay": LR_DECAYS, "negatives": NEGATIVES}

HELP = {
    "epochs": "passes over the training set",
    "batch_size": "images per minibatch (the last, partial batch of an epoch is kept)",
    "optimizer": "adam (Kingma & Ba, Algorithm 1) or sgd (plain gradient descent)",
    "seed": "seed of the weights, the ICP patterns and every epoch's shuffle and negative "
            "labels (an integer >= 0)",
    "backend": "numpy (CPU) or cupy (NVIDIA GPU; needs CuPy)",
    "dtype": "floating-point type of the weights, activities and Adam state",
    "algo": "symba: SymBa loss (Eqs. 10-11); ff: FF loss (Eqs. 2-3); bp: backprop MLP baseline",
    "labels": "how FF/SymBa put the label into the input: icp (class pattern channel) or "
              "overlay (one-hot in the first C pixels)",
    "layers": "number of hidden layers",
    "width": "units per hidden layer",
    "lr": "learning rate",
    "lr_decay": "none: constant learning rate; linear: constant for the first half of the "
                "epochs, then falling linearly towards 0",
    "alpha": "SymBa scale alpha in log(1 + exp(-alpha (G_pos - G_neg)))",
    "theta": "FF threshold theta",
    "icp_rate": "probability that a pixel of a class pattern is 1, in (0, 1]",
    "icp_per_channel": "give colour images one class-pattern channel per colour channel "
                       "instead of one extra channel",
    "goodness": "sum (paper Eq. 1) or mean of squared activities",
    "norm": "normalise each layer's input to unit length (l2) or unit root-mean-square (rms)",
    "skip_first_layer": "leave layer 1 out of the goodness summed at prediction",
    "negatives": "wrong label of each negative: uniform over the wrong labels, or hard: drawn "
                 "with probability softmax(goodness) over the wrong labels, from the model "
                 "at the start of each epoch (FF/SymBa only)",
    "standardize": "shift and scale each colour channel to mean 0, std 1 (training-set "
                   "statistics) before training",
    "augment": "random crop (pad 4) and horizontal flip of training images (default: on for "
               "CIFAR, off otherwise)",
    "validation": "hold out N training images (the same N for every run of a seed; never "
                  "trained on) and log their error beside the test error; 0: train on all",
    "eval_every": "measure test error every N epochs (and always after the last)",
    "checkpoint_every": "write a checkpoint at the end of an epoch once at least N epochs "
                        "and --checkpoint-seconds have passed since the last one (the first at "
                        "the end of epoch N); always at the end and on SIGINT/SIGTERM",
    "checkpoint_seconds": "at least this many seconds between checkpoints (0: every "
                          "--checkpoint-every epochs); a kill -9 loses at most the longer of "
                          "--checkpoint-every epochs and this long plus one epoch",
    "data_dir": "folder holding the datasets, only read (downloads go to data_cache/) and "
                "saved as an absolute path (default: data_cache/ or $FFNUMPY_DATA_DIR)",
    "out": "run folder (default: data_cache/runs/<dataset>-<algo>-<L>x<W>-s<seed>-<time>)",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to each option's help unless the help already says it."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or "") or action.default is None:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr (exit code 2), without the
    usage block: "PROG: error: what was wrong; see --help"."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def build_parser(prog="python -m ffnumpy.train"):
    """argparse parser whose flags, types, choices and defaults come from :class:`Config`."""
    parser = OneLineParser(
        prog=prog, description="Train SymBa, FF or a backprop baseline with hand-derived "
        "gradients in NumPy/CuPy. Defaults are the paper's SymBa MNIST setting.",
        formatter_class=HelpFormatter)
    defaults = Config()
    for field in dataclasses.fields(Config):
        default = getattr(defaults, field.name)
        if field.name == "dataset":
            parser.add_argument("dataset", nargs="?", default=default, choices=DATASETS,
                                help="dataset to train on")
            continue
        flag = "--" + field.name.replace("_", "-")
        kwargs = {"default": default, "help": HELP[field.name]}
        if isinstance(default, bool) or field.name == "augment":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = type(default) if default is not None else str
            if field.name in CHOICES:
                kwargs["choices"] = CHOICES[field.name]
        parser.add_argument(flag, **kwargs)
    return parser


def validate(cfg):
    """Raise :class:`ConfigError` for any impossible value; return ``cfg`` otherwise."""
    positive_ints = ("layers", "width", "epochs", "batch_size", "eval_every", "checkpoint_every")
    for name in positive_ints:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, "
                              f"got {getattr(cfg, name)}")
    if cfg.validation < 0:
        raise ConfigError(f"--validation must be at least 0, got {cfg.validation}")
    for name in ("lr", "alpha"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name} must be a positive number, got {value}")
    if not (math.isfinite(cfg.checkpoint_seconds) and cfg.checkpoint_seconds >= 0):
        raise ConfigError(f"--checkpoint-seconds must be a number of seconds >= 0, "
                          f"got {cfg.checkpoint_seconds}")
    if cfg.seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {cfg.seed}")
    if not math.isfinite(cfg.theta):
        raise ConfigError(f"--theta must be a finite number, got {cfg.theta}")
    if not (0.0 < cfg.icp_rate <= 1.0):
        raise ConfigError(f"--icp-rate must be in (0, 1], got {cfg.icp_rate}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, "
                              f"got {getattr(cfg, name)!r}")
    largest = float(np.finfo(cfg.dtype).max)  # a scale beyond it is infinity in the run
    for name in ("lr", "alpha", "theta"):
        if abs(getattr(cfg, name)) > largest:
            raise ConfigError(f"--{name} {getattr(cfg, name)} does not fit in --dtype "
                              f"{cfg.dtype} (largest {largest:.3g}); choose a smaller one")
    return cfg


def _type_ok(value, default):
    """Whether a saved ``value`` has the type of the field whose default is ``default``."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def config_from_saved(values):
    """A validated :class:`Config` from a configuration read back from a file.

    The same rules as the command line (:func:`validate`), plus types: a value must
    have its field's type (``augment``, ``data_dir`` and ``out`` may be null). Keys this
    version does not know are ignored; a missing key takes its default, so files
    written before a setting existed still load.

    Raises
    ------
    ConfigError
        Naming the first key with a wrong type or an impossible value.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"the configuration is a {type(values).__name__}, not a mapping")
    defaults = Config()
    optional = {"augment": bool, "data_dir": str, "out": str}
    for field in dataclasses.fields(Config):
        if field.name not in values:
            continue
        value = values[field.name]
        if field.name in optional:
            ok = value is None or isinstance(value, optional[field.name])
        else:
            ok = _type_ok(value, getattr(defaults, field.name))
        if not ok:
            expected = (f"{optional[field.name].__name__} or null" if field.name in optional
                        else type(getattr(defaults, field.name)).__name__)
            raise ConfigError(f"{field.name} is {value!r} ({type(value).__name__}), "
                              f"expected a {expected}")
    return validate(Config.from_dict(values))


def config_from_args(argv=None, prog="python -m ffnumpy.train"):
    """Parse ``argv`` into a validated :class:`Config` plus the run-control flags.

    ``--data-dir`` is made absolute, so a run's saved configuration names the same folder
    from wherever it is resumed or evaluated. ``control["data_dir"]`` is the folder given
    on the command line (None if none was), which ``--resume`` uses instead of the saved one.
    """
    parser = build_parser(prog)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its last checkpoint (every "
                        "other flag is taken from the saved configuration, except --data-dir, "
                        "which may name the folder the data moved to: it is checked against "
                        "the data the run was trained on)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --out to name a folder that already holds a run; every "
                        "file of that run is removed first")
    args = parser.parse_args(argv)
    if args.data_dir:
        args.data_dir = os.path.abspath(args.data_dir)
    control = {"resume": args.resume, "overwrite": args.overwrite, "data_dir": args.data_dir}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    cfg = Config(**values)
    try:
        validate(cfg)
    except ConfigError as exc:
        parser.error(str(exc))  # one line on stderr, exit code 2
    return cfg, control
