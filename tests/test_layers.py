"""The FF layer (normalisation, linear, ReLU) and the FF/SymBa network's local gradients,
checked in float64 against central differences, every parameter tensor separately."""
import numpy as np
import pytest

from ffnumpy.gradcheck import check_directional, check_gradient
from ffnumpy.labels import icp_encoder, overlay_encoder
from ffnumpy.layers import (
    ff_layer_backward,
    ff_layer_forward,
    linear_backward,
    linear_forward,
    normalize_backward,
    normalize_forward,
    relu_backward,
    relu_forward,
)
from ffnumpy.losses import LOSSES, goodness, goodness_backward
from ffnumpy.model import FFNet


def away_from_kink(z, margin=0.05):
    """Push pre-activations at least ``margin`` from 0 so finite differences never cross it."""
    return np.where(np.abs(z) < margin, np.sign(z + 1e-12) * margin, z)


@pytest.mark.parametrize("kind", ["l2", "rms"])
def test_normalize_value_and_gradient(rng, kind):
    x = rng.standard_normal((3, 5))
    x_hat, cache = normalize_forward(x, kind)
    lengths = np.linalg.norm(x_hat, axis=1)
    np.testing.assert_allclose(lengths, 1.0 if kind == "l2" else np.sqrt(5), rtol=1e-7)
    w = rng.standard_normal(x.shape)
    check_gradient(lambda: (w * normalize_forward(x, kind)[0]).sum(), x,
                   normalize_backward(w, cache), "x")


def test_linear_gradients(rng):
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    z, cache = linear_forward(x, W, b)
    w = rng.standard_normal(z.shape)
    dx, dW, db = linear_backward(w, cache)

    def f():
        return (w * linear_forward(x, W, b)[0]).sum()

    check_gradient(f, x, dx, "x")
    check_gradient(f, W, dW, "W")
    check_gradient(f, b, db, "b")


def test_relu_gradient(rng):
    z = away_from_kink(rng.standard_normal((4, 6)))
    h, cache = relu_forward(z)
    assert np.all(h >= 0) and np.all(h[z < 0] == 0)
    w = rng.standard_normal(z.shape)
    check_gradient(lambda: (w * relu_forward(z)[0]).sum(), z, relu_backward(w, cache), "z")


@pytest.mark.parametrize("algo", ["symba", "ff"])
@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_whole_layer_gradients(rng, algo, norm, kind):
    """Loss of one layer through goodness, ReLU, linear and normalisation: dx, dW, db."""
    B = 3
    x = rng.uniform(0.2, 1.0, size=(2 * B, 5))
    W = rng.standard_normal((4, 5))
    b = rng.standard_normal(4)
    loss_fn, grad_fn = LOSSES[algo]
    params = {"alpha": 4.0} if algo == "symba" else {"theta": 2.0}

    def loss():
        h, _ = ff_layer_forward(x, W, b, norm)
        g = goodness(h, kind)
        return loss_fn(g[:B], g[B:], **params)

    h, cache = ff_layer_forward(x, W, b, norm)
    assert np.min(np.abs(cache[1][0] @ W.T + b)) > 1e-4  # not on the kink
    g = goodness(h, kind)
    dg_pos, dg_neg = grad_fn(g[:B], g[B:], **params)
    dh = goodness_backward(np.concatenate([dg_pos, dg_neg]), h, kind)
    dx, dW, db = ff_layer_backward(dh, cache, need_dx=True)
    check_gradient(loss, W, dW, "W")
    check_gradient(loss, b, db, "b")
    check_gradient(loss, x, dx, "x")


def test_directional_check_on_a_wide_layer(rng):
    x = rng.uniform(0.0, 1.0, size=(64, 100))
    W = rng.standard_normal((50, 100)) * 0.1
    b = rng.standard_normal(50) * 0.1
    w = rng.standard_normal((64, 50))
    h, cache = ff_layer_forward(x, W, b)
    _, dW, db = ff_layer_backward(w, cache)

    def f():
        return (w * ff_layer_forward(x, W, b)[0]).sum()

    check_directional(f, W, dW, rng, name="W")
    check_directional(f, b, db, rng, name="b")


# --- the network: split first-layer product and the whole training step ---

def _tiny_net(rng, labels, algo, kind="sum", norm="l2", widths=(6, 5)):
    if labels == "icp":
        encoder = icp_encoder(3, 8, 8, 0.4, rng, dtype="float64")
    else:
        encoder = overlay_encoder(3, 8, dtype="float64")
    net = FFNet(encoder, widths, np, rng, algo=algo, goodness_kind=kind, norm=norm,
                optimizer="sgd", lr=1.0, dtype="float64")
    return net, encoder


def _reference_layer_losses(net, encoder, x, y, y_neg, W=None):
    """Each layer's loss built from the generic, unsplit functions on encoded inputs."""
    W = W if W is not None else net.W
    loss_fn, _ = LOSSES[net.algo]
    B = x.shape[0]
    h = np.concatenate([encoder.encode(x, y), encoder.encode(x, y_neg)])  # (2B, D_in)
    losses = []
    for l in range(net.n_layers):
        h, _ = ff_layer_forward(h, W[l], net.b[l], net.norm)
        g = goodness(h, net.goodness_kind)
        losses.append(loss_fn(g[:B], g[B:], **net.loss_params))
    return losses


