"""The ingest-to-loop handoff: live feeds drop the stalest keyframe, files wait for room."""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction

from PIL import Image

from stream.sources.frames import FrameTime, Keyframe, SourceStatus
from stream.sources.handoff import Control, KeyframeHandoff


def keyframe(index: int) -> Keyframe:
    when = FrameTime(index, index, Fraction(1, 25), index / 25, time.time())
    return Keyframe("cam1", when, "cut", 50.0, Image.new("RGB", (2, 2)))


def status(state: str) -> SourceStatus:
    return SourceStatus("cam1", state, "", time.time())  # type: ignore[arg-type]


async def drain(handoff: KeyframeHandoff) -> list[object]:
    items: list[object] = []
    while (item := await handoff.get()) is not None:
        if isinstance(item, Keyframe):
            items.append(item.time.index)
        elif isinstance(item, Control):
            items.append("pause" if item.pause else "resume")
        else:
            items.append(item.state)
    return items


async def test_live_policy_keeps_the_newest_keyframes_and_every_status() -> None:
    handoff = KeyframeHandoff(2, "drop_oldest", asyncio.get_running_loop())
    stop = threading.Event()

    def produce() -> None:
        handoff.put_threadsafe(status("live"), stop)
        for index in range(5):
            handoff.put_threadsafe(keyframe(index), stop)
        handoff.put_threadsafe(status("reconnecting"), stop)
        handoff.close_threadsafe()

    await asyncio.to_thread(produce)
    assert await drain(handoff) == ["live", 3, 4, "reconnecting"]
    assert handoff.dropped == 3


async def test_file_policy_blocks_the_producer_and_loses_nothing() -> None:
    handoff = KeyframeHandoff(1, "block", asyncio.get_running_loop())
    stop = threading.Event()
    produced: list[int] = []

    def produce() -> None:
        for index in range(20):
            assert handoff.put_threadsafe(keyframe(index), stop)
            produced.append(index)
        handoff.close_threadsafe()

    producer = asyncio.create_task(asyncio.to_thread(produce))
    await asyncio.sleep(0.1)
    assert len(produced) <= 2  # waiting for the consumer
    consumed = await drain(handoff)
    await producer
    assert consumed == list(range(20)) and handoff.dropped == 0


async def test_a_blocked_producer_gives_up_when_stopped() -> None:
    handoff = KeyframeHandoff(1, "block", asyncio.get_running_loop())
    stop = threading.Event()

    def produce() -> bool:
        handoff.put_threadsafe(keyframe(0), stop)
        return handoff.put_threadsafe(keyframe(1), stop)

    producer = asyncio.create_task(asyncio.to_thread(produce))
    await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(producer, 2) is False


async def test_controls_keep_their_place_and_are_never_dropped() -> None:
    handoff = KeyframeHandoff(1, "drop_oldest", asyncio.get_running_loop())
    stop = threading.Event()
    handoff.put_threadsafe(keyframe(0), stop)
    await asyncio.sleep(0)
    handoff.put_control(Control(pause=True))
    for index in (1, 2):
        handoff.put_threadsafe(keyframe(index), stop)
    await asyncio.sleep(0)
    handoff.put_control(Control(pause=False))
    handoff.close_threadsafe()
    assert await drain(handoff) == ["pause", 2, "resume"]


async def test_a_placed_item_under_the_block_policy_reports_true() -> None:
    handoff = KeyframeHandoff(2, "block", asyncio.get_running_loop())
    stop = threading.Event()
    assert await asyncio.to_thread(handoff.put_threadsafe, keyframe(0), stop) is True


async def test_drain_takes_the_waiting_keyframes_and_keeps_the_rest_in_order() -> None:
    handoff = KeyframeHandoff(5, "drop_oldest", asyncio.get_running_loop())
    stop = threading.Event()
    for item in (status("live"), keyframe(1), keyframe(2), status("stalled"), keyframe(3)):
        assert handoff.put_threadsafe(item, stop) is True  # never refused under drop_oldest
    await asyncio.sleep(0)
    handoff.put_control(Control(pause=True))
    assert [k.time.index for k in handoff.drain_keyframes()] == [1, 2, 3]
    handoff.close_threadsafe()
    assert await drain(handoff) == ["live", "stalled", "pause"]
    assert handoff.drain_keyframes() == []
