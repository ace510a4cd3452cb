"""Adam and SGD against steps computed by hand from Kingma & Ba, Algorithm 1."""
import math

import numpy as np
import pytest

from ffnumpy.optim import SGD, Adam, make_optimizer


def adam_by_hand(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Algorithm 1 line by line on Python floats (one scalar parameter)."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_adam_first_step_is_lr_times_sign():
    """With bias correction, step 1 moves every parameter by lr * g / (|g| + eps)."""
    p = np.array([1.0, -2.0, 0.5])
    g = np.array([0.5, -3.0, 1e-3])
    Adam([p], lr=0.1).step([g])
    np.testing.assert_allclose(p, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 3 / (3 + 1e-8),
                                   0.5 - 0.1 * 1e-3 / (1e-3 + 1e-8)], rtol=1e-12)


def test_adam_matches_algorithm_1_over_several_steps():
    grads = [[0.5, -1.0], [0.1, 0.2], [-0.3, 0.05], [2.0, -0.7]]
    p = np.array([1.0, -2.0])
    opt = Adam([p], lr=0.01)
    for g in grads:
        opt.step([np.array(g)])
    expected = [adam_by_hand(1.0, [g[0] for g in grads], 0.01),
                adam_by_hand(-2.0, [g[1] for g in grads], 0.01)]
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert opt.t == len(grads)


def test_adam_state_round_trip():
    p1, p2 = np.array([1.0, 2.0]), np.array([1.0, 2.0])
    a, b = Adam([p1], lr=0.1), Adam([p2], lr=0.1)
    a.step([np.array([0.3, -0.2])])
    b.load_state_dict(a.state_dict())
    p2[...] = p1
    a.step([np.array([0.1, 0.1])])
    b.step([np.array([0.1, 0.1])])
    np.testing.assert_array_equal(p1, p2)


def test_sgd_step_and_in_place_update():
    p = np.array([1.0, 2.0])
    ref = p
    SGD([p], lr=0.5).step([np.array([2.0, -2.0])])
    np.testing.assert_array_equal(ref, [0.0, 3.0])  # the caller's array was updated


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="adam"):
        make_optimizer("rmsprop", [], 0.1)
