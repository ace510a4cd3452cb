r"""Every figure in ``docs/``, drawn from the library's code and the committed metrics.

    python -m ffnumpy.figures                      # regenerate every PNG in docs/
    python -m ffnumpy.figures --only figure1_losses --out /tmp/figs

This is the one command that writes ``docs/``. The notebooks call the same ``plot_*``
functions to show the figures inline and never write there.

Sources
-------
- Figure 1: :mod:`ffnumpy.losses` (``ff_loss_grad``, ``symba_loss_grad``) on a grid.
- Figure 3 and the gradient balance: the per-epoch metrics of real runs committed in
  ``data_cache/results/<preset>/<row>-e<epochs>.json`` (written by
  ``python -m ffnumpy.experiments <preset>``).
- Figure 4: the ``fig4`` preset's SymBa CIFAR-10 runs, one per ICP rate and learning rate.
- Overlay vs ICP: :mod:`ffnumpy.labels` on a CIFAR-10 test image (MNIST if CIFAR-10 is absent).
- Memory by depth: ``data_cache/results/bench-cpu.txt``, the output of
  ``python -m ffnumpy.bench --memory-plot ...``.
"""
import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from . import experiments, losses
from .data import CIFAR, data_root, load_dataset
from .download import UnsafeFileError, loads_pickle, read_tar_members
from .config import Config
from .labels import PAPER_LABELS, make_encoder

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "data_cache" / "results"
BENCH_FILE = "bench-cpu.txt"  # python -m ffnumpy.bench's output, memory lines included
CIFAR10_CLASSES, CIFAR100_CLASSES = 10, 100  # the overlay's one-hot covers this many pixels
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"  # the project's read-only copies

PAPER_EPOCHS = 120  # SymBa (arXiv:2303.08418v1) Sec. 4.1: every run trains 120 epochs
LAST_N = 10  # "last 10": mean test error over the last 10 epochs, as in the results tables
THETA, ALPHA = 2.0, 4.0  # paper Table 1 and Sec. 4.1
Y_TICKS = (1, 2, 3, 5, 10, 20, 30, 50, 70, 100)  # test error axis (%, log scale)
CIFAR_WIDTH = 1000  # preset table2's CIFAR-10 runs long enough to show a trend are 3 x 1000
PAPER_CIFAR_WIDTH = 3072  # the paper's CIFAR-10 width (Table 2), drawn once its runs finish

NAMES = {"symba": "SymBa", "ff": "FF", "bp": "BP"}
COLORS = {"symba": "tab:blue", "ff": "tab:orange", "bp": "0.35"}
SIGN_STYLE = {"pos": "-", "neg": "--"}  # gradient balance: one line style per sign
FONT = {"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 13, "legend.fontsize": 11,
        "xtick.labelsize": 11, "ytick.labelsize": 11, "figure.titlesize": 15}
DPI = 110


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


# --- reading the committed metrics ---

def load_metrics(path):
    """One run's metrics: keys ``config``, ``epochs`` (a dict per epoch), ``final_test_error``.

    Raises
    ------
    ValueError
        One line naming a file that is not a metrics file (damaged, another format).
    """
    try:
        return experiments.load_metrics(path)
    except experiments.MetricsError as exc:
        raise ValueError(str(exc)) from None


def error_curve(metrics):
    """(epochs, test error in %) over the epochs that were evaluated."""
    rows = [r for r in metrics["epochs"] if "test_error" in r]
    return (np.array([r["epoch"] for r in rows]),
            100 * np.array([r["test_error"] for r in rows]))


def last_mean(metrics, n=LAST_N):
    """Mean test error (%) over the last ``n`` evaluated epochs."""
    return error_curve(metrics)[1][-n:].mean()


def runs_of(folder, **match):
    """Metrics of every ``*.json`` run in ``folder`` whose config has all of ``match``, FF
    with overlay and SymBa with ICP labels (the paper's pairing), grouped as
    {algo: {lr: [metrics of each seed]}}."""
    groups = {}
    for path in sorted(Path(folder).glob("*.json")):
        m = load_metrics(path)
        cfg = m["config"]
        paired = PAPER_LABELS.get(cfg["algo"]) in (None, cfg.get("labels"))
        if paired and all(cfg.get(k) == v for k, v in match.items()) and error_curve(m)[0].size:
            groups.setdefault(cfg["algo"], {}).setdefault(cfg["lr"], []).append(m)
    return {algo: groups[algo] for algo in NAMES if algo in groups}


def best_rate(by_lr):
    """The learning rate whose seeds have the lowest mean last-10 test error."""
    return min(by_lr, key=lambda lr: np.mean([last_mean(m) for m in by_lr[lr]]))


# --- Figure 1: the two losses' gradients over (G_pos, G_neg) ---

