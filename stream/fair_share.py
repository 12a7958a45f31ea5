"""Engine slots shared fairly by streams: one busy stream cannot starve the others.

While streams wait, each freed slot goes to a waiting stream of the highest priority waiting,
and among streams of one priority to the next in round-robin order: every stream of a
priority with work gets an equal share of what higher priorities leave, however much more one
of them has.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairShare:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: dict[tuple[int, str], deque[asyncio.Future[None]]] = {}
        # Per priority, the streams with waiters, next to be served first.
        self._turns: dict[int, deque[str]] = {}

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def slot(self, stream_id: str, priority: int = 0) -> AsyncIterator[None]:
        await self._acquire(stream_id, priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, stream_id: str, priority: int = 0) -> None:
        if self._free > 0 and not self._turns:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((priority, stream_id), deque()).append(granted)
        turns = self._turns.setdefault(priority, deque())
        if stream_id not in turns:
            turns.append(stream_id)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot came with the cancellation: pass it on
            raise

    def _release(self) -> None:
        while self._turns:
            priority = max(self._turns)
            turns = self._turns[priority]
            stream_id = turns.popleft()
            queue = self._waiting[priority, stream_id]
            granted = queue.popleft()
            if queue:
                turns.append(stream_id)
            else:
                del self._waiting[priority, stream_id]
            if not turns:
                del self._turns[priority]
            if not granted.done():  # skip waiters that were cancelled meanwhile
                granted.set_result(None)
                return
        self._free += 1
