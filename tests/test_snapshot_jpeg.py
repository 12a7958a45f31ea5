"""A keyframe's snapshot JPEG is encoded straight from the YUV planes the model's picture was
made from: it must show that picture's colours whatever the source's pixel format, matrix and
range, at any size (a turned source's: tests/test_fault_matrix.py)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image

from stream.delivery.snapshots import encode_jpeg
from stream.sources.model_picture import ModelScaler

QUADRANTS = ((220, 30, 40), (30, 200, 60), (40, 50, 210), (240, 240, 240))


def quadrants(width: int, height: int) -> np.ndarray:
    rgb = np.zeros((height, width, 3), np.uint8)
    top, left = slice(0, height // 2), slice(0, width // 2)
    bottom, right = slice(height // 2, None), slice(width // 2, None)
    for (rows, cols), colour in zip(
        [(top, left), (top, right), (bottom, left), (bottom, right)], QUADRANTS, strict=True
    ):
        rgb[rows, cols] = colour
    return rgb


def source_frame(rgb: np.ndarray, pix_fmt: str, colorspace: int, color_range: int) -> av.VideoFrame:
    """``rgb`` as a decoder would hand it over: in ``pix_fmt``, the matrix and range tagged."""
    frame = VideoReformatter().reformat(
        av.VideoFrame.from_ndarray(rgb, format="rgb24"),
        format=pix_fmt,
        dst_colorspace=colorspace,
        dst_color_range=color_range,
    )
    frame.colorspace, frame.color_range = colorspace, color_range
    return frame


def centres(pixels: np.ndarray) -> list[np.ndarray]:
    h, w = pixels.shape[:2]
    spots = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return [pixels[row, col].astype(int) for row, col in spots]


@pytest.mark.parametrize(
    ("pix_fmt", "colorspace", "color_range", "size"),
    [
        ("yuv420p", Colorspace.ITU709, ColorRange.MPEG, (1280, 720)),  # HD camera
        ("yuv420p", Colorspace.ITU601, ColorRange.MPEG, (1001, 701)),  # odd size, padded rows
        ("yuvj420p", Colorspace.ITU601, ColorRange.JPEG, (640, 480)),  # MJPEG camera
        ("yuv420p", Colorspace.ITU709, ColorRange.JPEG, (333, 197)),  # phone: full range
        ("yuv420p10le", Colorspace.ITU709, ColorRange.MPEG, (1920, 1080)),
        ("yuv444p", Colorspace.ITU709, ColorRange.MPEG, (1280, 720)),
        ("rgb24", Colorspace.ITU601, ColorRange.JPEG, (800, 600)),
    ],
)
def test_the_snapshot_shows_the_model_picture_s_colours(
    pix_fmt: str, colorspace: int, color_range: int, size: tuple[int, int]
) -> None:
    frame = source_frame(quadrants(*size), pix_fmt, colorspace, color_range)
    picture = ModelScaler(896)(frame)
    assert picture.planes is not None
    jpeg = Image.open(io.BytesIO(encode_jpeg(picture.image, 90, picture.planes)))
    assert jpeg.size == picture.image.size and max(jpeg.size) <= 896
    shown = np.asarray(jpeg.convert("RGB"))
    for got, sent, colour in zip(
        centres(shown), centres(np.asarray(picture.image)), QUADRANTS, strict=True
    ):
        # A wrong matrix moved saturated red by 17 and green by 21 levels; a wrong range
        # moves white by 15.
        assert np.abs(got - sent).max() <= 4, (got, sent)
        assert np.abs(got - colour).max() <= 6, (got, colour)
