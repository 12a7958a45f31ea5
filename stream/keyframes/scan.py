"""Scene cuts of a whole video file, with the same selector the live pipeline uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from stream.config import KeyframeConfig
from stream.keyframes.features import FeatureExtractor
from stream.keyframes.selector import KeyframeSelector, Selection
from stream.keyframes.transitions import Transition
from stream.sources.pyav import first_video_stream

NO_HEARTBEAT_S = 86400.0
# A scan only looks at tiny averaged pictures, where the deblocking (loop) filter of
# H.264/HEVC changes nothing: same cuts on every labelled and PySceneDetect clip, and about
# a fifth less decoding CPU. The live pipeline keeps it: its keyframes are captioned.
SCAN_DECODER_OPTIONS = {"skip_loop_filter": "all"}


@dataclass(frozen=True, slots=True)
class SceneReport:
    frames: int
    fps: float
    selections: list[Selection]
    """Every keyframe: the start, one per transition (taken where the new shot shows)."""
    duration_s: float = 0.0
    """Stream time of the last frame plus one frame."""

    @property
    def transitions(self) -> list[Transition]:
        return [s.transition for s in self.selections if s.transition is not None]

    @property
    def cuts(self) -> list[int]:
        """Frame indices (decoded frames from 0) where a new scene starts, i.e. the first frame
        of each transition; frame 0 not included."""
        return [transition.first for transition in self.transitions]

    @property
    def keyframes(self) -> list[int]:
        """Frame indices of the keyframes chosen after transitions (not the start)."""
        return [s.index for s in self.selections if s.transition is not None]


def detect_scenes(
    path: Path,
    config: KeyframeConfig | None = None,
    on_frame: Callable[[], object] | None = None,
    heartbeat: bool = False,
) -> SceneReport:
    """Decode ``path`` and list its cuts; the heartbeat is off (only content decides) unless
    ``heartbeat`` (every keyframe a live stream would send). ``on_frame`` is called after each
    frame (a progress bar)."""
    config = config or KeyframeConfig()
    if not heartbeat:
        config = config.model_copy(update={"max_interval_s": NO_HEARTBEAT_S})
    selector = KeyframeSelector(config)
    features = FeatureExtractor(config.analysis_width)
    selections: list[Selection] = []
    frames = 0
    last_time = 0.0
    with av.open(str(path)) as container:
        stream = first_video_stream(container)
        stream.thread_type = "AUTO"
        stream.codec_context.options = SCAN_DECODER_OPTIONS
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        for frame in container.decode(stream):
            last_time = _frame_time(frame, frames, fps, last_time)
            if selected := selector.process_frame(frames, last_time, features(frame)):
                selections += selected
            frames += 1
            if on_frame is not None:
                on_frame()
    selections += selector.flush()
    return SceneReport(frames, fps, selections, last_time + (1 / fps if fps else 0.0))


def _frame_time(frame: av.VideoFrame, index: int, fps: float, last: float) -> float:
    if (time_s := frame.time) is not None:  # float pts * time_base (no Fraction per frame)
        return max(time_s, last)
    return index / fps if fps else last
