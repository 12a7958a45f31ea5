"""Per-stream ordering: results come back from the engine in any order, leave in seq order.

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
        self._next_seq = 0
        self._closed = False

    async def submit(self, make_work: Callable[[int], Awaitable[T]]) -> int:
        """Wait for a free slot, then start ``make_work(seq)`` in it; returns the seq."""
        if self._closed:
            raise RuntimeError("sequencer is closed")
        await self._room.acquire()
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        self._open.append(asyncio.ensure_future(make_work(seq)))
        self._changed.set()
        return seq

    def close(self) -> None:
        """No more submissions; ``results`` ends after the open slots."""
        self._closed = True
        self._changed.set()

    def cancel_open(self) -> None:
        for future in self._open:
            future.cancel()

    async def results(self) -> AsyncIterator[T]:
        """Results in seq order. Work that raised re-raises here (callers make it not raise)."""
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
