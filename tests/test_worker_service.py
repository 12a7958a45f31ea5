"""Workers are a NATS micro service on a real nats-server: what `nats micro ls`, `nats micro info
vidcap-worker` and `nats micro stats vidcap-worker` send ($SRV.PING, $SRV.INFO, $SRV.STATS) gets
each worker's answer, with its endpoint, model, concurrency and true counters; a stopped worker
answers what it took, then is no longer listed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import nats.errors
import orjson
import pytest
from nats.aio.client import Client
from PIL import Image

from engine.base import Generation
from engine.errors import EngineAbsentError, EngineDeadError
from engine.nats_engine import QUEUE_GROUP, NatsEngine, Worker, engine_subject
from stream.delivery.nats_server import EmbeddedNatsServer
from tests.test_security_worker import jpeg, png

SUBJECT = engine_subject("ms")
REQUEST = {"Vidcap-Request-Id": "t", "Vidcap-Max-Tokens": "64"}


class GatedEngine:
    """Holds every request until ``release`` is set; counts those it holds."""

    def __init__(self, model_id: str = "gated") -> None:
        self.model_id = model_id
        self.release = asyncio.Event()
        self.holding = 0

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.holding += 1
        await self.release.wait()
        return Generation("{}", "stop", 1, 1, None)

    async def close(self) -> None:
        pass


@pytest.fixture
async def client(nats_server: EmbeddedNatsServer) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(nats_server.url)
    yield nc
    await nc.drain()


@contextlib.asynccontextmanager
async def serving(worker: Worker, stop: asyncio.Event) -> AsyncIterator[asyncio.Task[None]]:
    ready = asyncio.Event()
    task = asyncio.create_task(worker.serve(stop, lambda _: ready.set()))
    async with asyncio.timeout(5):
        await ready.wait()
    try:
        yield task
    finally:
        stop.set()
        await task


async def control(client: Client, subject: str) -> dict[str, Any]:
    reply = await client.request(subject, b"", timeout=5)
    body: dict[str, Any] = orjson.loads(reply.data)
    return body


async def all_answers(client: Client, subject: str, expected: int) -> list[dict[str, Any]]:
    """Every service's answer to one request, as `nats micro ls` collects them."""
    inbox = client.new_inbox()
    replies = await client.subscribe(inbox)
    await client.publish(subject, b"", reply=inbox)
    answers = [orjson.loads((await replies.next_msg(timeout=5)).data) for _ in range(expected)]
    await replies.unsubscribe()
    return answers


async def test_workers_answer_ping_info_and_stats(client: Client) -> None:
    engines = [GatedEngine("model-a"), GatedEngine("model-b")]
    for engine in engines:
        engine.release.set()
    workers = [Worker(client, engines[0], SUBJECT, 2), Worker(client, engines[1], SUBJECT, 3)]
    stop_b = asyncio.Event()
    async with serving(workers[0], asyncio.Event()), serving(workers[1], stop_b) as serving_b:
        pings = await all_answers(client, "$SRV.PING", expected=2)
        assert {p["type"] for p in pings} == {"io.nats.micro.v1.ping_response"}
        assert {p["name"] for p in pings} == {"vidcap-worker"}
        assert {p["version"] for p in pings} == {version("vidcap")}
        assert {p["metadata"]["model_id"] for p in pings} == {"model-a", "model-b"}
        ids = {p["metadata"]["model_id"]: p["id"] for p in pings}
        assert len(set(ids.values())) == 2

        info = await control(client, f"$SRV.INFO.vidcap-worker.{ids['model-a']}")
        assert info["type"] == "io.nats.micro.v1.info_response" and info["id"] == ids["model-a"]
        assert info["metadata"]["concurrency"] == "2"
        [endpoint] = info["endpoints"]
        assert endpoint["name"] == "caption"
        assert (endpoint["subject"], endpoint["queue_group"]) == (SUBJECT, QUEUE_GROUP)
        assert endpoint["metadata"]["max_image_bytes"] == str(1 << 20)
        by_name = await all_answers(client, "$SRV.INFO.vidcap-worker", expected=2)
        assert {i["id"] for i in by_name} == set(ids.values())

        stop_b.set()  # only worker A serves what follows
        await serving_b
        for _ in range(3):
            reply = await client.request(SUBJECT, jpeg(), timeout=5, headers=REQUEST)
            assert not (reply.headers or {}).get("Vidcap-Error")
        refused = await client.request(SUBJECT, png(), timeout=5, headers=REQUEST)
        assert refused.headers is not None and "not a JPEG" in refused.headers["Vidcap-Error"]
        assert refused.headers["Nats-Service-Error-Code"] == "400"

        stats = await control(client, f"$SRV.STATS.vidcap-worker.{ids['model-a']}")
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        [counted] = stats["endpoints"]
        assert (counted["num_requests"], counted["num_errors"]) == (4, 1)
        assert "not a JPEG" in counted["last_error"]
        assert counted["processing_time"] >= 4 * counted["average_processing_time"] > 0
        assert counted["data"] == {"in_flight": 0}


