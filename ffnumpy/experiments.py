"""One command per table of the paper: ``python -m ffnumpy.experiments table1``.

A preset is a list of rows; each row is one training run given as the flags of
``python -m ffnumpy.train``, so every figure in a generated table comes with the
exact command that reproduces it. Rows run one after another in-process, each in
its own run folder ``<runs>/<row>-e<epochs>/`` (a row that two presets share, such
as SymBa 3 x 1000 with ICP on CIFAR-10, runs once): a finished row is skipped, an
interrupted one resumes from its checkpoint, a diverged one (NaN guard) is recorded
as such. After the runs (or with ``--table-only``, which trains nothing) the preset's
Markdown table is written to ``<results>/<preset>.md`` beside a copy of each row's
small ``metrics.json`` as ``<results>/<preset>/<row>-e<epochs>.json``. ``<results>``
is a scratch folder that git ignores (``data_cache/scratch/results``) unless
``--results data_cache/results`` asks for the committed tables.

Protocol. Settings shared by every row are the paper's (Sec. 4): Adam, batch 4096,
120 epochs, alpha 4, theta 2, ICP rate 0.1. The paper sweeps the learning rate over
{0.001, 0.01} and reports, for each row, the better final test error; presets
``table1``-``table3`` and ``fig4`` therefore run every row at both rates, and the
table marks the rate the paper's protocol picks (the lower test error at the last
epoch both rates reached). Picking on the test set is the paper's protocol; it flatters
every algorithm alike, so rows stay comparable, but every figure is optimistic.

Validation (not in the paper). These rows hold out training images
(``--validation``: 10,000 on MNIST, 5,000 on CIFAR-10, the same images for every run
of a seed, never trained on) and log their error beside the test error. The table
also shows the rate that validation picks -- the lower mean validation error over the
last :data:`VAL_WINDOW` evaluations up to the last epoch both rates reached -- and that
rate's final test error: an honest choice, made without looking at the test set.

A run is "stopped at epoch N/120" when its metrics hold fewer epochs than its
configuration and it has no ``model.npz`` (interrupted, or still training: the table
cannot tell which unless the row or a ``STOPPED`` file in the run folder gives the
reason); picks between a finished and a stopped rate are made at equal epochs and
marked provisional.

Presets ``seeds``, ``lr-sweep``, ``ff-reference``, ``symba-ablation`` and
``symba-best`` are earlier studies at one rate, 0.01 (no validation, all 60,000
MNIST training images), kept as they were run.
"""
import argparse
import dataclasses
import fnmatch
import json
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import atomic_write, describe_os_error, write_json
from .config import config_from_args
from .data import DATA_CACHE
from .labels import PAPER_LABELS
from .saving import CHECKPOINT_FILE, MODEL_FILE
from .train import EXIT_DIVERGED
from .train import main as train_main

PROG = "python -m ffnumpy.experiments"
RESULTS = DATA_CACHE / "results"  # the committed tables: written only when --results names it
SCRATCH = DATA_CACHE / "scratch" / "results"  # default --results; git ignores data_cache/*
RUNS = DATA_CACHE / "runs" / "experiments"
LR = {"bp": 0.01, "ff": 0.01, "symba": 0.01}  # earlier presets: 0.01 won a 20-epoch sweep
RATES = (0.001, 0.01)  # paper Sec. 4: the learning rate is swept over {0.001, 0.01}
LABELS = PAPER_LABELS  # the paper's pairing (Tables 1-2)
VALIDATION = {"mnist": 10000, "cifar10": 5000, "cifar100": 5000}  # held-out images
EVAL_EVERY = {"mnist": 2, "cifar10": 5, "cifar100": 5}  # test + validation cost per epoch
CIFAR_WIDTH = 1000  # the paper's 2000/3072 take 1-2 h a run on this 2-core CPU
VAL_WINDOW = 3  # evaluations averaged for the validation pick (single epochs swing)
DIVERGED = "DIVERGED"  # marker file of a row whose run tripped the NaN guard
STOPPED = "STOPPED"  # optional file in a run folder: why the run was stopped (first line)
# Fields a run may differ in from its row's command and still be that row.
CONFIG_FREE = ("out", "data_dir", "backend", "checkpoint_every", "checkpoint_seconds")


# --- presets ---

@dataclass
class Row:
    """One run of a preset: a name, the train flags that differ from the defaults, the
    paper's test error in percent (if the paper has the row) and a remark.

    ``group`` names the paper's row the run belongs to (its rates and seeds are
    compared in one line of the table; default: the run's own name), ``stop_reason``
    says why the run is not expected to reach its epochs here (shown only if it did
    not)."""

    name: str
    flags: dict
    paper: float = None
    note: str = ""
    seed_group: str = field(default=None)  # earlier presets: rows aggregated over seeds
    group: str = None
    stop_reason: str = ""
    imported: bool = False  # run elsewhere: read from its committed metrics, never trained

    def __post_init__(self):
        self.group = self.group or self.seed_group or self.name


