"""Compiled per-pixel arithmetic of keyframe selection (numba).

Every frame of every stream goes through these. Written as numpy expressions, each step was
a few calls on a few thousand pixels, and call overhead, not arithmetic, was the cost
(~270 µs per frame for features and selection; the decoder itself needs ~2.5 ms per 720p
frame). Compiled on first use and cached beside the module; ``nogil`` lets streams analysed
in different threads run at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numba
import numpy as np

F = TypeVar("F", bound=Callable[..., object])


def _compiled(fastmath: bool = False) -> Callable[[F], F]:
    """numba.njit, cached on disk where a cache can be written; otherwise compiled at each
    start (~2 s) rather than failing the import (a read-only install with no writable home)."""

    def decorate(function: F) -> F:
        try:
            return numba.njit(cache=True, nogil=True, fastmath=fastmath)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(nogil=True, fastmath=fastmath)(function)

    return decorate


@_compiled()
def analyse_planes(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    luma_shift: int,
    chroma_shift: int,
    luma_bins: int,
    chroma_bins: int,
    flat_std: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """One pass over a small Y, U, V picture (C-contiguous uint8, one shape): luma as float,
    its mean, std, centred and normalised forms, the chroma planes, and the concatenated
    Y/U/V histograms (each summing to 1)."""
    height, width = y.shape
    size = height * width
    luma = np.empty((height, width), np.float32)
    chroma = np.empty((2, height, width), np.float32)
    counts = np.zeros(luma_bins + 2 * chroma_bins, np.int64)
    total = 0
    for i in range(height):
        for j in range(width):
            luma[i, j] = y[i, j]
            chroma[0, i, j] = u[i, j]
            chroma[1, i, j] = v[i, j]
            total += y[i, j]
            counts[y[i, j] >> luma_shift] += 1
            counts[luma_bins + (u[i, j] >> chroma_shift)] += 1
            counts[luma_bins + chroma_bins + (v[i, j] >> chroma_shift)] += 1
    mean = total / size
    centred = luma.reshape(size) - np.float32(mean)
    squares = 0.0
    for k in range(size):
        squares += centred[k] * centred[k]
    norm = math.sqrt(squares)
    std = norm / math.sqrt(size)
    if std >= flat_std:
        normalised = (centred * np.float32(1.0 / std)).reshape(height, width)
    else:
        normalised = np.zeros((height, width), np.float32)
    histogram = (counts / size).astype(np.float32)
    return luma, normalised, chroma, histogram, centred, norm, mean, std


# Sums in any order (vectorised): float64 accumulators keep them exact enough.
@_compiled(fastmath=True)
def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of |a - b| over two C-contiguous float32 arrays of one shape."""
    flat_a, flat_b = a.reshape(a.size), b.reshape(b.size)
    total = 0.0
    for k in range(flat_a.size):
        total += abs(flat_a[k] - flat_b[k])
    return total / flat_a.size


@_compiled(fastmath=True)
def dot_products(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """y·a, y·b and a·b of three 1-D float32 vectors of one length."""
    ya = yb = ab = 0.0
    for k in range(y.size):
        ya += y[k] * a[k]
        yb += y[k] * b[k]
        ab += a[k] * b[k]
    return ya, yb, ab