async def test_the_concurrency_bound_shows_in_stats_and_a_stop_drains(client: Client) -> None:
    engine = GatedEngine()
    stop = asyncio.Event()
    async with serving(Worker(client, engine, SUBJECT, concurrency=2), stop) as task:
        requests = [
            asyncio.create_task(client.request(SUBJECT, jpeg(), timeout=10, headers=REQUEST))
            for _ in range(3)
        ]
        async with asyncio.timeout(5):
            while engine.holding < 2:  # noqa: ASYNC110 (the engine counts what it holds)
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the third waits for a slot, never reaching the engine
        stats = await control(client, "$SRV.STATS.vidcap-worker")
        [counted] = stats["endpoints"]
        assert counted["num_requests"] == 3 and counted["data"] == {"in_flight": 3}
        assert engine.holding == 2

        stop.set()  # in flight and waiting: all three are answered
        await asyncio.sleep(0.2)
        assert not task.done()
        engine.release.set()
        replies = await asyncio.gather(*requests)
        assert all(not (r.headers or {}).get("Vidcap-Error") for r in replies)
        await task
    with pytest.raises(nats.errors.NoRespondersError):
        await client.request("$SRV.PING.vidcap-worker", b"", timeout=2)


class DeadEngine:
    model_id = "dead"

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        raise EngineDeadError("vLLM engine died: test")

    async def close(self) -> None:
        pass


async def test_a_worker_whose_engine_died_answers_and_leaves(client: Client) -> None:
    worker = Worker(client, DeadEngine(), SUBJECT, concurrency=2)
    async with serving(worker, asyncio.Event()) as task:
        reply = await client.request(SUBJECT, jpeg(), timeout=5, headers=REQUEST)
        assert reply.headers is not None and "engine died" in reply.headers["Vidcap-Error"]
        assert reply.headers["Nats-Service-Error-Code"] == "503"  # try another worker
        async with asyncio.timeout(5):
            await asyncio.shield(task)  # it stops by itself: no more requests, not listed
    assert isinstance(worker.engine_error, EngineDeadError)
    with pytest.raises(nats.errors.NoRespondersError):
        await client.request(SUBJECT, jpeg(), timeout=2, headers=REQUEST)
    with pytest.raises(nats.errors.NoRespondersError):
        await client.request("$SRV.PING.vidcap-worker", b"", timeout=2)


async def served(engine: NatsEngine, image: Image.Image, request_id: str) -> Generation:
    """As the Captioner asks: a request that found no worker waits for one and goes again."""
    while True:
        await engine.until_serving()
        with contextlib.suppress(EngineAbsentError):
            return await engine.generate(image, request_id, 64)


async def test_requests_a_dead_worker_took_go_to_another(client: Client) -> None:
    healthy = GatedEngine("healthy")
    healthy.release.set()
    dead = Worker(client, DeadEngine(), SUBJECT, concurrency=2)
    engine = NatsEngine(client, SUBJECT, "m", attempt_timeout_s=5, attempts=5)
    image = Image.new("RGB", (64, 48))
    async with serving(dead, asyncio.Event()) as dead_task:
        first = asyncio.create_task(served(engine, image, "r0"))
        async with asyncio.timeout(5):
            while dead.counters.requests == 0:  # noqa: ASYNC110 (counted as it takes one)
                await asyncio.sleep(0.01)
        async with serving(Worker(client, healthy, SUBJECT, concurrency=2), asyncio.Event()):
            assert (await first).text == "{}"  # answered 503 by the dead one, sent again
            for n in range(1, 4):
                assert (await served(engine, image, f"r{n}")).text == "{}"
            await asyncio.wait_for(asyncio.shield(dead_task), 5)
    assert dead.counters.requests >= 1 and healthy.holding == 4
