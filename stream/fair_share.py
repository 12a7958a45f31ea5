"""Engine slots shared fairly by streams: one busy stream cannot starve the others.

While streams wait, each freed slot goes to the next waiting stream in round-robin order, so
every stream with work gets an equal share of the engine, however much more one of them has.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairShare:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns: deque[str] = deque()  # streams with waiters, next to be served first

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def slot(self, stream_id: str) -> AsyncIterator[None]:
        await self._acquire(stream_id)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, stream_id: str) -> None:
        if self._free > 0 and not self._turns:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(stream_id, deque()).append(granted)
        if stream_id not in self._turns:
            self._turns.append(stream_id)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot came with the cancellation: pass it on
            raise

    def _release(self) -> None:
        while self._turns:
            stream_id = self._turns.popleft()
            queue = self._waiting[stream_id]
            granted = queue.popleft()
            if queue:
                self._turns.append(stream_id)
            else:
                del self._waiting[stream_id]
            if not granted.done():  # skip waiters that were cancelled meanwhile
                granted.set_result(None)
                return
        self._free += 1