def algo_flags(algo, dataset="mnist", layers=2, width=500, **extra):
    flags = {"dataset": dataset, "algo": algo, "layers": layers, "width": width,
             "lr": LR[algo]}
    if LABELS[algo]:
        flags["labels"] = LABELS[algo]
    flags.update(extra)
    return flags


def rate_rows(group, algo, dataset, layers, width, paper=None, labels=None, seeds=(0,),
              note="", stop_reason=None, **extra):
    """The runs of one paper row: every rate in :data:`RATES` x every seed, each with the
    dataset's validation split. Named ``<group>-lr<lr>[-s<seed>]``.

    ``stop_reason`` maps a rate to the reason its run is not expected to finish here."""
    labels = labels or LABELS[algo]
    rows = []
    for lr in RATES:
        for seed in seeds:
            flags = {"dataset": dataset, "algo": algo, "layers": layers, "width": width,
                     "lr": lr, "validation": VALIDATION[dataset],
                     "eval_every": EVAL_EVERY[dataset], **extra}
            if labels:
                flags["labels"] = labels
            if seed:
                flags["seed"] = seed
            rows.append(Row(f"{group}-lr{lr}" + (f"-s{seed}" if seed else ""), flags, paper,
                            note, group=group, stop_reason=(stop_reason or {}).get(lr, "")))
    return rows


TABLE1_PAPER = {(2, 500): {"bp": 1.74, "ff": 6.10, "symba": 1.65},
                (2, 2000): {"bp": 1.56, "ff": 6.93, "symba": 1.52},
                (3, 500): {"bp": 1.77, "ff": 5.79, "symba": 1.77},
                (3, 2000): {"bp": 1.58, "ff": 6.59, "symba": 1.42}}
TABLE2_PAPER = {("cifar10", 2000): {"bp": 42.66, "ff": 49.32, "symba": 41.23},
                ("cifar10", 3072): {"bp": 43.14, "ff": 49.63, "symba": 40.91},
                ("cifar100", 3072): {"bp": 71.12, "ff": 81.85, "symba": 70.72}}
TABLE3_PAPER = {("ff", "overlay"): 49.63, ("ff", "icp"): 48.83,
                ("symba", "overlay"): 41.23, ("symba", "icp"): 40.91}
ICP_RATES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
WIDE_MNIST = ("not run on the CPU (0.8-1.5 h a run on 2 cores): see the same row on the "
              "H100 below")
FF_2X2000 = "run on the CPU (about 50 min a run); also on the H100 below"
FF_3X2000 = ("lr 0.001 run on the CPU (about 1.5 h), the one cell the H100 runs lack; "
             "lr 0.01 on the H100 only (below)")
MNIST_STOPPED = {0.01: "stopped after epoch 20 of 120 as planned: lr 0.01 runs only until it "
                       "can be compared with lr 0.001 at equal epochs (CPU time)"}
PAPER_WIDTH_CIFAR = ("not run at 120 epochs on the CPU: about 2 h a run with both cores; "
                     "2-epoch runs are in table2-3x3072-e2.md")
DENSE_ICP_NOTE = "about 30 min a run on the CPU"
GPU_IMPORTED = ("ran on one NVIDIA H100 with --backend cupy (this project's commands at commit "
                "299d0ee), all 60,000 training images, no validation split, test error every "
                "epoch; metrics committed, not rerun by this preset")
CIFAR_STOPPED = {0.01: "run only until it was behind lr 0.001 at equal epochs, then stopped "
                       "with a checkpoint"}  # lr 0.001 runs all 120 epochs


def gpu_rows(group, algo, layers, width, paper, rates=RATES):
    """Runs made on a GPU with ``--backend cupy`` and no validation split, one per rate,
    read from their committed metrics (:data:`GPU_IMPORTED`); the preset never trains
    them. Named ``<group>-lr<lr>``."""
    rows = []
    for lr in rates:
        flags = {"dataset": "mnist", "algo": algo, "layers": layers, "width": width, "lr": lr,
                 "backend": "cupy"}
        if LABELS[algo]:
            flags["labels"] = LABELS[algo]
        rows.append(Row(f"{group}-lr{lr}", flags, paper, GPU_IMPORTED, group=group,
                        imported=True))
    return rows


def _table1():
    rows = []
    for (layers, width), paper in TABLE1_PAPER.items():
        for algo, p in paper.items():
            seeds = (0, 1, 2) if (layers, width) == (2, 500) else (0,)
            note = ("" if width == 500 else {("ff", 2): FF_2X2000, ("ff", 3): FF_3X2000}
                    .get((algo, layers), WIDE_MNIST))
            stop = MNIST_STOPPED if (algo, layers, width) == ("ff", 2, 2000) else None
            rows += rate_rows(f"{algo}-{layers}x{width}", algo, "mnist", layers, width, p,
                              seeds=seeds, note=note, stop_reason=stop)
    for (layers, width), paper in TABLE1_PAPER.items():
        if width == 2000:  # the paper's widest rows, also run on a GPU
            for algo, p in paper.items():
                rates = (0.01,) if (algo, layers) == ("ff", 3) else RATES  # lr 0.001: CPU
                rows += gpu_rows(f"{algo}-{layers}x{width}-h100", algo, layers, width, p, rates)
    return rows


