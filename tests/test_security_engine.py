"""The engine boundary holds: any reply a worker or an OpenAI-compatible server can send becomes
a failure outcome for that keyframe, never an exception, and the stream goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from PIL import Image

from engine.captioner import Captioner
from engine.errors import FailureReason
from engine.nats_engine import NatsEngine, engine_subject
from engine.openai_engine import OpenAIEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip

GOOD_TEXT = orjson.dumps(
    {
        "description": "A red square.",
        "objects": ["red square"],
        "actions": [],
        "environment": "A plain background",
        "content_type": "CGI",
        "specific_style": "test card",
        "production_quality": "synthetic",
        "summary": "A red square.",
        "logos": [],
    }
).decode()
WORKER_REPLY = {"finish_reason": "stop", "prompt_tokens": 1, "output_tokens": 1}
BAD_WORKER_REPLIES = [
    orjson.dumps({**WORKER_REPLY, "text": 5}),
    orjson.dumps({**WORKER_REPLY, "text": ["a"]}),
    orjson.dumps({**WORKER_REPLY, "text": GOOD_TEXT, "finish_reason": 7}),
    orjson.dumps({**WORKER_REPLY, "text": GOOD_TEXT, "prompt_tokens": "many"}),
    orjson.dumps({**WORKER_REPLY, "text": GOOD_TEXT, "output_tokens": 1e300}),
    orjson.dumps({**WORKER_REPLY, "text": GOOD_TEXT, "first_token_s": "soon"}),
    orjson.dumps([GOOD_TEXT]),
    orjson.dumps("just a string"),
    b"\xff\xfe garbage \x00",
    b"",
]


def picture() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 30, 30))


async def serve_replies(client: Client, subject: str, replies: list[bytes]) -> None:
    """A fake worker: answers the n-th request with replies[n % len]."""
    count = 0

    async def answer(msg: Msg) -> None:
        nonlocal count
        await msg.respond(replies[count % len(replies)])
        count += 1

    await client.subscribe(subject, cb=answer)
    await client.flush()


async def test_bad_worker_replies_become_failures(nats_server: EmbeddedNatsServer) -> None:
    client = Client()
    await client.connect(nats_server.url)
    try:
        await serve_replies(client, "bad.caption", BAD_WORKER_REPLIES)
        engine = NatsEngine(client, "bad.caption", "m", attempt_timeout_s=5, attempts=1)
        captioner = Captioner(engine, max_attempts=1, timeout_s=10)
        for reply in BAD_WORKER_REPLIES:
            outcome = await captioner.caption(picture(), "r")
            assert outcome.error is not None, reply
            assert outcome.error["reason"] == "engine_error", (reply, outcome.error)
            assert outcome.error["reason"] in get_args(FailureReason)
    finally:
        await client.drain()


def _chat(content: Any, **extra: Any) -> bytes:
    message = {"role": "assistant", "content": content}
    return orjson.dumps({"choices": [{"message": message, "finish_reason": "stop"}], **extra})


BAD_HTTP_REPLIES: list[tuple[bytes, str]] = [
    (b"<html><body>Welcome to nginx</body></html>", "text/html"),
    (b"<html><body>a proxy page</body></html>", "application/json"),
    (b'{"choices": [', "application/json"),
    (_chat([{"type": "text", "text": GOOD_TEXT}]), "application/json"),
    (_chat(5), "application/json"),
    (orjson.dumps({"choices": []}), "application/json"),
    (orjson.dumps({"choices": "none"}), "application/json"),
    (orjson.dumps({"id": "x"}), "application/json"),
    (orjson.dumps([1, 2, 3]), "application/json"),
    (orjson.dumps({"choices": [{"message": None}]}), "application/json"),
    (_chat(GOOD_TEXT, usage={"prompt_tokens": "x"}), "application/json"),
    (_chat(GOOD_TEXT, usage=[1]), "application/json"),
    (b"\xff\xfe\x00", "application/json"),
]


@pytest.fixture
async def fake_openai() -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    """A real HTTP server on 127.0.0.1 answering each request with the next scripted reply."""
    script: list[tuple[bytes, str]] = []

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        body, content_type = script.pop(0)
        return web.Response(body=body, status=200, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", script
    finally:
        await runner.cleanup()


async def test_bad_openai_replies_become_failures(
    fake_openai: tuple[str, list[tuple[bytes, str]]],
) -> None:
    url, script = fake_openai
    engine = OpenAIEngine(url, "m")
    captioner = Captioner(engine, max_attempts=1, timeout_s=10)
    try:
        for reply in BAD_HTTP_REPLIES:
            script.append(reply)
            outcome = await captioner.caption(picture(), "r")
            assert outcome.error is not None, reply
            assert outcome.error["reason"] == "engine_error", (reply, outcome.error)
        script.append((_chat(GOOD_TEXT), "application/json"))
        assert (await captioner.caption(picture(), "r")).ok  # the same engine still works
    finally:
        await engine.close()


class _Raising:
    model_id = "raising"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Any:
        raise self.error

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [ValueError("x"), KeyError("k"), RuntimeError("boom"), MemoryError(), OSError(5, "io")],
)
async def test_any_engine_exception_is_a_failure(error: BaseException) -> None:
    outcome = await Captioner(_Raising(error), max_attempts=2).caption(picture(), "r")
    assert outcome.error is not None and outcome.error["reason"] == "engine_error"


async def test_only_cancellation_propagates() -> None:
    captioner = Captioner(_Raising(asyncio.CancelledError()), max_attempts=1)
    with pytest.raises(asyncio.CancelledError):
        await captioner.caption(picture(), "r")


async def test_a_stream_goes_on_through_bad_worker_replies(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    """vidcap run with engine kind nats and a worker that answers {"text": 5}: every keyframe
    gets a failure event in its slot, the stream runs to its end, the exit status is 0."""
    spec = ClipSpec(shots=3, shot_frames=15)
    clip = write_clip(tmp_path / "clip.mp4", spec)
    config = parse_config(
        {
            "streams": [{"id": "cam", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "engine": {"kind": "nats", "model_id": "m", "worker_timeout_s": 5},
            "nats": {"url": nats_server.url, "subject_prefix": "sec", "stream_name": "SEC"},
        }
    )
    worker = Client()
    await worker.connect(nats_server.url)
    events: list[dict[str, Any]] = []
    try:
        await serve_replies(worker, engine_subject("sec"), BAD_WORKER_REPLIES[:1])
        assert await Runner(config, events.append).run(nats_server.url) == 0
    finally:
        await worker.drain()
    captions = [e for e in events if e["type"] == "caption"]
    assert [c["keyframe"] for c in captions] == list(range(spec.shots))
    assert all(c["error"]["reason"] == "engine_error" for c in captions), captions
    assert events[-1]["state"] == "ended", events[-1]
