"""A file stream removed through the stream API mid-way and added again starts over: a
removal is an end the operator chose, not an interruption to resume after. (A trial removed
a looped file after several loops and added it again: it "resumed after frame 790" of a
30-frame file and ended with nothing captioned.) nats-server and the file are real; the
engine is the fixed stand-in of test_nats_permissions, held back until the test lets it
answer, so the removal lands mid-file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from PIL import Image

from engine.base import Generation
from stream.config import StreamConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.test_nats_permissions import FixedEngine


class HeldEngine(FixedEngine):
    def __init__(self) -> None:
        self.answers = asyncio.Semaphore(0)

    def allow(self, answers: int) -> None:
        for _ in range(answers):
            self.answers.release()

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        await self.answers.acquire()
        return await super().generate(image, request_id, max_tokens, priority)


def _states_after_resumed(events: list[dict[str, Any]]) -> list[str]:
    states = [e.get("state", e["type"]) for e in events]
    return states[states.index("resumed") :] if "resumed" in states else []


async def _until(events: list[dict[str, Any]], check: Any) -> None:
    async with asyncio.timeout(30):
        while not check(events):  # noqa: ASYNC110 (the run appends)
            await asyncio.sleep(0.05)


async def test_a_file_removed_and_added_again_starts_over(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=6, shot_frames=15))
    config = parse_config(
        {
            "streams": [{"id": "cuts", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "http": {
                "listen": "127.0.0.1:0",
                "token": "remove-test-token-0123",
                "api_files": [str(tmp_path)],
            },
            "nats": {"url": nats_server.url},
        }
    )
    events: list[dict[str, Any]] = []
    engine = HeldEngine()
    runner = Runner(config, events.append)
    running = asyncio.create_task(runner.run(nats_server.url, engine))

    def captions(session: str | None = None) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == "caption" and session in (None, e["session"])]

    try:
        engine.allow(2)
        await _until(events, lambda _: len(captions()) == 2)
        removing = asyncio.create_task(runner.remove("cuts"))
        engine.allow(100)  # what is in flight finishes
        await removing
        stopped = [e for e in events if e.get("state") == "stopped"]
        assert stopped and stopped[-1]["detail"].startswith("removed through the stream API")
        await runner.add(StreamConfig(id="cuts", url=str(clip)))
        # The first session may have read to its end while the engine was held.
        await _until(events, lambda _: _states_after_resumed(events).count("ended") == 1)
    finally:
        runner.request_stop()
        await running
    resumed = [e for e in events if e.get("state") == "resumed"]
    assert len(resumed) == 1
    assert "was removed through the stream API" in resumed[0]["detail"]
    assert "resume_after_frame" not in resumed[0] and "resumes after" not in resumed[0]["detail"]
    after = events[events.index(resumed[0]) :]
    second = [e for e in after if e["type"] == "caption"]
    assert second[0]["frame"]["index"] == 0  # from the start of the file again
    frames = [caption["frame"]["index"] for caption in second]
    assert frames == sorted(set(frames)) and len(frames) >= 6  # each shot's keyframe at least


async def test_pausing_sends_no_waiting_keyframe_to_the_engine(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    """The keyframes queued when captioning pauses are skipped, not captioned after the
    `paused` event (a trial's file stream published 13 captions over 40 s after its pause);
    what the engine already had is published, before the event."""
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=8, shot_frames=15))
    config = parse_config(
        {
            "streams": [{"id": "cuts", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "pipeline": {"max_in_flight_per_stream": 1},
            "http": {"listen": "127.0.0.1:0", "token": "pause-test-token-0123456"},
            "nats": {"url": nats_server.url},
        }
    )
    events: list[dict[str, Any]] = []
    engine = HeldEngine()
    runner = Runner(config, events.append)
    running = asyncio.create_task(runner.run(nats_server.url, engine))
    try:
        engine.allow(1)
        await _until(events, lambda _: len([e for e in events if e["type"] == "caption"]) == 1)
        await asyncio.sleep(0.5)  # the file's next keyframes wait for the held engine
        pipeline = runner.pipelines[0]
        assert pipeline.pause()
        engine.allow(100)
        await _until(events, lambda _: any(e.get("state") == "ended" for e in events))
        skipped = pipeline.stats.snapshot()["keyframes_skipped_paused"]
    finally:
        runner.request_stop()
        await running
    states = [e.get("state", e["type"]) for e in events]
    after_pause = states[states.index("paused") :]
    assert "caption" not in after_pause, states
    # The first; the one the engine held at the pause; the one the dispatcher had taken and
    # waited with for the engine's room. All 8 before.
    assert states.count("caption") <= 3, states
    assert skipped >= 5, skipped
