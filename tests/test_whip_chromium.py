"""Headless Chromium (an independent WebRTC stack) publishes its fake camera over WHIP.

Chromium does not offer loopback ICE candidates, so it runs in a network namespace this test
creates, joined to ours by a veth pair: every packet stays inside this machine, on links the
test made. Needs root (or CAP_NET_ADMIN) and Debian's `chromium`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.runner import Runner
from tests.conftest import engine_and_nats

TOKEN = "chromium-token-0123456789"
PAGE = Path(__file__).parent / "browser" / "whip_publish.html"
PUBLISH_S = 8
VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    """A network namespace linked to this one by a veth pair: (namespace, our address)."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (scripts/install-system.sh installs it)")
    n = os.getpid() % 250
    name, host, guest = f"vidcap-test-{os.getpid()}", f"vch{n}", f"vcg{n}"
    ours, theirs = f"10.231.{n}.1", f"10.231.{n}.2"
    try:
        ip("netns", "add", name)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        reason = f"cannot create a network namespace here (needs root): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; in CI this test must run, not skip")
        pytest.skip(reason)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", guest)
        ip("link", "set", guest, "netns", name)
        ip("addr", "add", f"{ours}/30", "dev", host)
        ip("link", "set", host, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{theirs}/30", "dev", guest)
        ip("netns", "exec", name, "ip", "link", "set", guest, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, ours
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)  # takes the veth too


async def test_chromium_fake_camera_over_whip_is_captioned(
    namespace: tuple[str, str],
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
) -> None:
    netns, address = namespace
    config = parse_config(
        {
            "http": {"listen": f"{address}:0"},
            "whip": {"enabled": True, "token": TOKEN, "ice_addresses": [address]},
            "keyframes": {"min_gap_s": 0.5, "max_interval_s": 2},  # fake camera: no cuts
            **engine_and_nats(nats_server.url, "chromium", tiny_model, short_captions=True),
        }
    )
    events: list[dict[str, Any]] = []
    ended = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("state") in ("ended", "failed"):
            ended.set()

    runner = Runner(config, on_event)
    run = asyncio.create_task(runner.run(nats_server.url, engine=vllm_engine))
    async with asyncio.timeout(30):
        while not runner.whip_url:  # noqa: ASYNC110 (set once the endpoint listens)
            await asyncio.sleep(0.05)
    page = f"{PAGE.as_uri()}#endpoint={runner.whip_url}/browser&token={TOKEN}&seconds={PUBLISH_S}"
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        chromium = await asyncio.create_subprocess_exec(
            *("ip", "netns", "exec", netns, "chromium", *CHROMIUM_FLAGS),
            f"--user-data-dir={profile}",
            page,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers and zygotes go too
        )
        try:
            await asyncio.wait_for(ended.wait(), PUBLISH_S + 60)
        finally:
            os.killpg(chromium.pid, signal.SIGKILL)
            await chromium.wait()
    runner.request_stop()
    assert await asyncio.wait_for(run, 60) == 0

    assert [e["seq"] for e in events] == list(range(len(events)))
    for event in events:
        VALIDATE[event["type"]](event)
    statuses = [(e["state"], e["detail"]) for e in events if e["type"] == "status"]
    assert [s for s, _ in statuses] == ["connecting", "connecting", "live", "ended", "stopped"]
    assert "HeadlessChrome" in statuses[1][1]
    assert statuses[2][1].startswith("WebRTC 640x360")
    assert statuses[3][1] == "the publisher ended the session"
    captions = [e for e in events if e["type"] == "caption"]
    assert len(captions) >= 3  # start + heartbeats over PUBLISH_S seconds
    assert captions[0]["selection"]["reason"] == "start"
