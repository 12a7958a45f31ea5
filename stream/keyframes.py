"""Keyframe selection: the first frame, hard cuts, gradual transitions, a heartbeat.

Pure and synchronous (PySceneDetect's detector shape): it sees each frame's small features
and a timestamp, and returns the keyframes it has decided on, possibly a few frames late:

- A hard cut is a large change between consecutive frames (``cut_score``: structure, i.e.
  luma normalised by its own mean and std so brightness ramps do not count; else brightness;
  else colour) that is also either a colour-histogram change (a pan or zoom moves structure
  but keeps the histogram) or an outlier against the recent scores (sustained motion raises
  them all). It is confirmed only if the picture does not return to its pre-cut state within
  ``flash_frames`` frames: that is a camera flash.
- A gradual transition (dissolve, fade out/in) never makes one large step; it is found when
  the picture has settled (little change over ``settle_frames`` frames) and differs from the
  last keyframe in content as much as a cut would, and the way there looked like a
  transition: colours changed, or contrast dipped (a dissolve's mixed frames, a fade's
  black). A pan or a drift within one shot does neither; one still moving never settles.
- A cut held back by ``min_gap_s`` is taken once the gap has passed, if the picture still
  differs from the last keyframe.
- Blank pictures (black, white, a solid card, black with one line of text) are never
  keyframes, except a stream's first frame.
- ``min_gap_s`` and ``max_interval_s`` (heartbeat) hold per stream, in stream time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from stream.config import KeyframeConfig
from stream.frame_features import FLAT_STD, FrameFeatures
from stream.frames import SelectionReason

_MEAN_ABS_Z_UNRELATED = 2 / math.sqrt(math.pi)  # E|z1 - z2| for unrelated standardised pictures
_RECENT_SCORES = 8
# Scale mean pixel differences (percent) to the structure score's range: a cut between two
# unrelated real shots moves mean luma by ~20-40 % and chroma by ~5-15 %.
_LUMA_WEIGHT = 2.0
_CHROMA_WEIGHT = 4.0
_FULL_CONTRAST_STD = 16.0  # luma std from which picture structure is fully trusted
_TRANSITION_CONTRAST_DIP = 0.9  # a dissolve's mid-point has ~0.7x the contrast of its ends


@dataclass(frozen=True, slots=True)
class Selection:
    index: int
    time_s: float
    reason: SelectionReason
    score: float


def structure_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """0 (same structure) to about 100 (unrelated pictures), blind to brightness and contrast."""
    if a.normalised.shape != b.normalised.shape:
        return 100.0
    change = float(np.abs(a.normalised - b.normalised).mean()) / _MEAN_ABS_Z_UNRELATED
    return min(100.0, 100.0 * change)


def luma_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """Mean absolute luma difference, in percent of full scale."""
    if a.luma.shape != b.luma.shape:
        return 100.0
    return float(np.abs(a.luma - b.luma).mean()) * (100.0 / 255.0)


def chroma_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """Mean absolute U/V difference, in percent of full scale: colour cuts at equal brightness."""
    if a.chroma.shape != b.chroma.shape:
        return 100.0
    return float(np.abs(a.chroma - b.chroma).mean()) * (100.0 / 255.0)


def histogram_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """0 (same Y, U and V histograms) to 100 (disjoint)."""
    return float(np.abs(a.histogram - b.histogram).sum()) * (100.0 / 6.0)


def pixel_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """Brightness or colour change, scaled to the structure score's range (0-100)."""
    return min(100.0, max(_LUMA_WEIGHT * luma_change(a, b), _CHROMA_WEIGHT * chroma_change(a, b)))


def scene_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """How different two pictures' content is (0-100), blind to brightness where it can be.

    Structure is trusted in proportion to contrast: normalising a low-contrast picture
    amplifies its noise, and a flat one has no structure at all, so there the score slides
    to plain pixel change.
    """
    trust = (min(a.std, b.std) - FLAT_STD) / (_FULL_CONTRAST_STD - FLAT_STD)
    trust = min(1.0, max(0.0, trust))
    structure = structure_change(a, b) if trust > 0 else 0.0
    return trust * structure + (1 - trust) * pixel_change(a, b)


def cut_score(a: FrameFeatures, b: FrameFeatures) -> float:
    """Change between consecutive frames: content, or brightness/colour (black to white, a grey
    card to a red one), whichever is larger."""
    return max(scene_change(a, b), pixel_change(a, b))


@dataclass(slots=True)
class _Candidate:
    index: int
    time_s: float
    score: float
    before: FrameFeatures
    after: FrameFeatures
    frames_seen: int = 0


