r"""Optimisers written by hand: Adam (Kingma & Ba, Algorithm 1) and plain SGD.

Both update a list of parameter arrays in place from a list of gradients of the
same shapes, so a model keeps its references to its weights. All state lives in
the optimiser object (``m``, ``v``, ``t``) and can be saved and restored with
:meth:`state_dict` / :meth:`load_state_dict`.
"""
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

            def update(rows, p=p, g=g, m=m, v=v, tmp=tmp):
                # the update of Algorithm 1 on these rows, in preallocated buffers
                p, g, m, v, tmp = p[rows], g[rows], m[rows], v[rows], tmp[rows]
                m *= self.beta1
                m += xp.multiply(g, 1.0 - self.beta1, out=tmp)
                v *= self.beta2
                xp.multiply(g, g, out=tmp)
                tmp *= 1.0 - self.beta2
                v += tmp
                xp.sqrt(v, out=tmp)
                tmp += eps_hat
                xp.divide(m, tmp, out=tmp)
                tmp *= step_size
                p -= tmp

            run_blocks(xp, update, row_blocks(xp, p.shape[0], p.size // max(1, p.shape[0])))

    def state_dict(self):
        return {"t": self.t, "m": list(self.m), "v": list(self.v)}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for dst, src in zip(self.m + self.v, list(state["m"]) + list(state["v"])):
            dst[...] = src


def make_optimizer(name, params, lr):
    """Build the optimiser ``name`` ("adam" or "sgd") over ``params``."""
    if name == "adam":
        return Adam(params, lr=lr)
    if name == "sgd":
        return SGD(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
