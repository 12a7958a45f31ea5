"""One stream's ingest thread: decode, pick keyframes, hand them to the event loop.

Per-frame work stays on this thread and in C (swscale shrinks the frame to a tiny YUV
picture); only keyframes are converted to RGB, at the model's input size.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import av

from engine.errors import VidcapError
from stream.config import KeyframeConfig, StreamConfig
from stream.keyframes.features import FeatureExtractor
from stream.keyframes.selector import KeyframeSelector, Selection
from stream.redact import Redactor
from stream.sources.frames import FrameTime, Keyframe, SourceState, SourceStatus
from stream.sources.handoff import KeyframeHandoff
from stream.sources.health import SourceHealth, StatusReport
from stream.sources.model_picture import ModelScaler
from stream.sources.pyav import VideoSource

logger = logging.getLogger(__name__)
WATCHDOG_PERIOD_S = 0.25


class SourceError(VidcapError):
    """An ingest thread failed; the message is redacted (the original may quote the URL)."""


class FrameSource(Protocol):
    """Where an ingest thread gets frames: PyAV (files, RTSP, HLS) or a WHIP publisher."""

    def frames(
        self, stop: threading.Event, health: SourceHealth, report: StatusReport
    ) -> Iterator[tuple[av.VideoFrame, FrameTime]]: ...


class Ingest:
    def __init__(
        self,
        config: StreamConfig,
        keyframes: KeyframeConfig,
        image_size: int,
        handoff: KeyframeHandoff,
        source: FrameSource | None = None,
        on_frame: Callable[[], None] | None = None,
        skip_through_frame: int | None = None,
    ) -> None:
        self.config = config
        self._on_frame = on_frame
        self._skip_through = -1 if skip_through_frame is None else skip_through_frame
        self._keyframes = keyframes
        self._model_picture = ModelScaler(image_size)  # the ingest thread's
        self._handoff = handoff
        self._source = source or VideoSource(config, self._replay_at_engine_pace)
        self._stop = threading.Event()
        self._health = SourceHealth(config.stall_timeout_s, self._report)
        self._redact = Redactor([config.url])
        """Every string that leaves this source goes through it (logs, status events, errors)."""

    def stop(self) -> None:
        self._stop.set()

    def _replay_at_engine_pace(self) -> None:
        """A recording behind a live-looking URL loses no keyframe, as a file does (on this
        thread, the only one that reads the policy)."""
        self._handoff.policy = "block"

    async def run(self) -> None:
        """Run the thread to its end; cancelling stops it and waits for it (never abandoned)."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._thread_main, args=(loop, finished), name=f"ingest-{self.config.id}"
        )
        thread.start()
        watchdog = asyncio.create_task(self._watch()) if self.config.is_live else None
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            self._stop.set()
            await asyncio.to_thread(thread.join)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _watch(self) -> None:
        """Stall detection runs here, not on the ingest thread: that one may be blocked in a
        read of a frozen source."""
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            self._health.check()

    def _thread_main(self, loop: asyncio.AbstractEventLoop, finished: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            self._decode_and_select()
        except BaseException as exc:  # re-raised in the loop by run()
            shown = self._redact("".join(traceback.format_exception(exc)))
            logger.error("stream %s: ingest thread failed:\n%s", self.config.id, shown)
            self._report("failed", f"internal error: {exc!r}")
            error = self._redacted(exc)
        finally:
            self._handoff.close_threadsafe()
        loop.call_soon_threadsafe(_settle, finished, error)

    def _redacted(self, exc: BaseException) -> BaseException:
        """The error to re-raise on the loop: itself, or a SourceError if it quotes a secret."""
        shown = self._redact(repr(exc))
        return exc if shown == repr(exc) else SourceError(shown)

    def _decode_and_select(self) -> None:
        selector = KeyframeSelector(self._keyframes)
        features = FeatureExtractor(self._keyframes.analysis_width)
        # The selector decides up to `lookahead` frames late; keep those frames until then.
        recent: deque[tuple[FrameTime, av.VideoFrame]] = deque(maxlen=selector.lookahead + 1)
        for frame, frame_time in self._source.frames(self._stop, self._health, self._report):
            if frame.width * frame.height > self.config.max_pixels:
                self._refuse(frame)
                return
            if self._on_frame is not None:
                self._on_frame()
            recent.append((frame_time, frame))
            selections = selector.process_frame(
                frame_time.index, frame_time.time_s, features(frame)
            )
            if not self._hand_over(selections, recent):
                return
        self._hand_over(selector.flush(), recent)

    def _hand_over(
        self, selections: list[Selection], recent: deque[tuple[FrameTime, av.VideoFrame]]
    ) -> bool:
        frames = {frame_time.index: (frame_time, frame) for frame_time, frame in recent}
        for selection in selections:
            if selection.index <= self._skip_through:
                continue  # captioned in an earlier run of this file
            frame_time, frame = frames[selection.index]
            picture = self._model_picture(frame)
            keyframe = Keyframe(
                self.config.id,
                frame_time,
                selection.reason,
                selection.score,
                picture.image,
                selection.transition,
                picture.planes,
            )
            if not self._handoff.put_threadsafe(keyframe, self._stop):
                return False
        return True

    def _refuse(self, frame: av.VideoFrame) -> None:
        pixels = frame.width * frame.height
        limit = self.config.max_pixels
        detail = (
            f"a {frame.width}x{frame.height} frame ({pixels} pixels) exceeds max_pixels {limit}"
        )
        self._report("failed", detail)

    def _report(self, state: SourceState, detail: str, **fields: Any) -> None:
        detail = self._redact(detail)
        fields = {k: self._redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        level = logging.WARNING if state in ("stalled", "reconnecting", "failed") else logging.INFO
        logger.log(level, "stream %s: %s (%s)", self.config.id, state, detail)
        status = SourceStatus(self.config.id, state, detail, time.time(), fields)
        self._handoff.put_threadsafe(status, self._stop)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
