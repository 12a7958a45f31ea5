"""Synthetic clips with known cuts, for the demo, the tests and the benchmarks.

Each shot has its own brightness and pattern plus a moving square (motion without a cut), so
the expected keyframes are exactly: frame 0 and the first frame of every later shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_SHOT_LEVELS = (40, 200, 90, 230, 20, 150, 60, 180)


@dataclass(frozen=True, slots=True)
class ClipSpec:
    shots: int = 4
    shot_frames: int = 50
    fps: int = 25
    width: int = 320
    height: int = 240
    codec: str = "libx264"

    @property
    def cut_frames(self) -> list[int]:
        """Frames that begin a new shot (frame 0 included)."""
        return [shot * self.shot_frames for shot in range(self.shots)]

    @property
    def frames(self) -> int:
        return self.shots * self.shot_frames


def shot_frame(spec: ClipSpec, shot: int, offset: int) -> np.ndarray:
    """RGB frame ``offset`` of ``shot``."""
    level = _SHOT_LEVELS[shot % len(_SHOT_LEVELS)]
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
    pattern = ((xs // (8 + 4 * shot) + ys // (8 + 4 * shot)) % 2) * 24  # per-shot texture
    base = np.clip(level - 12 + pattern, 0, 255).astype(np.uint8)
    image = np.stack([base, np.roll(base, shot * 7, axis=1), base[::-1]], axis=-1)
    side = spec.height // 6
    travel = spec.width - side
    x = abs((offset * 4) % (2 * travel) - travel)  # back and forth, never jumping
    y = spec.height // 2 - side // 2
    image[y : y + side, x : x + side] = 255 - level
    return image


def write_clip(path: Path, spec: ClipSpec = ClipSpec()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(spec.codec, rate=spec.fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.time_base = Fraction(1, spec.fps)
        if spec.codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20", "g": str(spec.fps * 2)}
        for shot in range(spec.shots):
            for offset in range(spec.shot_frames):
                frame = av.VideoFrame.from_ndarray(shot_frame(spec, shot, offset), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
