"""Keyframe selection: first frame, scene cuts, a minimum gap and a heartbeat.

Pure and synchronous: it sees a small luma image and a timestamp per frame and answers
whether this frame is a keyframe. Decoding, scaling and I/O happen elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.config import KeyframeConfig
from stream.frames import SelectionReason


@dataclass(frozen=True, slots=True)
class Selection:
    reason: SelectionReason
    score: float


def content_change(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean absolute luma difference between two same-size frames, in percent of full scale."""
    diff = np.abs(current.astype(np.int16) - previous.astype(np.int16))
    return float(diff.mean()) * (100.0 / 255.0)


class KeyframeSelector:
    """Decides, frame by frame, which frames are worth a caption."""

    def __init__(self, config: KeyframeConfig) -> None:
        self._config = config
        self._previous: np.ndarray | None = None
        self._last_keyframe_s: float | None = None

    def process_frame(self, time_s: float, luma: np.ndarray) -> Selection | None:
        """Feed one frame (2-D uint8 luma) in decode order; return a Selection for keyframes."""
        previous, self._previous = self._previous, luma
        if self._last_keyframe_s is None:
            return self._select("start", 0.0, time_s)
        comparable = previous is not None and previous.shape == luma.shape
        score = content_change(previous, luma) if comparable else 100.0
        since_last = time_s - self._last_keyframe_s
        if since_last < self._config.min_gap_s:
            return None
        if score >= self._config.threshold:
            return self._select("cut", score, time_s)
        if since_last >= self._config.max_interval_s:
            return self._select("interval", score, time_s)
        return None

    def _select(self, reason: SelectionReason, score: float, time_s: float) -> Selection:
        self._last_keyframe_s = time_s
        return Selection(reason, round(score, 3))
