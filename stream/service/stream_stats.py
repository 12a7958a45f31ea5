"""What one stream is doing, for `GET /api/streams`: its state, rates, counts, latencies.

The pipeline tells it about each keyframe and each published event; the ingest thread ticks
its frame meter. Reads are cheap and never block a stream."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from stream.delivery.events import CaptionEvent, Event, StatusEvent
from stream.redact import Redactor

LATENCY_SAMPLES = 256
"""Keyframe-to-event latencies kept for the percentiles (the most recent)."""
FPS_WINDOW_S = 5.0


class RateMeter:
    """Events per second over the last ``window_s``; ``tick`` is called from one thread."""

    def __init__(self, window_s: float = FPS_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self._window_s = window_s
        self._clock = clock
        self._started = clock()
        self._ticks: deque[float] = deque()
        self._lock = threading.Lock()
        self.count = 0
        """Ticks since the start."""

    def tick(self) -> None:
        now = self._clock()
        with self._lock:
            self.count += 1
            self._ticks.append(now)
            self._forget_before(now - self._window_s)

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            self._forget_before(now - self._window_s)
            span = min(self._window_s, now - self._started)
            return len(self._ticks) / span if span > 0 else 0.0

    def _forget_before(self, horizon: float) -> None:
        while self._ticks and self._ticks[0] < horizon:
            self._ticks.popleft()


class StreamStats:
    def __init__(self, stream_id: str, url: str, clock: Callable[[], float] = time.time) -> None:
        self.stream_id = stream_id
        self._url = Redactor([url])(url)  # credentials never leave through the API
        self._clock = clock
        self.frames = RateMeter()
        self.state = "starting"
        self.state_detail = ""
        self.paused = False
        self.keyframes = 0
        self.keyframes_skipped_paused = 0
        self.keyframes_dropped = 0
        self.captions_ok = 0
        self.captions_failed = 0
        self.reconnects = 0
        self.events = 0
        self._last_caption: dict[str, Any] | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def published(self, event: Event, seq: int) -> None:
        self.events += 1
        if isinstance(event, CaptionEvent):
            self._caption(event, seq)
        elif isinstance(event, StatusEvent):
            self._status(event)

    def _caption(self, event: CaptionEvent, seq: int) -> None:
        self._latencies.append(max(0.0, self._clock() - event.time.captured_at))
        caption = event.outcome.caption
        if caption is None:
            self.captions_failed += 1
            return
        self.captions_ok += 1
        self._last_caption = {
            "seq": seq,
            "keyframe": event.keyframe_no,
            "at": round(event.time.captured_at, 3),
            "summary": caption.get("summary", ""),
        }

    def _status(self, event: StatusEvent) -> None:
        if event.state == "keyframes_dropped":
            self.keyframes_dropped += int(event.fields.get("dropped", 0))
            return
        if event.state in ("events_dropped", "event_too_large"):
            return  # delivery's, not the stream's condition
        if event.state == "reconnecting":
            self.reconnects += 1
        self.state, self.state_detail = event.state, event.detail

    def snapshot(self) -> dict[str, Any]:
        """The stream as `GET /api/streams/{id}` shows it (JSON-ready)."""
        latencies = sorted(self._latencies)
        return {
            "id": self.stream_id,
            "url": self._url,
            "state": self.state,
            "detail": self.state_detail,
            "paused": self.paused,
            "source_fps": round(self.frames.rate(), 2),
            "keyframes": self.keyframes,
            "keyframes_dropped": self.keyframes_dropped,
            "keyframes_skipped_paused": self.keyframes_skipped_paused,
            "captions": {"ok": self.captions_ok, "failed": self.captions_failed},
            "last_caption": self._last_caption,
            "latency_s": {
                "p50": _percentile(latencies, 50),
                "p95": _percentile(latencies, 95),
                "samples": len(latencies),
            },
            "reconnects": self.reconnects,
            "events": self.events,
        }


def _percentile(ordered: list[float], percent: int) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return round(ordered[0], 3)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return round(cuts[percent - 1], 3)
