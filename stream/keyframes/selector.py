"""Keyframe selection: the first frame, hard cuts, gradual transitions, a heartbeat.

Pure and synchronous (PySceneDetect's detector shape): it sees each frame's small features
and a timestamp, and returns the keyframes it has decided on, possibly a few frames late:

- A hard cut is a large change between consecutive frames (``cut_score``: structure, i.e.
  luma normalised by its own mean and std so brightness ramps do not count; else brightness;
  else colour) that is also either a colour-histogram change (a pan or zoom moves structure
  but keeps the histogram) or an outlier against the recent scores (sustained motion raises
  them all). It is confirmed only if, over the next ``flash_frames`` frames, the picture
  neither returns to its pre-cut state (a camera flash) nor keeps changing as fast (a pan or
  zoom that has just begun).
- A gradual transition (dissolve, fade out/in) never makes one large step; it is found when
  the picture has settled (its histogram, brightness and contrast stopped moving over
  ``settle_frames`` frames; the new shot may itself move) and differs from the
  last keyframe in content as much as a cut would, and the way there looked like a
  transition: colours changed, or contrast dipped (a dissolve's mixed frames, a fade's
  black). A pan or a drift within one shot does neither; one still moving never settles.
- A cut held back by ``min_gap_s`` is taken once the gap has passed, if the picture still
  differs from the last keyframe.
- Each selection after the first says which transition led to it (``transitions.py``): a cut
  is its own frame; a gradual transition is located in the frames held since the last
  keyframe, and its keyframe is the first frame that shows the new shot fully, or the first
  of the settled frames if that is later (at most ``lookahead`` frames back).
- Blank pictures (black, white, a solid card, black with one line of text) are never
  keyframes, except a stream's first frame.
- ``min_gap_s`` and ``max_interval_s`` (heartbeat) hold per stream, in stream time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from stream.config import KeyframeConfig
from stream.keyframes.features import FLAT_STD, FrameFeatures
from stream.keyframes.kernels import histogram_distance, mean_abs_differences
from stream.keyframes.transitions import (
    HeldFrame,
    Transition,
    arrived,
    blend_fit,
    blended,
    confidence,
    fade_span,
    gradual_kind,
    locate,
    still_brightening,
)
from stream.sources.frames import SelectionReason

_MEAN_ABS_Z_UNRELATED = 2 / math.sqrt(math.pi)  # E|z1 - z2| for unrelated standardised pictures
_RECENT_SCORES = 8
# Scale mean pixel differences (percent) to the structure score's range: a cut between two
# unrelated real shots moves mean luma by ~20-40 % and chroma by ~5-15 %.
_LUMA_WEIGHT = 2.0
_CHROMA_WEIGHT = 4.0
_FULL_CONTRAST_STD = 16.0  # luma std from which picture structure is fully trusted
_SETTLED_LEVELS = 3.0  # luma mean/std drift (0-255) still counted as settled
_DISSOLVE_SPANS = (4, 8, 16)  # frames either side of a frame tested for being a dissolve's blend
_MIXTURE_FIT = 0.9  # R^2 of middle ~ a*before + b*after + c that makes a blend
_MIXTURE_SHARE = 0.1  # each picture's least weight in a dissolve's middle
_MIXTURE_GAIN = 0.15  # how much better two pictures must explain it than one
_FADE_IN_SETTLE_FRAMES = 3  # after black, the fade-in has ended once 3 frames stop brightening
# A dissolve of moving shots (no frame a clean blend of its neighbours) is told from motion by
# its colours changing this much end to end (tuning set: dissolves >= 22, motion <= 15.4) or
# its contrast dipping to this share of its ends' (dissolves 0.65-0.77, motion >= 0.97).
_DISSOLVE_COLOURS = 20.0
_CONTRAST_DIP = 0.85
_ARRIVING = 2  # a dissolve whose arrival is located this close to the current frame goes on
# A settled picture judged no transition is judged again 3 frames later: a dissolve judged too
# early (its span still incomplete) needs another look soon, but each judgement locates a
# transition (~0.5-2 ms), too much for every frame of a moving shot.
_REJUDGE_FRAMES = 3
# Frames held to locate a gradual transition: a 2 s dissolve at 30 fps, the shot before it and
# the settling after it. References only (each frame's features exist anyway), ~6 MB a stream.
_HELD_FRAMES = 128


@dataclass(frozen=True, slots=True)
class Selection:
    index: int
    time_s: float
    reason: SelectionReason
    score: float
    transition: Transition | None = None
    """The transition that led to this keyframe (none for the start and heartbeats)."""


def _changes(a: FrameFeatures, b: FrameFeatures) -> tuple[float, float, float]:
    """Structure (0 same to ~100 unrelated, blind to brightness and contrast), and mean
    absolute luma and chroma differences in percent of full scale; pictures of different
    sizes (a new session) differ fully."""
    if a.packed.shape != b.packed.shape:
        return 100.0, 100.0, 100.0
    structure, luma, chroma = mean_abs_differences(a.packed, b.packed)
    return (
        min(100.0, 100.0 * structure / _MEAN_ABS_Z_UNRELATED),
        luma * (100.0 / 255.0),
        chroma * (100.0 / 255.0),
    )


def structure_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """0 (same structure) to about 100 (unrelated pictures), blind to brightness and contrast."""
    return _changes(a, b)[0]


def histogram_change(a: FrameFeatures, b: FrameFeatures) -> float:
    """0 (same Y, U and V histograms) to 100 (disjoint)."""
    return histogram_distance(a.histogram, b.histogram) * (100.0 / 6.0)


def is_mixture(middle: FrameFeatures, old: FrameFeatures, new: FrameFeatures) -> bool:
    """Is ``middle`` a blend of ``old`` and ``new`` (a dissolve frame), by least squares?

    Both pictures must carry weight, and together explain ``middle`` clearly better than
    either alone: a frame of smooth motion resembles each neighbour by itself.
    """
    fit = blend_fit(middle, old, new)
    return (
        fit is not None
        and fit.both >= _MIXTURE_FIT
        and fit.gain >= _MIXTURE_GAIN
        and min(fit.weight_old, fit.weight_new) >= _MIXTURE_SHARE
    )


def _scene_and_pixel_change(a: FrameFeatures, b: FrameFeatures) -> tuple[float, float]:
    """How different two pictures' content is (0-100), blind to brightness where it can be;
    and their brightness or colour change, scaled to the same range.

    Structure is trusted in proportion to contrast: normalising a low-contrast picture
    amplifies its noise, and a flat one has no structure at all, so there the content score
    slides to plain pixel change.
    """
    structure, luma, chroma = _changes(a, b)
    pixel = min(100.0, max(_LUMA_WEIGHT * luma, _CHROMA_WEIGHT * chroma))
    trust = (min(a.std, b.std) - FLAT_STD) / (_FULL_CONTRAST_STD - FLAT_STD)
    trust = min(1.0, max(0.0, trust))
    return trust * structure + (1 - trust) * pixel, pixel


def scene_change(a: FrameFeatures, b: FrameFeatures) -> float:
    return _scene_and_pixel_change(a, b)[0]


def cut_score(a: FrameFeatures, b: FrameFeatures) -> float:
    """Change between consecutive frames: content, or brightness/colour (black to white, a grey
    card to a red one), whichever is larger."""
    return max(_scene_and_pixel_change(a, b))


@dataclass(slots=True)
class _Candidate:
    index: int
    time_s: float
    score: float
    before: FrameFeatures
    after: FrameFeatures
    frames_seen: int = 0
    largest_after: float = 0.0  # largest frame-to-frame change seen after the candidate


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
        self._cut_held_back: Transition | None = None  # a confirmed cut inside min_gap_s
        self._held: deque[HeldFrame] = deque(maxlen=_HELD_FRAMES)
        self._last_keyframe_index = -1
        self._judged_until = -1  # a settled picture was judged no transition: not before this
        self._waited = 0  # frames a settled transition waited for the picture to arrive
        self._recent_frames: deque[FrameFeatures] = deque(maxlen=2 * max(_DISSOLVE_SPANS) + 1)
        self._saw_dissolve = False  # a dissolve-like blend was seen since the last keyframe
        self._passed_blank = False  # a blank picture was seen since the last keyframe

    @property
    def lookahead(self) -> int:
        """Most frames a selection can lag behind the frame just fed."""
        return max(self._config.flash_frames, self._config.settle_frames)

    def process_frame(self, index: int, time_s: float, frame: FrameFeatures) -> list[Selection]:
        previous, self._previous = self._previous, frame
        self._held.append(HeldFrame(index, time_s, frame))
        if previous is None:
            return [self._select(index, time_s, "start", 0.0, frame)]
        score = cut_score(previous, frame)
        selections: list[Selection] = []
        if self._pending is not None:
            selections += self._follow_candidate(frame, score)
        elif self._is_cut_candidate(score, previous, frame):
            self._pending = _Candidate(index, time_s, score, previous, frame)
        self._recent.append(score)
        self._window.append(frame)
        self._track_dissolve(frame)
        self._passed_blank = self._passed_blank or frame.blank
        if not selections and self._pending is None:
            selections += self._transition_or_heartbeat(index, time_s, frame)
        return selections

    def _track_dissolve(self, frame: FrameFeatures) -> None:
        """Note when a recent frame is a blend of the frames some way either side of it: the
        signature of a dissolve (a pan's middle view is no blend of its ends). Several spans, so
        short and long dissolves both show it."""
        if self._pending is not None:
            self._recent_frames.clear()  # possibly a flash: not part of any dissolve
            return
        self._recent_frames.append(frame)
        for span in _DISSOLVE_SPANS:
            if self._saw_dissolve or len(self._recent_frames) < 2 * span + 1:
                return
            first, middle = self._recent_frames[-2 * span - 1], self._recent_frames[-span - 1]
            if structure_change(first, frame) >= self._config.threshold / 2:
                self._saw_dissolve = is_mixture(middle, first, frame)

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
        typical = sum(self._recent) / len(self._recent)
        return score >= self._config.adaptive_ratio * max(typical, 1.0)

    def _follow_candidate(self, frame: FrameFeatures, score: float) -> list[Selection]:
        candidate = self._pending
        assert candidate is not None
        if cut_score(candidate.before, frame) < self._config.threshold / 2:
            self._pending = None  # the old picture came back: a flash, not a cut
            return []
        candidate.frames_seen += 1
        candidate.largest_after = max(candidate.largest_after, score)
        if candidate.frames_seen < self._config.flash_frames:
            return []
        self._pending = None
        if candidate.largest_after >= max(self._config.threshold, candidate.score / 2):
            return []  # the picture keeps changing as fast: a pan or zoom began, not a cut
        if self._gap_allows(candidate.time_s):
            return [self._confirm(candidate)]
        self._cut_held_back = self._cut(candidate)
        return []

    def _cut(self, candidate: _Candidate) -> Transition:
        """A cut; after a blank stretch, the fade out that went before it, if there was one."""
        sure = confidence(candidate.score, self._config.threshold)
        index, time_s = candidate.index, candidate.time_s
        if self._passed_blank:
            frames = [h for h in self._held if self._last_keyframe_index < h.index <= index]
            first, _, steadiness = locate(frames)
            if gradual_kind(frames[max(0, first - 1) :]) == "fade_out":
                start = frames[first]
                sure = confidence(candidate.score, self._config.threshold, steadiness)
                return Transition("fade_out", start.index, index, start.time_s, time_s, sure)
        return Transition("cut", index, index, time_s, time_s, sure)

    def _confirm(self, candidate: _Candidate) -> Selection:
        return self._select(
            candidate.index,
            candidate.time_s,
            "cut",
            candidate.score,
            candidate.after,
            self._cut(candidate),
        )

    def _transition_or_heartbeat(
        self, index: int, time_s: float, frame: FrameFeatures
    ) -> list[Selection]:
        if not self._gap_allows(time_s):
            return []
        reference = self._reference
        assert reference is not None
        if self._cut_held_back is not None and not frame.blank:
            # The gap has passed; if the picture still differs, the held-back cut counts now.
            held_back, self._cut_held_back = self._cut_held_back, None
            if scene_change(reference, frame) >= self._config.threshold:
                score = cut_score(reference, frame)
                return [self._select(index, time_s, "cut", score, frame, held_back)]
        if gradual := self._gradual(frame):
            return [gradual]
        assert self._last_keyframe_s is not None
        heartbeat_due = time_s - self._last_keyframe_s >= self._config.max_interval_s
        if heartbeat_due and not frame.blank:  # a blank picture is never a keyframe
            return [self._select(index, time_s, "interval", self._recent[-1], frame)]
        return []

    def _gradual(self, frame: FrameFeatures) -> Selection | None:
        """The keyframe after a gradual transition, once it has ended (None before): after a
        fade through black, once the picture stops brightening; after a dissolve, once the
        picture has settled somewhere new and no longer moves towards where it is now, if
        the way there was a blend of the two pictures (a pan's or a drift's is not)."""
        # Cheapest tests first: most frames are still in the last keyframe's shot.
        reference = self._reference
        assert reference is not None
        if frame.blank:
            return None
        if not reference.blank and scene_change(reference, frame) < self._config.threshold:
            return None  # content, not brightness: a lighting drift is no new scene
        if self._passed_blank and not still_brightening(self._held, _FADE_IN_SETTLE_FRAMES):
            frames = self._since_keyframe()
            if any(held.features.blank for held in frames):
                return self._after_fade(frames)
        if not (settled := self._settled(frame)):
            return None
        now = self._held[-1].index
        if now < self._judged_until:
            return None  # judged no transition a moment ago: the same picture, most likely
        frames = self._since_keyframe()
        arriving = not arrived(frames[-1 - _ARRIVING :], reference)
        if arriving and self._waited < 2 * self._config.settle_frames:
            self._waited += 1  # still moving towards the current picture: a slow dissolve
            return None
        first, last, steadiness = locate(frames)
        if not (reference.blank or self._saw_dissolve or self._dissolved(frames, first, last)):
            self._judged_until = now + _REJUDGE_FRAMES
            return None
        return self._take(frames, first, last, steadiness, settled)

    def _since_keyframe(self) -> list[HeldFrame]:
        return [held for held in self._held if held.index > self._last_keyframe_index]

    def _dissolved(self, frames: list[HeldFrame], first: int, last: int) -> bool:
        """Did the located transition look like a dissolve of moving shots? Its frames were
        blends of its ends, and on the way the colours changed or the contrast dipped (a
        pan or the camera's motion within a shot does neither)."""
        if last - first < 2:
            return False
        before, after = frames[max(0, first - 1)].features, frames[last].features
        colours = histogram_change(before, after) >= _DISSOLVE_COLOURS
        lowest = min(held.features.std for held in frames[first:last])
        dipped = lowest <= _CONTRAST_DIP * min(before.std, after.std)
        return (colours or dipped) and blended(frames, first, last)

    def _after_fade(self, frames: list[HeldFrame]) -> Selection | None:
        """Once the picture has stopped brightening after the blank stretch (checked on the last
        few frames before the fade is located in all of them)."""
        blank = [held.features.blank for held in frames]
        first, last = fade_span(frames, blank)
        if last >= len(frames) - _FADE_IN_SETTLE_FRAMES:
            return None  # still brightening (or just stopped)
        return self._take(frames, first, last, 1.0, _FADE_IN_SETTLE_FRAMES)

    def _take(
        self, frames: list[HeldFrame], first: int, last: int, steadiness: float, settled: int
    ) -> Selection:
        """The keyframe for a gradual transition located at ``frames[first:last + 1]``: its
        last frame (the new shot's first in full), or the first of the ``settled`` frames
        if later (no further back than ``lookahead``)."""
        reference = self._reference
        assert reference is not None
        chosen = frames[max(last, len(frames) - 1 - min(settled, self.lookahead))]
        before = frames[max(0, first - 1)].features
        change = scene_change(before, frames[-1].features)
        transition = Transition(
            gradual_kind(frames[max(0, first - 1) : last + 1]),
            frames[first].index,
            frames[last].index,
            frames[first].time_s,
            frames[last].time_s,
            confidence(change, self._config.threshold, steadiness),
        )
        score = cut_score(reference, chosen.features)
        return self._select(
            chosen.index, chosen.time_s, "transition", score, chosen.features, transition
        )

    def _settled(self, frame: FrameFeatures, frames: int | None = None) -> int:
        """The picture's overall statistics (histogram, brightness, contrast) stopped moving
        over the last ``frames`` (default settle_frames): a transition has ended, even if the
        new shot itself moves. Returns ``frames``, or 0 if not settled."""
        frames = frames or self._config.settle_frames
        if len(self._window) <= frames:
            return 0
        tolerance = self._config.histogram_threshold / 3
        settled = all(
            histogram_change(earlier, frame) < tolerance
            and abs(earlier.mean - frame.mean) < _SETTLED_LEVELS
            and abs(earlier.std - frame.std) < _SETTLED_LEVELS
            for earlier in list(self._window)[-frames - 1 :]
        )
        return frames if settled else 0

    def _gap_allows(self, time_s: float) -> bool:
        assert self._last_keyframe_s is not None
        return time_s - self._last_keyframe_s >= self._config.min_gap_s

    def _select(
        self,
        index: int,
        time_s: float,
        reason: SelectionReason,
        score: float,
        frame: FrameFeatures,
        transition: Transition | None = None,
    ) -> Selection:
        self._last_keyframe_s = time_s
        self._last_keyframe_index = index
        self._reference = frame
        self._saw_dissolve = False
        self._passed_blank = False
        self._cut_held_back = None
        self._judged_until = -1
        self._waited = 0
        return Selection(index, time_s, reason, round(float(score), 3), transition)