def _cifar_note(algo):
    p2, p3 = (TABLE2_PAPER[("cifar10", w)][algo] for w in (2000, 3072))
    return f"paper has no 3 x {CIFAR_WIDTH} row (3 x 2000: {p2}, 3 x 3072: {p3})"


def _table2():
    rows = []
    for algo in ("bp", "ff", "symba"):
        rows += rate_rows(f"{algo}-cifar10-3x{CIFAR_WIDTH}", algo, "cifar10", 3, CIFAR_WIDTH,
                          note=_cifar_note(algo), stop_reason=CIFAR_STOPPED)
    for (dataset, width), paper in TABLE2_PAPER.items():
        for algo, p in paper.items():
            note = PAPER_WIDTH_CIFAR + ("; CIFAR-100 is not on this machine"
                                        if dataset == "cifar100" else "")
            rows += rate_rows(f"{algo}-{dataset}-3x{width}", algo, dataset, 3, width, p,
                              note=note)
    return rows


def _table3():
    """Overlay vs ICP on CIFAR-10 at 3 x 1000; the paper's own pairings are Table 2's rows
    (shared runs). The paper's figures are for 3 x 3072."""
    rows = []
    for (algo, labels), p in TABLE3_PAPER.items():
        group = (f"{algo}-cifar10-3x{CIFAR_WIDTH}" if labels == LABELS[algo]
                 else f"{algo}-{labels}-cifar10-3x{CIFAR_WIDTH}")
        rows += rate_rows(group, algo, "cifar10", 3, CIFAR_WIDTH, None, labels,
                          note=f"paper at 3 x 3072: {p}", stop_reason=CIFAR_STOPPED)
    return rows


def _fig4():
    rows = []
    for rate in ICP_RATES:
        group = (f"symba-cifar10-3x{CIFAR_WIDTH}" if rate == 0.1  # Table 2's row
                 else f"symba-icp{rate}-cifar10-3x{CIFAR_WIDTH}")
        extra = {} if rate == 0.1 else {"icp_rate": rate}
        note = ("paper: rates below 0.1 diverge (NaN)" if rate < 0.1 else
                "" if rate == 0.1 else DENSE_ICP_NOTE)
        rows += rate_rows(group, "symba", "cifar10", 3, CIFAR_WIDTH, note=note,
                          stop_reason=CIFAR_STOPPED, **extra)
    return rows


def _seeds(seeds=(0, 1, 2)):
    return [Row(f"{algo}-2x500" + (f"-s{seed}" if seed else ""),
                algo_flags(algo, **({"seed": seed} if seed else {})), p,
                seed_group=f"{algo}-2x500")
            for algo, p in TABLE1_PAPER[(2, 500)].items() for seed in seeds]


def _lr_sweep():
    return [Row(f"{algo}-lr{lr}", algo_flags(algo, lr=lr, epochs=20))
            for algo in ("bp", "ff", "symba") for lr in (0.001, 0.01)]


def _ff_reference():
    """FF with the choices of Hinton's reference code next to the paper's FF and SymBa."""
    ref = dict(norm="rms", goodness="sum", theta=500.0, skip_first_layer=True)
    return [Row("ff-2x500", algo_flags("ff"), 6.10, "paper's FF: theta 2, L2 norm, all layers"),
            Row("ff-reference", algo_flags("ff", **ref), None,
                "theta = width with sum goodness, RMS norm, layer 1 left out at prediction"),
            Row("ff-reference-lr0.001", algo_flags("ff", **ref, lr=0.001), None,
                "as ff-reference, lr 0.001"),
            Row("ff-reference-lr0.001-decay", algo_flags("ff", **ref, lr=0.001,
                                                          lr_decay="linear"), None,
                "lr 0.001 decaying linearly over the second half"),
            Row("ff-reference-lr0.001-hard", algo_flags("ff", **ref, lr=0.001,
                                                         negatives="hard"), None,
                "lr 0.001, hard negatives (softmax of goodness over wrong labels)"),
            Row("symba-2x500", algo_flags("symba"), 1.65, "paper's SymBa setting")]


def _symba_ablation():
    """One change at a time from the paper's SymBa 2 x 500 MNIST setting.

    Leaving layer 1 out at prediction needs no run of its own: for two layers it is
    layer 2's own error, which every run logs (``layer_test_error``)."""
    changes = [("paper", {}, "Sec. 4: sum goodness, L2 norm, alpha 4, lr 0.01, ICP 0.1"),
               ("goodness-mean", {"goodness": "mean"}, "mean instead of sum of squares"),
               ("norm-rms", {"norm": "rms"}, "unit RMS instead of unit length"),
               ("alpha1", {"alpha": 1.0}, "alpha 1 (paper: no difference in [1, 4])"),
               ("alpha8", {"alpha": 8.0}, "alpha 8"),
               ("standardize", {"standardize": True}, "input standardised per channel"),
               ("lr0.001", {"lr": 0.001}, "the other rate of the paper's sweep"),
               ("lr-decay", {"lr_decay": "linear"}, "lr decaying linearly over the 2nd half"),
               ("icp0.2", {"icp_rate": 0.2}, "ICP rate 0.2"),
               ("hard-negatives", {"negatives": "hard"}, "hard instead of uniform negatives"),
               ("overlay", {"labels": "overlay"}, "one-hot overlay instead of ICP")]
    return [Row("symba-2x500" if name == "paper" else f"symba-{name}",
                algo_flags("symba", **flags), 1.65 if name == "paper" else None, note)
            for name, flags, note in changes]


