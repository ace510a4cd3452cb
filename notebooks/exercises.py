"""The self-test behind every exercise of the notebooks.

An exercise gives the learner a named variable to fill in, with ``...`` as its placeholder::

    from exercises import SOLUTIONS, check_answer
    crossing = ...  # your answer: the G_pos at which the two pushes are equal
    check_answer("01.1", crossing)

``check_answer`` compares the answer with the expected one, kept here rather than in the notebook,
and prints one of three verdicts without showing the expected value:

- ``not answered yet`` while the variable still holds ``...``;
- ``right`` when it matches (within the exercise's tolerance);
- ``wrong`` otherwise (with a hint of the kind of answer wanted, never the answer).

The worked solution of each exercise sits in a hidden code cell behind its reveal. That cell
runs only when ``$FFNUMPY_SOLUTIONS`` is "1" (the test suite sets it), so a learner who runs
the whole notebook sees no solution; in that mode ``check_answer`` raises on a wrong answer, so a
worked solution that stopped being right fails the notebook's test.

This file is the answer key: read it after trying.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

SOLUTIONS_ENV = "FFNUMPY_SOLUTIONS"  # "1" in the test suite: run and assert the worked solutions
NOT_ANSWERED, RIGHT, WRONG = "not answered yet", "right", "wrong"


def solutions_on():
    """True when the hidden worked-solution cells should run ($FFNUMPY_SOLUTIONS is "1")."""
    return os.environ.get(SOLUTIONS_ENV) == "1"


SOLUTIONS = solutions_on()  # read once, when a notebook imports this module


@dataclass(frozen=True)
class Expected:
    """One exercise's expected answer and how closely an answer must match it.

    ``value`` is a number, a sequence of numbers, a bool or a string; numbers match within
    ``atol + rtol * |value|`` (entry by entry for a sequence), the rest must be equal.
    ``kind`` describes the answer wanted, for the "wrong" message.
    """

    value: object
    kind: str
    rtol: float = 1e-3  # three significant digits: a hand calculation is enough
    atol: float = 0.0


# --- the answer key, by "notebook.exercise" ---

ANSWERS = {
    # 01: goodness and the FF loss (theta = 2)
    "01.1": Expected(4.0, "a number: the G_pos of the crossing for theta = 2"),
    "01.2": Expected(math.log1p(math.exp(-2.0)), "a number: the floor of L_FF for theta = 2"),
    "01.3": Expected(3.4972e-3, "a number: the G_neg at 1% of the weight gradient at theta",
                     rtol=0.02),
    # 02: the SymBa loss (alpha = 4)
    "02.1": Expected(0.008, "a number: alpha' for D = 500 and alpha = 4"),
    "02.2": Expected(-math.log(math.expm1(0.01)) / 4.0, "a number: the gap Delta"),
    "02.3": Expected(3.0, "a number: how many times larger the positive's share is"),
    # 03: build FF and SymBa from zero
    "03.1": Expected(0.01, "a learning rate: 0.01 or 0.001"),
    "03.2": Expected(0, "a whole number: silent units whose row of dW is not all zero"),
    "03.3": Expected(10.0, "a number: multiply-adds of ours / multiply-adds of the split"),
    # 04: the gradient checker
    "04.1": Expected(None, "a function dx_of(dx_hat, x) returning dL/dx, shape of x"),
    "04.2": Expected((9.8306e-6, -1.5143e-10),
                     "two numbers: (one-sided error, central error) predicted by Taylor",
                     rtol=0.02),
    "04.3": Expected(785_000, "a whole number: loss evaluations for W and b of layer 1"),
    # 05: Figure 1, loss landscapes
    "05.1": Expected((0.5, 2.0), "two numbers: |dL/dG_pos| at Delta = 0 for alpha = 1 and 4"),
    "05.2": Expected(4.0, "a number: G_pos + G_neg on the ratio-1 line, theta = 2"),
    "05.3": Expected(355.0, "a number: FF's ratio at G_pos = 10, G_neg = 0", rtol=0.005),
    "05.4": Expected((1.0, 2.0), "two numbers: (Adam step for 4 L / step for L, "
                     "factor on W and b that turns alpha = 1 into alpha = 4)"),
    # 06: labels, overlay vs ICP
    "06.1": Expected((7.84, 141.12), "two numbers: (shared pixels, differing pixels)"),
    "06.2": Expected((100 / 1024, 100 / 3072), "two fractions: (of the red plane, of the input)"),
    "06.3": Expected((0.49, 0.11), "two medians: (at rate 0.1, at rate 0.8) on the first 2,000 test images",
                     atol=0.006),
    # 07: Figure 3, training curves (the committed lr 0.01 runs, seed 0)
    "07.1": Expected((21, 14), "two epochs: (reaching SymBa's epoch-2 error, its epoch-1 error)"),
    "07.2": Expected((2.63, 1.42, True), "(layer-1 ratio, layer-2 ratio, growing?)",
                     atol=0.006),
    "07.3": Expected((197, 403), "two whole numbers: units alive in (layer 1, layer 2)"),
}


# --- checkers that need more than a comparison ---

def _check_dx_of(dx_of):
    """04.1: the learner's dx_of(dx_hat, x) against ffnumpy's normalize_backward."""
    from ffnumpy import layers

    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7))  # (B, D_in), float64
    dx_hat = rng.standard_normal((5, 7))
    _, cache = layers.normalize_forward(x)
    try:
        mine = np.asarray(dx_of(dx_hat, x), dtype=np.float64)
    except Exception as exc:  # the learner's code: any failure is a wrong answer
        return False, f"calling it raised {type(exc).__name__}: {exc}"
    if mine.shape != x.shape:
        return False, f"it returned shape {mine.shape}, not {x.shape}"
    return np.allclose(mine, layers.normalize_backward(dx_hat, cache), rtol=1e-8, atol=1e-12), ""


CUSTOM = {"04.1": _check_dx_of}


# --- comparing ---

def _flatten(value):
    return list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]


def _same(answer, expected):
    """True when ``answer`` matches ``expected`` (an :class:`Expected`)."""
    want, got = _flatten(expected.value), _flatten(answer)
    if len(want) != len(got):
        return False
    for w, g in zip(want, got):
        if isinstance(w, bool):  # a yes/no answer
            if not isinstance(g, (bool, np.bool_)) or bool(g) is not w:
                return False
        elif isinstance(w, str):
            if not isinstance(g, str) or g.strip().lower() != w:
                return False
        else:  # a number
            if isinstance(g, (bool, np.bool_, str)):
                return False
            try:
                g = float(g)
            except (TypeError, ValueError):
                return False
            if not math.isfinite(g) or abs(g - w) > expected.atol + expected.rtol * abs(w):
                return False
    return True


def verdict(key, answer):
    """The verdict on ``answer`` for exercise ``key``, as ``(word, message)``; shows no answer."""
    expected = ANSWERS[key]
    if answer is Ellipsis or answer is None:
        return NOT_ANSWERED, (f"Exercise {key}: not answered yet. Replace the ... with your answer "
                              f"({expected.kind}) and run the cell again.")
    if key in CUSTOM:
        ok, why = CUSTOM[key](answer)
    else:
        ok, why = _same(answer, expected), ""
    if ok:
        return RIGHT, f"Exercise {key}: right."
    hint = f" ({why})" if why else ""
    return WRONG, (f"Exercise {key}: wrong{hint}. Wanted {expected.kind}. Try again; the worked "
                   "solution is behind the reveal below.")


def check_answer(key, answer):
    """Print the verdict on ``answer`` for exercise ``key`` (see :func:`verdict`).

    With $FFNUMPY_SOLUTIONS set to "1", a wrong answer raises AssertionError, so that a
    worked solution that is no longer right fails the notebook's test.
    """
    word, message = verdict(key, answer)
    print(message)
    if word == WRONG and solutions_on():
        raise AssertionError(message)
