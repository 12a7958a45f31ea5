"""NATS locked down: a real nats-server with the users of deploy/nats/vidcap-users.conf. `vidcap
run` and a worker do their jobs with their least privileges; a subscriber-only user reads the
events but cannot publish into them, submit or answer work, or delete the stream."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import orjson
import pytest
from PIL import Image

from engine.base import Generation
from engine.nats_engine import Worker, engine_subject
from stream.config import NatsConfig, parse_config
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.snapshots import read_snapshot
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.test_whip_server import self_signed

USERS = Path(__file__).parents[1] / "deploy" / "nats" / "vidcap-users.conf"
PASSWORDS = {"vidcap_run": "run-pw", "vidcap_worker": "worker-pw", "vidcap_viewer": "viewer-pw"}
CAPTION = {
    "description": "A test card.",
    "objects": ["card"],
    "actions": [],
    "environment": "studio",
    "content_type": "graphics",
    "specific_style": "test card",
    "production_quality": "synthetic",
    "summary": "A test card.",
    "logos": [],
}


class FixedEngine:
    """The worker's engine. Stands in for vLLM: this test is about NATS permissions, and the
    real engine's output is exercised by the worker tests."""

    model_id = "fixed"

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        return Generation(orjson.dumps(CAPTION).decode(), "stop", 10, 10, 0.01)

    async def close(self) -> None:
        pass


@pytest.fixture
def locked_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNatsServer]:
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", password)
    shutil.copy(USERS, tmp_path / USERS.name)
    config = tmp_path / "server.conf"
    config.write_text(f"include ./{USERS.name}\n")
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=config)
    server.start()
    yield server
    server.stop()


def as_user(url: str, user: str) -> NatsConfig:
    return NatsConfig(url=url, user=user, password=PASSWORDS[user])


