"""Under overload, the right captions first: a free engine slot goes to the highest priority
waiting, and a keyframe whose turn comes after its stream's max_staleness_s is dropped and
reported in its place (reason ``deadline``), never captioned late. nats-server and the files
are real; the engine is a stand-in that takes a fixed time per caption (what is tested is
vidcap's admission, not the model)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import orjson
from PIL import Image

from engine.base import Generation
from engine.nats_engine import NatsEngine, Worker, engine_subject
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.fair_share import FairShare
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.test_nats_permissions import CAPTION, FixedEngine

CAPTION_S = 0.15
DEADLINE_S = 1.0


class TimedEngine(FixedEngine):
    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        await asyncio.sleep(CAPTION_S)
        return await super().generate(image, request_id, max_tokens)


async def test_a_free_slot_goes_to_the_highest_priority_waiting() -> None:
    share = FairShare(slots=1)
    order: list[str] = []
    release = asyncio.Event()

    async def work(stream: str, priority: int) -> None:
        async with share.slot(stream, priority):
            order.append(stream)
            await release.wait()
            release.clear()

    first = asyncio.create_task(work("first", 0))
    await asyncio.sleep(0.01)
    low = [asyncio.create_task(work(name, 0)) for name in ("low-a", "low-b", "low-a")]
    await asyncio.sleep(0.01)
    high = [asyncio.create_task(work("high", 5)) for _ in range(2)]
    await asyncio.sleep(0.01)
    while len(order) < 6:
        release.set()
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, *low, *high)
    # The high stream overtakes the low ones that waited longer; they then share in turn.
    assert order == ["first", "high", "high", "low-a", "low-b", "low-a"]


async def test_deadlines_drop_late_keyframes_and_priority_keeps_its_stream_fresh(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=16, shot_frames=10, fps=25))
    config = parse_config(
        {
            "streams": [
                {"id": name, "url": str(clip), "max_staleness_s": DEADLINE_S, "priority": p}
                for name, p in (("vip", 10), ("bulk", 0))
            ],
            "keyframes": {"min_gap_s": 0.1},
            "pipeline": {"max_in_flight_total": 1},  # one engine slot for both streams
            "nats": {"url": nats_server.url},
        }
    )
    events: list[dict[str, Any]] = []
    runner = Runner(config, events.append)
    assert await runner.run(nats_server.url, TimedEngine()) == 0
    for name in ("vip", "bulk"):
        story = [e for e in events if e["stream"] == name]
        captions = [e for e in story if e["type"] == "caption"]
        late = [e for e in story if e.get("reason") == "deadline"]
        # Nothing captioned after its deadline; every keyframe captioned or reported dropped.
        assert all(c["timing"]["queue_s"] <= DEADLINE_S for c in captions), name
        dropped = sum(e["dropped"] for e in late)
        assert len(captions) + dropped == 16, (name, len(captions), dropped)
        assert [c["keyframe"] for c in captions] == list(range(len(captions))), name
    vip = [e for e in events if e["stream"] == "vip" and e["type"] == "caption"]
    bulk = [e for e in events if e["stream"] == "bulk" and e["type"] == "caption"]
    assert any(e.get("reason") == "deadline" for e in events), "the engine was not overloaded"
    print(f"captioned: vip {len(vip)} of 16, bulk {len(bulk)} of 16")
    assert len(vip) > len(bulk), (len(vip), len(bulk))


class RecordingEngine(FixedEngine):
    def __init__(self) -> None:
        self.priorities: list[int] = []

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.priorities.append(priority)
        return await super().generate(image, request_id, max_tokens)


async def test_a_stream_priority_reaches_the_workers_engine(
    nats_server: EmbeddedNatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    recording = RecordingEngine()
    stop = asyncio.Event()
    worker = Worker(client, recording, engine_subject("prio"), concurrency=2)
    serving = asyncio.create_task(worker.serve(stop))
    await asyncio.sleep(0.2)
    engine = NatsEngine(client, engine_subject("prio"), "fixed", 5.0, 1)
    image = Image.new("RGB", (32, 32), "blue")
    for priority in (7, 0, -3, 1000):
        await engine.generate(image, f"r{priority}", 64, priority)
    stop.set()
    await serving
    await client.drain()
    assert recording.priorities == [7, 0, -3, 100]  # clamped to the documented range


def test_a_configured_priority_turns_on_vllms_priority_scheduler() -> None:
    def settings(priority: int) -> str:
        config = parse_config({"streams": [{"id": "a", "url": "a.mp4", "priority": priority}]})
        return Runner(config)._engine_settings().scheduling_policy

    assert (settings(0), settings(3)) == ("fcfs", "priority")


class LogoEngine(RecordingEngine):
    """Every caption shows the watched brand: its alert opens after appear_k captions."""

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.priorities.append(priority)
        caption = {**CAPTION, "logos": ["white Acme logo, lower left"]}
        return Generation(orjson.dumps(caption).decode(), "stop", 10, 10, 0.01)


async def test_an_open_logo_alert_boosts_its_streams_priority(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=8, shot_frames=10, fps=25))
    logos = {"mode": "watchlist", "watchlist": [{"brand": "Acme"}], "appear_k": 2}
    config = parse_config(
        {
            "streams": [{"id": "match", "url": str(clip), "priority": 5}],
            "keyframes": {"min_gap_s": 0.1},
            "alerts": {"logos": {**logos, "priority_boost": 20}},
            "pipeline": {"max_in_flight_per_stream": 1},  # one request at a time: in order
            "nats": {"url": nats_server.url},
        }
    )
    engine = LogoEngine()
    events: list[dict[str, Any]] = []
    assert await Runner(config, events.append).run(nats_server.url, engine) == 0
    assert any(e["type"] == "logo" and e["alert"] == "appeared" for e in events)
    # Before the alert opened, the stream's own 5; from soon after, 5 + 20.
    assert engine.priorities[:2] == [5, 5] and engine.priorities[-1] == 25, engine.priorities
    assert engine.priorities == sorted(engine.priorities), engine.priorities
    assert Runner(config)._engine_settings().scheduling_policy == "priority"
