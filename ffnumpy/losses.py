r"""Goodness and the two layer-local losses, each beside its hand-derived gradient.

Every function takes and returns arrays of the caller's array module and dtype
(float64 in, float64 out), so the float64 gradient checks in ``tests/`` test the
same code that trains in float32.

References
----------
.. [FF] G. Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations",
   arXiv:2212.13345, 2022.
.. [SymBa] H.-C. Lee and J. Song, "SymBa: Symmetric Backpropagation-Free Contrastive
   Learning with Forward-Forward Algorithm for Optimizing Convergence",
   arXiv:2303.08418v1, 2023 (``../shared/paper/symba-paper.txt``).
"""
from .backend import xp_of

GOODNESS_KINDS = ("sum", "mean")
REDUCTIONS = ("mean", "none")


# --- numerically stable building blocks ---

def softplus(u):
    r"""Stable :math:`\log(1 + e^u)`: never exponentiates a large positive number.

    ``logaddexp(0, u) = max(0, u) + log1p(exp(-|u|))`` is finite for any finite ``u``.
    """
    return xp_of(u).logaddexp(0, u)


def sigmoid(u):
    r"""Stable :math:`\sigma(u) = 1 / (1 + e^{-u})`, the derivative of :func:`softplus`.

    Written as :math:`\exp(-\mathrm{softplus}(-u))`, which is finite and in [0, 1] for all u.
    """
    return xp_of(u).exp(-softplus(-u))


def _reduce(values, reduction):
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _scale(like, reduction):
    """The factor d(reduced)/d(element): 1/B for a mean, 1 for none."""
    return 1.0 / like.size if reduction == "mean" else 1.0


# --- goodness, Eq. (1) ---

def goodness(h, kind="sum"):
    r"""Goodness of each row of activities.

    SymBa (arXiv:2303.08418v1), Eq. (1):

    .. math:: G = \sum_j y_j^2 \quad (\text{kind="sum"}), \qquad
              G = \frac{1}{D} \sum_j y_j^2 \quad (\text{kind="mean"})

    Parameters
    ----------
    h : array of shape (B, D)
        Activities :math:`y` of one layer (after the ReLU).
    kind : {"sum", "mean"}
        "sum" is the paper's Eq. (1); "mean" divides by the width D, which keeps the
        goodness independent of the layer width (as several public FF codes do).

    Returns
    -------
    g : array of shape (B,)
    """
    # einsum sums the squares in one pass without a (B, D) temporary
    if kind == "sum":
        return xp_of(h).einsum("ij,ij->i", h, h)  # (B,)
    if kind == "mean":
        return xp_of(h).einsum("ij,ij->i", h, h) / h.shape[1]  # (B,)
    raise ValueError(f"goodness kind must be one of {GOODNESS_KINDS}, got {kind!r}")


def goodness_backward(dg, h, kind="sum"):
    r"""Gradient of a loss through :func:`goodness`.

    .. math:: \frac{\partial G}{\partial y_j} = 2 y_j \;(\text{sum}), \qquad
              \frac{2 y_j}{D} \;(\text{mean}),
              \qquad \text{so} \quad dh = dG \, \frac{\partial G}{\partial y}

    This is the :math:`\sum_j 2 y_j \nabla y_j` factor of Eqs. (4)-(5).

    Parameters
    ----------
    dg : array of shape (B,)
        dL/dG for each row.
    h : array of shape (B, D)
    kind : {"sum", "mean"}

    Returns
    -------
    dh : array of shape (B, D)
    """
    return (goodness_backward_factor(kind, h.shape[1]) * dg)[:, None] * h  # (B, D)


def goodness_backward_factor(kind, width):
    """The c of dG/dy_j = c y_j: 2 for "sum", 2/D for "mean"."""
    if kind not in GOODNESS_KINDS:
        raise ValueError(f"goodness kind must be one of {GOODNESS_KINDS}, got {kind!r}")
    return 2.0 if kind == "sum" else 2.0 / width


# --- the FF loss, Eqs. (2)-(5) ---

