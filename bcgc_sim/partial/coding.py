"""Blocks, combiners and coefficients of the partial-straggler protocol (spec/partial-gc.md §1.2-§1.5).

The gradient g (d,) is cut into l ("parts") blocks of ceil(d / l) floats; every data message
carries one block. The master combines the workers' processed chunks with a combiner Phi
(l x N) and sends each chosen worker its coefficients beta (`Coefficients`); the worker answers
with one upload z_j (`r1_upload`), a pure function of its own chunk gradients. No scipy: the
worker imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def block_length(dimension: int, parts: int) -> int:
    """ceil(d / l): the length of every data message."""
    return -(-dimension // parts)


def split_blocks(gradient: np.ndarray, parts: int) -> np.ndarray:
    """g (d,) -> its l blocks, shape (l, ceil(d/l)); zero-padded at the end (spec §1.1)."""
    g = np.asarray(gradient, dtype=float)
    width = block_length(g.size, parts)
    padded = np.zeros(parts * width)
    padded[: g.size] = g
    return padded.reshape(parts, width)


def default_combiner(n_workers: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Phi (l x N): all ones for l = 1 (exact in floating point), else Gaussian (spec §1.5)."""
    if parts == 1:
        return np.ones((1, n_workers))
    return rng.standard_normal((parts, n_workers))


def chunk_coefficients(
    combiner: np.ndarray, processed_by: Sequence[int], selection: str = "pinv"
) -> np.ndarray:
    """B_i (kappa_i x l) for one chunk processed by the workers `processed_by` (spec §1.2 step 4).

    selection "pinv": B_i = pinv(Phi[:, S_i]), the least-squares choice, optimal for a fixed Phi
    (§1.4) and best conditioned. "first": only the first min(l, kappa_i) copies get non-zero rows
    (pinv of those columns); for l = 1 this is "coefficient 1 on one copy", exact integers.
    """
    workers = list(processed_by)
    if not workers:
        return np.zeros((0, combiner.shape[0]))
    if selection == "pinv":
        if combiner.shape[0] == 1:  # l = 1: pinv of a row phi is phi^T / |phi|^2 (no SVD)
            row = combiner[0, workers]
            return (row / (row @ row))[:, None]
        return np.linalg.pinv(combiner[:, workers])
    if selection == "first":
        used = min(len(workers), combiner.shape[0])
        out = np.zeros((len(workers), combiner.shape[0]))
        out[:used] = np.linalg.pinv(combiner[:, workers[:used]])
        return out
    raise ValueError(f"unknown selection {selection!r}; use 'pinv' or 'first'")


def error_count(counts: np.ndarray, parts: int) -> float:
    """sum_i (l - kappa_i)^+ = sum_i ||E_i||_F^2 for a generic combiner (spec §1.4)."""
    return float(np.maximum(parts - np.asarray(counts), 0).sum())


def estimated_nmse(counts: np.ndarray, parts: int) -> float:
    """NMSE = sum_i (l - kappa_i)^+ / (m l) from the counts alone (spec §1.4).

    The expectation of ||g_hat - g||^2 / E||g||^2 when gradient blocks are zero-mean, independent,
    with equal per-coordinate variance; for real (correlated) gradients it is only an estimate.
    """
    counts = np.asarray(counts)
    return error_count(counts, parts) / (counts.size * parts)


@dataclass(frozen=True)
class Coefficients:
    """The COMBINE message for one worker: z_j = sum_k sum_u beta[k, u] g_{chunks[k]}^(u)."""

    worker: int
    chunks: tuple[int, ...]
    beta: np.ndarray  # (len(chunks), l)


def r1_upload(
    coefficients: Coefficients, gradients: Mapping[int, np.ndarray], parts: int
) -> np.ndarray:
    """z_j (ceil(d/l),) = sum over the listed chunks of beta[k] . blocks(g_chunk) (spec §1.2 step 5).

    `gradients` maps chunk id -> g_i (d,); it must hold every listed chunk.
    """
    missing = [i for i in coefficients.chunks if i not in gradients]
    if missing:
        raise KeyError(f"worker {coefficients.worker} has not computed chunks {missing}")
    out = None
    for chunk, beta in zip(coefficients.chunks, coefficients.beta, strict=True):
        term = beta @ split_blocks(gradients[chunk], parts)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("no chunks to combine")
    return out