def gradient_fields(g_pos, g_neg, theta=THETA, alpha=ALPHA):
    """dL/dG_pos and dL/dG_neg of both losses at every point, from :mod:`ffnumpy.losses`.

    Returns
    -------
    dict {"ff": (dg_pos, dg_neg), "symba": (dg_pos, dg_neg)}, arrays shaped like g_pos
    """
    shape = g_pos.shape
    out = {}
    for name, grad, kw in (("ff", losses.ff_loss_grad, {"theta": theta}),
                           ("symba", losses.symba_loss_grad, {"alpha": alpha})):
        dp, dn = grad(g_pos.ravel(), g_neg.ravel(), reduction="none", **kw)
        out[name] = (dp.reshape(shape), dn.reshape(shape))
    return out


def _near_segment(px, py, start, end, radius):
    """True where (px, py) lies within ``radius`` of the segment start-end."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    s = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(px - x0 - s * dx, py - y0 - s * dy) < radius


def plot_figure1(theta=THETA, alpha=ALPHA, g_max=6.0, n_map=241, n_arrows=12, floor=1e-3):
    r"""FF vs SymBa over (G_pos, G_neg): descent directions, gradient size, and FF's imbalance.

    Top: a unit-length arrow (direction only) of :math:`-\nabla L` on a grid, over
    :math:`\lvert\nabla L\rvert` on one log colour scale shared by both panels (values
    below ``floor`` get the darkest colour). Bottom left: FF's
    :math:`\lvert\partial L/\partial G_{neg}\rvert / \lvert\partial L/\partial G_{pos}\rvert`
    (SymBa's is 1 everywhere, Eq. 11). Bottom right: both gradients along
    :math:`G_{neg} = 0`, the end of training (Eqs. 6-7). Dashed lines: :math:`G = \theta`.

    Returns
    -------
    matplotlib Figure
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    g = np.linspace(0.0, g_max, n_map)
    gp, gn = np.meshgrid(g, g)  # (n_map, n_map); x: G_pos, y: G_neg
    fields = gradient_fields(gp, gn, theta, alpha)
    step = g_max / n_arrows
    q = np.linspace(step / 2, g_max - step / 2, n_arrows)
    qp, qn = np.meshgrid(q, q)  # (n_arrows, n_arrows), cell centres
    arrows = gradient_fields(qp, qn, theta, alpha)
    # the red convergence arrow runs along the bottom edge, where no grid arrow sits
    red = ((0.55 * g_max, 0.06 * g_max), (0.97 * g_max, 0.06 * g_max))
    keep = ~_near_segment(qp, qn, *red, radius=0.7 * step)

    sizes = {k: np.hypot(dp, dn) for k, (dp, dn) in fields.items()}
    norm = LogNorm(vmin=floor, vmax=max(s.max() for s in sizes.values()))
    ratio = np.abs(fields["ff"][1]) / np.abs(fields["ff"][0])  # (n_map, n_map)
    r_lim = max(ratio.max(), 1 / ratio.min())
    line = gradient_fields(g, np.zeros_like(g), theta, alpha)  # along G_neg = 0

    with plt.rc_context(FONT):
        fig, axes = plt.subplots(2, 2, figsize=(11, 10), layout="constrained")
        (a_ff, a_sb), (a_ratio, a_line) = axes
        titles = {"ff": rf"FF loss ($\theta$ = {theta:g}): direction turns",
                  "symba": rf"SymBa loss ($\alpha$ = {alpha:g}): direction fixed"}
        for ax, key in ((a_ff, "ff"), (a_sb, "symba")):
            im = ax.pcolormesh(gp, gn, np.maximum(sizes[key], floor), norm=norm,
                               cmap="viridis", shading="auto", rasterized=True)
            cs = ax.contour(gp, gn, sizes[key], levels=10.0 ** np.arange(-2, 1), colors="w",
                            linewidths=0.7, alpha=0.8)
            ax.clabel(cs, fmt=lambda v: f"{v:g}", fontsize=10)
            dp, dn = arrows[key]
            length = np.hypot(dp, dn)
            ax.quiver(qp[keep], qn[keep], (-dp / length)[keep], (-dn / length)[keep],
                      angles="xy", scale_units="xy", scale=1 / (0.8 * step), color="w",
                      edgecolor="k", linewidth=0.4, width=0.007, pivot="mid")
            ax.set_title(titles[key])
        fig.colorbar(im, ax=[a_ff, a_sb], extend="min", shrink=0.85,
                     label=r"$|\nabla L|$, one log scale for both")

        im = a_ratio.pcolormesh(gp, gn, ratio, norm=LogNorm(1 / r_lim, r_lim), cmap="PuOr_r",
                                shading="auto", rasterized=True)
        cs = a_ratio.contour(gp, gn, ratio, levels=[0.2, 1, 5, 25], colors="k",
                             linewidths=[0.7, 1.6, 0.7, 0.7])
        a_ratio.clabel(cs, fmt=lambda v: f"{v:g}", fontsize=10)
        fig.colorbar(im, ax=a_ratio, shrink=0.85, label=r"$|\partial L/\partial G_{neg}|\;/\;"
                                                         r"|\partial L/\partial G_{pos}|$")
        a_ratio.set_title("FF: negative push / positive push\n(SymBa: 1 everywhere)")

        for ax in (a_ff, a_sb, a_ratio):
            ax.set_xlim(0, g_max)
            ax.set_ylim(0, g_max)
            ax.set_aspect("equal")
            ax.set_xlabel(r"$G_{pos}$")
            ax.set_ylabel(r"$G_{neg}$")
            ax.annotate("", xy=red[1], xytext=red[0],
                        arrowprops=dict(color="red", width=3, headwidth=12, headlength=12))
        for ax, color in ((a_ff, "w"), (a_ratio, "k")):
            ax.axvline(theta, color=color, ls="--", lw=1.2)
            ax.axhline(theta, color=color, ls="--", lw=1.2)

        for key in ("ff", "symba"):
            for sign, values in zip(("pos", "neg"), line[key]):
                a_line.semilogy(g, np.abs(values), SIGN_STYLE[sign], color=COLORS[key], lw=2,
                                label=rf"{NAMES[key]} $|\partial L/\partial G_{{{sign}}}|$")
        a_line.axvline(theta, color="k", ls="--", lw=1.2)
        a_line.set_ylim(floor, None)
        a_line.set_xlim(0, g_max)
        a_line.set_xlabel(r"$G_{pos}$ (with $G_{neg}$ = 0)")
        a_line.set_ylabel(r"$|\partial L/\partial G|$")
        a_line.set_title("along the red arrow: FF's negative push\n"
                         r"stays at $\sigma(-\theta)$, SymBa's two shrink together")
        a_line.grid(alpha=0.3)
        a_line.legend(loc="lower left", fontsize=11)
        a_line.set_box_aspect(1)

        handles = [Line2D([], [], color="red", lw=3, marker=">", markersize=10,
                          label=r"convergence: $G_{pos}$ grows, $G_{neg} \to 0$"),
                   Line2D([], [], color="k", ls="--", lw=1.2, label=r"$G = \theta$"),
                   Line2D([], [], color="0.4", marker=r"$\rightarrow$", markersize=14, ls="",
                          label=r"direction of $-\nabla L$ (unit length)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False,
                   fontsize=12)
        fig.suptitle("Figure 1 replotted: where each loss pushes the goodness")
    return fig


# --- Figure 3: test error per epoch ---

def _plot_group(ax, algo, by_lr, chose_rate):
    """Mean test error over seeds, a min-max band, one legend entry.

    Returns (the epochs every drawn seed trained, a config of the drawn runs, the lowest
    error drawn). Epochs trained can exceed the last one drawn: test error is measured
    every ``eval_every`` epochs."""
    lr = best_rate(by_lr)
    curves = [error_curve(m) for m in by_lr[lr]]
    n = min(len(e) for e, _ in curves)  # seeds that stopped early: their common epochs
    epochs = curves[0][0][:n]
    errors = np.array([err[:n] for _, err in curves])  # (seeds, n)
    seeds = len(curves)
    trained = min(m["epochs"][-1]["epoch"] for m in by_lr[lr])
    cfg = by_lr[lr][0]["config"]
    label = f"{NAMES[algo]}, lr {lr:g}"
    if chose_rate:
        label += f" (better of {', '.join(f'{r:g}' for r in sorted(by_lr))} by last-{LAST_N} mean)"
    label += f", {seeds} seed{'s' if seeds > 1 else ''}"
    if trained < cfg["epochs"]:
        label += f", {trained} epochs"
    if seeds > 1:
        label += ", band min-max"
        ax.fill_between(epochs, errors.min(0), errors.max(0), color=COLORS[algo], alpha=0.25,
                        lw=0)
    marks = [i for i, e in enumerate(epochs) if e <= 10 or e % 10 == 0]
    ax.plot(epochs, errors.mean(0), ls="--" if algo == "bp" else "-", color=COLORS[algo],
            marker="o", markersize=4, markevery=marks, label=label)
    return trained, cfg, errors.min()


def plot_error_panel(ax, groups, title, n_classes=10, paper=None, paper_text="paper"):
    """One panel of Figure 3 from ``groups`` = {algo: {lr: [metrics]}} (see :func:`runs_of`);
    ``paper`` = {algo: the paper's final test error (%)}, marked at the last epoch."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

    if not groups:
        ax.text(0.5, 0.5, "no committed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return
    ran, planned, lowest, configs = [], [], [], []
    for algo, by_lr in groups.items():
        last, cfg, low = _plot_group(ax, algo, by_lr, chose_rate=len(by_lr) > 1)
        ran.append(last)
        lowest.append(low)
        configs.append(cfg)
        planned.append(max(cfg["epochs"], PAPER_EPOCHS))
    for algo, value in (paper or {}).items():
        if algo in groups:
            ax.plot(max(planned), value, "*", ms=15, color=COLORS[algo], mec="k", mew=0.8,
                    zorder=5, clip_on=False)
    if paper:
        ax.plot([], [], "*", ms=13, color="0.6", mec="k", mew=0.8, ls="",
                label=f"{paper_text}'s final error (colour: algorithm)")
    chance = 100 * (1 - 1 / n_classes)
    ax.axhline(chance, color="k", ls=":", lw=1.2, label=f"chance ({chance:g}%)", zorder=1)
    if max(ran) < max(planned):
        title += f"\nafter {max(ran)} of {max(planned)} epochs (not converged)"
    else:
        title += f", {max(ran)} epochs"
    every = max(cfg.get("eval_every", 1) for cfg in configs)
    if every > 1:
        title += f", test error every {every} epochs"
    ax.set_title(title)
    ax.set_yscale("log")
    lowest += [v for algo, v in (paper or {}).items() if algo in groups]
    bottom = max([t for t in Y_TICKS if t <= min(lowest) * 0.8] or Y_TICKS[:1])
    ticks = [t for t in Y_TICKS if t >= bottom]
    if len(ticks) < 4:  # a narrow range (short runs): a tick every 10%
        ticks = list(range(int(bottom), 101, 10))
    ax.set_ylim(bottom, 100)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=7, steps=[1, 2, 5, 10],
                                           min_n_ticks=1))
    ax.set_xlim(0.5, max(max(ran), max(planned) if paper else 0) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=10)


def _config_title(dataset, groups):
    cfg = next(iter(next(iter(groups.values())).values()))[0]["config"] if groups else {}
    if not cfg:
        return dataset
    return (f"{dataset}, {cfg['layers']} x {cfg['width']}, batch {cfg['batch_size']}, "
            f"{cfg['optimizer'].capitalize()}")


def plot_figure3(results=RESULTS, mnist_preset="table1", cifar_preset="table2",
                 cifar_width=CIFAR_WIDTH):
    """Figure 3: test error per epoch on MNIST (2 x 500) and CIFAR-10 (3 x ``cifar_width``).

    Every row of a preset's folder that matches the panel's configuration is used: seeds
    are averaged (band: min to max), and where a preset ran both learning rates the
    better one per algorithm (by last-10 mean test error) is drawn, so that no algorithm
    is shown at its worse rate. Stars mark the paper's final errors (Tables 1-2; for
    CIFAR-10 the paper's 3 x 3072 rows). The CIFAR-10 panel draws the paper's 3 x 3072 runs
    once every one of them has trained 120 epochs, else the 3 x ``cifar_width`` ones. A
    panel whose runs stopped before their planned epochs says "after N of M epochs".
    ``val_error``, where a run logs it, is not drawn. If no CIFAR-10 run has
    ``cifar_width``, the widest that has runs is used.

    Raises
    ------
    ValueError
        If neither panel has a run (an empty or wrong ``results`` folder).
    """
    plt = _pyplot()
    results = Path(results)
    mnist = runs_of(results / mnist_preset, dataset="mnist", layers=2, width=500)
    paper_width = runs_of(results / cifar_preset, dataset="cifar10", layers=3,
                          width=PAPER_CIFAR_WIDTH)
    if paper_width and all(_trained(m)[0] >= PAPER_EPOCHS for by_lr in paper_width.values()
                           for runs in by_lr.values() for m in runs):
        cifar_width = PAPER_CIFAR_WIDTH  # the paper's own width, once its runs are complete
    cifar = runs_of(results / cifar_preset, dataset="cifar10", layers=3, width=cifar_width)
    if not cifar:
        widths = {load_metrics(p)["config"]["width"]
                  for p in (results / cifar_preset).glob("*.json")}
        if widths:
            cifar = runs_of(results / cifar_preset, dataset="cifar10", layers=3,
                            width=max(widths))
    if not mnist and not cifar:
        raise ValueError(f"no runs in {results / mnist_preset} or {results / cifar_preset}")
    paper_mnist = experiments.TABLE1_PAPER[(2, 500)]
    paper_cifar = experiments.TABLE2_PAPER[("cifar10", 3072)]
    cifar_text = ("paper" if any(m["config"]["width"] == 3072 for by_lr in cifar.values()
                                 for runs in by_lr.values() for m in runs) else "paper (3 x 3072)")
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), layout="constrained")
        plot_error_panel(axes[0], mnist, _config_title("MNIST", mnist), paper=paper_mnist)
        plot_error_panel(axes[1], cifar, _config_title("CIFAR-10", cifar), paper=paper_cifar,
                         paper_text=cifar_text)
        fig.suptitle("Figure 3 replotted: test error per epoch (line: mean over seeds)")
    return fig


# --- the paper's argument measured in training: gradient balance per layer ---

def plot_gradient_balance(results=RESULTS, preset="table1", rows=("ff-2x500", "symba-2x500"),
                          rates=experiments.RATES, epochs=PAPER_EPOCHS):
    """Per learning rate and layer (rows of panels) and epoch: mean |dL/dG_pos| and
    |dL/dG_neg| per pair, their ratio, and the fraction of dead ReLUs, for seed 0 of FF
    and SymBa (runs ``<row>-lr<rate>-e<epochs>.json`` of ``preset``).

    SymBa's ratio is 1 at every step by the form of its loss (Eq. 11: both derivatives are
    alpha * sigmoid(-alpha * delta) in size), so its line is an identity, not a finding;
    FF's ratio is what the runs measure."""
    plt = _pyplot()
    runs = {}  # (lr, algo) -> metrics
    for lr in rates:
        for row in rows:
            m = load_metrics(Path(results) / preset / f"{row}-lr{lr}-e{epochs}.json")
            runs[(lr, m["config"]["algo"])] = m
    n_layers = max(len(m["epochs"][0]["loss"]) for m in runs.values())
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(len(rates) * n_layers, 3,
                                 figsize=(14, 3.1 * len(rates) * n_layers + 0.8),
                                 layout="constrained", sharex=True, squeeze=False)
        for (lr, algo), m in runs.items():
            ep = np.array([r["epoch"] for r in m["epochs"]])
            for layer in range(n_layers):
                pos = np.array([r["mean_abs_dg_pos"][layer] for r in m["epochs"]])
                neg = np.array([r["mean_abs_dg_neg"][layer] for r in m["epochs"]])
                a_grad, a_ratio, a_dead = axes[rates.index(lr) * n_layers + layer]
                for sign, values in (("pos", pos), ("neg", neg)):
                    a_grad.semilogy(ep, values, SIGN_STYLE[sign], color=COLORS[algo], lw=2,
                                    label=f"{NAMES[algo]} " + r"$|\partial L/\partial G_{"
                                    + sign + "}|$")
                a_ratio.plot(ep, neg / pos, color=COLORS[algo], lw=2.5,
                             label=NAMES[algo] + (" (1 by Eq. 11)" if algo == "symba" else
                                                  " (measured)"))
                dead = [r for r in m["epochs"] if "dead_relu_fraction" in r]
                a_dead.plot([r["epoch"] for r in dead],
                            [100 * r["dead_relu_fraction"][layer] for r in dead],
                            color=COLORS[algo], lw=2, label=NAMES[algo])
        for i, (a_grad, a_ratio, a_dead) in enumerate(axes):
            lr, layer = rates[i // n_layers], i % n_layers + 1
            a_grad.set_ylabel(f"lr {lr:g}, layer {layer}\n"
                              + r"mean $|\partial L/\partial G|$ per pair")
            a_ratio.set_ylabel(r"$|\partial L/\partial G_{neg}|\;/\;|\partial L/\partial G_{pos}|$")
            a_ratio.axhline(1, color="k", lw=0.8, zorder=1)
            a_ratio.set_ylim(bottom=0)
            a_dead.set_ylabel("dead ReLUs (%)")
            a_dead.set_ylim(0, 100)
            for ax in (a_grad, a_ratio, a_dead):
                ax.grid(alpha=0.3)
        axes[0, 0].set_title("size of each push\n(SymBa: the two lines coincide)")
        axes[0, 1].set_title("negative / positive push\n(SymBa's is 1 by its loss's form)")
        axes[0, 2].set_title("ReLUs silent on every test image\n(with its true label)")
        axes[0, 0].legend(fontsize=10, ncols=2)
        axes[0, 1].legend(fontsize=10)
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
        cfg = next(iter(runs.values()))["config"]
        fig.suptitle(f"The paper's Eqs. 6-7 measured in training: MNIST {cfg['layers']} x "
                     f"{cfg['width']}, seed {cfg['seed']}, at both learning rates")
    return fig


# --- Figure 4: SymBa's test error by ICP rate ---

PAPER_NAN_BELOW = 0.1  # Sec. 4.3: "if it is smaller than 0.1, the loss converges to NaN"


def icp_runs(folder, width=CIFAR_WIDTH):
    """SymBa CIFAR-10 3 x ``width`` runs with ICP labels in ``folder``, as
    {(icp_rate, lr): metrics}; a run's rate is its config's ``icp_rate`` (default 0.1)."""
    by_lr = runs_of(folder, dataset="cifar10", layers=3, width=width).get("symba", {})
    return {(m["config"].get("icp_rate", Config.icp_rate), lr): m
            for lr, runs in by_lr.items() for m in runs}


SWING_WINDOW = 4  # evaluations whose range shows how much one run's error swings


def _trained(m):
    """Epochs a run trained (its last record), and whether that is all it planned."""
    last = m["epochs"][-1]["epoch"] if m["epochs"] else 0
    return last, last >= m["config"]["epochs"] and not m.get("diverged")


def _plot_rate_points(ax, lr, points, color, style):
    """Figure 4's left panel for one learning rate: the last test error of each rate's run
    (``points``: sorted [(rate, metrics)]), with a bar over the range of its last
    :data:`SWING_WINDOW` evaluations. The epochs most runs trained go in the legend; a run
    that trained other epochs is hollow if stopped and names the epoch its point is from."""
    marker, line = style
    curves = [error_curve(m) for _, m in points]
    ys = [err[-1] for _, err in curves]
    ax.plot([rate for rate, _ in points], ys, line, color="0.5", lw=1, zorder=1)
    trained = [_trained(m) for _, m in points if not m.get("diverged")]
    usual = max(set(trained), key=trained.count) if trained else None
    for (rate, m), (ep, err), y in zip(points, curves, ys):
        last, complete = _trained(m)
        if m.get("diverged"):
            ax.plot(rate, y, "x", color="tab:red", ms=11, mew=2.5)
            ax.annotate(f"NaN at epoch {last + 1}", (rate, y), textcoords="offset points",
                        xytext=(6, 6), fontsize=10, color="tab:red")
            continue
        swing = err[-SWING_WINDOW:]
        ax.vlines(rate, swing.min(), swing.max(), color=color[rate], lw=5, alpha=0.35)
        ax.plot(rate, y, marker, ms=9, color=color[rate], mew=2,
                mfc=color[rate] if complete else "white")
        if (last, complete) != usual:
            text = f"epoch {ep[-1]}" + ("" if ep[-1] == last else f" (stopped after {last})")
            ax.annotate(text, (rate, y), textcoords="offset points", xytext=(7, -3),
                        fontsize=10)
    if usual is None:
        ax.plot([], [], "x" + line, color="tab:red", mew=2.5, label=f"lr {lr:g}, diverged")
        return
    epochs, complete = usual
    text = (f"{epochs} epoch{'s' if epochs > 1 else ''}"
            + ("" if complete else ", stopped (hollow)"))
    ax.plot([], [], marker + line, color="0.5", mew=2, mfc="0.5" if complete else "white",
            label=f"lr {lr:g}, {text}")


def plot_figure4(results=RESULTS, preset="fig4", width=CIFAR_WIDTH,
                 all_rates=experiments.ICP_RATES, main_lr=0.001):
    """Figure 4: SymBa's test error on CIFAR-10 by ICP rate, from the ``fig4`` preset's runs.

    Left: the last test error of each rate and learning rate (a bar over the range of the
    last :data:`SWING_WINDOW` evaluations, a hollow marker where the run stopped early, an
    x where the NaN guard stopped it); every rate of ``all_rates`` without a run at
    ``main_lr`` is marked "not run". Right: test error per epoch, a colour per rate, solid
    for lr 0.001 and dashed for lr 0.01.

    Raises
    ------
    ValueError
        If ``results/preset`` holds no run (an empty or wrong ``results`` folder).
    """
    plt = _pyplot()
    runs = icp_runs(Path(results) / preset, width)
    if not runs:
        raise ValueError(f"no SymBa CIFAR-10 3 x {width} runs in {Path(results) / preset}")
    rates = sorted(set(all_rates) | {rate for rate, _ in runs})
    missing = [rate for rate in rates if (rate, main_lr) not in runs]
    cmap = plt.get_cmap("viridis")
    color = {rate: cmap(i / max(len(rates) - 1, 1)) for i, rate in enumerate(rates)}
    styles = {0.001: ("o", "-"), 0.01: ("s", "--")}
    low, high = min(rates + [PAPER_NAN_BELOW]) / 1.4, max(rates + [PAPER_NAN_BELOW]) * 1.4
    with plt.rc_context(FONT):
        fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.2), layout="constrained")
        labelled = set()  # rates named in the right panel's legend
        for lr in sorted({lr for _, lr in runs}):
            style = styles.get(lr, ("^", ":"))
            points = sorted((rate, m) for (rate, r), m in runs.items() if r == lr)
            _plot_rate_points(left, lr, points, color, style)
            for rate, m in points:
                right.plot(*error_curve(m), style[1], color=color[rate], lw=2,
                           label=None if rate in labelled else f"rate {rate:g}")
                labelled.add(rate)
        for rate in missing:
            left.annotate("not run", (rate, 0.03), xycoords=("data", "axes fraction"),
                          rotation=90, ha="center", va="bottom", fontsize=10, color="0.45")
        left.plot([], [], ls="", marker="$\u2195$", color="0.5", ms=10,
                  label=f"bar: range of the last {SWING_WINDOW} evaluations")
        if missing:
            left.plot([], [], ls="", label=f"'not run': no run at lr {main_lr:g} yet")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.set_ylabel("test error (%)")
        left.axvspan(low, PAPER_NAN_BELOW, color="tab:red", alpha=0.08, lw=0,
                     label=f"paper: loss turns NaN below {PAPER_NAN_BELOW:g}")
        left.set_xscale("log")
        left.set_xlim(low, high)
        left.set_xticks(rates, [f"{r:g}" for r in rates], rotation=45)
        left.xaxis.set_minor_locator(plt.NullLocator())
        left.set_xlabel("ICP rate (fraction of a class pattern's pixels set to 1, log scale)")
        left.set_title("last test error of each run")
        left.legend(fontsize=9)
        right.set_xlabel("epoch")
        right.set_title("test error per epoch (solid lr 0.001, dashed lr 0.01)")
        right.legend(fontsize=10, ncols=2)
        fig.suptitle(f"Figure 4 replotted: SymBa on CIFAR-10, 3 x {width}, by ICP rate "
                     f"(the paper: 3 x 3072; error falls as the rate falls to 0.1)")
    return fig


