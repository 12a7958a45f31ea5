"""Engine slots shared fairly by streams: one busy stream cannot starve the others.

While streams wait, each freed slot goes to a waiting stream of the highest priority waiting,
and among streams of one priority to the next in round-robin order: every stream of a
priority with work gets an equal share of what higher priorities leave, however much more one
of them has.

A reserve keeps slots free for the highest priority among the streams: a lower one takes a
slot only while more than ``reserve`` are free. On an engine whose requests slow down as the
batch grows (vLLM on a CPU), that bounds the batch the top stream's keyframes share.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class FairShare:
    def __init__(
        self, slots: int, reserve: int = 0, top_priority: Callable[[], int] | None = None
    ) -> None:
        if not 0 <= reserve < slots:
            raise ValueError(f"a reserve of {reserve} engine slots out of {slots}")
        self._free = slots
        self._reserve = reserve
        self._top_priority = top_priority or (lambda: 0)
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

    def _may_take(self, priority: int) -> bool:
        if priority >= self._top_priority():
            return self._free > 0
        return self._free > self._reserve

    async def _acquire(self, stream_id: str, priority: int = 0) -> None:
        if not self._turns and self._may_take(priority):
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((priority, stream_id), deque()).append(granted)
        turns = self._turns.setdefault(priority, deque())
        if stream_id not in turns:
            turns.append(stream_id)
        self._grant()  # a top stream may take a slot its lower waiters may not
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot came with the cancellation: pass it on
            else:
                self._leave(priority, stream_id, granted)
            raise

    def _leave(self, priority: int, stream_id: str, waiter: asyncio.Future[None]) -> None:
        """A cancelled waiter leaves the queue now (a deadline passed): left there, it would
        take its stream's turn when it came up."""
        queue = self._waiting.get((priority, stream_id))
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if queue:
            return
        del self._waiting[priority, stream_id]
        turns = self._turns[priority]
        turns.remove(stream_id)
        if not turns:
            del self._turns[priority]

    def _release(self) -> None:
        self._free += 1
        self._grant()

    def _grant(self) -> None:
        """Free slots to the waiting streams of the highest priority, in turn."""
        while self._turns:
            priority = max(self._turns)
            if not self._may_take(priority):
                return
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
                self._free -= 1
