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
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from stream.keyframes.features import FrameFeatures
from stream.keyframes.kernels import centred_dot_products, mean_abs_differences
from stream.sources.frames import TransitionKind

# Progress below DEPARTED is still the old picture (compression noise and a little motion
# reach ~0.03 on real shots); at or above ARRIVED it is the new one.
DEPARTED = 0.05
ARRIVED = 0.95
_HALFWAY = 0.5
# A dissolve of 2 s at 25 fps moves progress by 0.02 a frame; compression noise, ~0.001.
_STEADY_STEP = 0.003
_ANCHOR_MARGIN = 2  # frames before a found start taken as the old picture in the second pass
# Median R^2 of a transition's frames as blends of the frames at its ends that makes it a
# dissolve: ~0.65-1.0 for the tuning set's dissolves of moving shots, <= 0.23 for its pans.
_BLEND_FIT = 0.5
_LEVEL_STEP = 0.25  # luma mean + std (0-255) a fade moves each frame; noise moves it ~0.1


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

    def wire(self) -> dict[str, object]:
        """As events and `vidcap scenes --json` give it (decoded frame indices from 0)."""
        return {
            "kind": self.kind,
            "first_frame": self.first,
            "last_frame": self.last,
            "first_time_s": round(self.first_s, 6),
            "last_time_s": round(self.last_s, 6),
            "confidence": self.confidence,
        }


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


def span(values: Sequence[float], blank: Sequence[bool]) -> tuple[int, int]:
    """Positions of the first frame that has departed and the first that has arrived, around
    the last crossing of the halfway mark (earlier crossings are the old shot's own motion).

    From there the transition extends while each step still moves (by more than
    ``_STEADY_STEP``) towards the new picture, or passes blank frames (a fade's black): where
    progress stops falling, going back, the old shot's own motion begins; where it stops
    rising, going on, the new shot's.
    """
    halfway = len(values) - 1
    while halfway > 0 and values[halfway - 1] >= _HALFWAY:
        halfway -= 1
    first = halfway
    while first > 0 and values[first - 1] > DEPARTED:
        moving = values[first - 1] < values[first] - _STEADY_STEP
        if not (moving or blank[first - 1] or blank[first]):
            break
        first -= 1
    last = halfway
    while last < len(values) - 1 and values[last] < ARRIVED:
        moving = values[last + 1] > values[last] + _STEADY_STEP
        if not (moving or blank[last] or blank[last + 1]):
            break
        last += 1
    return first, last


def fade_span(frames: Sequence[HeldFrame], blank: Sequence[bool]) -> tuple[int, int]:
    """Positions where a fade through the last blank stretch starts and ends: the picture's
    level (mean plus contrast, both scale with a fade) falls frame after frame into the blank
    stretch and rises frame after frame out of it. A frame counts for the fade-out only if the
    one before it was brighter still, so a cut to black starts at the black."""
    levels = [held.features.mean + held.features.std for held in frames]
    end = max(n for n, is_blank in enumerate(blank) if is_blank)
    first = end
    while first > 0 and blank[first - 1]:
        first -= 1
    while first >= 2 and levels[first - 2] > levels[first - 1] + _LEVEL_STEP:
        if not levels[first - 1] > levels[first] + _LEVEL_STEP:
            break
        first -= 1
    last = end
    while last < len(levels) - 1 and levels[last + 1] > levels[last] + _LEVEL_STEP:
        last += 1
    return first, last


def arrived(frames: Sequence[HeldFrame], old: FrameFeatures) -> bool:
    """Have all but the last of ``frames`` arrived at the last one's picture, coming from
    ``old``? While a dissolve goes on, each frame is still on its way to the next."""
    return all(value >= ARRIVED for value in progress(frames[:-1], old, frames[-1].features))


def still_brightening(frames: Sequence[HeldFrame], count: int) -> bool:
    """Did the picture's level (mean plus contrast) rise in any of the last ``count`` steps?"""
    recent = [held.features.mean + held.features.std for held in list(frames)[-count - 1 :]]
    return any(b > a + _LEVEL_STEP for a, b in itertools.pairwise(recent))


def locate(frames: Sequence[HeldFrame]) -> tuple[int, int, float]:
    """Where the gradual transition into ``frames[-1]`` starts and ends (positions in
    ``frames``), and how steadily it went (the share of its steps that moved forward)."""
    new = frames[-1].features
    blank = [held.features.blank for held in frames]
    if any(blank):
        first, last = fade_span(frames, blank)
        return first, last, 1.0
    first, last = span(progress(frames, frames[0].features, new), blank)
    anchor = max(0, first - _ANCHOR_MARGIN)
    values = progress(frames[anchor:], frames[anchor].features, new)
    first, last = span(values, blank[anchor:])
    steps = [b - a for a, b in itertools.pairwise(values[first : last + 1])]
    first, last = anchor + first, anchor + last
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


@dataclass(frozen=True, slots=True)
class BlendFit:
    both: float
    """R^2 of middle ~ a * old + b * new + c."""
    gain: float
    """How much more of it the two pictures explain than the better one alone."""
    weight_old: float
    weight_new: float


def blend_fit(middle: FrameFeatures, old: FrameFeatures, new: FrameFeatures) -> BlendFit | None:
    """Least squares of ``middle`` on ``old`` and ``new`` (luma), closed form from
    correlations (two-predictor regression): a few dot products, no matrix solve. None when
    there is nothing to fit (pictures of other sizes, flat, or the same picture twice)."""
    if not middle.packed.shape == old.packed.shape == new.packed.shape:
        return None
    ny, na, nb = middle.norm, old.norm, new.norm
    if min(ny, na, nb) == 0:
        return None
    ya, yb, ab = centred_dot_products(middle.packed, old.packed, new.packed)
    r_ya, r_yb, r_ab = ya / (ny * na), yb / (ny * nb), ab / (na * nb)
    if r_ab > 0.999:
        return None  # the two ends are the same picture: nothing to blend
    both = (r_ya**2 + r_yb**2 - 2 * r_ya * r_yb * r_ab) / (1 - r_ab**2)
    weight_old = (r_ya - r_yb * r_ab) / (1 - r_ab**2) * ny / na
    weight_new = (r_yb - r_ya * r_ab) / (1 - r_ab**2) * ny / nb
    return BlendFit(both, both - max(r_ya**2, r_yb**2), weight_old, weight_new)


def blended(frames: Sequence[HeldFrame], first: int, last: int) -> bool:
    """Were the frames inside a located transition, in the main, blends of the frame before
    it and the one where it arrived? A dissolve of moving shots still is; a pan is not."""
    if last - first < 2:
        return False
    before, after = frames[max(0, first - 1)].features, frames[last].features
    fits = [blend_fit(held.features, before, after) for held in frames[first + 1 : last]]
    return statistics.median(fit.both if fit else 0.0 for fit in fits) >= _BLEND_FIT