def ff_loss(g_pos, g_neg, theta=2.0, reduction="mean"):
    r"""Hinton's FF loss with threshold ``theta``.

    SymBa (arXiv:2303.08418v1), Eqs. (2)-(3):

    .. math:: L_{pos} = \log(1 + e^{\theta - G_{pos}}), \quad
              L_{neg} = \log(1 + e^{G_{neg} - \theta}), \quad
              L_{FF} = L_{pos} + L_{neg}

    Parameters
    ----------
    g_pos, g_neg : array of shape (B,)
        Goodness of the positive and negative samples.
    theta : float
        Threshold :math:`\theta` (paper Table 1: 2.0).
    reduction : {"mean", "none"}
        "mean" averages :math:`L_{FF}` over the batch; "none" returns it per pair.

    Returns
    -------
    loss : scalar array, or array of shape (B,) for reduction="none"
    """
    return _reduce(softplus(theta - g_pos) + softplus(g_neg - theta), reduction)


def ff_loss_grad(g_pos, g_neg, theta=2.0, reduction="mean"):
    r"""Gradient of :func:`ff_loss` with respect to the goodnesses.

    Since :math:`\frac{d}{du}\log(1+e^u) = \sigma(u) = \frac{e^u}{1+e^u}`:

    .. math:: \frac{\partial L_{FF}}{\partial G_{pos}} = -\sigma(\theta - G_{pos})
              = -\frac{e^{\theta - G_{pos}}}{1 + e^{\theta - G_{pos}}}, \qquad
              \frac{\partial L_{FF}}{\partial G_{neg}} = \sigma(G_{neg} - \theta)
              = \frac{e^{G_{neg} - \theta}}{1 + e^{G_{neg} - \theta}}

    Multiplied by :math:`\partial G / \partial y_j = 2 y_j` (:func:`goodness_backward`)
    these are Eqs. (4)-(5). Near convergence (:math:`G_{pos} \to \infty`,
    :math:`G_{neg} \to 0`) the first vanishes while the second tends to
    :math:`\sigma(-\theta)`: the asymmetry of Eqs. (6)-(7).

    Returns
    -------
    dg_pos, dg_neg : arrays of shape (B,)
        Divided by B when reduction="mean".
    """
    scale = _scale(g_pos, reduction)
    return -scale * sigmoid(theta - g_pos), scale * sigmoid(g_neg - theta)


# --- the SymBa loss, Eqs. (10)-(12) ---

def symba_loss(g_pos, g_neg, alpha=4.0, reduction="mean"):
    r"""The SymBa loss with scale ``alpha``; positive i is paired with negative i.

    SymBa (arXiv:2303.08418v1), Eqs. (10)-(11):

    .. math:: \Delta = G_{pos} - G_{neg}, \qquad L_{SymBa} = \log(1 + e^{-\alpha \Delta})

    Parameters
    ----------
    g_pos, g_neg : array of shape (B,)
        Goodness of positive sample i and of its paired negative sample i.
    alpha : float
        Scale :math:`\alpha` (paper Sec. 4.1: 4.0).
    reduction : {"mean", "none"}

    Returns
    -------
    loss : scalar array, or array of shape (B,) for reduction="none"
    """
    delta = g_pos - g_neg  # (B,)
    return _reduce(softplus(-alpha * delta), reduction)


def symba_loss_grad(g_pos, g_neg, alpha=4.0, reduction="mean"):
    r"""Gradient of :func:`symba_loss` with respect to the goodnesses.

    .. math:: \frac{\partial L}{\partial \Delta} = -\alpha\, \sigma(-\alpha \Delta), \qquad
              \frac{\partial L}{\partial G_{pos}} = -\alpha\, \sigma(-\alpha\Delta)
              = -\frac{\partial L}{\partial G_{neg}}

    The two gradients have equal size and opposite sign for every pair, whatever
    the goodnesses: the symmetry the paper's Figure 1 shows, and the reason
    Eq. (12) has a single convergence point.

    Returns
    -------
    dg_pos, dg_neg : arrays of shape (B,)
        Divided by B when reduction="mean".
    """
    delta = g_pos - g_neg  # (B,)
    d_delta = -alpha * _scale(delta, reduction) * sigmoid(-alpha * delta)  # (B,)
    return d_delta, -d_delta


LOSSES = {"ff": (ff_loss, ff_loss_grad), "symba": (symba_loss, symba_loss_grad)}
