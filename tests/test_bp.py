"""The backprop baseline: softmax cross-entropy and the whole MLP's hand-written backward."""
import numpy as np
import pytest

from ffnumpy.bp import (
    BPNet,
    mlp_backward,
    mlp_forward,
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
)
from ffnumpy.gradcheck import check_directional, check_gradient


def test_cross_entropy_value_and_gradient(rng):
    z = rng.standard_normal((5, 4)) * 3
    y = np.array([0, 3, 1, 1, 2])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert softmax_cross_entropy(z, y) == pytest.approx(-np.log(p[np.arange(5), y]).mean())
    check_gradient(lambda: softmax_cross_entropy(z, y), z, softmax_cross_entropy_grad(z, y), "z")


def test_cross_entropy_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4]])
    with np.errstate(over="raise", invalid="raise"):
        assert np.isfinite(softmax_cross_entropy(z, np.array([2])))
        assert np.all(np.isfinite(softmax_cross_entropy_grad(z, np.array([2]))))


@pytest.mark.parametrize("widths", [(6,), (6, 5), (5, 4, 3)])
def test_whole_network_gradients(rng, widths):
    net = BPNet(4, widths, 3, np, rng, optimizer="sgd", lr=1.0, dtype="float64")
    x = rng.standard_normal((6, 4))
    y = np.array([0, 1, 2, 2, 1, 0])
    logits, caches = mlp_forward(x, net.W, net.b)
    dW, db = mlp_backward(softmax_cross_entropy_grad(logits, y), caches)

    def loss():
        return softmax_cross_entropy(mlp_forward(x, net.W, net.b)[0], y)

    for l in range(net.n_layers):
        check_gradient(loss, net.W[l], dW[l], f"W{l + 1}")
        check_gradient(loss, net.b[l], db[l], f"b{l + 1}")


def test_train_step_applies_the_gradient(rng):
    net = BPNet(4, (5,), 3, np, rng, optimizer="sgd", lr=1.0, dtype="float64")
    x, y = rng.standard_normal((6, 4)), np.array([0, 1, 2, 2, 1, 0])
    logits, caches = mlp_forward(x, net.W, net.b)
    dW, _ = mlp_backward(softmax_cross_entropy_grad(logits, y), caches)
    W0 = [W.copy() for W in net.W]
    net.train_step(x, y)
    for l in range(net.n_layers):
        np.testing.assert_allclose(W0[l] - net.W[l], dW[l], rtol=1e-10, atol=1e-14)


def test_wide_network_directional(rng):
    net = BPNet(50, (40, 30), 10, np, rng, dtype="float64")
    x, y = rng.standard_normal((32, 50)), rng.integers(0, 10, 32)
    logits, caches = mlp_forward(x, net.W, net.b)
    dW, db = mlp_backward(softmax_cross_entropy_grad(logits, y), caches)
    for l in range(net.n_layers):
        check_directional(lambda: softmax_cross_entropy(mlp_forward(x, net.W, net.b)[0], y),
                          net.W[l], dW[l], rng, name=f"W{l + 1}")