def _symba_best():
    """The changes that helped in the ablation, together, at the paper's 120 epochs."""
    best = dict(standardize=True, negatives="hard", lr_decay="linear")
    note = "standardised input, hard negatives, lr decaying over the second half"
    wide = [Row(f"symba-best-2x2000-h100-lr{lr}",
                {**algo_flags("symba", width=2000, lr=lr, **best), "backend": "cupy"}, 1.52,
                "the same at 2 x 2000, both rates; " + GPU_IMPORTED, group="symba-best-2x2000-h100",
                imported=True, stop_reason="stopped after epoch 117 by the GPU machine's time "
                "limit" if lr == 0.01 else "") for lr in RATES]
    return [Row("symba-2x500", algo_flags("symba"), 1.65, "paper's setting (preset seeds)"),
            *[Row("symba-best" + (f"-s{seed}" if seed else ""),
                  algo_flags("symba", **best, **({"seed": seed} if seed else {})), 1.65, note,
                  seed_group="symba-best") for seed in (0, 1, 2)], *wide]


PRESETS = {"table1": _table1, "seeds": _seeds, "lr-sweep": _lr_sweep,
           "ff-reference": _ff_reference, "symba-ablation": _symba_ablation,
           "symba-best": _symba_best,
           "table2": _table2, "table3": _table3, "fig4": _fig4}


# --- running ---

def train_argv(flags, epochs=None, backend=None, data_dir=None):
    """The ``python -m ffnumpy.train`` arguments of a row."""
    flags = dict(flags)
    if epochs is not None:
        flags["epochs"] = epochs
    if backend is not None:
        flags["backend"] = backend
    if data_dir is not None:
        flags["data_dir"] = data_dir
    argv = [flags.pop("dataset")]
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


def row_epochs(row, epochs):
    return epochs if epochs is not None else row.flags.get("epochs", 120)


def row_dir(row, epochs, out_root):
    """The run folder of ``row``, shared by every preset that has the row."""
    return out_root / f"{row.name}-e{row_epochs(row, epochs)}"


def run_row(run_dir, argv):
    """Train one row (or resume it, or skip it if done). Returns its status string; a
    diverged run (NaN guard) is marked with a DIVERGED file and never retried."""
    if (run_dir / DIVERGED).is_file():
        return "diverged"
    m = _read_metrics(run_dir)
    if m is not None and m.get("final_test_error") is not None:
        return "done"
    if (run_dir / CHECKPOINT_FILE).is_file():
        argv = ["--resume", str(run_dir)]
    else:
        argv = argv + ["--out", str(run_dir), "--overwrite"]
    try:
        train_main(argv)
    except SystemExit as exc:
        if exc.code != EXIT_DIVERGED:
            raise
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DIVERGED).write_text("NaN guard tripped; see the run's log\n")
        return "diverged"
    return "done"


class MetricsError(Exception):
    """A metrics file that is not one ffnumpy wrote (damaged, truncated, another format)."""


def load_metrics(path):
    """The metrics dict in ``path`` (a run's ``metrics.json`` or its committed copy).

    Raises
    ------
    MetricsError
        One line naming the file and what is wrong with it.
    """
    try:
        m = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetricsError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise MetricsError(f"{path} is nested too deeply to be a metrics file") from None
    if not isinstance(m, dict) or not isinstance(m.get("config"), dict) \
            or not isinstance(m.get("epochs"), list) \
            or not all(isinstance(r, dict) and "epoch" in r for r in m["epochs"]) \
            or not isinstance(m["config"].get("epochs"), int):
        raise MetricsError(f"{path} is not an ffnumpy metrics file (it needs a 'config' "
                           "with 'epochs' and a list of epoch records)")
    return m


