"""Per-stream ordering: results come back from the engine in any order, leave in slot order.

Each slot holds one piece of work, taken in submission order; the consumer awaits the head
slot before the next, so one slow request holds back later ones instead of being overtaken.
The number of open slots is bounded, which is also the stream's in-flight limit.
One task submits, one task consumes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Sequencer(Generic[T]):
    def __init__(self, max_open: int) -> None:
        self._open: deque[asyncio.Future[T]] = deque()
        self._room = asyncio.Semaphore(max_open)
        self._changed = asyncio.Event()
        self._closed = False

    async def submit(self, make_work: Callable[[], Awaitable[T]]) -> None:
        """Wait for a free slot, then start ``make_work()`` in it, after every earlier slot."""
        if self._closed:
            raise RuntimeError("sequencer is closed")
        await self._room.acquire()
        self._open.append(asyncio.ensure_future(make_work()))
        self._changed.set()

    def close(self) -> None:
        """No more submissions; ``results`` ends after the open slots."""
        self._closed = True
        self._changed.set()

    async def results(self) -> AsyncIterator[T]:
        """Results in slot order. Work that raised re-raises here (callers make it not raise)."""
        while True:
            while not self._open:
                if self._closed:
                    return
                self._changed.clear()
                await self._changed.wait()
            head = self._open[0]
            try:
                value = await head
            finally:
                self._open.popleft()
                self._room.release()
            yield value
