"""What keyframe selection looks at: a tiny YUV picture of each frame, made by swscale.

The full-resolution frame is never converted to RGB or copied into numpy: swscale samples it
(any pixel format, any size) onto a grid twice as fine as the analysis picture, and each
analysis pixel is the mean of its 2x2 samples, which also averages away compression noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from stream.keyframes.kernels import LUMA, NORMALISED, analyse_planes

# How swscale shrinks: POINT sampling onto a grid OVERSAMPLE times finer than the analysis
# picture, then a box mean (in the compiled kernel). On 720p this cost a third of an AREA
# shrink (65 vs 190 us per frame on the calling thread) and gave the same cuts on every
# labelled set, PySceneDetect's clips and a heavily noised copy of the labelled set. POINT
# alone (no oversampling) was cheaper still but found a cut into "black with a line of
# text" on testvideo.mp4.
INTERPOLATION: Final = Interpolation.POINT
OVERSAMPLE: Final = 2
# swscale's default (0) starts a thread pool per scaler and hands every frame's few output
# rows to it: on 720p that cost more CPU and wall time than scaling on the calling thread.
SCALER_THREADS: Final = 1
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
    packed: np.ndarray
    """float32 (5, h, w): normalised luma, luma, U, V, centred luma (see ``pixel_kernels``);
    one array, so comparing two frames is one compiled call."""
    histogram: np.ndarray
    """Concatenated Y, U, V histograms, each summing to 1 (float32)."""
    norm: float
    """Euclidean length of the centred luma."""
    mean: float
    std: float
    blank: bool
    """Nothing to caption; never a keyframe (except a stream's first frame)."""

    @property
    def luma(self) -> np.ndarray:
        """2-D luma, 0-255."""
        return self.packed[LUMA]

    @property
    def normalised(self) -> np.ndarray:
        """Luma minus its mean, over its std: the picture's structure, blind to brightness
        (zeros for a flat picture)."""
        return self.packed[NORMALISED]


def is_blank(mean: float, std: float) -> bool:
    """Uniform, or flat and dark or bright (see UNIFORM_STD)."""
    if std < UNIFORM_STD:
        return True
    return std < FLAT_STD and not DARK_MEAN <= mean <= BRIGHT_MEAN


def _analyse(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    stride: int,
    height: int,
    width: int,
    oversample: int = 1,
) -> FrameFeatures:
    packed, histogram, norm, mean, std = analyse_planes(
        y, u, v, stride, height, width, oversample, FLAT_STD
    )
    return FrameFeatures(packed, histogram, norm, mean, std, is_blank(mean, std))


def features_from_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> FrameFeatures:
    """Features of a small Y, U, V picture (uint8 planes of one shape)."""
    height, width = y.shape
    y, u, v = (np.ascontiguousarray(plane, np.uint8).ravel() for plane in (y, u, v))
    return _analyse(y, u, v, width, height, width)


def analysis_size(width: int, height: int, analysis_width: int) -> tuple[int, int]:
    """Analysis picture size: ``analysis_width`` wide, aspect kept, even height."""
    height = max(2, round(analysis_width * height / max(width, 1) / 2) * 2)
    return analysis_width, height


class FeatureExtractor:
    """Per stream: one swscale context reused for every frame (``VideoFrame.reformat``
    builds a new scaler per frame, 3x the cost here)."""

    def __init__(self, analysis_width: int) -> None:
        self.analysis_width = analysis_width
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> FrameFeatures:
        width, height = analysis_size(frame.width, frame.height, self.analysis_width)
        small = self._reformatter.reformat(
            frame,
            width=width * OVERSAMPLE,
            height=height * OVERSAMPLE,
            format="yuv444p",
            interpolation=INTERPOLATION,
            threads=SCALER_THREADS,
        )
        # Planes of one width share a line size (FFmpeg aligns them alike).
        planes = small.planes
        y, u, v = (np.frombuffer(memoryview(plane), np.uint8) for plane in planes)
        return _analyse(y, u, v, planes[0].line_size, height, width, OVERSAMPLE)


def frame_features(frame: av.VideoFrame, analysis_width: int) -> FrameFeatures:
    """One-off features (tests, tools); streams use a FeatureExtractor."""
    return FeatureExtractor(analysis_width)(frame)
