"""Adaptive Gauss-Legendre quadrature of a vectorised integrand (every node of a round in one
call), for integrands that cost much per call and little per point: the exact completion
probability of `runtime.expected_from_cdf`.

scipy is imported inside the function: worker processes load the runtime model but never
integrate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

ORDER = 10  # each panel: Gauss-Legendre with ORDER and 2 ORDER nodes; the difference = its error
MAX_ROUNDS = 40  # halvings of a panel before its estimate is taken as it is
MAX_PANELS = 4096  # panels of one round; past that every estimate is taken as it is


@functools.cache
def _nodes(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1], each of `order` and of 2 `order` points."""
    from scipy import special

    x, w = special.roots_legendre(order)
    x2, w2 = special.roots_legendre(2 * order)
    return np.concatenate([(x + 1) / 2, (x2 + 1) / 2]), np.concatenate([w / 2, w2 / 2])


def integrate_panels(
    f: Callable[[np.ndarray], np.ndarray], edges: np.ndarray, rtol: float = 1e-11
) -> float:
    """integral of f over [edges[0], edges[-1]], f smooth inside each panel [edges[i], edges[i+1]].

    Every round evaluates f once, at the nodes of all panels not yet accepted; a panel is
    accepted when its two rules agree to rtol x (the whole integral, as estimated so far) x
    (its share of the width, at least 1/64), else it is halved. f takes an array of points and returns an
    array of values of the same shape.
    """
    order = ORDER
    unit, weights = _nodes(order)
    low, high = np.asarray(edges[:-1], dtype=float), np.asarray(edges[1:], dtype=float)
    keep = high > low
    low, high = low[keep], high[keep]
    span = float(np.sum(high - low))
    accepted = 0.0
    for _ in range(MAX_ROUNDS):
        if low.size == 0 or low.size > MAX_PANELS:
            break
        width = high - low
        points = low[:, None] + width[:, None] * unit[None, :]
        values = np.asarray(f(points.ravel()), dtype=float).reshape(points.shape)
        products = values * weights[None, :] * width[:, None]
        coarse, fine = products[:, :order].sum(axis=1), products[:, order:].sum(axis=1)
        estimate = accepted + float(fine.sum())
        tolerance = rtol * abs(estimate) * np.maximum(width / span, 1 / 64)
        done = np.abs(fine - coarse) <= tolerance
        accepted += float(fine[done].sum())
        low, high = low[~done], high[~done]
        middle = (low + high) / 2
        low, high = np.concatenate([low, middle]), np.concatenate([middle, high])
    if low.size:  # still open after MAX_ROUNDS or MAX_PANELS: the finer rule as it is
        width = high - low
        points = low[:, None] + width[:, None] * unit[None, order:]
        values = np.asarray(f(points.ravel()), dtype=float).reshape(points.shape)
        accepted += float(np.sum(values * weights[None, order:] * width[:, None]))
    return accepted
