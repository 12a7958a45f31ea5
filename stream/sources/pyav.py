"""Video sources through PyAV: files, RTSP, HTTP/HLS. Synchronous; runs on an ingest thread.

A live source that ends is disconnected, not finished: it is reopened with capped backoff.
A file ends normally (or starts again when ``loop`` is set).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Final

import av
import av.error

from stream.config import StreamConfig
from stream.redact import Redactor
from stream.sources.frames import FrameTime
from stream.sources.health import SourceHealth, StatusReport

logger = logging.getLogger(__name__)


class StreamClock:
    """Monotonic stream time for frames, whatever the source's timestamps do.

    Files use pts (so selection is independent of decode speed); live sources use the
    monotonic clock, which survives missing pts, pts jumps and reconnects.
    """

    def __init__(self, live: bool) -> None:
        self._live = live
        self._started = time.monotonic()
        self._offset = 0.0  # added to file pts when a looped file starts again
        self._last = -1.0
        self._step = 1 / 25

    def stamp(self, index: int, pts: int | None, time_base: Fraction | None) -> FrameTime:
        if self._live:
            candidate = time.monotonic() - self._started
        elif pts is not None and time_base is not None:
            candidate = self._offset + float(pts * time_base)
        else:
            candidate = self._last + self._step
        time_s = max(candidate, self._last + 1e-6) if self._last >= 0 else max(candidate, 0.0)
        if self._last >= 0 and candidate > self._last:
            self._step = min(candidate - self._last, 1.0)
        self._last = time_s
        return FrameTime(index, pts, time_base, time_s, time.time())

    def follow_pts(self) -> None:
        """Time a recording by its pts, as a file: it downloads faster than it plays."""
        self._live = False

    def restart_file(self) -> None:
        self._offset = self._last + self._step


# Errors that retrying cannot fix: the source is there but will never give us video.
_PERMANENT_ERRORS = (
    av.error.HTTPUnauthorizedError,
    av.error.HTTPForbiddenError,
    av.error.HTTPNotFoundError,
    av.error.ProtocolNotFoundError,  # this FFmpeg has no such protocol (PyAV's wheels: no srt)
)


MISSING_END_TOLERANCE_S: Final = 2.0
_RECORDING: Final = (
    "its length was known: a finished HLS playlist or a file over HTTP; live: true reads it "
    "again and again"
)


class NoVideoError(Exception):
    """The source opened but has no video stream."""


def first_video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The container's first video stream; NoVideoError naming the streams it has instead."""
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise NoVideoError(f"no video stream in the source (streams: {kinds})")
    return container.streams.video[0]


class FrameTooLargeError(Exception):
    """The source's frames have more pixels than the stream's ``max_pixels``."""

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"frames of {width}x{height} = {width * height} pixels exceed max_pixels {max_pixels}"
        )


@dataclass(slots=True)
class RecordingReach:
    """How far into a recording its frames went. FFmpeg's HLS reader skips segments it
    cannot fetch and then ends as at the end: a trial's server died at 98 s of 192 and the
    stream said `ended`, exit status 0."""

    length_s: float
    first_s: float | None = None
    last_s: float = 0.0

    def saw(self, time_s: float) -> None:
        if self.first_s is None:
            self.first_s = time_s
        self.last_s = time_s

    def cut_short(self, frames: int) -> str | None:
        """Why the recording's end came early, or None when its frames reached its length
        (within a segment's rounding: 2 s, or 1 % of a long one)."""
        read_s = self.last_s - (self.first_s or 0.0)
        if read_s >= self.length_s - max(MISSING_END_TOLERANCE_S, 0.01 * self.length_s):
            return None
        return (
            f"the recording ended early: {frames} frames, {read_s:.1f} s of its "
            f"{self.length_s:.1f} s (its server stopped answering, or parts of it are missing)"
        )


def _video_length_s(container: av.container.InputContainer) -> float:
    """The video's own length where the container gives it (an audio track can run on),
    else the container's."""
    video = container.streams.video[0]
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    return (container.duration or 0) / av.time_base


