"""Benchmark: ``python -m ffnumpy.bench`` times training and prediction against the
matrix-multiply bound of the same shapes, measured in the same process.

Training an FF/SymBa MLP is almost all matrix products, so the honest yardstick is
what the machine's BLAS (or cuBLAS) needs for exactly those products. Two bounds are
printed for each phase:

* **naive**: the products of the textbook computation (every positive and every
  negative pass through every layer; prediction runs all C labels through every layer);
* **ours**: the products this implementation actually performs (the first layer's
  image product is shared by a positive and its negative, and by all C candidate
  labels at prediction, at the price of three small products with the C label codes;
  see :mod:`ffnumpy.model`).

Both include each layer's bias gradient, a sum over rows that BLAS does as a
vector-matrix product.

With ``--whole-run`` it instead runs the training command itself in a fresh process
(``python -m ffnumpy.train mnist --epochs N``) and compares the run's wall time with the
sum of its training epochs, split into start-up, evaluation, checkpointing and the rest.

A ratio below 1 against the naive bound means the work was restructured, not that
BLAS was beaten. Each repeat times the phase and then its bounds back to back, so a
machine that slows down for a while (a shared one does) slows both; every printed time
is a median over repeats and every ratio the median of the per-repeat ratios. GPU clocks
are read only after synchronising.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .backend import BACKENDS, BackendError, device_name, get_xp, synchronize
from .config import Config
from .data import REPO_ROOT, Dataset, load_dataset
from .labels import PAPER_LABELS, sample_negative_labels
from .memory import MemoryRefusal, check_memory
from .model import FFNet
from .saving import build_model

MEMORY_BATCH = 4096  # --memory-plot measures at the paper's batch size (Sec. 4.1)
MEMORY_DEPTHS = range(2, 9)  # --memory-plot: hidden layers measured


def _seconds(xp, fn):
    """Wall-clock seconds of one call of ``fn``, device work included."""
    synchronize(xp)
    t0 = time.perf_counter()
    fn()
    synchronize(xp)
    return time.perf_counter() - t0


def matmul_products(xp, shapes, dtype):
    """A function that runs every product (m, k) @ (k, n) listed in ``shapes`` as many
    times as its count, on operands allocated once: its time is the bound."""
    operands = [(xp.ones((m, k), dtype=dtype), xp.ones((k, n), dtype=dtype),
                 xp.empty((m, n), dtype=dtype), count) for (m, k, n), count in shapes.items()]

    def run():
        for a, b, out, count in operands:
            for _ in range(count):
                xp.matmul(a, b, out=out)

    run()  # warm up
    return run


def paired_timing(xp, phase, bounds, repeats):
    """Time ``phase`` and each bound function back to back, ``repeats`` times.

    Returns the median seconds of the phase, a dict of the bounds' median seconds and
    a dict of the medians of the per-repeat ratios phase / bound.
    """
    phase_s, bound_s = [], {name: [] for name in bounds}
    for _ in range(repeats):
        phase_s.append(_seconds(xp, phase))
        for name, run in bounds.items():
            bound_s[name].append(_seconds(xp, run))
    median = statistics.median
    return (median(phase_s), {name: median(v) for name, v in bound_s.items()},
            {name: median(p / b for p, b in zip(phase_s, v)) for name, v in bound_s.items()})


def flops(shapes):
    """Floating-point operations of the products in ``shapes``: 2 m k n for each
    (m, k) @ (k, n)."""
    return sum(2 * m * k * n * count for (m, k, n), count in shapes.items())


def _batch_sizes(n, batch):
    """Minibatch sizes of one epoch over n rows; the last partial batch is kept."""
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def _add(shapes, key, count=1):
    shapes[key] = shapes.get(key, 0) + count


def training_shapes(n_train, batch, d_image, d_in, n_classes, widths, split_first):
    """Products of one epoch: per layer the forward z = x W^T, the weight gradient
    dW = dz^T x and the bias gradient db = 1^T dz over the 2B stacked rows."""
    shapes = {}
    for B in _batch_sizes(n_train, batch):
        for l, d_out in enumerate(widths):
            d_prev = d_in if l == 0 else widths[l - 1]
            if l == 0 and split_first:  # one image product for the positive and its negative
                _add(shapes, (B, d_image, d_out))
                _add(shapes, (d_out, B, d_image))
                _add(shapes, (n_classes, d_in, d_out))  # W code_c, the (C, D_1) table
                _add(shapes, (d_out, 2 * B, n_classes))  # M: dz/n summed per label
                _add(shapes, (d_out, n_classes, d_in))  # M codes
            else:
                _add(shapes, (2 * B, d_prev, d_out))
                _add(shapes, (d_out, 2 * B, d_prev))
            _add(shapes, (1, 2 * B, d_out))  # db
    return shapes


def prediction_shapes(n_test, n_classes, d_image, d_in, widths, split_first, chunk):
    """Products of predicting the test set: every image with every candidate label."""
    shapes = {}
    for start in range(0, n_test, chunk):
        B = min(chunk, n_test - start)
        for l, d_out in enumerate(widths):
            d_prev = d_in if l == 0 else widths[l - 1]
            if l == 0 and split_first:
                _add(shapes, (B, d_image, d_out))
                _add(shapes, (n_classes, d_in, d_out))
            else:
                _add(shapes, (n_classes * B, d_prev, d_out))
    return shapes


def backprop_shapes(n_train, batch, dims):
    """Products of one backprop epoch through layers of sizes ``dims``: forward, dW, and
    dx for every layer above the first."""
    shapes = {}
    for B in _batch_sizes(n_train, batch):
        for l in range(len(dims) - 1):
            _add(shapes, (B, dims[l], dims[l + 1]))  # forward
            _add(shapes, (dims[l + 1], B, dims[l]))  # dW
            if l > 0:
                _add(shapes, (B, dims[l + 1], dims[l]))  # dx
    return shapes


def bench_config(cfg, data, repeats):
    """Time one configuration; returns a dict of measurements."""
    xp = get_xp(cfg.backend)
    model = build_model(cfg, data.n_classes, data.image_shape, xp)
    x = xp.asarray(data.x_train, dtype=cfg.dtype)
    y = xp.asarray(data.y_train)
    x_test = xp.asarray(data.x_test, dtype=cfg.dtype)
    rng = np.random.default_rng(cfg.seed)
    y_neg = xp.asarray(sample_negative_labels(data.y_train, data.n_classes, rng))
    n, B = x.shape[0], cfg.batch_size

    def epoch():
        for s in range(0, n, B):
            model.train_step(x[s:s + B], y[s:s + B], y_neg[s:s + B])

    epoch()  # warm up (allocator, BLAS threads)
    model.predict(x_test)
    d_image = data.x_train.shape[1]
    widths = [cfg.width] * cfg.layers
    if isinstance(model, FFNet):
        d_in, C = model.encoder.d_in, data.n_classes
        chunk = model.prediction_chunk(C)
        train_shapes = {name: training_shapes(n, B, d_image, d_in, C, widths, split)
                        for name, split in (("naive", False), ("ours", True))}
        predict_shapes = {name: prediction_shapes(x_test.shape[0], C, d_image, d_in, widths,
                                                  split, chunk)
                          for name, split in (("naive", False), ("ours", True))}
    else:
        train_shapes = {"ours": backprop_shapes(n, B, [d_image] + widths + [data.n_classes])}
        predict_shapes = {}

    result = {"config": f"{cfg.algo} {cfg.labels if cfg.algo != 'bp' else ''} "
                        f"{cfg.layers}x{cfg.width} {cfg.dtype}".replace("  ", " ")}
    for phase, fn, shape_sets in (("train", epoch, train_shapes),
                                  ("predict", lambda: model.predict(x_test), predict_shapes)):
        bounds = {name: matmul_products(xp, shapes, cfg.dtype)
                  for name, shapes in shape_sets.items()}
        seconds, bound_s, ratios = paired_timing(xp, fn, bounds, repeats)
        result[f"{phase}_s"] = seconds
        for name in bound_s:
            result[f"{phase}_bound_{name}"] = bound_s[name]
            result[f"{phase}_ratio_{name}"] = ratios[name]
            result[f"{phase}_flops_{name}"] = flops(shape_sets[name])
        del bounds  # free the operands before the next phase
    result["peak_step_bytes"] = step_memory(
        build_model(cfg, data.n_classes, data.image_shape, xp), x[:B], y[:B], y_neg[:B])
    return result


def step_memory(model, x, y, y_neg):
    """Peak bytes of the first training step of a freshly built model.

    The weights and the optimiser's state exist before the step and are not counted;
    everything the step allocates is, including the work buffers an FF net keeps for
    later steps. NumPy: peak traced by tracemalloc. CuPy: what the memory pool had to
    take from the device for the step (freed blocks are kept, so this bounds the peak).
    """
    xp = model.xp
    if xp is np:
        tracemalloc.start()  # NumPy reports its allocations to tracemalloc
        model.train_step(x, y, y_neg)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak
    pool = xp.get_default_memory_pool()
    synchronize(xp)
    pool.free_all_blocks()
    before = pool.total_bytes()
    model.train_step(x, y, y_neg)
    synchronize(xp)
    return pool.total_bytes() - before


def memory_by_depth(depths, width, batch, algos=("symba", "bp"), d_image=784, n_classes=10):
    """:func:`step_memory` for each depth (NumPy backend, synthetic data)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, d_image), dtype=np.float32)
    y = rng.integers(0, n_classes, batch)
    data = Dataset(x, y, x[:1], y[:1], n_classes, (1, 28, 28), "synthetic")
    out = {algo: [] for algo in algos}
    for algo in algos:
        for depth in depths:
            cfg = Config(algo=algo, layers=depth, width=width, batch_size=batch)
            model = build_model(cfg, n_classes, data.image_shape, np)
            y_neg = sample_negative_labels(y, n_classes, rng)
            out[algo].append(step_memory(model, x, y, y_neg))
    return out