class KeyframeSelector:
    """Feed frames in decode order; collect the returned selections; call ``flush`` at the end."""

    def __init__(self, config: KeyframeConfig) -> None:
        self._config = config
        self._previous: FrameFeatures | None = None
        self._reference: FrameFeatures | None = None  # the last keyframe's picture
        self._last_keyframe_s: float | None = None
        self._recent: deque[float] = deque(maxlen=_RECENT_SCORES)
        self._window: deque[FrameFeatures] = deque(maxlen=config.settle_frames + 1)
        self._pending: _Candidate | None = None
        self._cut_held_back = False  # a confirmed cut came inside min_gap_s
        self._lowest_contrast = 0.0  # least luma std seen since the last keyframe

    @property
    def lookahead(self) -> int:
        """Most frames a selection can lag behind the frame just fed."""
        return self._config.flash_frames

    def process_frame(self, index: int, time_s: float, frame: FrameFeatures) -> list[Selection]:
        previous, self._previous = self._previous, frame
        if previous is None:
            return [self._select(index, time_s, "start", 0.0, frame)]
        score = cut_score(previous, frame)
        selections: list[Selection] = []
        if self._pending is not None:
            selections += self._follow_candidate(frame)
        elif self._is_cut_candidate(score, previous, frame):
            self._pending = _Candidate(index, time_s, score, previous, frame)
        self._recent.append(score)
        self._window.append(frame)
        self._lowest_contrast = min(self._lowest_contrast, frame.std)
        if not selections and self._pending is None:
            selections += self._transition_or_heartbeat(index, time_s, frame)
        return selections

    def flush(self) -> list[Selection]:
        """End of stream: a cut still under flash watch is confirmed (nothing came back)."""
        pending, self._pending = self._pending, None
        return [self._confirm(pending)] if pending and self._gap_allows(pending.time_s) else []

    def _is_cut_candidate(
        self, score: float, previous: FrameFeatures, frame: FrameFeatures
    ) -> bool:
        if score < self._config.threshold or frame.blank:
            return False
        if histogram_change(previous, frame) >= self._config.histogram_threshold:
            return True
        if len(self._recent) < _RECENT_SCORES:
            return False  # too little history to call the score an outlier
        typical = float(np.mean(self._recent))
        return score >= self._config.adaptive_ratio * max(typical, 1.0)

    def _follow_candidate(self, frame: FrameFeatures) -> list[Selection]:
        candidate = self._pending
        assert candidate is not None
        if cut_score(candidate.before, frame) < self._config.threshold / 2:
            self._pending = None  # the old picture came back: a flash, not a cut
            return []
        candidate.frames_seen += 1
        if candidate.frames_seen < self._config.flash_frames:
            return []
        self._pending = None
        if self._gap_allows(candidate.time_s):
            return [self._confirm(candidate)]
        self._cut_held_back = True
        return []

    def _confirm(self, candidate: _Candidate) -> Selection:
        return self._select(
            candidate.index, candidate.time_s, "cut", candidate.score, candidate.after
        )

    def _transition_or_heartbeat(
        self, index: int, time_s: float, frame: FrameFeatures
    ) -> list[Selection]:
        if not self._gap_allows(time_s):
            return []
        reference = self._reference
        assert reference is not None
        if self._cut_held_back and not frame.blank:
            # The gap has passed; if the picture still differs, the held-back cut counts now.
            self._cut_held_back = False
            if scene_change(reference, frame) >= self._config.threshold:
                return [self._select(index, time_s, "cut", cut_score(reference, frame), frame)]
        if self._settled_somewhere_new(frame):
            assert self._reference is not None
            return [
                self._select(index, time_s, "transition", cut_score(self._reference, frame), frame)
            ]
        assert self._last_keyframe_s is not None
        if time_s - self._last_keyframe_s >= self._config.max_interval_s:
            return [self._select(index, time_s, "interval", self._recent[-1], frame)]
        return []

    def _settled_somewhere_new(self, frame: FrameFeatures) -> bool:
        if frame.blank or not self._settled(frame):
            return False
        reference = self._reference
        assert reference is not None
        if reference.blank:  # e.g. the stream started on black: any settled picture is new
            return True
        # Content, not brightness: a lighting drift within a shot is not a new scene.
        if scene_change(reference, frame) < self._config.threshold:
            return False
        # And the way here looked like a transition, not a pan or a drift within one shot:
        # the colours changed, or contrast dipped on the way (mixing two pictures in a dissolve
        # lowers it; a fade passes through black).
        colours_changed = histogram_change(reference, frame) >= self._config.histogram_threshold
        dipped = self._lowest_contrast <= _TRANSITION_CONTRAST_DIP * min(reference.std, frame.std)
        return colours_changed or dipped

    def _settled(self, frame: FrameFeatures) -> bool:
        """Little change over the whole settle window: a slow fade is not settled."""
        if len(self._window) <= self._config.settle_frames:
            return False
        earlier = self._window[0]
        return (
            cut_score(earlier, frame) < self._config.threshold / 3
            and histogram_change(earlier, frame) < self._config.histogram_threshold / 3
        )

    def _gap_allows(self, time_s: float) -> bool:
        assert self._last_keyframe_s is not None
        return time_s - self._last_keyframe_s >= self._config.min_gap_s

    def _select(
        self, index: int, time_s: float, reason: SelectionReason, score: float, frame: FrameFeatures
    ) -> Selection:
        self._last_keyframe_s = time_s
        self._reference = frame
        self._lowest_contrast = frame.std
        self._cut_held_back = False
        return Selection(index, time_s, reason, round(float(score), 3))