def _read_metrics(run_dir):
    """The run's metrics, marked ``diverged`` and given its ``stopped`` reason from the
    run folder's marker files; None if the run wrote none yet."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    m = load_metrics(path)
    if (run_dir / DIVERGED).is_file():
        m["diverged"] = True
    if (run_dir / STOPPED).is_file():
        m["stopped"] = (run_dir / STOPPED).read_text().strip().splitlines()[0]
    return m


# --- reading runs ---

@dataclass
class RunState:
    """What a run folder says about one row: ``kind`` is one of "not run", "started",
    "done", "stopped", "diverged", "differs" (its configuration is not the row's)."""

    kind: str
    text: str
    epochs: list = field(default_factory=list)  # evaluated epoch records only
    metrics: dict = None
    last_epoch: int = 0  # last evaluated epoch

    @property
    def usable(self):
        return self.kind in ("done", "stopped") and bool(self.epochs)


def _config_differences(row, argv, config, free=CONFIG_FREE):
    """``key: run value (row: value)`` for every setting that makes the run another row."""
    expected = dataclasses.asdict(config_from_args(argv)[0])
    return [f"{k} {config[k]!r} (row: {v!r})" for k, v in expected.items()
            if k not in free and k in config and config[k] != v]


def committed_copy(row, epochs, copies):
    """The first ``<folder>/<row>-e<epochs>.json`` among ``copies`` (metrics copies written
    by :func:`summarize`), else the row's longest copy of another length, or None."""
    for folder in copies:
        path = folder / f"{row.name}-e{row_epochs(row, epochs)}.json"
        if path.is_file():
            return path
    for folder in copies:  # a run of the row at another length, the longest (its cells say)
        runs = {int(p.stem.rsplit("-e", 1)[1]): p for p in folder.glob(f"{row.name}-e*.json")
                if p.stem.rsplit("-e", 1)[1].isdigit()}
        if runs:
            return runs[max(runs)]
    return None


def read_run(row, run_dir, argv, copy=None):
    """The :class:`RunState` of ``row``: from its run folder, else from ``copy`` (the
    committed copy of its metrics, see :func:`committed_copy`). ``argv``: the row's train
    flags."""
    m = _read_metrics(run_dir)
    from_copy = m is None and copy is not None
    if from_copy:
        m = load_metrics(copy)
    config_file = run_dir / "config.json"
    if m is None:
        if config_file.is_file():
            return RunState("started", "started, no epoch finished yet")
        return RunState("not run", "not run")
    # a committed copy may be of another length than asked (its cells say how long)
    diffs = _config_differences(row, argv, m["config"],
                                CONFIG_FREE + ("epochs",) if from_copy else CONFIG_FREE)
    if diffs:
        return RunState("differs", "run folder holds another configuration: "
                        + ", ".join(diffs), metrics=m)
    total = m["config"]["epochs"]
    done = len(m["epochs"])
    evaluated = [r for r in m["epochs"] if "test_error" in r]
    last = evaluated[-1]["epoch"] if evaluated else 0
    if m.get("diverged"):
        return RunState("diverged", f"diverged (NaN) at epoch {done + 1}/{total}", evaluated,
                        m, last)
    finished = (m.get("final_test_error") is not None if from_copy
                else (run_dir / MODEL_FILE).is_file())
    if done >= total and finished:
        return RunState("done", f"{done}/{total}", evaluated, m, last)
    reason = m.get("stopped") or row.stop_reason
    text = (f"stopped after epoch {done}/{total}: {reason}" if reason
            else f"running or stopped after epoch {done}/{total}")
    return RunState("stopped", text, evaluated, m, last)


def _mean_at(state, epoch, key, window):
    """Mean of ``key`` over the last ``window`` evaluations at or before ``epoch``."""
    values = [r[key] for r in state.epochs if r["epoch"] <= epoch and key in r][-window:]
    return statistics.mean(values) if values else None


def pick_rates(states):
    """The paper's pick and the validation pick among the rates of one paper row.

    Parameters
    ----------
    states : dict
        ``{lr: [RunState, ...]}``, one state per seed that has usable metrics.

    Returns
    -------
    dict or None
        None with fewer than two rates. Else ``epoch`` (the last epoch every run reached,
        where both picks are made), ``final`` (every run finished), ``test`` and ``val``
        (``{lr: mean over seeds}``: test error at ``epoch``; validation error averaged
        over the last :data:`VAL_WINDOW` evaluations up to ``epoch``, None without a
        validation split), ``paper`` (the rate with the lower test error),
        ``validation`` (the rate with the lower validation error, or None) and ``last``
        (``{lr: (mean over seeds of the last test error, the earliest last epoch,
        every seed finished)}``: what a rate ends at, which is the row's figure once it
        is picked).
    """
    states = {lr: s for lr, s in states.items() if s}
    if len(states) < 2:
        return None
    runs = [s for seeds in states.values() for s in seeds]
    epoch = min(s.last_epoch for s in runs)
    test, val = {}, {}
    for lr, seeds in states.items():
        test[lr] = statistics.mean(_mean_at(s, epoch, "test_error", 1) for s in seeds)
        vals = [_mean_at(s, epoch, "val_error", VAL_WINDOW) for s in seeds]
        val[lr] = None if None in vals else statistics.mean(vals)
    has_val = None not in val.values()
    last = {lr: (statistics.mean(s.epochs[-1]["test_error"] for s in seeds),
                 min(s.last_epoch for s in seeds), all(s.kind == "done" for s in seeds))
            for lr, seeds in states.items()}
    return {"epoch": epoch, "final": all(s.kind == "done" for s in runs),
            "test": test, "val": val, "paper": min(test, key=test.get),
            "validation": min(val, key=val.get) if has_val else None, "last": last}


# --- writing the table ---

def _pct(x):
    return f"{100 * x:.2f}"


def _sd(values):
    """Sample standard deviation; 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _rate_cell(states, bold):
    """Final test error of one rate (mean ± sd over seeds) and how far the runs got;
    ``states``: the rate's runs that have metrics."""
    usable = [s for s in states if s.usable]
    if not states:
        return "not run"
    if not usable:
        s = states[0]
        return f"{s.kind} after {len(s.metrics['epochs'])}/{s.metrics['config']['epochs']}, " \
               "not evaluated yet" if s.kind == "stopped" else s.kind
    finals = [100 * s.epochs[-1]["test_error"] for s in usable]
    value = f"{statistics.mean(finals):.2f}"
    if len(finals) > 1:
        value += f" ± {_sd(finals):.2f}"
    value = f"**{value}**" if bold else value
    state = min(usable, key=lambda s: s.last_epoch)
    total = state.metrics["config"]["epochs"]
    trained = len(state.metrics["epochs"])
    where = (f"{state.last_epoch}/{total}" if state.kind == "done"
             else f"epoch {state.last_epoch}, stopped after {trained}/{total}"
             if state.last_epoch != trained else f"stopped after {trained}/{total}")
    seeds = f"{len(usable)} seeds, " if len(usable) > 1 else ""
    return f"{value} ({seeds}{where})"


def _command(row, epochs, backend, data_dir, state):
    """The train command of ``row``; the data folder and length are the ones given, else
    the run's."""
    if state.metrics is not None:
        data_dir = data_dir or state.metrics["config"].get("data_dir")
        if state.metrics["config"]["epochs"] != row_epochs(row, epochs):
            epochs = state.metrics["config"]["epochs"]
    return "python -m ffnumpy.train " + shlex.join(train_argv(row.flags, epochs, backend,
                                                              data_dir))


PROTOCOL_TEXT = (
    "Test error in %. {rates_text} "
    "**Bold**: the rate the paper's protocol picks, the lower test error at the last epoch "
    "both rates reached (marked 'provisional' with that epoch while a rate has not "
    "finished, e.g. lr 0.01 stopped once it was clearly behind). "
    "Picking on the test set is the paper's protocol: it flatters every algorithm alike. "
    "Beyond the paper, the validation pick is the rate with the lower validation error "
    "(held-out training images, never trained on), averaged over the last {window} "
    "evaluations up to that same epoch; 'its test error' is where that rate ends, the "
    "row's figure under the validation protocol (mean over seeds). "
    "A run 'stopped after N/120' has no final model; its figure is from its last evaluation "
    "(epoch N, or the epoch named beside it), not final.")


def results_count(table):
    """How many runs of a table written by :func:`summarize` have a test error."""
    part = table.split("\nRuns (", 1)[-1] if "\nRuns (" in table else ""
    count = 0
    for line in part.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) > 3 and cells[0] not in ("run", "---") and cells[3] not in ("", "-"):
            count += 1
    return count