async def test_run_and_worker_work_with_their_least_privileges(
    locked_server: EmbeddedNatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = locked_server.url
    worker_client = await connect(as_user(url, "vidcap_worker"), url)
    stop = asyncio.Event()
    worker = Worker(worker_client, FixedEngine(), engine_subject("vidcap"), concurrency=4)
    serving = asyncio.create_task(worker.serve(stop))
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=3, shot_frames=15))
    config = parse_config(
        {
            "streams": [{"id": "cam", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "engine": {"kind": "nats", "worker_timeout_s": 10},
            "nats": as_user(url, "vidcap_run").model_dump(mode="json")
            | {"password": PASSWORDS["vidcap_run"]},
        }
    )
    events: list[dict[str, Any]] = []
    assert await Runner(config, events.append).run(url) == 0
    stop.set()
    await serving
    await worker_client.drain()
    captions = [e for e in events if e["type"] == "caption"]
    assert len(captions) == 3 and all(c["status"] == "ok" for c in captions)
    assert all(c["snapshot"] is not None for c in captions), captions  # run may store them
    assert worker.served == 3
    assert not [r for r in caplog.records if "Permissions Violation" in r.getMessage()]

    # A viewer finds a caption by its seq and fetches its snapshot, as `vidcap snapshot get`.
    viewer = await connect(as_user(url, "vidcap_viewer"), url)
    last = captions[-1]["seq"]
    jpeg, reference = await read_snapshot(viewer.jetstream(), NatsConfig(), "cam", last)
    assert reference == captions[-1]["snapshot"] and len(jpeg) == reference["bytes"]
    await viewer.close()
    assert not [r for r in caplog.records if "Permissions Violation" in r.getMessage()]


async def test_a_viewer_lists_and_stats_the_workers_as_nats_micro_does(
    locked_server: EmbeddedNatsServer,
) -> None:
    url = locked_server.url
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    worker_client = await nats.connect(
        url, user="vidcap_worker", password=PASSWORDS["vidcap_worker"], error_cb=on_error
    )
    viewer = await nats.connect(
        url, user="vidcap_viewer", password=PASSWORDS["vidcap_viewer"], error_cb=on_error
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    worker = Worker(worker_client, FixedEngine(), engine_subject("vidcap"), concurrency=4)
    serving = asyncio.create_task(worker.serve(stop, lambda _: ready.set()))
    await asyncio.wait_for(ready.wait(), 5)
    answers = {}
    for verb in ("PING", "INFO", "STATS"):  # nats micro ls / info / stats vidcap-worker
        reply = await viewer.request(f"$SRV.{verb}.vidcap-worker", b"", timeout=5)
        answers[verb] = orjson.loads(reply.data)
    worker_id = answers["PING"]["id"]
    reply = await viewer.request(f"$SRV.STATS.vidcap-worker.{worker_id}", b"", timeout=5)
    assert orjson.loads(reply.data)["endpoints"][0]["num_requests"] == 0
    reply = await viewer.request("$SRV.PING", b"", timeout=5)
    assert orjson.loads(reply.data)["id"] == worker_id
    assert answers["INFO"]["endpoints"][0]["subject"] == engine_subject("vidcap")
    assert answers["STATS"]["metadata"]["model_id"] == "fixed"
    stop.set()
    await serving
    await worker_client.drain()
    await viewer.close()
    assert not violations


async def test_run_keeps_api_changes_in_its_bucket_with_its_least_privileges(
    locked_server: EmbeddedNatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = locked_server.url
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=2, shot_frames=15))
    token = "api-token-0123456789"
    config = parse_config(
        {
            # streams may come at run time; a file from this folder
            "http": {"listen": "127.0.0.1:0", "token": token, "api_files": [str(tmp_path)]},
            "engine": {"kind": "nats", "worker_timeout_s": 10},
            "nats": as_user(url, "vidcap_run").model_dump(mode="json")
            | {"password": PASSWORDS["vidcap_run"]},
        }
    )
    for run in range(2):
        runner = Runner(config)
        task = asyncio.create_task(runner.run(url))
        async with asyncio.timeout(30):
            while not runner.running:  # noqa: ASYNC110 (set once start-up is over)
                await asyncio.sleep(0.05)
        if run == 0:
            async with aiohttp.ClientSession() as http:
                body = {"id": "cam", "url": str(clip)}
                auth = {"Authorization": f"Bearer {token}"}
                async with http.post(
                    f"{runner.http_url}/api/streams", json=body, headers=auth
                ) as r:
                    assert r.status == 201, await r.text()
                async with http.post(f"{runner.http_url}/api/streams/cam/pause", headers=auth) as r:
                    assert r.status == 200, await r.text()
        else:  # the restart found it in the bucket
            assert runner.snapshot("cam") is not None and runner.snapshots()[0]["paused"]
        runner.request_stop()
        assert await task == 0
    assert not [r for r in caplog.records if "Permissions Violation" in r.getMessage()]


async def test_a_subscriber_reads_events_but_cannot_publish_submit_answer_or_delete(
    locked_server: EmbeddedNatsServer,
) -> None:
    url = locked_server.url
    run_config = as_user(url, "vidcap_run")
    publisher = EventPublisher(await connect(run_config, url), run_config)
    await publisher.ensure_stream()
    for seq in range(3):
        await publisher.publish(Envelope("cam", "s", seq), StatusEvent("live", "", 1e9))
    assert await publisher.close() == 0

    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    viewer = await nats.connect(
        url, user="vidcap_viewer", password=PASSWORDS["vidcap_viewer"], error_cb=on_error
    )
    js = viewer.jetstream(timeout=2)
    reader = await js.subscribe("vidcap.>", ordered_consumer=True, stream="VIDCAP")
    seqs = [orjson.loads((await reader.next_msg(timeout=5)).data)["seq"] for _ in range(3)]
    assert seqs == [0, 1, 2]

    await viewer.publish("vidcap.cam.caption", b'{"forged": true}')
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await viewer.request(engine_subject("vidcap"), b"jpeg", timeout=1)
    await viewer.subscribe(engine_subject("vidcap"), queue="vidcap-workers")
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await js.delete_stream("VIDCAP")
    await viewer.flush()
    async with asyncio.timeout(10):
        while len(violations) < 4:  # noqa: ASYNC110 (the server reports each asynchronously)
            await asyncio.sleep(0.05)
    denied = " ".join(violations).lower()  # nats-py lower-cases the server's -ERR text
    assert 'publish to "vidcap.cam.caption"' in denied
    assert f'publish to "{engine_subject("vidcap")}"' in denied
    assert f'subscription to "{engine_subject("vidcap")}"' in denied
    assert 'publish to "$js.api.stream.delete.vidcap"' in denied
    await viewer.close()

    checker = await nats.connect(url, user="vidcap_run", password=PASSWORDS["vidcap_run"])
    info = await checker.jetstream().stream_info("VIDCAP")
    assert info.state.messages == 3  # nothing forged was stored, nothing deleted
    await checker.close()


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    # One self-signed certificate is the CA, the server's and the client's: enough to show
    # that vidcap verifies the server and presents its certificate to a verifying server.
    cert, key = self_signed(tmp_path)
    config = tmp_path / "server.conf"
    config.write_text(
        f'tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{cert}", verify: true }}\n'
    )
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=config)
    server.start()
    try:
        tls = NatsConfig(url=server.url, tls_ca_file=cert, tls_cert_file=cert, tls_key_file=key)
        client = await connect(tls, server.url)
        assert client.is_connected
        await client.close()
        # Without a client certificate the server refuses the handshake: never connected.
        anonymous = NatsConfig(url=server.url, tls_ca_file=cert, connect_timeout_s=2)
        attempt = asyncio.create_task(connect(anonymous, server.url))
        done, _ = await asyncio.wait({attempt}, timeout=5)
        assert not done or attempt.exception() is not None
        attempt.cancel()
        log = (tmp_path / "nats" / "nats-server.log").read_text()
        assert "TLS handshake error" in log
    finally:
        server.stop()
