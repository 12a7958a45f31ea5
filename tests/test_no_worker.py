"""`engine.kind: nats` with no `vidcap worker` serving (none started yet, or the last one
killed). A trial found every keyframe failed in 1.7 s ("no worker is serving ... after 3
tries"), a file job ended with all its captions failed and exit status 0, and `/readyz` said
ready. Now keyframes wait for a worker (outside their request deadline), readiness names the
missing worker, and a stop ends the wait. nats-server, the file and the worker are real; the
worker's engine is the fixed stand-in of test_nats_permissions (these tests are about
reaching workers, not about the model)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from PIL import Image

from engine.captioner import Captioner
from engine.nats_engine import WATCH_S, NatsEngine, Worker, engine_subject
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.test_nats_permissions import FixedEngine
from tests.test_standby import wait_for
from tests.test_story_across_runs import worker_for

SUBJECT = engine_subject("vidcap")


def a_worker(url: str) -> AbstractAsyncContextManager[Worker]:
    return worker_for(url, FixedEngine(), prefix="vidcap")


@dataclass
class NoWorkerRun:
    """A runner over files, with `engine.kind: nats` and, at first, no worker serving."""

    runner: Runner
    events: list[dict[str, Any]]
    status: int | None = None


@asynccontextmanager
async def run_without_worker(url: str, files: dict[str, Path]) -> AsyncIterator[NoWorkerRun]:
    config = parse_config(
        {
            "streams": [{"id": name, "url": str(clip)} for name, clip in files.items()],
            "keyframes": {"min_gap_s": 0.2},
            "engine": {"kind": "nats"},
            "nats": {"url": url},
        }
    )
    client = await nats.connect(url)
    engine = NatsEngine(client, SUBJECT, "fixed", attempt_timeout_s=5, attempts=3)
    events: list[dict[str, Any]] = []
    run = NoWorkerRun(Runner(config, events.append), events)
    running = asyncio.create_task(run.runner.run(url, engine))
    try:
        await wait_for(lambda: _says_no_worker(run.runner), 30)
        yield run
    finally:
        run.runner.request_stop()
        run.status = await running
        await engine.close()
        await client.close()


async def _says_no_worker(runner: Runner) -> bool:
    return f"no vidcap worker is serving {SUBJECT}" in await runner.not_ready()


async def test_keyframes_wait_for_a_worker_and_readiness_names_it(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=4, shot_frames=15))
    async with run_without_worker(nats_server.url, {"cuts": clip}) as run:
        await asyncio.sleep(2.5)  # the old code failed a keyframe in 1.7 s
        assert not [e for e in run.events if e["type"] == "caption"], run.events
        async with a_worker(nats_server.url):
            await wait_for(lambda: _has(run.events, "ended"), 30)
            assert not await _says_no_worker(run.runner)
    assert run.status == 0
    captions = [e for e in run.events if e["type"] == "caption"]
    assert len(captions) == 4 and all(e["status"] == "ok" for e in captions), captions
    assert [e["keyframe"] for e in captions] == [0, 1, 2, 3]


async def _has(events: list[dict[str, Any]], state: str) -> bool:
    return any(e.get("state") == state for e in events)


async def test_a_keyframe_waiting_for_a_worker_fails_at_a_stop(
    nats_server: EmbeddedNatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    engine = NatsEngine(client, SUBJECT, "fixed", attempt_timeout_s=5, attempts=3)
    captioner = Captioner(engine, timeout_s=1, until_serving=engine.until_serving)
    picture = Image.new("RGB", (64, 48))
    try:
        async with a_worker(nats_server.url):  # one was there, then it went
            assert (await captioner.caption(picture, "kf-0")).ok
        waiting = asyncio.create_task(captioner.caption(picture, "kf-1"))
        await asyncio.sleep(2)  # past the request deadline: waiting for a worker is not work
        assert not waiting.done()
        assert engine.absent == f"no vidcap worker is serving {SUBJECT}"
        stopped_at = time.monotonic()
        captioner.stopping.set()
        outcome = await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - stopped_at < 3
        assert outcome.error is not None and outcome.error["reason"] == "engine_error"
        assert outcome.error["detail"] == "no worker was serving the engine when vidcap stopped"
    finally:
        await engine.close()
        await client.close()


async def test_readiness_sees_the_last_worker_go_with_no_keyframe_asking(
    nats_server: EmbeddedNatsServer,
) -> None:
    """It was noticed only by the next request: a quiet camera's vidcap said ready for as
    long as no keyframe came, with no worker left."""
    client = await nats.connect(nats_server.url)
    engine = NatsEngine(client, SUBJECT, "fixed", attempt_timeout_s=5, attempts=3)

    async def absent() -> bool:
        return engine.absent is not None

    try:
        async with a_worker(nats_server.url):
            await asyncio.wait_for(engine.until_serving(), 10)
            assert engine.absent is None
        assert await wait_for(absent, 10) < 3 * WATCH_S
        async with a_worker(nats_server.url):
            await wait_for(lambda: _not(absent), 10)  # and back, still with nobody asking
    finally:
        await engine.close()
        await client.close()


async def _not(condition: Callable[[], Awaitable[bool]]) -> bool:
    return not await condition()


async def test_a_worker_says_at_once_that_it_stops(
    nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM was met with silence until the last answer went (20 s in a trial)."""
    from stream.config import WorkerConfig
    from stream.worker import run_worker

    async def fixed(_: object) -> FixedEngine:
        return FixedEngine()

    monkeypatch.setattr("stream.worker.start_engine", fixed)
    said: list[str] = []
    config = WorkerConfig.model_validate({"nats": {"url": nats_server.url}})
    working = asyncio.create_task(run_worker(config, said.append))
    await wait_for(lambda: _said_serving(said), 30)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(working, 10) == 0
    assert said[-2:] == [
        "stopping: taking no more requests, answering those in flight",
        "stopped after serving 0 requests",
    ]


async def _said_serving(said: list[str]) -> bool:
    return any(line.startswith("serving ") for line in said)


async def test_a_stream_removed_while_no_worker_serves_stops_at_once(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    """A trial: DELETE /api/streams/{id} with no worker serving waited for one to come (its
    keyframes waited for a worker, and the removal for its keyframes), and the stream went on
    in the list. Its waiting keyframes now fail at the removal, as they do at vidcap's stop;
    the other streams' keyframes go on waiting."""
    files = {name: write_clip(tmp_path / f"{name}.mp4", ClipSpec(shots=2)) for name in "ab"}
    async with run_without_worker(nats_server.url, files) as run:
        await asyncio.sleep(1)  # the keyframes are waiting
        removed_at = time.monotonic()
        assert await asyncio.wait_for(run.runner.remove("a"), 10)
        assert time.monotonic() - removed_at < 3
        async with a_worker(nats_server.url):
            await wait_for(lambda: _ended(run.events, "b"), 30)
    failed = [e for e in run.events if e["stream"] == "a" and e["type"] == "caption"]
    assert failed and all(e["status"] == "failed" for e in failed), failed
    why = "no worker was serving the engine when its stream stopped"
    assert failed[0]["error"]["detail"] == why
    served = [e["status"] for e in run.events if e["stream"] == "b" and e["type"] == "caption"]
    assert served == ["ok", "ok"]


async def _ended(events: list[dict[str, Any]], stream: str) -> bool:
    return any(e["stream"] == stream and e.get("state") == "ended" for e in events)