class VideoSource:
    """Yields decoded frames of one stream until ``stop`` is set, a file ends, or a live
    source fails for good."""

    def __init__(
        self, config: StreamConfig, on_recording: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self._on_recording = on_recording
        """Told on the reading thread when a URL turns out to be a recording, before its
        first frame: it is replayed as a file is, keyframes waiting for the engine."""
        self.redact = Redactor([config.url])
        """Applied to every string this source lets out: FFmpeg's errors quote the URL."""
        self.url = self.redact(config.url)
        self.corrupt_packets = 0

    def frames(
        self, stop: threading.Event, health: SourceHealth, report: StatusReport
    ) -> Iterator[tuple[av.VideoFrame, FrameTime]]:
        clock = StreamClock(self.config.is_live)
        index, failures = 0, 0
        report("connecting", self.url)
        while not stop.is_set():
            error: str | None = None
            permanent = False
            reach: RecordingReach | None = None
            try:
                with self._open() as container:
                    health.opened()
                    if self._is_recording(container):
                        reach = RecordingReach(_video_length_s(container))
                        clock.follow_pts()
                        if self._on_recording is not None:
                            self._on_recording()
                    describe = partial(self._describe, container)  # once per connection
                    for frame in self._decode(container, stop):
                        health.frame(describe)
                        failures = 0
                        at = clock.stamp(index, frame.pts, frame.time_base)
                        if reach is not None:
                            reach.saw(at.time_s)
                        yield frame, at
                        index += 1
            except (av.error.FFmpegError, OSError, NoVideoError, FrameTooLargeError) as exc:
                permanent = isinstance(exc, (*_PERMANENT_ERRORS, NoVideoError, FrameTooLargeError))
                error = self._explain(exc)
                # Said at WARNING by the state it leads to (reconnecting, failed), as the
                # status event says it: three lines a retry before.
                logger.debug("stream %s (%s): %s", self.config.id, self.url, error)
            if stop.is_set():
                return
            if reach is not None and error is None:
                if (cut_short := reach.cut_short(index)) is not None:
                    report("failed", cut_short)  # read again, it would be captioned twice
                else:
                    report("ended", f"end of the recording after {index} frames ({_RECORDING})")
                return
            if not self.config.is_live:
                if index == 0 and error is None:
                    error = self._no_frame()
                if not self.config.loop or index == 0:  # looping a file with no frame spins
                    report(
                        "failed" if error else "ended", error or f"end of file after {index} frames"
                    )
                    return
                if error:  # no state tells it: the file starts over
                    logger.warning("stream %s: %s; the file starts over", self.config.id, error)
                clock.restart_file()
                continue
            failures += 1
            limit = self.config.reconnect_max_attempts
            if permanent or (limit and failures > limit):
                reason = (
                    error
                    if permanent
                    else f"{error or 'stream ended'}; gave up after {limit} attempts"
                )
                report("failed", reason or "unknown error")
                return
            delay = self._backoff(failures)
            health.disconnected(error or "stream ended", failures, delay)
            stop.wait(delay)

    def _is_recording(self, container: av.container.InputContainer) -> bool:
        """A URL whose length is known, left live by default: it ends at its end rather than
        being read again as fast as it downloads (a VOD HLS playlist, found by a trial)."""
        return (
            self.config.live is None
            and self.config.url.startswith(("http://", "https://"))
            and bool(container.duration and container.duration > 0)
        )

    def _backoff(self, failures: int) -> float:
        """Capped doubling with jitter, so cameras behind one dead switch do not retry in step."""
        base = min(
            self.config.reconnect_initial_s * 2 ** (failures - 1), self.config.reconnect_max_s
        )
        jitter = self.config.reconnect_jitter
        return base * random.uniform(1 - jitter, 1 + jitter)

    def _no_frame(self) -> str:
        """Why a file that opened gave no frame: not an end, a failure (looping it would
        spin)."""
        if not self.corrupt_packets:
            return "no video frame in the file"
        return (
            f"no frame could be decoded: {self.corrupt_packets} corrupt packet(s) (FFmpeg also "
            f"refuses a picture of more than max_pixels, {self.config.max_pixels}, as corrupt)"
        )

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, av.error.ExitError):
            return self.redact(f"no data within the read timeout ({exc})")
        if isinstance(exc, av.error.FFmpegError) and exc.strerror:
            # Without "[Errno 1094995529]": FFmpeg's own codes are tags, not news to a reader.
            where = f": {exc.filename!r}" if exc.filename else ""
            return self.redact(f"{type(exc).__name__}: {exc.strerror}{where}")
        return self.redact(f"{type(exc).__name__}: {exc}")

    def _open(self) -> av.container.InputContainer:
        options = dict(self.config.options)
        if self.config.url.startswith(("rtsp://", "rtsps://")):
            options.setdefault("rtsp_transport", self.config.rtsp_transport)
        timeout = (self.config.open_timeout_s, self.config.read_timeout_s)
        return av.open(self.config.url, mode="r", options=options, timeout=timeout)

    def _decode(
        self, container: av.container.InputContainer, stop: threading.Event
    ) -> Iterator[av.VideoFrame]:
        stream = first_video_stream(container)
        self._refuse_large(stream.codec_context)
        # Frame threading holds several decoded frames back: on a live feed that is latency, and
        # when packets stop those frames come out late, after the stall (seen with a frozen
        # RTSP server). Slice threading returns each frame as soon as it is decoded.
        stream.thread_type = "SLICE" if self.config.is_live else "AUTO"
        for packet in container.demux(stream):
            if stop.is_set():
                return
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                # One bad packet must not end a live feed; the decoder resyncs on the next one.
                self.corrupt_packets += 1
                if self.corrupt_packets % 100 == 1:
                    logger.warning(
                        "stream %s: %d corrupt packet(s) skipped so far",
                        self.config.id,
                        self.corrupt_packets,
                    )
                continue
            yield from decoded

    def _refuse_large(self, codec: av.VideoCodecContext) -> None:
        """Fail before decoding a frame bomb (a 12000x12000 MJPEG took a stream to 1.3 GB).
        Sizes unknown at open, or changed later, are refused by FFmpeg's own check."""
        limit = self.config.max_pixels
        if codec.width * codec.height > limit:
            raise FrameTooLargeError(codec.width, codec.height, limit)
        codec.options = {**codec.options, "max_pixels": str(limit)}

    @staticmethod
    def _describe(container: av.container.InputContainer) -> str:
        stream = container.streams.video[0]
        codec = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        return f"{codec.name} {codec.width}x{codec.height} @ {float(rate or 0):.3g} fps"
