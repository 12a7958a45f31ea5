"""A stream's stored events, read backwards from JetStream a page at a time.

JetStream reads forwards only (``next_by_subj``), so a page before a stream sequence is read
as windows of sequences going back from it: each window is read forwards, and the next one
further back is sized from how many of the window's messages were the stream's, so a stream
among many others is found with a few reads more than it has events. Every page costs at most
``MAX_READS`` reads; a page cut short by that still ends where the next page begins (its
``before``), so paging on loses nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import nats.js.errors
import orjson
from nats.js import JetStreamContext

MAX_LIMIT: Final = 100
MAX_READS: Final = 400
"""Message reads per page, at most (each a JetStream request)."""
_FIRST_WINDOW_PER_EVENT: Final = 4
"""The first window holds this many sequences per event asked for."""
_MAX_GROWTH: Final = 16


@dataclass(frozen=True, slots=True)
class StoredEvent:
    js_seq: int
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    events: list[StoredEvent]
    """Oldest first."""
    before: int | None
    """The ``before`` of the next page back; None: nothing older is stored."""


@dataclass(slots=True)
class _Scan:
    js: JetStreamContext
    stream_name: str
    subject: str
    reads: int = 0

    async def window(self, lower: int, upper: int) -> list[StoredEvent] | None:
        """The subject's messages in [lower, upper), oldest first; None: out of reads."""
        found: list[StoredEvent] = []
        seq = lower
        while self.reads < MAX_READS:
            self.reads += 1
            try:
                message = await self.js.get_msg(
                    self.stream_name, seq=seq, subject=self.subject, next=True
                )
            except nats.js.errors.NotFoundError:
                return found
            if message.seq is None or message.seq >= upper:
                return found
            event = _event(message.data)
            if event is not None:
                found.append(StoredEvent(message.seq, event))
            seq = message.seq + 1
        return None


async def page_back(
    js: JetStreamContext, stream_name: str, subject: str, before: int | None, limit: int
) -> Page:
    """Up to ``limit`` events on ``subject`` stored before ``before`` (None: the newest)."""
    state = (await js.stream_info(stream_name)).state
    first = max(state.first_seq, 1)
    upper = state.last_seq + 1 if before is None else min(before, state.last_seq + 1)
    scan = _Scan(js, stream_name, subject)
    events: list[StoredEvent] = []
    span = limit * _FIRST_WINDOW_PER_EVENT
    while len(events) < limit and upper > first:
        lower = max(first, upper - span)
        window = await scan.window(lower, upper)
        if window is None:
            return Page(events[-limit:], upper)
        events = window + events
        span = _next_span(span, len(window), limit - len(events))
        upper = lower
    if len(events) > limit:
        return Page(events[-limit:], events[-limit].js_seq)
    return Page(events, upper if upper > first else None)


def _next_span(span: int, found: int, wanted: int) -> int:
    """Enough sequences for ``wanted`` more events at the density just seen (with a margin),
    growing at most ``_MAX_GROWTH`` times a window."""
    if wanted <= 0:
        return span
    density = max(found, 1) / span
    return min(span * _MAX_GROWTH, max(wanted, math.ceil(1.5 * wanted / density)))


def _event(data: bytes | None) -> dict[str, Any] | None:
    try:
        event = orjson.loads(data or b"")
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
