"""One command per table of the paper: ``python -m ffnumpy.experiments table1``.

A preset is a list of rows; each row is one training run given as the flags of
``python -m ffnumpy.train``, so every figure in a generated table comes with the
exact command that reproduces it. Rows run one after another in-process, each in
its own run folder ``<out>/<row>-e<epochs>/`` (a row that two presets share, such
as SymBa 2 x 500 on MNIST, runs once): a finished row is skipped,
an interrupted one resumes from its checkpoint, a diverged one (NaN guard) is
recorded as such. After the runs (or with ``--table-only``) the preset's Markdown
table, paper vs ffnumpy, is written to ``data_cache/results/<preset>.md`` beside a
copy of each row's small ``metrics.json``.

Settings shared by every row are the paper's (Sec. 4): Adam, batch 4096, 120 epochs,
alpha 4, theta 2, ICP rate 0.1. The paper sweeps the learning rate over {0.001, 0.01}
and reports the best; the rows use the rate that won our sweep for each algorithm
(preset ``lr-sweep``, 20 epochs on MNIST 2 x 500): 0.01 for all three.
"""
import argparse
import fnmatch
import json
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import write_json
from .data import DATA_CACHE
from .saving import CHECKPOINT_FILE
from .train import EXIT_DIVERGED
from .train import main as train_main

PROG = "python -m ffnumpy.experiments"
RESULTS = DATA_CACHE / "results"
RUNS = DATA_CACHE / "runs" / "experiments"
LR = {"bp": 0.01, "ff": 0.01, "symba": 0.01}  # each wins preset lr-sweep (20 epochs, README)
LABELS = {"bp": None, "ff": "overlay", "symba": "icp"}  # the paper's pairing (Tables 1-2)
DIVERGED = "DIVERGED"  # marker file of a row whose run tripped the NaN guard


# --- presets ---

@dataclass
class Row:
    """One run of a preset: a name, the train flags that differ from the defaults, the
    paper's test error in percent (if the paper has the row) and a remark."""

    name: str
    flags: dict
    paper: float = None
    note: str = ""
    seed_group: str = field(default=None)  # rows sharing it are aggregated over seeds


def algo_flags(algo, dataset="mnist", layers=2, width=500, **extra):
    flags = {"dataset": dataset, "algo": algo, "layers": layers, "width": width,
             "lr": LR[algo]}
    if LABELS[algo]:
        flags["labels"] = LABELS[algo]
    flags.update(extra)
    return flags


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


def _table1():
    return [Row(f"{algo}-{layers}x{width}", algo_flags(algo, layers=layers, width=width), p)
            for (layers, width), paper in TABLE1_PAPER.items() for algo, p in paper.items()]


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
    return [Row("symba-2x500", algo_flags("symba"), 1.65, "paper's setting (preset seeds)"),
            *[Row("symba-best" + (f"-s{seed}" if seed else ""),
                  algo_flags("symba", **best, **({"seed": seed} if seed else {})), 1.65, note,
                  seed_group="symba-best") for seed in (0, 1, 2)]]


def _table2():
    return [Row(f"{algo}-{dataset}-3x{width}", algo_flags(algo, dataset, 3, width), p,
                "test set: see README caveat" if dataset == "cifar10" else "")
            for (dataset, width), paper in TABLE2_PAPER.items() for algo, p in paper.items()]


def _table3():
    """Overlay vs ICP on CIFAR-10; the paper's own pairings are Table 2's rows (shared runs)."""
    rows = []
    for (algo, labels), p in TABLE3_PAPER.items():
        name = (f"{algo}-cifar10-3x3072" if labels == LABELS[algo]
                else f"{algo}-{labels}-cifar10-3x3072")
        note = "paper's 41.23 equals its Table 2 2000-unit row" if p == 41.23 else ""
        rows.append(Row(name, algo_flags(algo, "cifar10", 3, 3072, labels=labels), p, note))
    return rows


def _fig4():
    return [Row(f"symba-icp{rate}-cifar10-3x3072",
                algo_flags("symba", "cifar10", 3, 3072, icp_rate=rate), None,
                "paper: rates below 0.1 diverge (NaN)" if rate < 0.1 else "")
            for rate in ICP_RATES]


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


