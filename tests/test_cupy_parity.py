"""NumPy against a second backend: the same host random numbers, the same results within
what the floating-point format can promise.

The second backend is CuPy on a GPU (skipped visibly, ``pytest -rs``, where CuPy or a GPU
is missing; ``scripts/gpu_check.sh`` runs these on a GPU machine) and, on every machine,
a NumPy stand-in that follows CuPy's schedule (one block per segment, in order) and sums
each of the model's products in another order, as a GPU's blocked products do. So the
comparisons below run, and can fail, without a GPU.

Why these tolerances
--------------------
A different summation order changes a sum of K terms by at most about K u times the sum
of the terms' magnitudes (u the unit roundoff), typically sqrt(K) u. The longest sums
here are a product's inner dimension (794 inputs) and a weight gradient's 2B rows.

* **float64** (u = 1.1e-16): K u is about 1e-13. Adam's division by sqrt(v) amplifies
  it where a gradient nearly cancels: with the stand-in below, parameters after four
  steps differ by up to 1e-12 of the largest (1e-11 of their own value), losses and
  goodness by 3e-15. :data:`RTOL64` = 1e-10 leaves a margin of 100 over that, while a
  real slip (a wrong index, factor or missing term) moves results by far more (every
  product off by 1e-8 fails). Losses, gradients, parameters after several Adam steps
  and goodness are compared at it; predictions must be identical.
* **float32** (u = 6e-8): K u is about 5e-5, sqrt(K) u about 2e-6, and losses average
  over the batch, so per-step losses and goodness are compared at :data:`RTOL32` = 1e-5.
  Parameters are not: Adam's step m / (sqrt(v) + eps) is about lr in size whatever the
  gradient's size, so a gradient that nearly cancels (to 1e-5 of its terms, which some
  of 50,000 do) can take either sign and move its weight by up to 2 lr differently (on
  an H100, 1 of 50,176 weights ended 1.2e-5, 5% of its value, apart after 4 steps). The
  float32 goodness is therefore compared on the same parameters, and a whole training
  epoch by its test error, within :data:`ERROR_MARGIN32` (6 of 300 images). With the
  stand-in: losses differ by 1e-7, goodness by 1e-6, parameters by 5e-4 of the largest
  and 1.3% of their own value; every product off by 1e-4 fails.

Tolerances are relative to each array's largest entry (plus ``rtol`` per entry), so an
entry that is near 0 by cancellation is held to the absolute error its terms allow.
"""
import types

import numpy as np
import pytest

from ffnumpy import train
from ffnumpy.backend import to_host
from ffnumpy.config import Config
from ffnumpy.labels import sample_negative_labels
from ffnumpy.losses import ff_loss, ff_loss_grad, symba_loss, symba_loss_grad
from ffnumpy.saving import build_model
from tests.conftest import _cupy_or_skip, make_tiny_cifar, make_tiny_mnist
from tests.test_backend import NumPyStandIn

RTOL64 = 1e-10  # float64: see the module docstring
RTOL32 = 1e-5  # float32 losses and goodness on the same parameters
ERROR_MARGIN32 = 0.02  # float32 test error after an epoch: a near tie may flip a few images
N_STEPS = 4  # Adam steps before parameters are compared


class ReorderedNumPy(NumPyStandIn):
    """NumPy standing in for CuPy: CuPy's schedule (see :class:`NumPyStandIn`), each
    ``matmul`` summed as two halves of its inner dimension added at the end (the last
    bits differ from NumPy's, as a GPU's do), and the few CUDA calls of the training
    loop (synchronise, device name, free memory) as stubs."""

    cuda = types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
        Device=lambda: types.SimpleNamespace(id=0),
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"NumPy stand-in"},
                                      memGetInfo=lambda: (1 << 40, 1 << 40)))  # (free, total)

    @staticmethod
    def get_default_memory_pool():
        return types.SimpleNamespace(free_bytes=lambda: 0)

    @staticmethod
    def matmul(a, b, out=None):
        k = a.shape[-1] // 2
        result = np.matmul(a[..., :k], b[:k]) + np.matmul(a[..., k:], b[k:])  # (M, N)
        if out is None:
            return result
        out[...] = result
        return out


