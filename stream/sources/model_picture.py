"""A keyframe as the model gets it: upright RGB, at most ``image_size`` on its longer side, and
the same picture as the YUV planes its snapshot JPEG is encoded from.

Two swscale passes, each on its fast path. The first shrinks the frame to 8-bit 4:2:0 YUV in
JPEG's own colours (BT.601 matrix, full range): libjpeg-turbo takes those planes as they are,
with no colour conversion or chroma subsampling of its own (about 1.0 against 1.9 ms through
PIL from RGB at 896x504). The second converts the small picture to RGBX, the layout PIL keeps
RGB in, so PIL takes the pixels with a plain 4-byte copy (from packed 24-bit RGB it unpacks
each pixel: 0.8 ms against 0.36 ms at 896x504). A new conversion to RGB of the whole frame
followed by PyAV's ``to_image`` took 6.6-6.7 ms at 720p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image

from stream.sources.frames import YuvPlanes

# On the calling thread: swscale's default pool (a thread per core, per scaler) saved no CPU
# here and spent more on keyframes seconds apart (2.5 against 2.2 ms a 720p keyframe).
SCALER_THREADS: Final = 1

# Pillow gives a picture's memory back when the picture goes, and how the C heap lies then
# decides whether the next keyframe's picture gets pages the process already has or new ones
# from the kernel: with a decoder's frames in memory, new ones (850 page faults, +2.5 ms a 720p
# keyframe). Kept for reuse instead: up to this many freed blocks, each at most Pillow's block
# size (16 MiB), for the whole process.
FREED_PICTURE_BLOCKS_KEPT: Final = 8

# Counter-clockwise display rotation (degrees, from the stream's display matrix) -> the
# transpose that shows the picture upright, as a player would (phones record sideways).
_UPRIGHT = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    -90: Image.Transpose.ROTATE_270,
    270: Image.Transpose.ROTATE_270,
    -180: Image.Transpose.ROTATE_180,
}


@dataclass(frozen=True, slots=True)
class ModelPicture:
    image: Image.Image
    planes: YuvPlanes | None
    """Y, Cb, Cr of ``image`` as a JPEG wants them; None when the picture was turned upright
    (the planes are as stored, and a turned copy costs more than PIL's JPEG saves)."""


class ModelScaler:
    """One stream's: each reformatter keeps its swscale context while the frame size and
    format stay (a new context per keyframe costs about 3 ms at 720p)."""

    def __init__(self, max_side: int) -> None:
        _keep_freed_picture_memory()
        self._max_side = max_side
        self._shrink = VideoReformatter()
        self._to_rgbx = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> ModelPicture:
        scale = min(1.0, self._max_side / max(frame.width, frame.height))
        width = max(2, round(frame.width * scale))
        height = max(2, round(frame.height * scale))
        small = self._shrink.reformat(
            frame,
            width=width,
            height=height,
            format="yuv420p",
            dst_colorspace=Colorspace.ITU601,
            dst_color_range=ColorRange.JPEG,
            interpolation="BILINEAR",
            threads=SCALER_THREADS,
        )
        rgbx_frame = self._to_rgbx.reformat(small, format="rgb0", threads=SCALER_THREADS)
        plane = rgbx_frame.planes[0]
        # The plane itself (it has the buffer protocol; PyAV's stub does not say so).
        rgbx: Any = plane
        image = Image.frombytes("RGB", (width, height), rgbx, "raw", "RGBX", plane.line_size, 1)
        turn = _UPRIGHT.get(round(frame.rotation))
        if turn is not None:
            return ModelPicture(image.transpose(turn), None)
        return ModelPicture(image, _planes(small))


def _keep_freed_picture_memory() -> None:
    if Image.core.get_blocks_max() < FREED_PICTURE_BLOCKS_KEPT:
        Image.core.set_blocks_max(FREED_PICTURE_BLOCKS_KEPT)


def _planes(frame: av.VideoFrame) -> YuvPlanes:
    """Views of ``frame``'s planes without their row padding (they keep the frame alive)."""
    views = []
    for plane in frame.planes:
        pixels: Any = plane  # the buffer protocol again
        rows = np.frombuffer(pixels, np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, : plane.width])
    y, cb, cr = views
    return y, cb, cr


def model_image(frame: av.VideoFrame, max_side: int) -> Image.Image:
    """One frame's picture for the model (a stream keeps a ``ModelScaler`` instead)."""
    return ModelScaler(max_side)(frame).image