# --- the whole run ---

def whole_run(command):
    """Run the training ``command`` (a list of arguments after ``python -m ffnumpy.train``)
    in a fresh process and split its wall time.

    Start-up is the time from launching the process to the "run folder:" line, printed
    just before the first epoch (interpreter, imports, reading the data, building the
    model); training, evaluation and checkpointing are the sums of the per-epoch
    ``train_seconds``, ``eval_seconds`` and ``checkpoint_seconds`` of its metrics.json;
    "other" is the rest (metrics files, the final model, printing). Returns a dict of
    seconds.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1",  # this copy of ffnumpy, lines as printed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="ffnumpy-bench-") as tmp:
        out = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ffnumpy.train", *command, "--out", out],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        startup, lines = None, []
        for line in proc.stdout:
            if startup is None and line.startswith("run folder:"):
                startup = time.perf_counter() - t0
            lines.append(line)
        rc = proc.wait()
        wall = time.perf_counter() - t0
        if rc != 0 or startup is None:
            raise SystemExit(f"python -m ffnumpy.bench: the training run failed (exit {rc}): "
                             + "".join(lines[-3:]).strip())
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
    epochs = metrics["epochs"]
    parts = {name: sum(r.get(key, 0.0) for r in epochs) for name, key in (
        ("train", "train_seconds"), ("evaluation", "eval_seconds"),
        ("checkpointing", "checkpoint_seconds"))}
    other = wall - startup - sum(parts.values())
    return {"wall": wall, "startup": startup, **parts, "other": other,
            "epochs": len(epochs), "checkpoints": sum("checkpoint_seconds" in r for r in epochs),
            "test_error": metrics["final_test_error"]}


def format_whole_run(r, epochs_projected):
    """One line per run: wall against training, and where the rest went.

    The projection to ``epochs_projected`` epochs keeps the start-up and scales the rest
    with the epochs: an overestimate, since checkpoints are bounded by time, not epochs.
    """
    per_epoch = (r["wall"] - r["startup"]) / r["epochs"]  # everything after start-up
    projected = (r["startup"] + epochs_projected * per_epoch) / (
        epochs_projected * r["train"] / r["epochs"])
    return (f"  wall {r['wall']:.1f}s, training {r['train']:.1f}s (sum of {r['epochs']} epochs' "
            f"train_seconds), ratio {r['wall'] / r['train']:.3f}x; start-up "
            f"{r['startup']:.2f}s, evaluation {r['evaluation']:.2f}s, checkpointing "
            f"{r['checkpointing']:.2f}s ({r['checkpoints']} checkpoints), other "
            f"{r['other']:.2f}s; projected to {epochs_projected} epochs {projected:.3f}x; "
            f"test error {100 * r['test_error']:.2f}%")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ffnumpy.bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, nargs="+", default=["numpy"],
                        help="array backends to measure, one after the other")
    parser.add_argument("--algo", choices=("symba", "ff", "bp"), nargs="+", default=["symba"],
                        help="networks to measure (ff with overlay labels, symba and bp "
                        "with ICP)")
    parser.add_argument("--layers", type=int, default=2, help="hidden layers")
    parser.add_argument("--width", type=int, default=500, help="units per hidden layer")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="floating-point type of data, weights and products")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many runs")
    parser.add_argument("--memory-plot", metavar="PNG", default=None,
                        help="also measure peak step memory for 2..8 layers and plot it here")
    parser.add_argument("--whole-run", action="store_true",
                        help="instead: time the training command itself (python -m "
                        "ffnumpy.train mnist --epochs N with these --backend, --algo, --layers, "
                        "--width, --dtype) once per repeat, against the sum of its epochs' "
                        "training time")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs of each --whole-run run (its ratio is also projected to "
                        f"the default {Config().epochs})")
    args = parser.parse_args(argv)
    if min(args.repeats, args.layers, args.width, args.epochs) < 1:
        parser.error("--repeats, --layers, --width and --epochs must be at least 1")
    for backend in args.backend:  # a missing GPU is one line before anything runs
        try:
            get_xp(backend)
        except BackendError as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.memory_plot:  # an unwritable plot path is said before the benchmark runs
        folder = Path(args.memory_plot).resolve().parent
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            parser.error(f"--memory-plot {args.memory_plot}: cannot write into {folder}: "
                         f"{exc.strerror or exc}")
    if args.whole_run:
        return main_whole_run(args)
    data = load_dataset("mnist")
    measured = [Config(algo=algo, layers=args.layers, width=args.width, dtype=args.dtype,
                       backend=backend, labels=PAPER_LABELS[algo] or Config.labels)
                for backend in args.backend for algo in args.algo]
    plotted = [Config(algo=algo, layers=MEMORY_DEPTHS[-1], width=args.width,
                      batch_size=MEMORY_BATCH, labels=PAPER_LABELS[algo] or Config.labels)
               for algo in ("symba", "bp")] if args.memory_plot else []  # its deepest, host
    for cfg in measured + plotted:  # too large for this machine: one line before anything runs
        try:
            check_memory(cfg, data, get_xp(cfg.backend))
        except MemoryRefusal as exc:
            parser.exit(2, f"{parser.prog}: error: {cfg.algo} {cfg.layers} x {cfg.width}: "
                           f"{exc}\n")
    results = []
    for i, cfg in enumerate(measured):
        if i % len(args.algo) == 0:  # the first network of a backend
            print(f"backend {cfg.backend}: {device_name(get_xp(cfg.backend))}", flush=True)
        r = bench_config(cfg, data, args.repeats)
        r["backend"] = cfg.backend
        results.append(r)
        print(format_result(r), flush=True)
    if args.memory_plot:
        depths = list(MEMORY_DEPTHS)
        mem = memory_by_depth(depths, args.width, MEMORY_BATCH)
        for algo, values in mem.items():
            print(f"peak step memory {algo}: " + " ".join(
                f"{d}L={v / 2**20:.0f}MiB" for d, v in zip(depths, values)))
        plot_memory(depths, mem, args.memory_plot, args.width, MEMORY_BATCH)
    return results


def main_whole_run(args):
    """``--whole-run``: each configuration's training command, ``--repeats`` times."""
    results = []
    for backend in args.backend:
        print(f"backend {backend}: {device_name(get_xp(backend))}", flush=True)
        for algo in args.algo:
            command = ["mnist", "--epochs", str(args.epochs), "--backend", backend,
                       "--algo", algo, "--labels", PAPER_LABELS[algo] or Config.labels,
                       "--layers", str(args.layers), "--width", str(args.width),
                       "--dtype", args.dtype]
            print("  python -m ffnumpy.train " + " ".join(command), flush=True)
            runs = []
            for _ in range(args.repeats):
                runs.append(whole_run(command))
                print(format_whole_run(runs[-1], Config().epochs), flush=True)
            ratio = statistics.median(r["wall"] / r["train"] for r in runs)
            print(f"  median ratio of {len(runs)} runs: {ratio:.3f}x", flush=True)
            results.append({"backend": backend, "algo": algo, "runs": runs, "ratio": ratio})
    return results


def format_result(r):
    lines = [f"  {r['config']}: train epoch {r['train_s']:.3f}s, predict test set "
             f"{r['predict_s']:.3f}s, peak step memory {r['peak_step_bytes'] / 2**20:.0f} MiB"]
    for phase in ("train", "predict"):
        for name in ("naive", "ours"):
            key = f"{phase}_bound_{name}"
            if key in r:
                lines.append(f"    {phase}: matmul bound ({name} shapes) {r[key]:.3f}s, "
                             f"ratio {r[f'{phase}_ratio_{name}']:.2f}x")
    return "\n".join(lines)


def plot_memory(depths, mem, path, width=500, batch=MEMORY_BATCH):
    """Plot :func:`memory_by_depth`'s result to ``path``, as ``docs/memory_by_depth.png``
    (:func:`ffnumpy.figures.plot_memory_by_depth`, which redraws that file from the
    committed ``bench-cpu.txt``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import plot_memory_by_depth

    fig = plot_memory_by_depth({algo: (depths, [v / 2**20 for v in values])
                                for algo, values in mem.items()}, width=width, batch=batch)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
