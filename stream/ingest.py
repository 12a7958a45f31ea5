"""One stream's ingest thread: decode, pick keyframes, hand them to the event loop.

Per-frame work stays on this thread and in C (swscale shrinks the frame to a tiny YUV
picture); only keyframes are converted to RGB, at the model's input size.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

import av
from PIL import Image

from stream.config import KeyframeConfig, StreamConfig
from stream.frame_features import FeatureExtractor
from stream.frames import FrameTime, Keyframe, SourceState, SourceStatus
from stream.handoff import KeyframeHandoff
from stream.keyframes import KeyframeSelector, Selection
from stream.source import VideoSource

logger = logging.getLogger(__name__)


def model_image(frame: av.VideoFrame, max_side: int) -> Image.Image:
    """RGB at most ``max_side`` on its longer side, so big frames never cross into the engine."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    width = max(2, round(frame.width * scale))
    height = max(2, round(frame.height * scale))
    return frame.reformat(width=width, height=height, format="rgb24").to_image()


class Ingest:
    def __init__(
        self,
        config: StreamConfig,
        keyframes: KeyframeConfig,
        image_size: int,
        handoff: KeyframeHandoff,
    ) -> None:
        self.config = config
        self._keyframes = keyframes
        self._image_size = image_size
        self._handoff = handoff
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run the thread to its end; cancelling stops it and waits for it (never abandoned)."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(
            target=self._thread_main, args=(loop, finished), name=f"ingest-{self.config.id}"
        )
        thread.start()
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            self._stop.set()
            await asyncio.to_thread(thread.join)
            raise

    def _thread_main(self, loop: asyncio.AbstractEventLoop, finished: asyncio.Future[None]) -> None:
        error: BaseException | None = None
        try:
            self._decode_and_select()
        except BaseException as exc:  # re-raised in the loop by run()
            logger.exception("stream %s: ingest thread failed", self.config.id)
            self._report("failed", f"internal error: {exc!r}")
            error = exc
        finally:
            self._handoff.close_threadsafe()
        loop.call_soon_threadsafe(_settle, finished, error)

    def _decode_and_select(self) -> None:
        selector = KeyframeSelector(self._keyframes)
        features = FeatureExtractor(self._keyframes.analysis_width)
        source = VideoSource(self.config)
        # The selector decides up to `lookahead` frames late; keep those frames until then.
        recent: deque[tuple[FrameTime, av.VideoFrame]] = deque(maxlen=selector.lookahead + 1)
        for frame, frame_time in source.frames(self._stop, self._report):
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
            frame_time, frame = frames[selection.index]
            image = model_image(frame, self._image_size)
            keyframe = Keyframe(
                self.config.id, frame_time, selection.reason, selection.score, image
            )
            if not self._handoff.put_threadsafe(keyframe, self._stop):
                return False
        return True

    def _report(self, state: SourceState, detail: str) -> None:
        logger.info("stream %s: %s (%s)", self.config.id, state, detail)
        status = SourceStatus(self.config.id, state, detail, time.time())
        self._handoff.put_threadsafe(status, self._stop)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