def write_results(path, text, metrics_copies, looked_in):
    """Write the table ``path`` and the metrics copies, each atomically; refuse (exit 2)
    to replace a table that holds more runs with results than ``text`` does."""
    if path.is_file():
        try:
            before = results_count(path.read_text())
        except (OSError, UnicodeDecodeError):
            before = 0
        after = results_count(text)
        if after < before:
            raise SystemExit(
                f"{PROG}: error: {path} holds {before} runs with results, the new table "
                f"would hold {after} (runs looked for in {looked_in}); not overwritten: "
                "point --runs at the run folders, or write elsewhere with --results DIR")
    try:
        for copy, metrics in metrics_copies.items():
            write_json(copy, metrics)
        data = text.encode()
        atomic_write(path, lambda f: f.write(data))
    except OSError as exc:
        raise SystemExit(f"{PROG}: error: {describe_os_error(exc)}; choose a writable "
                         "folder with --results DIR") from None


def summarize(preset, rows, epochs, out_root, backend=None, data_dir=None, results_root=SCRATCH,
              command=None):
    """The text of ``<preset>.md``, and copies of each row's metrics written to
    ``results_root/<preset>/``; ``command`` is the experiments command that wrote it
    (default ``PROG preset``).

    A row's metrics come from its run folder under ``out_root``, else from a copy already
    in ``results_root/<preset>/`` or the committed ``data_cache/results/<preset>/``. One
    line per paper row (both rates, the two picks, seeds, device), then one line per run
    (status, errors, seconds per epoch, device, exact command)."""
    results = results_root / preset
    copies = list(dict.fromkeys([results, RESULTS / preset]))
    groups, run_lines, metrics_copies = {}, [], {}
    for row in rows:
        run_dir = row_dir(row, epochs, out_root)
        argv = train_argv(row.flags, epochs, backend, data_dir)
        state = read_run(row, run_dir, argv, committed_copy(row, epochs, copies))
        train_command = _command(row, epochs, backend, data_dir, state)
        groups.setdefault(row.group, []).append((row, state))
        if state.metrics is not None and state.kind != "differs":
            # "diverged": true where the NaN guard stopped it, "stopped": the reason
            length = state.metrics["config"]["epochs"]
            metrics_copies[results / f"{row.name}-e{length}.json"] = state.metrics
        cells = ["", "", "", "", ""]
        if state.metrics is not None and state.metrics["epochs"]:
            m = state.metrics
            last = state.epochs[-1] if state.epochs else {}
            val = _mean_at(state, state.last_epoch, "val_error", VAL_WINDOW)
            secs = statistics.median(r["train_seconds"] for r in m["epochs"])
            cells = [f"{_pct(last['test_error'])} (epoch {last['epoch']})" if last else "-",
                     _pct(last["val_error"]) if "val_error" in last else "-",
                     _pct(val) if val is not None else "-", f"{secs:.1f}", m.get("device", "?")]
        run_lines.append(f"| {row.name} | {row.flags['lr']} | {state.text} | "
                         + " | ".join(cells) + f" | `{train_command}` |")

    rates = sorted({row.flags["lr"] for row in rows})
    rates_text = (f"Every row runs at each learning rate of {' and '.join(map(str, rates))}."
                  if len(rates) > 1 else
                  f"One learning rate, {rates[0]}, for every row: the picks below need two.")
    lines = [f"# {preset}: paper vs ffnumpy", "",
             f"Generated by `{command or f'{PROG} {preset}'}` from the runs' metrics (copied to "
             f"`{preset}/<run>-e<epochs>.json`). " + PROTOCOL_TEXT.format(
                 rates_text=rates_text, window=VAL_WINDOW), "",
             "| row | paper | " + " | ".join(f"lr {lr}" for lr in rates)
             + " | paper's pick (test set) | validation pick | its test error | seeds | device "
             "| note |", "|---|---|" + "---|" * len(rates) + "---|---|---|---|---|---|"]
    for group, members in groups.items():
        by_rate = {lr: [s for r, s in members if r.flags["lr"] == lr and s.usable]
                   for lr in rates}
        pick = pick_rates(by_rate)
        paper_lr = pick["paper"] if pick else None
        with_data = {lr: [s for r, s in members if r.flags["lr"] == lr and s.metrics]
                     for lr in rates}
        cells = [_rate_cell(with_data[lr], lr == paper_lr)
                 if any(r.flags["lr"] == lr for r, _ in members) else "-" for lr in rates]
        paper_pick = val_pick = val_test = "-"
        if pick:
            at = "" if pick["final"] else f" at epoch {pick['epoch']}"
            paper_pick = f"lr {paper_lr}" + (
                f", provisional: picked{at}, the last epoch both rates reached" if at else "")
            if pick["validation"] is not None:
                lr = pick["validation"]
                others = " vs ".join(_pct(pick["val"][r]) for r in rates if r in pick["val"])
                val_pick = f"lr {lr} (validation {others}{at})"
                error, last_epoch, done = pick["last"][lr]
                val_test = _pct(error) + ("" if done else f" (epoch {last_epoch}, not final)")
        seeds = sorted({r.flags.get("seed", 0) for r, s in members if s.metrics})
        all_seeds = sorted({r.flags.get("seed", 0) for r, s in members})
        missing = [s for s in all_seeds if s not in seeds]
        seed_text = (", ".join(map(str, seeds)) or "-") + (
            f" (not run: {', '.join(map(str, missing))})" if missing else "")
        devices = sorted({s.metrics.get("device", "?") for r, s in members if s.metrics})
        paper = f"{members[0][0].paper:.2f}" if members[0][0].paper is not None else "-"
        lines.append(f"| {group} | {paper} | " + " | ".join(cells)
                     + f" | {paper_pick} | {val_pick} | {val_test} | {seed_text} | "
                     + (", ".join(devices) or "-") + f" | {members[0][0].note} |")
    lines += ["", "Runs (test and validation error at the last evaluated epoch; 'val, last "
              f"{VAL_WINDOW}' is the mean of the last {VAL_WINDOW} evaluations):", "",
              f"| run | lr | status | test | val | val, last {VAL_WINDOW} | s/epoch (train) "
              "| device | command |", "|---|---|---|---|---|---|---|---|---|",
              *run_lines]
    return "\n".join(lines) + "\n", metrics_copies


