"""NumPy vs CuPy parity: same host random numbers, results equal within float tolerance.

Skipped visibly (pytest -rs) where CuPy or a GPU is missing; scripts/gpu_check.sh runs
them on a GPU machine.
"""
import numpy as np
import pytest

from ffnumpy.backend import to_host
from ffnumpy.config import Config
from ffnumpy.labels import sample_negative_labels
from ffnumpy.losses import ff_loss, ff_loss_grad, symba_loss, symba_loss_grad
from ffnumpy.saving import build_model

RTOL = 1e-4  # float32 sums in a different order on the GPU


def test_losses(cupy, rng):
    g_pos, g_neg = rng.uniform(0, 5, 64), rng.uniform(0, 5, 64)
    for loss, grad, p in ((ff_loss, ff_loss_grad, 2.0), (symba_loss, symba_loss_grad, 4.0)):
        np.testing.assert_allclose(to_host(loss(cupy.asarray(g_pos), cupy.asarray(g_neg), p)),
                                   loss(g_pos, g_neg, p), rtol=1e-12)
        for a, b in zip(grad(cupy.asarray(g_pos), cupy.asarray(g_neg), p), grad(g_pos, g_neg, p)):
            np.testing.assert_allclose(to_host(a), b, rtol=1e-12)


@pytest.mark.parametrize("algo, labels", [("symba", "icp"), ("ff", "overlay"), ("bp", "icp")])
def test_steps_and_prediction(cupy, rng, algo, labels):
    cfg = Config(algo=algo, labels=labels, width=64, batch_size=256)
    x = rng.random((1024, 784), dtype=np.float32)
    y = rng.integers(0, 10, 1024)
    y_neg = sample_negative_labels(y, 10, rng)
    models = [build_model(cfg, 10, (1, 28, 28), xp) for xp in (np, cupy)]
    for s in range(0, 1024, 256):
        stats = []
        for model, xp in zip(models, (np, cupy)):
            batch = (xp.asarray(x[s:s + 256]), xp.asarray(y[s:s + 256]))
            if algo != "bp":
                batch += (xp.asarray(y_neg[s:s + 256]),)
            stats.append(to_host(model.train_step(*batch)))
        np.testing.assert_allclose(stats[1], stats[0], rtol=RTOL, atol=1e-6)
    for a, b in zip(models[0].params(), models[1].params()):
        np.testing.assert_allclose(to_host(b), a, rtol=RTOL, atol=1e-5)
    pred_np = models[0].predict(x[:500])
    pred_cp = to_host(models[1].predict(cupy.asarray(x[:500])))
    assert (pred_np != pred_cp).mean() < 0.01  # ties may break differently in float32


@pytest.mark.parametrize("extra", [[], ["--negatives", "hard", "--standardize"]],
                         ids=["plain", "hard-standardize"])
def test_training_loop_parity_on_tiny_cifar(cupy, tmp_path, extra):
    """The whole loop on both backends: augmentation on the host, hard negatives, the
    dead-ReLU and per-layer metrics, prediction."""
    from ffnumpy.train import main
    from tests.conftest import make_tiny_cifar

    root = make_tiny_cifar(tmp_path / "data", tar=False)
    runs = [main(["cifar10", "--data-dir", str(root), "--epochs", "2", "--width", "64",
                  "--batch-size", "64", "--backend", backend, "--out", str(tmp_path / backend),
                  *extra]) for backend in ("numpy", "cupy")]
    for a, b in zip(runs[0]["epochs"], runs[1]["epochs"], strict=True):
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-2)
        assert abs(a["test_error"] - b["test_error"]) <= 0.04
        np.testing.assert_allclose(b["dead_relu_fraction"], a["dead_relu_fraction"], atol=0.05)
