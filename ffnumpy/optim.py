r"""Optimisers written by hand: Adam (Kingma & Ba, Algorithm 1) and plain SGD.

Both update a list of parameter arrays in place from a list of gradients of the
same shapes, so a model keeps its references to its weights. All state lives in
the optimiser object (``m``, ``v``, ``t``) and can be saved and restored with
:meth:`state_dict` / :meth:`load_state_dict`.
"""
OPTIMIZERS = ("adam", "sgd")
SCRATCH_MIN_SIZE = 4096  # parameters at least this large get a preallocated Adam buffer


def _mul(a, b, out):
    return _xp(out).multiply(a, b, out=out)


def _div(a, b, out):
    return _xp(out).divide(a, b, out=out)


def _sqrt(a, out):
    return _xp(out).sqrt(a, out=out)


def _xp(a):
    from .backend import xp_of
    return xp_of(a)


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
        # one scratch buffer per large parameter (small ones use plain expressions)
        self._scratch = [p * 0 if p.size >= SCRATCH_MIN_SIZE else None for p in params]
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
            # the update of Algorithm 1, written into preallocated buffers (no temporaries)
            m *= self.beta1
            m += g * (1.0 - self.beta1) if tmp is None else _mul(g, 1.0 - self.beta1, tmp)
            if tmp is None:
                v *= self.beta2
                v += (1.0 - self.beta2) * (g * g)
                p -= step_size * m / (v**0.5 + eps_hat)
                continue
            v *= self.beta2
            _mul(g, g, tmp)
            tmp *= 1.0 - self.beta2
            v += tmp
            _sqrt(v, tmp)
            tmp += eps_hat
            _div(m, tmp, tmp)
            tmp *= step_size
            p -= tmp

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
