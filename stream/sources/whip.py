"""A WHIP stream as a frame source: publishers come and go, the stream (and its seq) stays.

aiortc decodes on its own thread and queues frames without bound; the session's pump task
takes each one at once and leaves it in a one-frame slot here, so a slow ingest thread only
ever sees the newest frame (the skipped ones are counted, never queued).
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import av

from stream.sources.frames import FrameTime
from stream.sources.health import SourceHealth, StatusReport
from stream.sources.pyav import StreamClock

_POLL_S = 0.2  # how often a waiting ingest thread re-checks its stop event


@dataclass(frozen=True, slots=True)
class SessionChange:
    """A publisher arrived (``started``) or left; reported in order with the frames."""

    started: bool
    detail: str
    failed: bool = False


class WhipSource:
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self._lock = threading.Condition()
        self._newest: av.VideoFrame | None = None
        self._changes: deque[SessionChange] = deque()

    # ---- event loop side ----

    def session_started(self, detail: str) -> None:
        self._change(SessionChange(True, detail))

    def session_ended(self, detail: str, *, failed: bool) -> None:
        self._change(SessionChange(False, detail, failed))

    def put_frame(self, frame: av.VideoFrame) -> None:
        with self._lock:
            self._newest = frame  # live: an older frame not yet taken is not worth decoding
            self._lock.notify()

    def _change(self, change: SessionChange) -> None:
        with self._lock:
            self._newest = None  # a frame of a session that ended is not worth reporting late
            self._changes.append(change)
            self._lock.notify()

    # ---- ingest thread side ----

    def frames(
        self, stop: threading.Event, health: SourceHealth, report: StatusReport
    ) -> Iterator[tuple[av.VideoFrame, FrameTime]]:
        clock = StreamClock(live=True)
        index = 0
        report("connecting", "waiting for a WHIP publisher")
        while not stop.is_set():
            item = self._next()
            if item is None:
                continue
            if isinstance(item, SessionChange):
                self._apply(item, health, report)
                continue
            health.frame(functools.partial(_describe, item))
            yield item, clock.stamp(index, item.pts, item.time_base)
            index += 1

    def _next(self) -> av.VideoFrame | SessionChange | None:
        with self._lock:
            if not self._changes and self._newest is None:
                self._lock.wait(_POLL_S)
            if self._changes:
                return self._changes.popleft()
            frame, self._newest = self._newest, None
            return frame

    @staticmethod
    def _apply(change: SessionChange, health: SourceHealth, report: StatusReport) -> None:
        if change.started:
            health.new_session()
            report("connecting", change.detail)
            return
        health.session_over()
        report("failed" if change.failed else "ended", change.detail)


def _describe(frame: av.VideoFrame) -> str:
    return f"WebRTC {frame.width}x{frame.height} {frame.format.name}"
