"""The bounded queue between an ingest thread and the event loop, with a named policy.

- ``block``: the producer waits for room (files: replay at the engine's pace, lose nothing).
- ``drop_oldest``: the stalest waiting keyframe makes room for the newest (live feeds: a
  slow engine must never stall decoding). Each drop is counted and later reported.
Source status changes, and the loop side's controls (pause, resume), are never dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from stream.sources.frames import Keyframe, SourceStatus


@dataclass(frozen=True, slots=True)
class Control:
    """A request from the event loop (pause, resume), taken in order with the source's items."""

    pause: bool


Item = Keyframe | SourceStatus | Control
Policy = Literal["block", "drop_oldest"]
_POLL_S = 0.2  # how often a blocked producer re-checks its stop event


class KeyframeHandoff:
    """One producer thread, one consumer task. All state changes happen on the loop thread."""

    def __init__(self, maxsize: int, policy: Policy, loop: asyncio.AbstractEventLoop) -> None:
        self.maxsize = maxsize
        self.policy = policy
        self._loop = loop
        self._items: deque[Item] = deque()
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Keyframes dropped so far by ``drop_oldest``; the consumer reads and reports them."""

    # ---- producer side (ingest thread) ----

    def put_threadsafe(self, item: Item, stop: threading.Event) -> bool:
        """Hand one item over; False when ``stop`` was set before it could be placed."""
        if self.policy == "drop_oldest" or isinstance(item, SourceStatus):
            self._loop.call_soon_threadsafe(self._append_dropping, item)
            return True
        future = asyncio.run_coroutine_threadsafe(self._put_waiting(item), self._loop)
        while True:
            try:
                future.result(timeout=_POLL_S)
                return True
            except TimeoutError:
                if stop.is_set():
                    future.cancel()
                    return False

    def close_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self._close)

    # ---- loop side ----

    async def get(self) -> Item | None:
        """The next item, or None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._space.set()
        return item

    def put_control(self, control: Control) -> None:
        """Queue a control after what is waiting (called on the loop thread)."""
        self._append(control)

    def drain_keyframes(self) -> list[Keyframe]:
        """Remove and return the waiting keyframes (at shutdown), keeping status items."""
        keyframes = [item for item in self._items if isinstance(item, Keyframe)]
        self._items = deque(item for item in self._items if not isinstance(item, Keyframe))
        self._space.set()
        return keyframes

    def _keyframes_waiting(self) -> int:
        return sum(isinstance(item, Keyframe) for item in self._items)

    async def _put_waiting(self, item: Item) -> None:
        while self._keyframes_waiting() >= self.maxsize:
            self._space.clear()
            await self._space.wait()
        self._append(item)

    def _append_dropping(self, item: Item) -> None:
        if isinstance(item, Keyframe) and self._keyframes_waiting() >= self.maxsize:
            stalest = next(i for i in self._items if isinstance(i, Keyframe))
            self._items.remove(stalest)
            self.dropped += 1
        self._append(item)

    def _append(self, item: Item) -> None:
        self._items.append(item)
        self._readable.set()

    def _close(self) -> None:
        self._closed = True
        self._readable.set()
