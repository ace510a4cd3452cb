r"""One FF layer: length-normalised input, linear, ReLU, each with its backward pass.

A Forward-Forward layer computes

.. math:: \hat x = x / \lVert x \rVert, \qquad z = \hat x W^\top + b, \qquad h = \max(0, z)

and learns from a loss on the goodness of ``h`` alone. The normalisation removes the
previous layer's goodness (the length of its activity vector) so that a layer cannot
solve its task by copying it; only the direction of ``x`` passes on [FF]_ (Sec. 2.1).

The backward passes below are exact derivatives of their forwards (proved by the
finite-difference tests). In training only ``dW`` and ``db`` are used: no gradient
crosses from one layer to the next, so ``need_dx=False`` skips ``dx``.
"""
from .backend import xp_of

NORMS = ("l2", "rms")
NORM_EPS = 1e-8  # keeps an all-zero row (every ReLU dead) finite after normalisation


# --- length normalisation ---

def normalize_forward(x, kind="l2", eps=NORM_EPS):
    r"""Scale each row of ``x`` to unit length ("l2") or unit root-mean-square ("rms").

    .. math:: \hat x = \frac{x}{n}, \qquad
              n = \sqrt{k \textstyle\sum_j x_j^2 + \epsilon}, \qquad
              k = 1 \;(\text{l2}), \quad k = 1/D \;(\text{rms})

    "rms" is ``sqrt(D)`` times "l2": Hinton's reference code normalises this way, so
    that a unit of the next layer sees inputs of size about 1 whatever the width.

    Parameters
    ----------
    x : array of shape (B, D)
    kind : {"l2", "rms"}
    eps : float
        Added under the square root, so the map is smooth and finite at x = 0.

    Returns
    -------
    x_hat : array of shape (B, D)
    cache : tuple for :func:`normalize_backward`
    """
    k = norm_scale(kind, x.shape[1])
    n = xp_of(x).sqrt(k * (x * x).sum(axis=1, keepdims=True) + eps)  # (B, 1)
    x_hat = x / n  # (B, D)
    return x_hat, (x_hat, n, k)


def normalize_backward(dx_hat, cache):
    r"""Gradient through :func:`normalize_forward`.

    With :math:`\partial n / \partial x_i = k x_i / n`:

    .. math:: \frac{\partial L}{\partial x_i}
              = \frac{1}{n}\Big(d\hat x_i - k\, \hat x_i \sum_j \hat x_j\, d\hat x_j\Big)

    The component of :math:`d\hat x` along :math:`\hat x` is removed: changing the
    length of x does not change :math:`\hat x` (up to epsilon).

    Parameters
    ----------
    dx_hat : array of shape (B, D)
    cache : from :func:`normalize_forward`

    Returns
    -------
    dx : array of shape (B, D)
    """
    x_hat, n, k = cache
    radial = (x_hat * dx_hat).sum(axis=1, keepdims=True)  # (B, 1)
    return (dx_hat - k * radial * x_hat) / n  # (B, D)


def norm_scale(kind, d):
    if kind == "l2":
        return 1.0
    if kind == "rms":
        return 1.0 / d
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


# --- linear ---

def linear_forward(x, W, b):
    r"""Affine map :math:`z = x W^\top + b`.

    Parameters
    ----------
    x : array of shape (B, D_in)
    W : array of shape (D_out, D_in)
    b : array of shape (D_out,)

    Returns
    -------
    z : array of shape (B, D_out)
    cache : tuple for :func:`linear_backward`
    """
    return x @ W.T + b, (x, W)  # (B, D_out)


def linear_backward(dz, cache, need_dx=True):
    r"""Gradient through :func:`linear_forward`.

    .. math:: \frac{\partial L}{\partial W} = dz^\top x, \qquad
              \frac{\partial L}{\partial b} = \textstyle\sum_{rows} dz, \qquad
              \frac{\partial L}{\partial x} = dz\, W

    Returns
    -------
    dx : array of shape (B, D_in), or None when ``need_dx`` is False
    dW : array of shape (D_out, D_in)
    db : array of shape (D_out,)
    """
    x, W = cache
    dx = dz @ W if need_dx else None  # (B, D_in)
    return dx, dz.T @ x, dz.sum(axis=0)


# --- ReLU ---

def relu_forward(z):
    r""":math:`h = \max(0, z)`. Returns ``h`` and the cache for :func:`relu_backward`."""
    h = xp_of(z).maximum(z, 0)  # (B, D)
    return h, h


def relu_backward(dh, cache):
    r""":math:`dz = dh \cdot [z > 0]`; the derivative at the kink z = 0 is taken as 0."""
    h = cache
    return dh * (h > 0)  # (B, D)


# --- the whole layer ---

def ff_layer_forward(x, W, b, norm="l2"):
    """Normalise, apply the linear map, ReLU: the forward pass of one FF layer.

    Parameters
    ----------
    x : array of shape (B, D_in)
    W : array of shape (D_out, D_in)
    b : array of shape (D_out,)
    norm : {"l2", "rms"}

    Returns
    -------
    h : array of shape (B, D_out)
    cache : tuple for :func:`ff_layer_backward`
    """
    x_hat, norm_cache = normalize_forward(x, norm)
    z, lin_cache = linear_forward(x_hat, W, b)
    h, relu_cache = relu_forward(z)
    return h, (norm_cache, lin_cache, relu_cache)


def ff_layer_backward(dh, cache, need_dx=False):
    """Backward pass of :func:`ff_layer_forward`: ReLU, linear, then (if asked) normalisation.

    Returns
    -------
    dx : array of shape (B, D_in), or None when ``need_dx`` is False
    dW : array of shape (D_out, D_in)
    db : array of shape (D_out,)
    """
    norm_cache, lin_cache, relu_cache = cache
    dz = relu_backward(dh, relu_cache)
    dx_hat, dW, db = linear_backward(dz, lin_cache, need_dx=need_dx)
    dx = normalize_backward(dx_hat, norm_cache) if need_dx else None
    return dx, dW, db


def init_linear(d_in, d_out, rng, dtype="float32"):
    r"""Initial W and b drawn on the host: :math:`U(-1/\sqrt{D_{in}}, 1/\sqrt{D_{in}})`.

    The default initialisation of a fully connected layer in the common deep-learning
    frameworks, which the paper's FF and SymBa runs most likely used (the paper does
    not say).

    Returns
    -------
    W : numpy array of shape (D_out, D_in)
    b : numpy array of shape (D_out,)
    """
    bound = 1.0 / d_in**0.5
    W = rng.uniform(-bound, bound, size=(d_out, d_in)).astype(dtype)  # (D_out, D_in)
    b = rng.uniform(-bound, bound, size=d_out).astype(dtype)  # (D_out,)
    return W, b
