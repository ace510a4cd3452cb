r"""Finite-difference gradient checking, used by the tests and the notebooks.

For a scalar function f of an array x, the central difference

.. math:: \frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h}

has error O(h^2); in float64 with h = 1e-6 it agrees with an exact derivative to
about 1e-9 relative, so a tolerance of 1e-5 catches any wrong factor. Two modes:
every entry (tiny shapes), and random directions u, comparing
:math:`\langle \nabla f, u\rangle` with :math:`(f(x+hu) - f(x-hu))/2h` (larger shapes).
"""
import numpy as np

RTOL, ATOL = 1e-5, 1e-8  # tight enough to catch a wrong factor inside a sigmoid
STEP = 1e-6


class GradientCheckError(AssertionError):
    """The analytic gradient disagrees with the finite difference."""


def numerical_gradient(f, x, step=STEP):
    """Central-difference gradient of the scalar ``f()`` w.r.t. every entry of ``x``.

    ``x`` is perturbed in place and restored; ``f`` takes no arguments and reads it.

    Returns
    -------
    array of the shape of ``x``
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + step
        f_plus = float(f())
        flat[i] = old - step
        f_minus = float(f())
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * step)
    return grad


def check_gradient(f, x, analytic, name="x", rtol=RTOL, atol=ATOL, step=STEP):
    """Assert that ``analytic`` equals the central-difference gradient of ``f`` at ``x``.

    Raises
    ------
    GradientCheckError
        Naming the parameter, the worst entry, both values and the tolerance.
    """
    numeric = numerical_gradient(f, x, step)
    analytic = np.asarray(analytic)
    if analytic.shape != numeric.shape:
        raise GradientCheckError(f"{name}: analytic gradient has shape {analytic.shape}, "
                                 f"parameter has shape {numeric.shape}")
    bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
    if bad.any():
        err = np.abs(analytic - numeric) - rtol * np.abs(numeric)
        i = np.unravel_index(np.argmax(err), err.shape)
        raise GradientCheckError(
            f"{name}: {bad.sum()} of {bad.size} entries disagree; worst at {i}: analytic "
            f"{analytic[i]:.10g} vs numeric {numeric[i]:.10g} (rtol={rtol}, atol={atol})")
    return numeric


def check_directional(f, x, analytic, rng, n_directions=5, name="x", rtol=RTOL, atol=ATOL,
                      step=STEP):
    """Compare <analytic, u> with the central difference of ``f`` along random unit u.

    Costs two evaluations of ``f`` per direction, whatever the size of ``x``.
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {x.dtype}")
    analytic = np.asarray(analytic)
    for k in range(n_directions):
        u = rng.standard_normal(x.shape)
        u /= np.linalg.norm(u)
        x0 = x.copy()
        x[...] = x0 + step * u
        f_plus = float(f())
        x[...] = x0 - step * u
        f_minus = float(f())
        x[...] = x0
        numeric = (f_plus - f_minus) / (2 * step)
        exact = float((analytic * u).sum())
        if not np.isclose(exact, numeric, rtol=rtol, atol=atol):
            raise GradientCheckError(
                f"{name}: direction {k}: analytic {exact:.10g} vs numeric {numeric:.10g} "
                f"(rtol={rtol}, atol={atol})")
