"""Engine slots are shared in turn between streams, whatever their backlog."""

from __future__ import annotations

import asyncio

import pytest

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


async def test_a_cancelled_waiter_does_not_cost_its_stream_the_turn() -> None:
    """A keyframe whose deadline passed while waiting leaves; its stream's next one keeps the
    stream's place in the rotation (seen: streams whose oldest keyframes expired lost every
    turn, and one stream of seven got nearly all the captions)."""
    share = FairShare(slots=1)
    order: list[str] = []

    async def wait_for_turn(stream: str) -> None:
        await share._acquire(stream)
        order.append(stream)
        share._release()

    async with share.slot("busy"):
        expiring = asyncio.create_task(share._acquire("a"))
        await asyncio.sleep(0.01)
        others = [asyncio.create_task(wait_for_turn(s)) for s in ("b", "a")]
        await asyncio.sleep(0.01)
        expiring.cancel()
        await asyncio.sleep(0.01)
    await asyncio.gather(*others)
    assert order == ["a", "b"]  # a came first, and its turn did not go with the cancelled one


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


async def test_a_reserve_keeps_slots_free_for_the_top_priority() -> None:
    share = FairShare(slots=3, reserve=2, top_priority=lambda: 10)
    held: list[str] = []
    done = {name: asyncio.Event() for name in ("low-1", "low-2", "top-1", "top-2", "top-3")}

    async def work(name: str, priority: int) -> None:
        async with share.slot(name.split("-")[0], priority):
            held.append(name)
            await done[name].wait()

    low = [asyncio.create_task(work(name, 0)) for name in ("low-1", "low-2")]
    await asyncio.sleep(0.01)
    assert held == ["low-1"]  # the second would leave only the two reserved slots free
    top = [asyncio.create_task(work(name, 10)) for name in ("top-1", "top-2", "top-3")]
    await asyncio.sleep(0.01)
    assert held == ["low-1", "top-1", "top-2"]  # the top takes the reserve at once
    done["low-1"].set()
    await asyncio.sleep(0.01)
    assert held[-1] == "top-3"  # a freed slot goes to the top first
    done["top-1"].set()
    await asyncio.sleep(0.01)
    assert "low-2" not in held  # two slots held by the top: one free, not more than reserved
    done["top-2"].set()
    done["top-3"].set()
    await asyncio.sleep(0.01)
    assert held[-1] == "low-2"  # with the top idle, the lower stream gets its one slot
    done["low-2"].set()
    await asyncio.gather(*low, *top)


def test_a_reserve_must_leave_a_slot_to_share() -> None:
    with pytest.raises(ValueError, match="reserve of 4 engine slots out of 4"):
        FairShare(slots=4, reserve=4)
