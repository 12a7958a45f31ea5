"""The runner's streams while it runs: added and removed (drained, `stopped` published), a
stream added again continues its story, and every task is awaited.

A scripted engine: this is about the runner's bookkeeping, not captions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from stream.config import StreamConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats
from tests.test_exit_status import GoodEngine


async def test_streams_are_added_removed_and_added_again_while_running(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=3, shot_frames=12))
    config = parse_config(
        {
            "streams": [{"id": "first", "url": str(clip), "loop": True, "live": False}],
            "keyframes": {"min_gap_s": 0.1},
            **engine_and_nats(nats_server.url, "rt", stream_name="RT"),
        }
    )
    events: list[dict[str, Any]] = []
    captions: dict[str, asyncio.Event] = {"first": asyncio.Event(), "second": asyncio.Event()}

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["type"] == "caption":
            captions[event["stream"]].set()

    earlier_tasks = asyncio.all_tasks()  # the suite shares one loop: judge only this runner's
    runner = Runner(config, on_event)
    run = asyncio.create_task(runner.run(nats_server.url, engine=GoodEngine()))
    await asyncio.wait_for(captions["first"].wait(), 30)
    second = StreamConfig(id="second", url=str(clip), loop=True, live=False)

    runner.add_stream(second)
    await asyncio.wait_for(captions["second"].wait(), 30)
    assert await runner.remove_stream("second") is True
    first_part = [e for e in events if e["stream"] == "second"]
    assert first_part[-1]["type"] == "status" and first_part[-1]["state"] == "stopped"

    captions["second"].clear()
    runner.add_stream(second)  # the same id again, in the same run
    await asyncio.wait_for(captions["second"].wait(), 30)
    runner.request_stop()
    assert await asyncio.wait_for(run, 60) == 0

    for stream in ("first", "second"):
        story = [e for e in events if e["stream"] == stream]
        assert [e["seq"] for e in story] == list(range(len(story))), stream  # one story
        assert story[-1]["state"] == "stopped"
        numbers = [e["keyframe"] for e in story if e["type"] == "caption"]
        assert numbers == list(range(len(numbers))), stream
    # the first stream kept captioning while the second came and went
    assert sum(e["stream"] == "first" and e["type"] == "caption" for e in events) > 1
    left = [t for t in asyncio.all_tasks() - earlier_tasks if t.get_name().startswith("stream-")]
    assert not left, left