@pytest.fixture(params=["numpy-stand-in", "cupy"])
def other_xp(request):
    """The backend compared with NumPy: the stand-in, or CuPy where a GPU is present."""
    return ReorderedNumPy() if request.param == "numpy-stand-in" else _cupy_or_skip()


def assert_close(actual, desired, rtol, what):
    """Every entry within ``rtol`` of ``desired``, relative to itself or to the array's
    largest entry (what a different summation order can change it by)."""
    desired = np.asarray(desired)
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    np.testing.assert_allclose(to_host(actual), desired, rtol=rtol, atol=rtol * scale,
                               err_msg=what)


# --- the losses alone ---

def test_losses(other_xp, rng):
    g_pos, g_neg = rng.uniform(0, 5, 64), rng.uniform(0, 5, 64)
    for loss, grad, p in ((ff_loss, ff_loss_grad, 2.0), (symba_loss, symba_loss_grad, 4.0)):
        dev = (other_xp.asarray(g_pos), other_xp.asarray(g_neg))
        assert_close(loss(*dev, p), loss(g_pos, g_neg, p), RTOL64, loss.__name__)
        for a, b in zip(grad(*dev, p), grad(g_pos, g_neg, p)):
            assert_close(a, b, RTOL64, grad.__name__)


# --- steps of a model on both backends ---

def _models_and_data(xp, algo, labels, dtype, rng):
    cfg = Config(algo=algo, labels=labels, width=64, batch_size=256, dtype=dtype)
    x = rng.random((1024, 784), dtype=np.float32).astype(dtype)  # (N, D_img)
    y = rng.integers(0, 10, 1024)
    y_neg = sample_negative_labels(y, 10, rng)
    return [build_model(cfg, 10, (1, 28, 28), m) for m in (np, xp)], x, y, y_neg


def _record_gradients(model):
    """Make ``model`` keep a host copy of every gradient its optimisers are given."""
    log = []
    for opt in model.optimizers:
        def step(grads, original=opt.step):
            log.append([to_host(g).copy() for g in grads])
            return original(grads)
        opt.step = step
    return log


def _train(models, xps, x, y, y_neg, algo):
    """``N_STEPS`` steps on both models; the per-step statistics (loss, mean |dL/dG|)."""
    stats = [[], []]
    for s in range(N_STEPS):
        rows = slice(s * 256, (s + 1) * 256)
        for k, (model, xp) in enumerate(zip(models, xps)):
            batch = (xp.asarray(x[rows]), xp.asarray(y[rows]))
            if algo != "bp":
                batch += (xp.asarray(y_neg[rows]),)
            stats[k].append(to_host(model.train_step(*batch)))
    return stats


@pytest.mark.parametrize("algo, labels", [("symba", "icp"), ("ff", "overlay"), ("bp", "icp")])
def test_float64_steps_gradients_parameters_goodness_and_prediction(other_xp, rng, algo,
                                                                   labels):
    """float64: after each of several Adam steps the losses and every gradient, then the
    parameters, the goodness of every label and the dead ReLUs agree to RTOL64 (module
    docstring); predictions are identical."""
    models, x, y, y_neg = _models_and_data(other_xp, algo, labels, "float64", rng)
    grads = [_record_gradients(m) for m in models]
    stats = _train(models, (np, other_xp), x, y, y_neg, algo)
    for s, (a, b) in enumerate(zip(stats[0], stats[1], strict=True)):
        assert_close(b, a, RTOL64, f"step {s + 1} statistics")
    for i, (step_a, step_b) in enumerate(zip(grads[0], grads[1], strict=True)):
        for j, (a, b) in enumerate(zip(step_a, step_b, strict=True)):
            assert_close(b, a, RTOL64, f"gradient {j} given to optimiser call {i + 1}")
    for j, (a, b) in enumerate(zip(models[0].params(), models[1].params(), strict=True)):
        assert_close(b, a, RTOL64, f"parameter {j} after {N_STEPS} Adam steps")
    x_dev = other_xp.asarray(x[:500])
    if algo != "bp":
        g_np, dead_np = models[0].goodness_and_dead_fraction(x[:500], y[:500])
        g_xp, dead_xp = models[1].goodness_and_dead_fraction(x_dev, other_xp.asarray(y[:500]))
        assert_close(g_xp, g_np, RTOL64, "goodness (L, N, C)")
        np.testing.assert_array_equal(to_host(dead_xp), dead_np)
    np.testing.assert_array_equal(to_host(models[1].predict(x_dev)), models[0].predict(x[:500]))