@pytest.mark.parametrize("labels", ["icp", "overlay"])
@pytest.mark.parametrize("algo", ["symba", "ff"])
@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_network_step_gradients(rng, labels, algo, norm, kind):
    """The training step's dW, db of every layer (split product, implicit ReLU mask) equal
    the finite-difference gradient of that layer's own loss with its input held fixed."""
    net, encoder = _tiny_net(rng, labels, algo, kind=kind, norm=norm)
    B = 4
    x = rng.uniform(0.0, 1.0, size=(B, encoder.d_image))
    y = np.array([0, 1, 2, 1])
    y_neg = np.array([1, 2, 0, 0])
    before = [p.copy() for p in net.params()]
    ref_losses = _reference_layer_losses(net, encoder, x, y, y_neg)
    stats = net.train_step(x, y, y_neg)  # SGD with lr 1: the update is -gradient
    np.testing.assert_allclose(stats[:, 0], ref_losses, rtol=1e-12)
    grads = [b - a for a, b in zip(net.params(), before)]
    for p, old in zip(net.params(), before):  # back to the point where gradients were taken
        p[...] = old
    for l in range(net.n_layers):
        # layer l's loss depends on W_l, b_l and (as fixed input) on layers below
        def layer_loss(l=l):
            return _reference_layer_losses(net, encoder, x, y, y_neg)[l]

        check_gradient(layer_loss, net.W[l], grads[2 * l], f"W{l + 1}")
        check_gradient(layer_loss, net.b[l], grads[2 * l + 1], f"b{l + 1}")


@pytest.mark.parametrize("labels", ["icp", "overlay"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_split_prediction_equals_explicit_encoding(rng, labels, kind):
    net, encoder = _tiny_net(rng, labels, "symba", kind=kind)
    x = rng.uniform(0.0, 1.0, size=(7, encoder.d_image))
    got = net.goodness_per_label(x, per_layer=True)  # (L, N, C)
    for c in range(encoder.n_classes):
        h = encoder.encode(x, np.full(7, c))
        for l in range(net.n_layers):
            h, _ = ff_layer_forward(h, net.W[l], net.b[l], net.norm)
            np.testing.assert_allclose(got[l, :, c], goodness(h, kind), rtol=1e-10)
    np.testing.assert_array_equal(net.predict(x), got.sum(axis=0).argmax(axis=1))


def test_no_gradient_crosses_layers(rng):
    """Changing layer 2's weights never changes layer 1's update, though the step moves
    layer 1 and gives layer 2 a different update."""
    net_a, enc = _tiny_net(np.random.default_rng(5), "icp", "symba")
    net_b, _ = _tiny_net(np.random.default_rng(5), "icp", "symba")
    net_b.W[1][...] = rng.standard_normal(net_b.W[1].shape)
    before = [(net.W[0].copy(), net.W[1].copy()) for net in (net_a, net_b)]
    x = rng.uniform(size=(4, enc.d_image))
    y, y_neg = np.array([0, 1, 2, 0]), np.array([1, 0, 0, 2])
    net_a.train_step(x, y, y_neg)
    net_b.train_step(x, y, y_neg)
    np.testing.assert_array_equal(net_a.W[0], net_b.W[0])
    assert not np.allclose(net_a.W[0], before[0][0])  # layer 1 did learn
    updates = [net.W[1] - W1 for net, (_, W1) in zip((net_a, net_b), before)]
    assert not np.allclose(*updates)  # layer 2's own update saw its own weights


def test_dead_fraction_comes_from_the_true_label_rows_of_the_label_pass(rng, monkeypatch):
    """Dead ReLUs (silent on every image paired with its own label) read from the one pass
    over all labels equal those of an explicit forward pass with the true labels."""
    from ffnumpy import model

    monkeypatch.setattr(model, "PREDICT_ELEMENTS", 36)  # chunks of 2 images: 2, 2, 2, 1
    net, encoder = _tiny_net(rng, "overlay", "symba")
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    x = rng.uniform(0.0, 0.1, size=(7, encoder.d_image))
    x[:, 5] = y == 1  # pixel 5 marks the images of class 1
    net.W[0][:3], net.b[0][:3] = 0.0, -0.05
    net.W[0][0, 2] = 1.0  # unit 1 fires only on label 2's one-hot pixel, never a true label
    net.W[0][1, [1, 5]], net.b[0][1] = 1.0, -1.2  # unit 2 only on a class-1 image with label 1
    net.b[0][2] = -1.0  # unit 3 never fires
    got_g, got_dead = net.goodness_and_dead_fraction(x, y)  # (L, N, C), (L,)
    np.testing.assert_array_equal(got_g, net.goodness_per_label(x, per_layer=True))
    h, want = encoder.encode(x, y), []
    for l in range(net.n_layers):
        h, _ = ff_layer_forward(h, net.W[l], net.b[l], net.norm)
        want.append(1.0 - (h.max(axis=0) > 0).mean())
    np.testing.assert_array_equal(got_dead, want)
    assert got_dead[0] >= 2 / 6  # units 1 and 3 counted, unit 2 not
