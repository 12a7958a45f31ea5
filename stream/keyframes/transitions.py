"""Transitions between shots, as found: their kind, where they start and end, how sure.

A hard cut is one frame. A gradual transition (dissolve, fade) is located afterwards, once
the selector has seen the new shot settle, from the frames it still holds: each frame's
*progress* from the old picture to the new one,

    p = d(old, frame) / (d(old, frame) + d(frame, new))    (d: mean absolute pixel change)

is 0 on the old shot, 1 on the new one and, in a linear dissolve, exactly the mixing weight
in between (``frame - old = p (new - old)`` pixel by pixel). The transition runs from the
first frame that has left the old picture to the first that has arrived at the new one. A
first pass takes the oldest held frame as "old"; a second takes the frame just before the
start that pass found, so motion within the old shot does not read as progress.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from stream.keyframes.features import FrameFeatures
from stream.keyframes.kernels import mean_abs_differences

TransitionKind = Literal["cut", "dissolve", "fade_in", "fade_out", "fade_out_in"]

# Progress below DEPARTED is still the old picture (compression noise and a little motion
# reach ~0.03 on real shots); at or above ARRIVED it is the new one.
DEPARTED = 0.05
ARRIVED = 0.95
_HALFWAY = 0.5
_ANCHOR_MARGIN = 2  # frames before a found start taken as the old picture in the second pass


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of shot: ``first`` is the first frame that shows anything of the new shot,
    ``last`` the first frame that shows it fully (both equal for a cut)."""

    kind: TransitionKind
    first: int
    last: int
    first_s: float
    last_s: float
    confidence: float
    """0-1: how far the change is above the threshold that makes a cut, lowered where the
    located span did not move steadily from the old picture to the new one."""


@dataclass(frozen=True, slots=True)
class HeldFrame:
    index: int
    time_s: float
    features: FrameFeatures


def pixel_distance(a: FrameFeatures, b: FrameFeatures) -> float:
    """Mean absolute luma plus chroma difference (0-255 scale); pictures of different sizes
    are as far apart as can be."""
    if a.packed.shape != b.packed.shape:
        return 510.0
    _, luma, chroma = mean_abs_differences(a.packed, b.packed)
    return float(luma + chroma)


def progress(frames: Sequence[HeldFrame], old: FrameFeatures, new: FrameFeatures) -> list[float]:
    """Each frame's progress from ``old`` to ``new`` (see the module docstring)."""
    values = []
    for held in frames:
        to_old = pixel_distance(old, held.features)
        to_new = pixel_distance(held.features, new)
        values.append(to_old / (to_old + to_new) if to_old + to_new > 0 else 0.0)
    return values


def span(values: Sequence[float]) -> tuple[int, int]:
    """Positions of the first frame that has departed and the first that has arrived, around
    the last crossing of the halfway mark (earlier crossings are the old shot's own motion)."""
    halfway = len(values) - 1
    while halfway > 0 and values[halfway - 1] >= _HALFWAY:
        halfway -= 1
    first = halfway
    while first > 0 and values[first - 1] > DEPARTED:
        first -= 1
    last = halfway
    while last < len(values) - 1 and values[last] < ARRIVED:
        last += 1
    return first, last


def locate(frames: Sequence[HeldFrame]) -> tuple[int, int, float]:
    """Where the gradual transition into ``frames[-1]`` starts and ends (positions in
    ``frames``), and how steadily it went (the share of its steps that moved forward)."""
    new = frames[-1].features
    first, last = span(progress(frames, frames[0].features, new))
    anchor = max(0, first - _ANCHOR_MARGIN)
    values = progress(frames, frames[anchor].features, new)
    refined_first, refined_last = span(values[anchor:])
    first, last = anchor + refined_first, anchor + refined_last
    steps = [b - a for a, b in itertools.pairwise(values[first : last + 1])]
    steadiness = sum(step > -0.02 for step in steps) / len(steps) if steps else 1.0
    return first, last, steadiness


def gradual_kind(frames: Sequence[HeldFrame]) -> TransitionKind:
    """A transition's kind from its frames (the one before it first): through a blank picture
    it is a fade, out of the old shot when frames before the blank ones still showed it, into
    the new one when frames after them already showed it; otherwise a dissolve."""
    blanks = [n for n, held in enumerate(frames) if held.features.blank]
    if not blanks:
        return "dissolve"
    faded_out = blanks[0] > 1  # a fading frame between the old shot and black
    faded_in = blanks[-1] < len(frames) - 2
    if faded_out and faded_in:
        return "fade_out_in"
    if faded_out:
        return "fade_out"
    return "fade_in" if faded_in else "cut"


def confidence(change: float, threshold: float, steadiness: float = 1.0) -> float:
    """A change twice the cut threshold, made steadily, is certain."""
    return round(min(1.0, change / (2 * threshold)) * steadiness, 3)
