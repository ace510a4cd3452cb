"""How much memory a run needs, estimated before anything is allocated.

A run holds the weights, the optimiser's state (Adam: m, v and one work buffer per
parameter), the per-step work buffers of :class:`ffnumpy.backend.Workspace` (or, for
backprop, every layer's activations), the prediction buffers, and the dataset: the
host's float32 images and, on a GPU or in float64, their copy in the run's dtype.
:func:`check_memory` compares the total with what is available (host memory, or free
GPU memory with CuPy, from :func:`ffnumpy.backend.available_memory`) and refuses a run
that cannot fit with one line giving both figures. The figures are estimates that err
high (every buffer counted at its largest); a run that passes can still meet other
processes that allocate meanwhile.
"""
import math

import numpy as np

from .backend import available_memory
from .model import PREDICT_ELEMENTS

HOST_FLOAT = np.dtype(np.float32).itemsize  # datasets are float32 on the host
BP_PREDICT_ROWS = 8192  # BPNet.logits' chunk
ADAM_COPIES = 3  # m, v and a work buffer per parameter (optim.Adam)


class MemoryRefusal(RuntimeError):
    """The run would not fit in memory; the message gives both figures."""


def _input_width(cfg, image_shape):
    """Inputs of the first layer: the image plus the label code's own columns."""
    channels, height, width = image_shape
    d_image = channels * height * width
    if cfg.algo == "bp" or cfg.labels == "overlay":
        return d_image
    return d_image + height * width * (channels if cfg.icp_per_channel else 1)


def estimate(cfg, n_train, n_test, image_shape, n_classes):
    """Bytes a run of ``cfg`` needs, by part.

    Returns
    -------
    dict with "weights", "optimizer", "work buffers", "dataset" (on the device that
    computes) and "host dataset" (the float32 images on the host; with NumPy the two
    dataset entries are one array unless the dtype is float64).
    """
    itemsize = np.dtype(cfg.dtype).itemsize
    d_image = math.prod(image_shape)
    d_in = _input_width(cfg, image_shape)
    n_out = n_classes if cfg.algo == "bp" else 0  # backprop's output layer
    # sums over the layers in closed form: --layers may be far too large for a list
    n_params = (d_in * cfg.width + cfg.width + (cfg.layers - 1) * (cfg.width ** 2 + cfg.width)
                + (cfg.width * n_out + n_out))
    n_codes = 0 if cfg.algo == "bp" else n_classes * d_in  # the label codes (ICP or one-hot)
    rows = min(cfg.batch_size, n_train)  # B
    widest = max(cfg.width, n_out)
    if cfg.algo == "bp":  # every layer's input, pre-activation and activity, kept for backward
        work = (3 * rows * (d_in + cfg.layers * cfg.width + n_out) + n_params
                + 2 * BP_PREDICT_ROWS * widest)
    else:  # z0, z1, dz on 2B rows; z_base, dz_img on B rows; the weight-gradient buffers
        work = (3 * 2 * rows * widest + 2 * rows * widest + 2 * cfg.width * d_in
                + cfg.width * cfg.width + 2 * PREDICT_ELEMENTS
                + cfg.layers * max(n_test, n_train if cfg.negatives == "hard" else 0)
                * n_classes)
    host_images = (n_train + n_test) * d_image * HOST_FLOAT * (2 if cfg.standardize else 1)
    device_images = (n_train + n_test) * d_image * itemsize
    on_host = cfg.backend == "numpy" and itemsize == HOST_FLOAT
    return {"weights": (n_params + n_codes) * itemsize,
            "optimizer": n_params * itemsize * (ADAM_COPIES if cfg.optimizer == "adam" else 0),
            "work buffers": work * itemsize,
            "dataset": 0 if on_host else device_images,
            "host dataset": host_images}


def human(n_bytes):
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n_bytes) < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


def _refuse_if_short(cfg, places, what="this run", advice=None):
    """Raise :class:`MemoryRefusal` if the bytes ``needed`` in any ``(xp, needed)`` place
    exceed what is available there; the message ends with ``advice`` (default: the flags
    that shrink a run)."""
    if advice is None:
        advice = ("use fewer --layers, a smaller --width or --batch-size"
                  f"{', or --dtype float32' if cfg.dtype == 'float64' else ''}")
    for module, needed in places:
        available, where = available_memory(module)
        total = sum(needed.values())
        if available is not None and total > available:
            listed = ", ".join(f"{name} {human(v)}" for name, v in needed.items() if v > 0)
            raise MemoryRefusal(
                f"not enough memory: {what} needs about {human(total)} ({listed}) but "
                f"{where} is {human(available)}; {advice}")


def check_model_memory(cfg, n_classes, image_shape, xp, with_optimizer=False):
    """Raise :class:`MemoryRefusal` if the model a saved file describes cannot fit where
    ``xp`` computes: its weights and label codes, its optimiser state (a checkpoint) and
    its prediction buffers, from the sizes in the file's header before anything is built.
    """
    parts = estimate(cfg, 0, 0, image_shape, n_classes)
    needed = {"weights": parts["weights"],
              "optimizer": parts["optimizer"] if with_optimizer else 0,
              "work buffers": 2 * PREDICT_ELEMENTS * np.dtype(cfg.dtype).itemsize}
    _refuse_if_short(cfg, [(xp, needed)], what="the saved model",
                     advice="the file's header was damaged or edited, or the model was "
                     "trained on a larger machine: evaluate it there")
    return needed


def check_memory(cfg, data, xp):
    """Raise :class:`MemoryRefusal` if a run of ``cfg`` on ``data`` cannot fit.

    With NumPy everything is compared with host memory; with CuPy the weights,
    optimiser state, work buffers and device dataset with free GPU memory, and the
    host dataset with host memory.
    """
    parts = estimate(cfg, data.x_train.shape[0], data.x_test.shape[0], data.image_shape,
                     data.n_classes)
    host_part = parts.pop("host dataset")
    already = data.x_train.nbytes + data.x_test.nbytes  # loaded before the check
    places = [(xp, parts), (np, {"dataset on the host": host_part - already})]
    if xp is np:
        places = [(np, {**parts, "standardised copy": host_part - already})]
    _refuse_if_short(cfg, places)
    return parts