# --- how the label enters: overlay vs intrinsic class patterns ---

def cifar10_test_images(n=1, data_dir=None):
    """The first ``n`` CIFAR-10 test images (uint8, shape (n, 3, 32, 32)) and labels, read
    from an extracted folder or straight out of the official archive (nothing is written);
    None if no copy is found."""
    archive, top = CIFAR["cifar10"][:2]
    for root in (data_root(data_dir), SHARED_DATASETS):
        for folder in (root / "cifar10", root):
            try:
                if (folder / top / "test_batch").is_file():
                    blob = (folder / top / "test_batch").read_bytes()
                elif (folder / archive).is_file():
                    blob = read_tar_members(folder / archive, top, ["test_batch"])["test_batch"]
                else:
                    continue
                batch = loads_pickle(blob, folder / "test_batch")
                images = batch[b"data"][:n].reshape(n, 3, 32, 32)  # (n, C, H, W)
                return images, np.asarray(batch[b"labels"][:n])
            except (OSError, KeyError, ValueError, TypeError, UnsafeFileError):
                continue  # an unreadable copy: try the next place
    return None


def _mark_pixels(ax, n_marked, width):
    """Outline the first ``n_marked`` pixels of a row-major image ``width`` pixels wide."""
    from matplotlib.patches import Rectangle

    full_rows, rest = divmod(n_marked, width)
    kw = dict(fill=False, edgecolor="red", lw=2)
    if full_rows:
        ax.add_patch(Rectangle((-0.5, -0.5), width, full_rows, **kw))
    if rest:
        ax.add_patch(Rectangle((-0.5, full_rows - 0.5), rest, 1, **kw))