@pytest.mark.parametrize("algo, labels", [("symba", "icp"), ("ff", "overlay"), ("bp", "icp")])
def test_float32_losses_per_step_and_goodness_on_the_same_parameters(other_xp, rng, algo,
                                                                     labels):
    """float32: what a different summation order leaves intact (module docstring): each
    step's loss to RTOL32, and the goodness of the same parameters to RTOL32. The
    trained parameters themselves are not compared."""
    models, x, y, y_neg = _models_and_data(other_xp, algo, labels, "float32", rng)
    stats = _train(models, (np, other_xp), x, y, y_neg, algo)
    for s, (a, b) in enumerate(zip(stats[0], stats[1], strict=True)):
        assert_close(b[:, 0], a[:, 0], RTOL32, f"step {s + 1} losses")
    if algo == "bp":
        return
    for a, b in zip(models[0].params(), models[1].params(), strict=True):
        b[...] = other_xp.asarray(a)  # the same parameters on both
    goodness = models[1].goodness_per_label(other_xp.asarray(x[:500]), per_layer=True)
    assert_close(goodness, models[0].goodness_per_label(x[:500], per_layer=True), RTOL32,
                 "goodness (L, N, C) of the same parameters")


# --- the whole training loop ---

def _run_both(other_xp, monkeypatch, tmp_path, args):
    """``python -m ffnumpy.train`` on NumPy and on the other backend; both metrics."""
    if isinstance(other_xp, NumPyStandIn):  # --backend cupy gets the stand-in
        monkeypatch.setattr(train, "get_xp", lambda name: other_xp if name == "cupy" else np)
    return [train.main([*args, "--backend", backend, "--out", str(tmp_path / backend)])
            for backend in ("numpy", "cupy")]


@pytest.mark.parametrize("extra", [[], ["--negatives", "hard", "--standardize"]],
                         ids=["plain", "hard-standardize"])
def test_float64_training_loop_on_tiny_cifar(other_xp, monkeypatch, tmp_path, extra):
    """The whole loop in float64 (augmentation on the host, hard negatives, the per-layer
    and dead-ReLU metrics): every epoch's losses to RTOL64, identical test errors, layer
    errors and dead fractions."""
    root = make_tiny_cifar(tmp_path / "data", tar=False)
    runs = _run_both(other_xp, monkeypatch, tmp_path, [
        "cifar10", "--data-dir", str(root), "--epochs", "2", "--width", "64", "--batch-size",
        "64", "--dtype", "float64", *extra])
    for a, b in zip(runs[0]["epochs"], runs[1]["epochs"], strict=True):
        for key in ("loss", "mean_abs_dg_pos", "mean_abs_dg_neg"):
            assert_close(b[key], a[key], RTOL64, f"epoch {a['epoch']} {key}")
        for key in ("test_error", "layer_test_error", "dead_relu_fraction"):
            assert b[key] == a[key], f"epoch {a['epoch']} {key}"


def test_float32_test_error_after_an_epoch(other_xp, monkeypatch, tmp_path):
    """float32, one epoch of the default SymBa loop on a small MNIST: the epoch's loss to
    RTOL32 and the test error within ERROR_MARGIN32 (module docstring). The learning rate
    leaves the net half trained (about 44% error), where a wrong prediction would show."""
    root = tmp_path / "data"
    make_tiny_mnist(root / "mnist", n_train=1200, n_test=300)
    runs = _run_both(other_xp, monkeypatch, tmp_path, [
        "mnist", "--data-dir", str(root), "--epochs", "1", "--width", "64", "--batch-size",
        "100", "--lr", "0.0004"])
    (a,), (b,) = runs[0]["epochs"], runs[1]["epochs"]
    assert 0.1 < a["test_error"] < 0.8  # neither solved nor untrained: errors can differ
    assert_close(b["loss"], a["loss"], RTOL32, "epoch loss")
    assert abs(a["test_error"] - b["test_error"]) <= ERROR_MARGIN32