def _sd(values):
    """Sample standard deviation; 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(preset, rows, epochs, out_root, backend=None, data_dir=None, results_root=RESULTS):
    """Write ``<preset>.md`` and copies of each row's metrics to ``results_root``."""
    results = results_root / preset
    lines = [f"# {preset}: paper vs ffnumpy", "",
             f"Generated by `{PROG} {preset}` from the runs' metrics. Test error in %; "
             "'last 10' is the mean over the last 10 evaluated epochs (single epochs swing "
             "by several tenths of a point).", "",
             "| row | paper | final | last 10 | best | epochs | s/epoch | device | note "
             "| command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for row in rows:
        n_epochs = row_epochs(row, epochs)
        run_dir = row_dir(row, epochs, out_root)
        argv = train_argv(row.flags, epochs, backend, data_dir)
        command = "python -m ffnumpy.train " + shlex.join(argv)
        paper = f"{row.paper:.2f}" if row.paper is not None else "-"
        m = _read_metrics(run_dir)
        if m is None:
            lines.append(f"| {row.name} | {paper} | not run | | | | | | {row.note} | "
                         f"`{command}` |")
            continue
        write_json(results / f"{row.name}-e{n_epochs}.json", m)
        errors = [100 * r["test_error"] for r in m["epochs"] if "test_error" in r]
        done = len(m["epochs"])
        status = "" if m.get("final_test_error") is not None else " (running)"
        if m.get("diverged"):
            status = " (diverged: NaN)"
        last10 = statistics.mean(errors[-10:]) if errors else float("nan")
        secs = statistics.median(r["train_seconds"] for r in m["epochs"]) if done else 0
        final, last, best = ((f"{errors[-1]:.2f}", f"{last10:.2f}", f"{min(errors):.2f}")
                             if errors else ("-", "-", "-"))
        lines.append(f"| {row.name} | {paper} | {final}{status} | {last} | {best} | "
                     f"{done}/{n_epochs} | {secs:.1f} | {m.get('device', '?')} | {row.note} "
                     f"| `{command}` |")
        if row.seed_group and m.get("final_test_error") is not None:  # finished rows only
            groups.setdefault(row.seed_group, []).append((errors[-1], last10, row.paper))
    if groups:
        lines += ["", "Over seeds (mean ± standard deviation):", "",
                  "| rows | seeds | paper | final | last 10 |", "|---|---|---|---|---|"]
        for name, vals in groups.items():
            finals, lasts = [v[0] for v in vals], [v[1] for v in vals]
            lines.append(f"| {name} | {len(vals)} | {vals[0][2]:.2f} | "
                         f"{statistics.mean(finals):.2f} ± {_sd(finals):.2f} | "
                         f"{statistics.mean(lasts):.2f} ± {_sd(lasts):.2f} |")
    text = "\n".join(lines) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    (results_root / f"{preset}.md").write_text(text)
    return text


def _read_metrics(run_dir):
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    if (run_dir / DIVERGED).is_file():
        m["diverged"] = True
    return m


def select(rows, patterns):
    if not patterns:
        return rows
    chosen = [r for r in rows if any(fnmatch.fnmatch(r.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(r.name for r in rows)
        raise SystemExit(f"{PROG}: error: --only {' '.join(patterns)} matches no row; rows "
                         f"are: {names}")
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description="Run a preset of the paper's "
                                     "experiments and write its table (paper vs ffnumpy).")
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="run only rows matching")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per row instead of the paper's 120 (marked in the table)")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default=None)
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets")
    parser.add_argument("--out", default=None, help=f"root of the run folders (default {RUNS})")
    parser.add_argument("--results", default=None,
                        help=f"where the table and metrics copies go (default {RESULTS})")
    parser.add_argument("--list", action="store_true", help="print the rows' commands and stop")
    parser.add_argument("--table-only", action="store_true",
                        help="write the table from the runs so far without training")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    out_root = Path(args.out) if args.out else RUNS
    rows = select(PRESETS[args.preset](), args.only)
    if args.list:
        for row in rows:
            print(f"{row.name}: python -m ffnumpy.train "
                  + shlex.join(train_argv(row.flags, args.epochs, args.backend, args.data_dir)))
        return rows
    if not args.table_only:
        for i, row in enumerate(rows, 1):
            run_dir = row_dir(row, args.epochs, out_root)
            print(f"[{i}/{len(rows)}] {args.preset}: {row.name} -> {run_dir}", flush=True)
            run_row(run_dir, train_argv(row.flags, args.epochs, args.backend, args.data_dir))
    text = summarize(args.preset, PRESETS[args.preset](), args.epochs, out_root,
                     args.backend, args.data_dir, Path(args.results) if args.results else RESULTS)
    print(text)
    return rows


if __name__ == "__main__":
    main()
