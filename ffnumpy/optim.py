r"""Optimisers written by hand: Adam (Kingma & Ba, Algorithm 1) and plain SGD.

Both update a list of parameter arrays in place from a list of gradients of the
same shapes, so a model keeps its references to its weights. All state lives in
the optimiser object (``m``, ``v``, ``t``) and can be saved and restored with
:meth:`state_dict` / :meth:`load_state_dict`.
"""
from functools import partial

from .backend import row_blocks, run_blocks, xp_of

OPTIMIZERS = ("adam", "sgd")


class SGD:
    r"""Plain stochastic gradient descent, :math:`\theta \leftarrow \theta - \eta\, g`."""

    def __init__(self, params, lr=0.01):
        self.params = params
        self.lr = lr
        self.t = 0

    def step(self, grads):
        """Apply one update to every parameter from its gradient."""
        self.t += 1
        for p, g in zip(self.params, grads):
            p -= self.lr * g

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = int(state["t"])


class Adam:
    r"""Adam, Kingma & Ba (arXiv:1412.6980), Algorithm 1, with bias correction.

    For each parameter :math:`\theta` with gradient :math:`g_t` at step :math:`t`:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

        \hat m_t = m_t / (1-\beta_1^t), \qquad \hat v_t = v_t / (1-\beta_2^t)

        \theta_t = \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    Defaults are the paper's: beta1 0.9, beta2 0.999, eps 1e-8.
    """

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [p * 0 for p in params]  # first moments, same shape, dtype and device
        self.v = [p * 0 for p in params]  # second moments
        self._scratch = [p * 0 for p in params]  # one work buffer per parameter
        self.t = 0

    def step(self, grads):
        """Apply one Adam update to every parameter from its gradient."""
        self.t += 1
        # Fold both bias corrections into one step size (Algorithm 1's last line rewritten
        # as in Sec. 2 of the paper); eps is scaled to match the uncorrected form exactly.
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        step_size = self.lr * c2**0.5 / c1
        eps_hat = self.eps * c2**0.5
        for p, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self._scratch):
            xp = xp_of(p)
            update = partial(adam_update_rows, p=p, g=g, m=m, v=v, tmp=tmp, beta1=self.beta1,
                             beta2=self.beta2, step_size=step_size, eps_hat=eps_hat)
            run_blocks(xp, update, row_blocks(xp, p.shape[0], p.size // max(1, p.shape[0])))

    def state_dict(self):
        return {"t": self.t, "m": list(self.m), "v": list(self.v)}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for dst, src in zip(self.m + self.v, list(state["m"]) + list(state["v"])):
            dst[...] = src


def adam_update_rows(rows, p, g, m, v, tmp, beta1, beta2, step_size, eps_hat):
    r"""One step of Kingma & Ba's Algorithm 1 on ``rows`` of a parameter, in place.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
        \theta_t = \theta_{t-1} - \eta_t \frac{m_t}{\sqrt{v_t} + \hat\epsilon}

    with both bias corrections folded into :math:`\eta_t = \eta \sqrt{1-\beta_2^t} /
    (1-\beta_1^t)` (``step_size``) and :math:`\hat\epsilon = \epsilon
    \sqrt{1-\beta_2^t}` (``eps_hat``), which equals Algorithm 1's
    :math:`\eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)` exactly.

    Parameters
    ----------
    rows : slice
        The rows to update (:func:`ffnumpy.backend.run_blocks` hands out blocks).
    p, g, m, v : arrays of one shape
        Parameter, gradient, first and second moments; ``p``, ``m`` and ``v`` are
        updated in place.
    tmp : array of the same shape
        Work buffer.
    beta1, beta2, step_size, eps_hat : float
    """
    xp = xp_of(p)
    p, g, m, v, tmp = p[rows], g[rows], m[rows], v[rows], tmp[rows]  # views
    m *= beta1  # m_t = beta1 m_{t-1} ...
    m += xp.multiply(g, 1.0 - beta1, out=tmp)  # ... + (1 - beta1) g_t
    v *= beta2  # v_t = beta2 v_{t-1} ...
    xp.multiply(g, g, out=tmp)  # g_t^2
    tmp *= 1.0 - beta2
    v += tmp  # ... + (1 - beta2) g_t^2
    xp.sqrt(v, out=tmp)  # sqrt(v_t) ...
    tmp += eps_hat  # ... + eps_hat: the bias-corrected denominator, times sqrt(1 - beta2^t)
    xp.divide(m, tmp, out=tmp)  # m_t / (sqrt(v_t) + eps_hat)
    tmp *= step_size  # times lr sqrt(1 - beta2^t) / (1 - beta1^t): both corrections
    p -= tmp  # theta_t = theta_{t-1} - step


def make_optimizer(name, params, lr):
    """Build the optimiser ``name`` ("adam" or "sgd") over ``params``."""
    if name == "adam":
        return Adam(params, lr=lr)
    if name == "sgd":
        return SGD(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
