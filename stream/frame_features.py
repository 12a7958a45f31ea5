"""What keyframe selection looks at: a tiny YUV picture of each frame, made by swscale.

The full-resolution frame is never converted to RGB or copied into numpy: swscale shrinks it
(area filter, which also averages away compression noise) straight to a few thousand pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from stream.pixel_kernels import analyse_planes

# swscale's filter for the shrink. AREA averages every source pixel, so noise and fine
# texture wash out and "black with a line of text" stays blank. POINT was 15 % cheaper per
# 720p frame here but found a cut into such a frame on testvideo.mp4 and lost robustness.
INTERPOLATION: Final = "AREA"
LUMA_BINS: Final = 16
CHROMA_BINS: Final = 8
# Luma std (0-255) below which a picture has too little structure to normalise.
FLAT_STD: Final = 6.0
# A flat picture this dark or bright, or one almost uniform, has nothing to caption: black,
# white, a solid card, or "black with a copyright line" (std 4-5 on PySceneDetect's
# testvideo.mp4). A flat mid-grey picture (fog, a dim room) is still content.
UNIFORM_STD: Final = 2.0
DARK_MEAN: Final = 40.0
BRIGHT_MEAN: Final = 215.0


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    luma: np.ndarray
    """2-D float32 luma, 0-255."""
    normalised: np.ndarray
    """Luma minus its mean, over its std: the picture's structure, blind to brightness."""
    chroma: np.ndarray
    """U and V planes stacked (2, h, w), float32, 0-255."""
    histogram: np.ndarray
    """Concatenated Y, U, V histograms, each summing to 1 (float32)."""
    centred: np.ndarray
    """Luma minus its mean, flattened: what dissolve tests correlate."""
    norm: float
    """Euclidean length of ``centred``."""
    mean: float
    std: float

    @property
    def flat(self) -> bool:
        return self.std < FLAT_STD

    @property
    def blank(self) -> bool:
        """Nothing to caption; never a keyframe (except a stream's first frame)."""
        if self.std < UNIFORM_STD:
            return True
        return self.flat and not DARK_MEAN <= self.mean <= BRIGHT_MEAN


def features_from_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> FrameFeatures:
    """Features of a small Y, U, V picture (uint8 planes of one shape)."""
    planes = (np.ascontiguousarray(plane, np.uint8) for plane in (y, u, v))
    return FrameFeatures(
        *analyse_planes(*planes, _LUMA_SHIFT, _CHROMA_SHIFT, LUMA_BINS, CHROMA_BINS, FLAT_STD)
    )


_LUMA_SHIFT: Final = 8 - (LUMA_BINS.bit_length() - 1)  # bins are powers of two
_CHROMA_SHIFT: Final = 8 - (CHROMA_BINS.bit_length() - 1)


def analysis_size(width: int, height: int, analysis_width: int) -> tuple[int, int]:
    """Analysis picture size: ``analysis_width`` wide, aspect kept, even height."""
    height = max(2, round(analysis_width * height / max(width, 1) / 2) * 2)
    return analysis_width, height


class FeatureExtractor:
    """Per stream: one swscale context reused for every frame.

    ``VideoFrame.reformat`` builds a new scaler per frame; reusing one made the shrink 3x
    cheaper here (0.27 instead of 0.89 ms per 720p frame).
    """

    def __init__(self, analysis_width: int) -> None:
        self.analysis_width = analysis_width
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> FrameFeatures:
        width, height = analysis_size(frame.width, frame.height, self.analysis_width)
        small = self._reformatter.reformat(
            frame, width=width, height=height, format="yuv444p", interpolation=INTERPOLATION
        )
        y, u, v = (_unpad(plane, width, height) for plane in small.planes)
        return features_from_planes(y, u, v)


def frame_features(frame: av.VideoFrame, analysis_width: int) -> FrameFeatures:
    """One-off features (tests, tools); streams use a FeatureExtractor."""
    return FeatureExtractor(analysis_width)(frame)


def _unpad(plane: av.video.plane.VideoPlane, width: int, height: int) -> np.ndarray:
    buffer = np.frombuffer(plane, np.uint8)
    return buffer[: plane.line_size * height].reshape(height, plane.line_size)[:, :width]
