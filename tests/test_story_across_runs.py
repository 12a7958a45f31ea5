"""One story per stream across vidcap's own deaths: `vidcap run` SIGKILLed at random moments
during a job of two files and a live RTSP camera, five times, then run until the files end.
JetStream then holds, per stream, seq 0.. without a gap or a repeat, each file keyframe
captioned once and in order, a `resumed` event where each run took over, and the spool is
empty. And a NATS outage longer than JetStream's duplicate
window stores nothing twice.

The caption engine is a worker in this process answering over NATS with a fixed caption
(a stand-in for vLLM: what is tested is delivery, and loading vLLM in each of six runs would
cost minutes); vidcap, nats-server and the files are real, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson
from nats.js.api import DeliverPolicy

from engine.base import CaptionEngine
from engine.nats_engine import Worker, engine_subject
from stream.config import NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import kill_tree
from tests.test_nats_permissions import FixedEngine

KILLS = 5
SPEC = ClipSpec(shots=30, shot_frames=15, fps=25)


class SlowEngine(FixedEngine):
    """A caption takes a while, so kills land with captions in flight, and no run gets to
    the file's end before its kill (an ended file starts over, by design)."""

    async def generate(
        self, image: Any, request_id: str, max_tokens: int, priority: int = 0
    ) -> Any:
        await asyncio.sleep(random.uniform(0.2, 0.4))
        return await super().generate(image, request_id, max_tokens)


@asynccontextmanager
async def worker_for(
    url: str, engine: CaptionEngine | None = None, prefix: str = "story"
) -> AsyncIterator[Worker]:
    client = await nats.connect(url)
    stop = asyncio.Event()
    worker = Worker(client, engine or SlowEngine(), engine_subject(prefix), concurrency=8)
    serving = asyncio.create_task(worker.serve(stop))
    try:
        yield worker
    finally:
        stop.set()
        await serving
        await client.drain()


async def stored_events(url: str, stream_name: str) -> list[dict[str, Any]]:
    client = await nats.connect(url)
    js = client.jetstream()
    try:
        info = await js.stream_info(stream_name)
    except nats.js.errors.NotFoundError:  # not created yet
        await client.close()
        return []
    events = []
    if info.state.messages:
        reader = await js.subscribe(
            ">", stream=stream_name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        for _ in range(info.state.messages):
            events.append(orjson.loads((await reader.next_msg(timeout=5)).data))
    await client.close()
    return events


async def captions_stored(url: str, streams: Iterable[str] | None = None) -> int:
    events = await stored_events(url, "STORY")
    return sum(
        e["type"] == "caption" and (streams is None or e["stream"] in streams) for e in events
    )


async def test_kills_at_random_moments_leave_one_story_per_stream(
    tmp_path: Path, own_spool: Path, rtsp_server: Callable[[Path], str]
) -> None:
    rng = random.Random(7)
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    clips = {name: write_clip(tmp_path / f"{name}.mp4", SPEC) for name in ("north", "south")}
    camera = rtsp_server(write_clip(tmp_path / "gate.mp4", SPEC))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": name, "url": str(path)} for name, path in clips.items()]
        + [{"id": "gate", "url": camera}],
        "keyframes": {"min_gap_s": 0.2},
        "pipeline": {"max_in_flight_per_stream": 1},  # about 3 captions a second per stream
        "engine": {"kind": "nats", "worker_timeout_s": 5},
        "nats": {"url": server.url, "subject_prefix": "story", "stream_name": "STORY"},
    }
    config.write_bytes(orjson.dumps(settings))
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    try:
        async with worker_for(server.url):
            for _ in range(KILLS):
                vidcap = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
                before = await captions_stored(server.url)
                async with asyncio.timeout(60):  # let it caption something, then kill it
                    while await captions_stored(server.url) < before + 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await asyncio.sleep(rng.uniform(0.0, 0.6))
                vidcap.send_signal(signal.SIGKILL)
                vidcap.wait(10)
                kill_tree(vidcap.pid)
            final = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
            async with asyncio.timeout(120):  # the files end; the camera goes on until SIGTERM
                while await captions_stored(server.url, clips) < 2 * SPEC.shots:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            final.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(final.wait, 60) == 0
            left = await asyncio.to_thread(lambda: list(own_spool.rglob("*.spool")))
            assert left == []  # all delivered, nothing left in the spool
        events = await stored_events(server.url, "STORY")
    finally:
        server.stop()
    for name in [*clips, "gate"]:
        story = [e for e in events if e["stream"] == name]
        assert [e["seq"] for e in story] == list(range(len(story))), name  # no gap, no repeat
        resumed = [e for e in story if e.get("state") == "resumed"]
        assert len(resumed) == KILLS, name  # each run after the first took the story over
        assert all(e["previous_end"] == "interrupted" for e in resumed), resumed
        assert all(e["last_seq"] == e["seq"] - 1 for e in resumed)
    gate = [e for e in events if e["stream"] == "gate"]
    assert sum(e["type"] == "caption" for e in gate) > KILLS and gate[-1]["state"] == "stopped"
    for name in clips:
        story = [e for e in events if e["stream"] == name]
        captions = [e for e in story if e["type"] == "caption"]
        assert [c["keyframe"] for c in captions] == list(range(SPEC.shots)), name
        assert [c["frame"]["index"] for c in captions] == SPEC.cut_frames, name
        assert story[-1]["state"] == "ended"


class AckEater:
    """A TCP relay between vidcap and nats-server that can swallow the server's answers (the
    acks), then cut the link: events stored by the server whose acks vidcap never read, the
    case a resend must not store twice. The server and the client are real."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self.swallow = False
        self._links: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the relay and every connection through it (an outage, until ``start``)."""
        assert self._server is not None
        self._server.close()
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._links += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, swallowable=False),
            self._pump(up_reader, writer, swallowable=True),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, swallowable: bool
    ) -> None:
        while data := await reader.read(65536):
            if not (swallowable and self.swallow):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


async def test_an_outage_longer_than_the_duplicate_window_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    window_s = 1.0
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    relay = AckEater(int(server.url.rsplit(":", 1)[1]))
    await relay.start()
    url = f"nats://127.0.0.1:{relay.port}"
    config = NatsConfig(
        url=url, subject_prefix="outage", stream_name="OUTAGE", duplicate_window_s=window_s
    )
    publisher = EventPublisher(await connect(config, url), config)
    await publisher.ensure_stream()
    watcher = await nats.connect(server.url)  # straight to the server
    js = watcher.jetstream()

    async def publish(seqs: range) -> None:
        for seq in seqs:
            await publisher.publish(Envelope("s", "run", seq), StatusEvent("live", "x", 1e9))

    try:
        await publish(range(200))
        assert await publisher.flush(10)
        relay.swallow = True
        await publish(range(200, 400))
        async with asyncio.timeout(10):
            while (await js.stream_info("OUTAGE")).state.messages < 400:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # stored; their acks eaten
        await relay.cut()
        await asyncio.sleep(3 * window_s)  # the server forgets the ids it de-duplicates with
        relay.swallow = False
        await relay.start()
        await publish(range(400, 500))
        assert await publisher.close() == 0
        events = await stored_events(server.url, "OUTAGE")
    finally:
        await watcher.close()
        server.stop()
    assert [e["seq"] for e in events] == list(range(500))
    assert publisher.found_stored == 200  # the lookup, not the window, kept them single
