"""An independent SymBa / FF implementation in JAX, to check ffnumpy's figures and speed.

Everything that matters is written again here without ffnumpy: the label encoding,
the layers, the losses, the gradients (JAX autodiff, not our hand derivations), Adam
(optax if installed, else the textbook update) and prediction. Only the MNIST files
are read through ffnumpy's loader. It runs in its own environment, since JAX is not
a dependency of ffnumpy:

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install "jax[cpu]" numpy tqdm
    /tmp/jaxenv/bin/python scripts/independent_jax.py --epochs 120 \
        --out data_cache/results/independent/jax-symba-2x500-e120.json

Setting: the paper's SymBa 2 x 500 on MNIST (ICP rate 0.1 as one extra channel,
unit-length input normalisation per layer, sum goodness, alpha 4, Adam lr 0.01,
batch 4096, uniform wrong labels, all layers summed at prediction).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ffnumpy.data import load_dataset  # noqa: E402  (data only)

EPS = 1e-8


def init(key, d_in, d_out):
    bound = 1.0 / np.sqrt(d_in)
    kw, kb = jax.random.split(key)
    return {"W": jax.random.uniform(kw, (d_in, d_out), minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (d_out,), minval=-bound, maxval=bound)}


def layer(p, x):
    x = x / jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True) + EPS)
    return jax.nn.relu(x @ p["W"] + p["b"])


def layer_loss(p, x_pos, x_neg, algo, alpha, theta):
    g_pos = jnp.sum(layer(p, x_pos) ** 2, axis=1)
    g_neg = jnp.sum(layer(p, x_neg) ** 2, axis=1)
    if algo == "symba":
        return jnp.mean(jax.nn.softplus(-alpha * (g_pos - g_neg)))
    return jnp.mean(jax.nn.softplus(theta - g_pos) + jax.nn.softplus(g_neg - theta))


def adam_update(p, g, state, lr, t, b1=0.9, b2=0.999, eps=1e-8):
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["m"], g)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["v"], g)
    p = jax.tree_util.tree_map(
        lambda p, m, v: p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), p, m, v)
    return p, {"m": m, "v": v}


def make_step(algo, alpha, theta, lr):
    grad = jax.value_and_grad(layer_loss)

    @jax.jit
    def step(params, states, t, x_pos, x_neg):
        new_p, new_s = [], []
        for p, s in zip(params, states):
            _, g = grad(p, x_pos, x_neg, algo, alpha, theta)
            p2, s2 = adam_update(p, g, s, lr, t)
            new_p.append(p2)
            new_s.append(s2)
            # the next layer sees this layer's output as data: no gradient crosses
            x_pos = jax.lax.stop_gradient(layer(p, x_pos))
            x_neg = jax.lax.stop_gradient(layer(p, x_neg))
        return new_p, new_s
    return step


@jax.jit
def goodness_all_labels(params, x, codes):
    """(N, C) goodness summed over layers for every image paired with every label."""
    def one_label(code):
        h = jnp.concatenate([x, jnp.broadcast_to(code, (x.shape[0], code.shape[0]))], axis=1)
        total = jnp.zeros(x.shape[0])
        for p in params:
            h = layer(p, h)
            total = total + jnp.sum(h * h, axis=1)
        return total
    return jax.vmap(one_label, out_axes=1)(codes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", choices=("symba", "ff"), default="symba")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--theta", type=float, default=2.0)
    ap.add_argument("--icp-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    data = load_dataset("mnist")
    n_classes, hw = data.n_classes, 28 * 28
    rng = np.random.default_rng(1000 + args.seed)
    patterns = (rng.random((n_classes, hw)) < args.icp_rate).astype(np.float32)  # (C, H*W)
    x_train, y_train = jnp.asarray(data.x_train), np.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), np.asarray(data.y_test)
    codes = jnp.asarray(patterns)

    key = jax.random.PRNGKey(args.seed)
    keys = jax.random.split(key, args.layers)
    dims = [2 * hw] + [args.width] * args.layers
    params = [init(k, a, b) for k, a, b in zip(keys, dims[:-1], dims[1:])]
    states = [{"m": jax.tree_util.tree_map(jnp.zeros_like, p),
               "v": jax.tree_util.tree_map(jnp.zeros_like, p)} for p in params]
    step = make_step(args.algo, args.alpha, args.theta, args.lr)

    n = x_train.shape[0]
    history, t = [], 0
    for epoch in range(1, args.epochs + 1):
        perm = rng.permutation(n)
        y_neg = (y_train[perm] + rng.integers(1, n_classes, size=n)) % n_classes
        t0 = time.perf_counter()
        for s in range(0, n, args.batch_size):
            idx = perm[s:s + args.batch_size]
            xb = x_train[idx]
            x_pos = jnp.concatenate([xb, codes[y_train[idx]]], axis=1)
            x_neg = jnp.concatenate([xb, codes[y_neg[s:s + args.batch_size]]], axis=1)
            t += 1
            params, states = step(params, states, t, x_pos, x_neg)
        jax.block_until_ready(params)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = np.concatenate([np.asarray(goodness_all_labels(params, x_test[i:i + 2000], codes))
                               .argmax(1) for i in range(0, x_test.shape[0], 2000)])
        err = float((pred != y_test).mean())
        history.append({"epoch": epoch, "test_error": err, "train_seconds": train_s,
                        "eval_seconds": time.perf_counter() - t1})
        print(f"epoch {epoch:3d}  test error {100 * err:.2f}%  {train_s:.2f}s train", flush=True)
    errs = [h["test_error"] for h in history]
    summary = {"implementation": "JAX " + jax.__version__ + " (scripts/independent_jax.py)",
               "config": vars(args), "epochs": history, "final_test_error": errs[-1],
               "mean_last10_test_error": float(np.mean(errs[-10:])),
               "median_train_seconds": float(np.median([h["train_seconds"] for h in history[1:]]
                                                       or [history[0]["train_seconds"]]))}
    print(json.dumps({k: v for k, v in summary.items() if k != "epochs"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
