"""Drive `/api/streams` against a running vidcap with a real RTSP camera (GStreamer), the
tiny vLLM engine and JetStream: add, inspect, pause, resume, remove, and a restart that
brings back what was changed at run time. Everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats

TOKEN = "api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Vidcap:
    """A running vidcap with its events, stopped by ``stop``."""

    def __init__(self, config: dict[str, Any], engine: VllmEngine, nats_url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.runner = Runner(parse_config(config), self.events.append)
        self.task = asyncio.create_task(self.runner.run(nats_url, engine))

    async def started(self) -> str:
        async with asyncio.timeout(60):
            while not self.runner.running:  # noqa: ASYNC110 (set once start-up is over)
                await asyncio.sleep(0.05)
        return self.runner.http_url

    async def stop(self) -> int:
        self.runner.request_stop()
        return await self.task

    def of(self, stream: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["stream"] == stream]

    async def until(self, check: Callable[[], bool], timeout_s: float = 120) -> None:
        async with asyncio.timeout(timeout_s):
            while not check():  # noqa: ASYNC110 (events arrive by callback)
                await asyncio.sleep(0.1)


def states(events: list[dict[str, Any]]) -> list[str]:
    return [e.get("state", e["type"]) for e in events]


async def test_add_pause_resume_remove_and_restart(
    tmp_path: Path,
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    rtsp_server: Callable[[Path], str],
) -> None:
    camera = rtsp_server(write_clip(tmp_path / "cam.mp4", ClipSpec(shots=6, shot_frames=25)))
    config = {
        "http": {"listen": "127.0.0.1:0", "token": TOKEN},
        "keyframes": {"min_gap_s": 0.5, "max_interval_s": 1},
        **engine_and_nats(nats_server.url, "api", tiny_model, "API", short_captions=True),
    }
    vidcap = Vidcap(config, vllm_engine, nats_server.url)
    base = await vidcap.started()
    async with aiohttp.ClientSession() as http:
        settings = {"id": "door", "url": camera, "stall_timeout_s": 2}
        async with http.post(f"{base}/api/streams", json=settings, headers=AUTH) as r:
            assert r.status == 201, await r.text()
        await vidcap.until(lambda: states(vidcap.of("door")).count("caption") >= 2)

        async with http.get(f"{base}/api/streams/door") as r:
            door = await r.json()
        assert door["state"] in ("live", "recovered") and door["url"] == camera
        assert door["captions"]["ok"] + door["captions"]["failed"] >= 2
        assert door["source_fps"] > 5 and door["latency_s"]["p50"] is not None

        async with http.post(f"{base}/api/streams/door/pause", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["paused"] is True
        await vidcap.until(lambda: "paused" in states(vidcap.of("door")))
        paused_at = len(vidcap.of("door"))
        await asyncio.sleep(3)  # a keyframe a second keeps coming; none is captioned
        async with http.get(f"{base}/api/streams/door") as r:
            assert (await r.json())["keyframes_skipped_paused"] >= 2
        assert "caption" not in states(vidcap.of("door")[paused_at:])

        async with http.post(f"{base}/api/streams/door/resume", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["paused"] is False
        await vidcap.until(lambda: "caption" in states(vidcap.of("door")[paused_at:]))
        after_pause = states(vidcap.of("door")[paused_at:])
        assert after_pause.index("unpaused") < after_pause.index("caption")
        assert states(vidcap.of("door")).count("paused") == 1  # once, where it happened

        async with http.post(
            f"{base}/api/streams", json={**settings, "id": "yard"}, headers=AUTH
        ) as r:
            assert r.status == 201
        async with http.post(f"{base}/api/streams/yard/pause", headers=AUTH) as r:
            assert r.status == 200
        async with http.delete(f"{base}/api/streams/door", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["ended_cleanly"] is True
        assert states(vidcap.of("door"))[-1] == "stopped"
        async with http.get(f"{base}/api/streams/door") as r:
            assert r.status == 404
    assert await vidcap.stop() == 0
    door_seqs = [e["seq"] for e in vidcap.of("door")]
    assert door_seqs == list(range(len(door_seqs)))  # in order, none lost or repeated

    # A restart keeps what the API changed: yard comes back, paused; door stays removed.
    again = Vidcap(config, vllm_engine, nats_server.url)
    base = await again.started()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/streams") as r:
            streams = (await r.json())["streams"]
    assert [(s["id"], s["paused"]) for s in streams] == [("yard", True)]
    await again.until(lambda: "paused" in states(again.of("yard")))
    assert await again.stop() == 0
    assert "caption" not in states(again.of("yard"))
