"""A live source's condition, as status events: live, stalled, reconnecting, recovered.

The ingest thread tells it what happened (opened, a frame, disconnected); a watchdog on
another thread calls ``check`` so that a source frozen inside a blocking read is still
reported as stalled, within ``stall_timeout_s`` plus one watchdog period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from stream.sources.frames import SourceState

# Frames in a row, without another stall, that make an outage over. FFmpeg's RTSP reader
# hands out one buffered frame when its first read timeout hits a frozen server: that frame
# was captured before the freeze and must not read as a recovery.
RECOVERY_FRAMES = 3


class StatusReport(Protocol):
    def __call__(self, state: SourceState, detail: str, **fields: Any) -> None: ...


class SourceHealth:
    def __init__(
        self,
        stall_timeout_s: float,
        report: StatusReport,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stall_timeout_s = stall_timeout_s
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._connected = False
        self._was_live = False
        self._outage = False  # stalled or disconnected since the last frame
        self._stalled = False
        self._resumed_frames = 0  # during an outage: frames since the last silence
        self._resumed_at = 0.0
        self._last_frame = clock()  # during an outage: the last frame before it
        self._waiting_since = self._last_frame  # last frame, or the open waiting for one

    def opened(self) -> None:
        with self._lock:
            self._connected = True
            self._waiting_since = self._clock()

    def frame(self, describe: Callable[[], str]) -> None:
        """Called for every frame: cheap unless the source was not live until now."""
        if self._connected and not self._outage and self._was_live:
            self._last_frame = self._waiting_since = self._clock()
            return
        with self._lock:
            now = self._clock()
            if not self._was_live:
                self._report("live", describe())
            elif self._outage:
                self._connected, self._waiting_since = True, now
                if self._resumed_frames == 0:
                    self._resumed_at = now
                self._resumed_frames += 1
                if self._resumed_frames < RECOVERY_FRAMES:
                    return
                gap = self._resumed_at - self._last_frame
                self._report("recovered", f"frames again after {gap:.1f} s", gap_s=round(gap, 3))
            self._connected, self._was_live, self._outage, self._stalled = True, True, False, False
            self._last_frame = self._waiting_since = now

    def disconnected(self, reason: str, attempt: int, retry_in_s: float) -> None:
        with self._lock:
            self._connected = False
            self._outage = True
            self._resumed_frames = 0
            self._report(
                "reconnecting",
                f"{reason}; attempt {attempt} in {retry_in_s:.1f} s",
                attempt=attempt,
                retry_in_s=round(retry_in_s, 3),
            )

    def new_session(self) -> None:
        """A new publisher (WHIP): its first frame is ``live`` again, not a recovery."""
        with self._lock:
            self._connected, self._was_live, self._outage, self._stalled = True, False, False, False
            self._waiting_since = self._clock()

    def session_over(self) -> None:
        """The publisher left; nothing is stalled while nobody publishes."""
        with self._lock:
            self._connected = False

    def check(self) -> None:
        """Watchdog: report a stall once when a connected source sends nothing for too long."""
        with self._lock:
            if not self._connected:
                return
            silent = self._clock() - self._waiting_since
            if silent < self._stall_timeout_s:
                return
            self._resumed_frames = 0  # what trickled in was no recovery
            if self._stalled:
                return
            self._stalled = True
            self._outage = self._outage or self._was_live
            self._report("stalled", f"no frame for {silent:.1f} s", silent_s=round(silent, 3))