def _rel(path):
    """``path`` relative to the working folder when inside it (for help texts)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def select(rows, patterns):
    """The rows whose names match one of the glob ``patterns`` (all without patterns), or
    None when none matches."""
    if not patterns:
        return rows
    chosen = [r for r in rows if any(fnmatch.fnmatch(r.name, p) for p in patterns)]
    return chosen or None


# --- the plan and its cost ---

IMAGES = {"mnist": (60000, 10000, 784, 10), "fashion-mnist": (60000, 10000, 784, 10),
          "cifar10": (50000, 10000, 3072, 10),
          "cifar100": (50000, 10000, 3072, 100)}  # train, test, D_img, classes
CPU_FLOPS = 100e9  # float32 FLOP/s of the project's runs on a 2-core CPU (rough, measured)
ASK_ABOVE_SECONDS = 1800  # a plan estimated longer than this needs --yes


def epoch_flops(flags):
    """Rough float32 FLOPs of one epoch of a row: the matrix products of training (forward
    and weight gradient; backprop also the input gradient; FF and SymBa on positive and
    negative data) and of its evaluations on the test and validation sets."""
    cfg, _ = config_from_args(train_argv(flags))
    n_train, n_test, d_img, classes = IMAGES[cfg.dataset]
    widths = [d_img] + [cfg.width] * cfg.layers
    macs = sum(a * b for a, b in zip(widths, widths[1:]))  # per image, all layers
    if cfg.algo == "bp":  # forward, input and weight gradients; runs at about a third of
        # FF's FLOP rate here (measured: its element-wise work is a larger share)
        train, evaluate = 3 * 3 * macs, macs + cfg.width * classes
    else:  # positive and negative; evaluation scores every class (first layer split)
        train = 2 * 2 * macs
        evaluate = widths[0] * widths[1] + classes * (macs - widths[0] * widths[1])
    images_eval = (n_test + cfg.validation) / cfg.eval_every
    return 2 * (train * (n_train - cfg.validation) + evaluate * images_eval)


def plan_seconds(rows, epochs, out_root):
    """Estimated CPU seconds of the rows still to train (done and imported rows cost 0)."""
    total = 0.0
    for row in rows:
        run_dir = row_dir(row, epochs, out_root)
        m = None if row.imported else _read_metrics(run_dir)
        if row.imported or (m is not None and m.get("final_test_error") is not None):
            continue
        left = row_epochs(row, epochs) - (len(m["epochs"]) if m else 0)
        total += max(left, 0) * epoch_flops(row.flags) / CPU_FLOPS
    return total


def _duration(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description="Run a preset of the paper's "
                                     "experiments and write its table (paper vs ffnumpy).")
    parser.add_argument("preset", choices=sorted(PRESETS),
                        help="the table, figure or study to run (--list shows its rows)")
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="run only rows matching")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per row instead of the paper's 120 (marked in the table)")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                        help="array backend of the runs (default: train's, numpy)")
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets")
    parser.add_argument("--runs", "--out", dest="runs", default=None, metavar="DIR",
                        help=f"where the run folders are (default {_rel(RUNS)})")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help=f"where the table and metrics copies go (default {_rel(SCRATCH)}, "
                        f"which git ignores; {_rel(RESULTS)} updates the committed tables)")
    parser.add_argument("--list", action="store_true", help="print the rows' commands and stop")
    parser.add_argument("--table-only", action="store_true",
                        help="write the table from the runs so far; train nothing")
    parser.add_argument("--yes", action="store_true",
                        help=f"start a plan estimated at over {ASK_ABOVE_SECONDS // 60} min "
                        "of CPU time without asking")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    out_root = Path(args.runs) if args.runs else RUNS
    results_root = Path(args.results) if args.results else SCRATCH
    all_rows = PRESETS[args.preset]()
    rows = select(all_rows, args.only)
    if rows is None:
        parser.error(f"--only {' '.join(args.only)} matches no row; rows are: "
                     + ", ".join(r.name for r in all_rows))
    if args.list:
        for row in rows:
            print(f"{row.name}: python -m ffnumpy.train "
                  + shlex.join(train_argv(row.flags, args.epochs, args.backend, args.data_dir))
                  + ("  (imported: " + row.note + ")" if row.imported else ""))
        return rows
    try:
        if not args.table_only:
            train_rows(args, rows, out_root)
        text, metrics_copies = summarize(
            args.preset, all_rows, args.epochs, out_root, args.backend, args.data_dir,
            results_root, f"{PROG} {shlex.join(sys.argv[1:] if argv is None else argv)}")
    except MetricsError as exc:
        raise SystemExit(f"{PROG}: error: {exc}; move the file away, or delete the run "
                         "folder to run the row again") from None
    table = results_root / f"{args.preset}.md"
    write_results(table, text, metrics_copies,
                  f"{out_root} and {results_root / args.preset}/"
                  + ("" if results_root == RESULTS else f", {RESULTS / args.preset}/"))
    print(text)
    print(f"wrote {table} and the rows' metrics in {results_root / args.preset}/")
    return rows


def train_rows(args, rows, out_root):
    """Train the selected rows one after another, after saying what that costs (and asking
    for --yes above :data:`ASK_ABOVE_SECONDS`); imported rows are only named."""
    to_train = [row for row in rows if not row.imported]
    for row in rows:
        if row.imported:
            print(f"{row.name}: not trained here ({row.note})")
    seconds = plan_seconds(to_train, args.epochs, out_root)
    print(f"{args.preset}: {len(to_train)} rows, estimated {_duration(seconds)} of CPU time "
          f"at {CPU_FLOPS / 1e9:.0f} GFLOP/s (minutes on a GPU with --backend cupy)",
          flush=True)
    if seconds > ASK_ABOVE_SECONDS and not args.yes:
        raise SystemExit(f"{PROG}: error: this plan would train for about {_duration(seconds)}; "
                         "add --yes to start it, or choose rows with --only GLOB (--list "
                         "shows them)")
    for i, row in enumerate(to_train, 1):
        run_dir = row_dir(row, args.epochs, out_root)
        print(f"[{i}/{len(to_train)}] {args.preset}: {row.name} -> {run_dir}", flush=True)
        run_row(run_dir, train_argv(row.flags, args.epochs, args.backend, args.data_dir))


if __name__ == "__main__":
    main()
