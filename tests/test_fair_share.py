"""Engine slots are shared in turn between streams, whatever their backlog."""

from __future__ import annotations

import asyncio

from stream.fair_share import FairShare


async def test_a_busy_stream_cannot_starve_the_others() -> None:
    share = FairShare(slots=1)
    release = asyncio.Event()
    order: list[str] = []

    async def work(stream: str) -> None:
        async with share.slot(stream):
            order.append(stream)
            await release.wait()
            release.clear()

    busy = [asyncio.create_task(work("busy")) for _ in range(8)]
    await asyncio.sleep(0.01)
    quiet = [asyncio.create_task(work("quiet")) for _ in range(2)]
    other = asyncio.create_task(work("other"))
    await asyncio.sleep(0.01)
    while len(order) < 11:
        release.set()
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*busy, *quiet, other)
    # "busy" got the free slot first; then each waiting stream in turn.
    assert order[:6] == ["busy", "busy", "quiet", "other", "busy", "quiet"]
    assert order.count("busy") == 8 and share.waiting == 0


async def test_cancelled_waiters_give_their_turn_away() -> None:
    share = FairShare(slots=1)
    async with share.slot("a"):
        waiter = asyncio.create_task(share._acquire("b"))
        later = asyncio.create_task(share._acquire("c"))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(later, 1)  # c got the slot b gave up
    assert waiter.cancelled()
    share._release()
    async with share.slot("d"):  # and the slot is free again afterwards
        pass


async def test_a_cancelled_waiter_frees_no_slot_it_never_had() -> None:
    share = FairShare(slots=1)
    async with share.slot("a"):
        waiter = asyncio.create_task(share._acquire("b"))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        # "a" still holds the only slot: "c" must wait for it.
        late = asyncio.create_task(share._acquire("c"))
        await asyncio.sleep(0.01)
        assert not late.done()
    await asyncio.wait_for(late, 1)
    share._release()


async def test_released_slots_are_all_free_again_and_no_more() -> None:
    share = FairShare(slots=2)
    running, most = 0, 0

    async def work() -> None:
        nonlocal running, most
        async with share.slot("cam"):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    for _ in range(2):  # twice: what the first round released is all there, and only that
        await asyncio.gather(*(work() for _ in range(5)))
        assert most == 2
        async with share.slot("x"), share.slot("y"):  # both free at once, without waiting
            pass