def plot_labels_overlay_vs_icp(data_dir=None, index=0, icp_rate=0.1, seed=0):
    """What each label encoding does to an image: overlay writes a one-hot over the first C
    input values (marked red: 10 for CIFAR-10, 100 for CIFAR-100), ICP leaves the image
    whole and adds a class-pattern channel. CIFAR-10 test image ``index``; an MNIST test
    digit, said in the title, if no CIFAR-10 copy is found."""
    plt = _pyplot()
    found = cifar10_test_images(index + 1, data_dir)
    if found is not None:
        image = found[0][index].astype(np.float32) / 255  # (3, 32, 32)
        label = int(found[1][index])
        source = f"CIFAR-10 test image {index} (class {label})"
    else:
        mnist = load_dataset("mnist")
        image = mnist.x_test[index].reshape(1, 28, 28)  # (1, 28, 28)
        label = int(mnist.y_test[index])
        source = (f"CIFAR-10 not found (looked in {data_root(data_dir)} and {SHARED_DATASETS}): "
                  f"MNIST test image {index}")
    channels, height, width = image.shape
    flat = image.reshape(1, -1)  # (1, D_img), channel-first as the library flattens
    rng = np.random.default_rng(seed)

    def show(ax, x, title):
        x = x.reshape(channels, height, width)
        ax.imshow(x.transpose(1, 2, 0) if channels == 3 else x[0], cmap="gray",
                  interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])

    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 4, figsize=(14, 4.6), layout="constrained")
        show(axes[0], flat, "the image")
        for ax, n_classes in zip(axes[1:3], (CIFAR10_CLASSES, CIFAR100_CLASSES)):
            enc = make_encoder("overlay", n_classes, image.shape, icp_rate, rng)
            x = enc.encode(flat, np.array([label % n_classes]))
            show(ax, x, f"overlay, {n_classes} classes: {n_classes} values\n"
                        f"overwritten ({100 * n_classes / (height * width):.2f}% of a plane)")
            _mark_pixels(ax, n_classes, width)
        enc = make_encoder("icp", CIFAR10_CLASSES, image.shape, icp_rate, rng)
        pattern = enc.codes[label, flat.size:].reshape(height, width)
        axes[3].imshow(pattern, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        axes[3].set_title("ICP: nothing overwritten; this\npattern is an extra channel "
                          f"(rate {icp_rate:g})")
        axes[3].set_xticks([])
        axes[3].set_yticks([])
        fig.suptitle(f"How the label enters: {source}\nred outline: pixels the overlay "
                     "overwrites with the one-hot (first colour plane, row by row)", fontsize=13)
    return fig


# --- peak memory of a training step by depth ---

def read_memory(path=RESULTS / BENCH_FILE):
    """{algo: (depths, MiB)} from the ``peak step memory <algo>: 2L=67MiB ...`` lines that
    ``python -m ffnumpy.bench --memory-plot`` prints."""
    out = {}
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file written by python -m ffnumpy.bench") \
            from None
    for line in text.splitlines():
        match = re.match(r"peak step memory (\w+): (.*)", line.strip())
        if match:
            pairs = re.findall(r"(\d+)L=(\d+(?:\.\d+)?)MiB", match.group(2))
            if pairs:
                out[match.group(1)] = ([int(d) for d, _ in pairs],
                                       [float(v) for _, v in pairs])
    if not out:
        raise ValueError(f"{path} holds no 'peak step memory <algo>: 1L=...MiB' line; write "
                         "it with python -m ffnumpy.bench --memory-plot")
    return out


def plot_memory_by_depth(memory=None, width=500, batch=4096):
    """Peak memory one training step allocates, by depth, for each algorithm.

    ``memory`` is {algo: (depths, MiB)}; by default read from ``bench-cpu.txt``. What is
    counted (see :func:`ffnumpy.bench.step_memory`): everything the first step of a fresh
    model allocates, its kept work buffers included; the weights and Adam's moments not.
    """
    plt = _pyplot()
    memory = read_memory() if memory is None else memory
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
        for algo, (depths, mib) in memory.items():
            ax.plot(depths, mib, marker="o", lw=2, color=COLORS.get(algo), ls="--"
                    if algo == "bp" else "-", label=NAMES.get(algo, algo))
            ax.annotate(f"{mib[-1]:.0f} MiB", (depths[-1], mib[-1]), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=11)
        ax.set_xlabel(f"hidden layers (width {width}, batch {batch}, float32)")
        ax.set_ylabel("peak MiB allocated by one step")
        ax.set_ylim(bottom=0)
        ax.set_xlim(right=max(max(d) for d, _ in memory.values()) + 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title("Memory of one training step vs depth (NumPy, tracemalloc)\n"
                     "counted: activations, gradients, work buffers; not: weights, Adam state",
                     fontsize=12)
    return fig


# --- the command ---

FIGURES = {  # file name in docs/ (without .png) -> draws it from a results folder
    "figure1_losses": lambda results: plot_figure1(),
    "figure3_test_error": lambda results: plot_figure3(results),
    "figure4_icp_rate": lambda results: plot_figure4(results),
    "gradient_balance": lambda results: plot_gradient_balance(results),
    "labels_overlay_vs_icp": lambda results: plot_labels_overlay_vs_icp(),
    "memory_by_depth": lambda results: plot_memory_by_depth(read_memory(results / BENCH_FILE)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ffnumpy.figures",
        description="Regenerate the figures in docs/ from the library and the committed "
                    "metrics in data_cache/results/ (the one command that writes docs/).")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES), metavar="NAME",
                        help=f"only these figures, of: {', '.join(FIGURES)}")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the PNGs")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the committed metrics the figures are drawn from")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    plt = _pyplot()
    try:  # say an unwritable --out before drawing anything
        args.out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write into {args.out}: "
                       f"{exc.strerror or exc}; choose another folder with --out DIR\n")
    written = []
    for name in args.only or FIGURES:
        try:
            fig = FIGURES[name](args.results)
        except (OSError, ValueError) as exc:  # a missing, damaged or empty results folder
            reason = (f"{exc.filename}: {exc.strerror}"
                      if isinstance(exc, OSError) and exc.strerror else exc)
            parser.exit(1, f"{name}: cannot draw it: {reason}; point --results at the "
                           f"committed metrics ({RESULTS})\n")
        path = args.out / f"{name}.png"
        try:
            fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
        except OSError as exc:
            parser.exit(2, f"{parser.prog}: error: cannot write {path}: "
                           f"{exc.strerror or exc}\n")
        plt.close(fig)
        print(f"wrote {path}", flush=True)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
