"""WHIP ingest against real WebRTC publishers on 127.0.0.1 (aiortc here; Chromium in
test_whip_chromium.py), and the endpoint's answers to bad requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import fastjsonschema
import numpy as np
import pytest

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.runner import Runner
from stream.sample_clip import ClipSpec
from stream.sources.whip import WhipSource
from tests.conftest import tiny_engine_config
from tests.whip_publisher import ShotsTrack, WhipPublisher

TOKEN = "test-token-0123456789"
VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}


def whip_config(nats_url: str, model: Path, **whip: Any) -> dict[str, Any]:
    return {
        "whip": {
            "enabled": True,
            "token": TOKEN,
            "ice_addresses": ["127.0.0.1"],  # keep WebRTC on loopback
            "stall_timeout_s": 2,
            **whip,
        },
        "keyframes": {"min_gap_s": 0.5, "max_interval_s": 30},
        "engine": tiny_engine_config(model).model_dump(),
        "nats": {"url": nats_url, "subject_prefix": "whip", "jetstream": False},
    }


class Running:
    def __init__(self, runner: Runner, task: asyncio.Task[int]) -> None:
        self.runner, self.task = runner, task
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def endpoint(self, stream: str) -> str:
        return f"{self.runner.whip_url}/{stream}"

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, predicate: Any, within_s: float = 60) -> None:
        async with asyncio.timeout(within_s):
            while not predicate(self.events):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def vidcap(
    nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path
) -> AsyncIterator[Running]:
    config = parse_config(whip_config(nats_server.url, tiny_model, max_sessions=2))
    running = Running(Runner(config), None)  # type: ignore[arg-type]
    running.runner = Runner(config, running.on_event)
    running.task = asyncio.create_task(running.runner.run(nats_server.url, engine=vllm_engine))
    async with asyncio.timeout(30):
        while not running.runner.whip_url:  # noqa: ASYNC110 (set once the endpoint listens)
            await asyncio.sleep(0.05)
    yield running
    running.runner.request_stop()
    assert await asyncio.wait_for(running.task, 60) == 0


def states(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in events if e["type"] == "status"]


async def test_aiortc_publisher_is_captioned_and_a_second_session_continues_the_stream(
    vidcap: Running, clip_spec: ClipSpec
) -> None:
    first = WhipPublisher(vidcap.endpoint("studio"), TOKEN)
    await first.publish(ShotsTrack(clip_spec))
    await vidcap.wait_for(lambda ev: sum(e["type"] == "caption" for e in ev) >= clip_spec.shots)
    assert await first.stop() == 200
    await vidcap.wait_for(lambda ev: "ended" in states(ev))

    second = WhipPublisher(vidcap.endpoint("studio"), TOKEN)
    await second.publish(ShotsTrack(clip_spec))
    await vidcap.wait_for(lambda ev: states(ev).count("live") == 2)
    await vidcap.wait_for(lambda ev: any(e["type"] == "caption" for e in ev[-3:]))
    assert await second.stop() == 200
    await vidcap.wait_for(lambda ev: states(ev).count("ended") == 2)

    events = vidcap.events
    assert [e["seq"] for e in events] == list(range(len(events)))
    for event in events:
        VALIDATE[event["type"]](event)
        assert event["stream"] == "studio"
    assert states(events) == ["connecting", "connecting", "live", "ended"] * 1 + [
        "connecting",
        "live",
        "ended",
    ]
    first_session = events[: next(i for i, e in enumerate(events) if e.get("state") == "ended")]
    captions = [e for e in first_session if e["type"] == "caption"]
    # Every shot of the clip is captioned once, in order (WebRTC may drop a frame at a cut,
    # so the keyframe is the cut's first frame that arrived).
    assert [c["selection"]["reason"] for c in captions][: clip_spec.shots] == ["start"] + [
        "cut"
    ] * (clip_spec.shots - 1)


async def test_bad_requests_get_clear_http_errors(vidcap: Running) -> None:
    offer_headers = {"Content-Type": "application/sdp"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = vidcap.runner.whip_url
    async with aiohttp.ClientSession() as http:

        async def post(path: str, headers: dict[str, str], body: str = "v=0\r\n") -> int:
            response = await http.post(f"{base}/{path}", data=body, headers=headers)
            return response.status

        assert await post("cam1", offer_headers) == 401
        assert await post("cam1", {**offer_headers, "Authorization": "Bearer wrong"}) == 401
        assert await post("cam.1", {**offer_headers, **auth}) == 400  # would break subjects
        assert await post("a%3E", {**offer_headers, **auth}) == 400  # "a>"
        assert await post("cam1", {**auth, "Content-Type": "text/plain"}) == 415
        assert await post("cam1", {**offer_headers, **auth}, "not sdp") == 400
        response = await http.delete(f"{base}/cam1/nosuchsession", headers=auth)
        assert response.status == 404
        response = await http.patch(f"{base}/cam1/x", headers=auth)
        assert response.status == 405

        # One publisher per stream; max_sessions (2) publishers at once.
        publishers = [WhipPublisher(vidcap.endpoint(f"cam{i}"), TOKEN) for i in (1, 2)]
        for publisher in publishers:
            await publisher.publish(ShotsTrack(ClipSpec()))
        with pytest.raises(RuntimeError, match="409"):
            await WhipPublisher(vidcap.endpoint("cam1"), TOKEN).publish(ShotsTrack(ClipSpec()))
        with pytest.raises(RuntimeError, match="503"):
            await WhipPublisher(vidcap.endpoint("cam3"), TOKEN).publish(ShotsTrack(ClipSpec()))
        for publisher in publishers:
            assert await publisher.stop() == 200


def test_the_slot_keeps_only_the_newest_frame() -> None:
    source = WhipSource("s")
    frames = [av.VideoFrame.from_ndarray(np.full((16, 16, 3), i, np.uint8)) for i in range(50)]
    for frame in frames:
        source.put_frame(frame)
    assert source._next() is frames[-1]
    assert source._next() is None  # waited one poll period: nothing queued behind it
