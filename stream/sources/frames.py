"""What flows between the stages of one stream: frames, keyframes, source state changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the keyframes package pulls in numba: not for every importer of frames
    from stream.keyframes.transitions import Transition

SelectionReason = Literal["start", "cut", "transition", "interval"]
TransitionKind = Literal["cut", "dissolve", "fade_in", "fade_out", "fade_out_in"]
YuvPlanes = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A picture as 8-bit Y, Cb, Cr planes, the chroma halved both ways, BT.601, full range."""


@dataclass(frozen=True, slots=True)
class FrameTime:
    """Where a frame sits: decode order, media timestamp, and when we received it."""

    index: int
    """Decoded frames counted from 0 over the stream's life (reconnects continue the count)."""
    pts: int | None
    time_base: Fraction | None
    time_s: float
    """Monotonic stream time in seconds; what keyframe selection measures gaps with."""
    captured_at: float
    """Wall-clock (Unix) time the frame was decoded."""


@dataclass(frozen=True, slots=True)
class Keyframe:
    stream_id: str
    time: FrameTime
    reason: SelectionReason
    score: float
    image: Image.Image
    transition: Transition | None = None
    """The transition that led to this keyframe (none for the start and heartbeats)."""
    planes: YuvPlanes | None = None
    """``image`` as YUV planes, for its snapshot JPEG (see ``ModelPicture``)."""


SourceState = Literal[
    "connecting",  # opening the source
    "live",  # frames are arriving (the first time)
    "stalled",  # a connected live source sent no frame for stall_timeout_s
    "reconnecting",  # a live source ended or failed; reopening after a backoff
    "recovered",  # frames again after a stall or reconnect; gap_s says how long they were gone
    "ended",  # a file reached its end
    "failed",  # the source cannot be read (files: for good)
]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A change in a source's condition; published (as a status event) in order with the
    stream's captions."""

    stream_id: str
    state: SourceState
    detail: str
    at: float
    """Wall-clock (Unix) time of the change."""
    fields: dict[str, Any] = field(default_factory=dict)
    """State-specific numbers (gap_s, attempt, retry_in_s, ...), published as event fields."""
