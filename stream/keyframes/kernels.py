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


# Planes of the packed per-frame array ``analyse_planes`` returns.
NORMALISED, LUMA, CHROMA_U, CHROMA_V, CENTRED = range(5)
# Its histograms: Y, then U, then V bins side by side (powers of two: a bin is a bit shift).
LUMA_BINS = 16
CHROMA_BINS = 8
_LUMA_SHIFT = 8 - (LUMA_BINS.bit_length() - 1)
_CHROMA_SHIFT = 8 - (CHROMA_BINS.bit_length() - 1)


@_compiled()
def analyse_planes(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    stride: int,
    height: int,
    width: int,
    oversample: int,
    flat_std: float,
) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """One pass over a small Y, U, V picture, given as flat uint8 buffers whose rows are
    ``stride`` bytes apart (swscale pads rows) and sampled ``oversample`` times finer than
    ``height`` x ``width`` (each output pixel is the mean of its block): a packed float32
    array (5, height, width) of the planes named above, the concatenated Y/U/V histograms
    (each summing to 1), and the luma's norm (about its mean), mean and std."""
    size = height * width
    packed = np.empty((5, height, width), np.float32)
    counts = np.zeros(LUMA_BINS + 2 * CHROMA_BINS, np.int64)
    area = oversample * oversample
    total = 0.0
    for i in range(height):
        for j in range(width):
            sum_y = sum_u = sum_v = 0
            for di in range(oversample):
                row = (i * oversample + di) * stride + j * oversample
                for dj in range(oversample):
                    sum_y += y[row + dj]
                    sum_u += u[row + dj]
                    sum_v += v[row + dj]
            luma = sum_y / area
            packed[LUMA, i, j] = luma
            packed[CHROMA_U, i, j] = sum_u / area
            packed[CHROMA_V, i, j] = sum_v / area
            total += luma
            counts[(sum_y // area) >> _LUMA_SHIFT] += 1
            counts[LUMA_BINS + ((sum_u // area) >> _CHROMA_SHIFT)] += 1
            counts[LUMA_BINS + CHROMA_BINS + ((sum_v // area) >> _CHROMA_SHIFT)] += 1
    mean = total / size
    squares = 0.0
    for i in range(height):
        for j in range(width):
            centred = packed[LUMA, i, j] - np.float32(mean)
            packed[CENTRED, i, j] = centred
            squares += centred * centred
    norm = math.sqrt(squares)
    std = norm / math.sqrt(size)
    scale = np.float32(1.0 / std) if std >= flat_std else np.float32(0.0)
    for i in range(height):
        for j in range(width):
            packed[NORMALISED, i, j] = packed[CENTRED, i, j] * scale
    return packed, (counts / size).astype(np.float32), norm, mean, std


@_compiled(fastmath=True)
def mean_abs_differences(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean |a - b| of two packed arrays' normalised planes, luma planes, and chroma planes."""
    structure = luma = chroma = 0.0
    height, width = a.shape[1], a.shape[2]
    for i in range(height):
        for j in range(width):
            structure += abs(a[NORMALISED, i, j] - b[NORMALISED, i, j])
            luma += abs(a[LUMA, i, j] - b[LUMA, i, j])
            chroma += abs(a[CHROMA_U, i, j] - b[CHROMA_U, i, j])
            chroma += abs(a[CHROMA_V, i, j] - b[CHROMA_V, i, j])
    size = height * width
    return structure / size, luma / size, chroma / (2 * size)


@_compiled(fastmath=True)
def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of |a - b| over two 1-D float32 histograms."""
    total = 0.0
    for k in range(a.size):
        total += abs(a[k] - b[k])
    return total


@_compiled(fastmath=True)
def centred_dot_products(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """y·a, y·b and a·b of three packed arrays' centred luma planes."""
    ya = yb = ab = 0.0
    height, width = y.shape[1], y.shape[2]
    for i in range(height):
        for j in range(width):
            ya += y[CENTRED, i, j] * a[CENTRED, i, j]
            yb += y[CENTRED, i, j] * b[CENTRED, i, j]
            ab += a[CENTRED, i, j] * b[CENTRED, i, j]
    return ya, yb, ab
