"""`vidcap worker` on a real nats-server takes only JPEGs within its byte and pixel limits and
clamps the token budget; anything else gets a clear error reply and never reaches the engine."""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from PIL import Image

from engine.base import Generation
from engine.nats_engine import Worker
from stream.delivery.nats_server import EmbeddedNatsServer

SUBJECT = "wk_engine.caption"


class RecordingEngine:
    model_id = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], int]] = []

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.calls.append((image.size, max_tokens))
        return Generation("{}", "stop", 1, 1, None)

    async def close(self) -> None:
        pass


def jpeg(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims width x height: a decompression bomb."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.asynccontextmanager
async def serving(client: Client, worker: Worker) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.serve(stop))
    await asyncio.sleep(0.3)  # subscribed (serve flushes before it waits)
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
async def client(nats_server: EmbeddedNatsServer) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(nats_server.url)
    yield nc
    await nc.drain()


async def ask(client: Client, data: bytes, max_tokens: str = "512") -> str | None:
    headers = {"Vidcap-Request-Id": "t", "Vidcap-Max-Tokens": max_tokens}
    reply = await client.request(SUBJECT, data, timeout=10, headers=headers)
    return (reply.headers or {}).get("Vidcap-Error")


async def test_only_bounded_jpegs_reach_the_engine(client: Client) -> None:
    engine = RecordingEngine()
    async with serving(client, Worker(client, engine, SUBJECT, 4)):
        assert await ask(client, jpeg()) is None
        error = await ask(client, png())
        assert error is not None and "not a JPEG" in error
        error = await ask(client, jpeg_declaring(13000, 13000))
        assert error is not None and "13000x13000" in error and "exceeds" in error
        error = await ask(client, b"\xff\xd8 garbage")
        assert error is not None and "not a JPEG" in error
    assert engine.calls == [((64, 48), 512)]


async def test_the_token_budget_is_clamped(client: Client) -> None:
    engine = RecordingEngine()
    async with serving(client, Worker(client, engine, SUBJECT, 4)):
        assert await ask(client, jpeg(), max_tokens=str(10**9)) is None
        error = await ask(client, jpeg(), max_tokens="-5")
        assert error is not None and "Max-Tokens" in error
    assert engine.calls == [((64, 48), 4096)]


async def test_configured_limits(client: Client) -> None:
    from engine.nats_engine import RequestLimits

    engine = RecordingEngine()
    limits = RequestLimits(max_image_bytes=2000, max_image_pixels=100 * 100, max_tokens=64)
    async with serving(client, Worker(client, engine, SUBJECT, 4, limits)):
        error = await ask(client, jpeg(640, 480))
        assert error is not None and "bytes exceeds 2000" in error, error
        error = await ask(client, jpeg(120, 100))
        assert error is not None and "exceeds 10000 pixels" in error, error
        assert await ask(client, jpeg(), max_tokens="512") is None
    assert engine.calls == [((64, 48), 64)]
