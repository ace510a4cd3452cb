"""The CPU speed machinery: reused work buffers and element-wise work split over threads.

Splitting must not change a single result: the network's step and prediction with
rows cut into many small blocks on the thread pool equal those of one block."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ffnumpy import backend, model
from ffnumpy.backend import Workspace, row_blocks, run_blocks
from ffnumpy.labels import icp_encoder, overlay_encoder, sample_negative_labels
from ffnumpy.model import FFNet


@pytest.mark.parametrize("n_rows,segment", [(10, None), (10, 5), (7, 3), (1, None)])
def test_row_blocks_cover_every_row_once_within_segments(monkeypatch, n_rows, segment):
    monkeypatch.setattr(backend, "N_THREADS", 4)
    monkeypatch.setattr(backend, "MIN_BLOCK_ELEMENTS", 1)
    blocks = row_blocks(np, n_rows, row_size=3, segment=segment)
    covered = np.concatenate([np.arange(n_rows)[b] for b in blocks])
    np.testing.assert_array_equal(covered, np.arange(n_rows))
    seg = segment or n_rows
    for b in blocks:
        assert b.start // seg == (b.stop - 1) // seg  # never crosses a segment boundary


def test_row_blocks_keep_small_work_in_one_block(monkeypatch):
    monkeypatch.setattr(backend, "N_THREADS", 8)
    assert row_blocks(np, 100, row_size=10) == [slice(0, 100)]  # 1,000 elements: not worth a thread
    busy = row_blocks(np, 64, row_size=2048)  # 2**17 elements: two blocks for eight threads
    assert len(busy) == 2
    many = row_blocks(np, 8192, row_size=500)  # 4 M elements: blocks of at most 2**18
    assert len(many) == 16 and all(b.stop - b.start == 512 for b in many)


def test_run_blocks_raises_what_a_block_raised():
    def fn(rows):
        if rows.start > 0:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        run_blocks(np, fn, [slice(0, 1), slice(1, 2)])


def test_workspace_reuses_and_grows_its_buffers():
    ws = Workspace(np, "float32")
    a = ws.get("z", (4, 3))
    b = ws.get("z", (2, 3))
    assert a.dtype == np.float32 and b.shape == (2, 3)
    assert np.shares_memory(a, b)  # the same buffer, no new allocation
    c = ws.get("z", (5, 4))  # larger: a new buffer replaces the old one
    assert c.shape == (5, 4) and not np.shares_memory(a, c)
    assert not np.shares_memory(c, ws.get("other", (5, 4)))
    assert ws.nbytes == 2 * 5 * 4 * 4


def test_thread_count_rejects_a_bad_setting(monkeypatch):
    """A bad FFNUMPY_NUM_THREADS leaves ffnumpy importable and is reported, in one line,
    when a backend is asked for."""
    monkeypatch.setenv("FFNUMPY_NUM_THREADS", "two")
    count, error = backend._thread_count()
    assert count == backend._usable_cores() and "must be a positive integer" in error
    monkeypatch.setattr(backend, "THREADS_ERROR", error)
    with pytest.raises(backend.BackendError, match="FFNUMPY_NUM_THREADS must be a positive"):
        backend.get_xp("numpy")
    monkeypatch.setenv("FFNUMPY_NUM_THREADS", "3")
    assert backend._thread_count() == (3, None)


class NumPyStandIn:
    """NumPy under another name: the model then follows CuPy's schedule (one block per
    segment, in order), which this machine can run without a GPU."""

    def __getattr__(self, name):
        return getattr(np, name)


def _train_and_predict(labels, algo, kind, xp=np):
    rng = np.random.default_rng(7)
    if labels == "icp":
        encoder = icp_encoder(4, 12, 6, 0.3, rng, dtype="float64")
    else:
        encoder = overlay_encoder(4, 12, dtype="float64")
    net = FFNet(encoder, (9, 7, 5), xp, rng, algo=algo, goodness_kind=kind, lr=0.01,
                dtype="float64")
    x = rng.uniform(size=(23, 12))
    y = rng.integers(0, 4, 23)
    stats = [net.train_step(x, y, sample_negative_labels(y, 4, rng)) for _ in range(3)]
    return (stats, [p.copy() for p in net.params()], list(net.goodness_and_dead_fraction(x, y)))


@pytest.mark.parametrize("labels,algo,kind", [("icp", "symba", "sum"), ("overlay", "ff", "mean")])
def test_many_blocks_on_threads_give_the_same_results(monkeypatch, labels, algo, kind):
    monkeypatch.setattr(backend, "N_THREADS", 1)  # one block per segment, run in order
    one = _train_and_predict(labels, algo, kind)
    monkeypatch.setattr(backend, "N_THREADS", 5)  # 5 pieces a segment, odd sizes, on the pool
    monkeypatch.setattr(backend, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(model, "PREDICT_ELEMENTS", 100)  # prediction in chunks of 2 images
    with ThreadPoolExecutor(3) as pool:  # a pool even on a one-core machine
        monkeypatch.setattr(backend, "_POOL", pool)
        many = _train_and_predict(labels, algo, kind)
    for a, b in zip(one[0] + one[1] + one[2], many[0] + many[1] + many[2]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_the_gpu_schedule_gives_the_same_results(monkeypatch):
    monkeypatch.setattr(backend, "N_THREADS", 5)
    monkeypatch.setattr(backend, "MIN_BLOCK_ELEMENTS", 1)
    assert row_blocks(NumPyStandIn(), 10, 3, segment=5) == [slice(0, 5), slice(5, 10)]
    threaded = _train_and_predict("icp", "symba", "sum")
    in_order = _train_and_predict("icp", "symba", "sum", xp=NumPyStandIn())
    for a, b in zip(threaded[0] + threaded[1] + threaded[2],
                    in_order[0] + in_order[1] + in_order[2]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
