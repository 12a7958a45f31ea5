"""Headless Chromium opens the dashboard of a running vidcap with two RTSP cameras (GStreamer)
and the tiny engine, driven over the DevTools protocol: each card shows its snapshot, a
caption and the live state; a camera frozen, killed and restarted turns its card stalled,
reconnecting and live again while the other card stays live; a caption carrying markup is
shown as text. The screenshot is saved under the test's folder, or as docs/img/dashboard.png
with VIDCAP_SCREENSHOT=1."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest

from engine.vllm_engine import VllmEngine
from stream.bench.rtsp_peer import RtspPeer
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from tests.conftest import engine_and_nats
from tests.test_rtsp_faults import camera, cameras  # noqa: F401 (the cameras fixture)
from tests.test_whip_chromium import CHROMIUM_FLAGS

SCREENSHOT = Path(__file__).parents[1] / "docs" / "img" / "dashboard.png"
TOKEN = "dashboard-token-0123456789"
MARKUP = '<img src=x onerror="window.pwned=1"><b>bold</b>'
PREFIX = "dashc"
CARDS = "[...document.querySelectorAll('.card')].map(c => c.dataset.stream + ':' + c.dataset.state)"


class DevTools:
    """One page of a Chromium, driven over its DevTools websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._socket.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._socket.receive()).data)
            if message.get("id") == call_id:
                assert "error" not in message, message
                return dict(message["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, within_s: float) -> Any:
        """Poll ``expression`` until it is truthy; its last value in the failure message."""
        value = None
        try:
            async with asyncio.timeout(within_s):
                while not (value := await self.evaluate(expression)):  # noqa: ASYNC110 (the page)
                    await asyncio.sleep(0.2)
        except TimeoutError:
            cards = await self.evaluate(CARDS)
            pytest.fail(f"not within {within_s} s: {expression} (last: {value!r}; cards: {cards})")
        return value


@asynccontextmanager
async def chromium(url: str) -> AsyncIterator[DevTools]:
    """A headless Chromium showing ``url``; its page's DevTools session."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (scripts/install-system.sh installs it)")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = await asyncio.create_subprocess_exec(
            "chromium",
            *CHROMIUM_FLAGS,
            "--remote-debugging-port=0",
            "--window-size=1280,720",
            f"--user-data-dir={profile}",
            url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers and zygotes go too
        )
        try:
            port = await _devtools_port(Path(profile) / "DevToolsActivePort")
            async with aiohttp.ClientSession() as http:
                page = await _page_socket(http, port)
                async with http.ws_connect(page, max_msg_size=64 * 1024 * 1024) as socket:
                    yield DevTools(socket)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def _devtools_port(path: Path) -> int:
    async with asyncio.timeout(30):
        while (port := _written_port(path)) is None:  # noqa: ASYNC110 (a file Chromium writes)
            await asyncio.sleep(0.1)
    return port


def _written_port(path: Path) -> int | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return int(lines[0]) if len(lines) >= 2 else None


async def _page_socket(http: aiohttp.ClientSession, port: int) -> str:
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            await asyncio.sleep(0.1)


def card(stream: str, part: str) -> str:
    return f"document.querySelector('.card[data-stream=\"{stream}\"] {part}')"


def timeline(selector: str) -> str:
    return f"document.querySelectorAll('#timeline {selector}')"


def shows_its_picture(stream: str) -> str:
    img = card(stream, "img.snapshot")
    return f"{img} && !{img}.hidden && {img}.complete && {img}.naturalWidth > 0"


async def test_dashboard_in_chromium(
    cameras: tuple[RtspPeer, RtspPeer],  # noqa: F811 (the imported fixture)
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    faulted, steady = cameras
    sections = engine_and_nats(nats_server.url, PREFIX, tiny_model, stream_name="DASHC")
    # One attempt per caption: the search box needs some captions that pass the guard, but a
    # card's state waits for the captions in flight before it (events are in order).
    sections["engine"]["max_attempts"] = 1
    config = parse_config(
        {
            "streams": [camera("faulted", faulted.url), camera("steady", steady.url)],
            "keyframes": {"min_gap_s": 0.5, "max_interval_s": 1.5},  # heartbeats: no cuts
            "http": {"token": TOKEN},
            "index": {"enabled": True, "db": str(tmp_path / "index.db")},  # the search box's
            **sections,
        }
    )
    runner = Runner(config)
    run = asyncio.create_task(runner.run(nats_server.url, engine=vllm_engine))
    try:
        await _use_the_dashboard(runner, faulted, steady, nats_server.url, tmp_path)
    finally:  # a failure must not leave this runner's tasks in the suite's loop
        runner.request_stop()
        assert await asyncio.wait_for(run, 60) == 0


async def _use_the_dashboard(
    runner: Runner, faulted: RtspPeer, steady: RtspPeer, nats_url: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(60):
        while not runner.http_url:  # noqa: ASYNC110 (set once the server listens)
            await asyncio.sleep(0.05)

    async with chromium(runner.http_url + "/") as page:
        for stream in ("faulted", "steady"):
            await page.wait_for(f"{card(stream, '.state')}?.dataset.state === 'live'", 120)
            await page.wait_for(f"{card(stream, '.summary')}?.textContent.length > 0", 120)
            await page.wait_for(shows_its_picture(stream), 30)
        assert await page.evaluate("document.querySelectorAll('.card').length") == 2
        await _screenshot(page, tmp_path)
        await _control_buttons(page, steady.url)

        faulted.freeze()
        await page.wait_for(f"{card('faulted', '.state')}.dataset.state === 'stalled'", 30)
        faulted.kill()
        await page.wait_for(f"{card('faulted', '.state')}.dataset.state === 'reconnecting'", 30)
        assert await page.evaluate(f"{card('steady', '.state')}.dataset.state") == "live"
        await asyncio.to_thread(faulted.start)  # same port; the loop runs on meanwhile
        await page.wait_for(f"{card('faulted', '.state')}.dataset.state === 'live'", 60)

        await _publish_markup(nats_url)
        summary = card("intruder", ".summary")
        await page.wait_for(f"{summary}?.textContent === {json.dumps(MARKUP)}", 15)
        assert await page.evaluate(f"{summary}.children.length") == 0
        assert await page.evaluate("document.querySelector('img[src=\"x\"], b') === null")
        assert await page.evaluate("window.pwned === undefined")
        await page.wait_for("document.querySelector('.alert strong')?.textContent", 15)
        assert await page.evaluate("document.querySelector('.alert strong').textContent") == MARKUP

        await _search_box(page)

        await page.evaluate("location.hash = '#/stream/steady'")
        await page.wait_for(f"{timeline('.entry-caption img.snapshot')}.length > 0", 15)
        await _filter_while_a_page_is_late(page)
        states = f"[...{timeline('.entry-status .state')}].map(e => e.textContent)"
        assert (await page.wait_for(states, 15))[-2:] == ["live", "connecting"]  # newest first


async def _filter_while_a_page_is_late(page: DevTools) -> None:
    """The filter changes while the page of everything asked for before is still on its way
    (held back here; a busy server did it in CI): that late page must not fill the timeline
    of status events with captions."""
    await page.evaluate(
        "const fetchNow = window.fetch;"
        "window.fetch = async (url, ...rest) => { const answer = await fetchNow(url, ...rest);"
        "  if (String(url).includes('/events?') && !String(url).includes('kind='))"
        "    await new Promise(done => setTimeout(done, 1500));"
        "  return answer; };"
        "const k = document.getElementById('kind');"
        "k.value = ''; k.dispatchEvent(new Event('change'));"
        "k.value = 'status'; k.dispatchEvent(new Event('change'))"
    )
    await page.wait_for(f"{timeline('.entry-status')}.length > 0", 15)
    await asyncio.sleep(2.5)  # the late page has come by now
    assert await page.evaluate(f"{timeline('.entry-caption')}.length") == 0


async def _search_box(page: DevTools) -> None:
    """The index follows the run; a search for one stream's captions lists them, each with
    its keyframe's snapshot, and only that stream's."""
    hits = "document.querySelectorAll('#search-results .hit')"
    # Each hit's picture from the server, not from the cards' cache, and the search form in
    # view, where a user types: the pictures load lazily. In CI none of the hits, 1500 px
    # below the fold, had loaded within 15 s; here, with the cache off, none ever did.
    await page.call("Network.enable")
    await page.call("Network.setCacheDisabled", cacheDisabled=True)
    await page.evaluate(
        "document.getElementById('search-form').scrollIntoView();"
        "document.getElementById('search-stream').value = 'steady';"
        "document.getElementById('search-form').requestSubmit()"
    )
    await page.wait_for(f"{hits}.length > 0", 30)
    loaded = f"[...{hits}].some(h => h.querySelector('img.snapshot')?.naturalWidth > 0)"
    await page.wait_for(loaded, 15)
    heads = await page.evaluate(f"[...{hits}].map(h => h.querySelector('.hit-head').textContent)")
    assert heads and all(head.startswith("steady #") for head in heads), heads


async def _control_buttons(page: DevTools, url: str) -> None:
    """Pause and resume a card, add a stream and remove it, with the token typed in."""
    state = f"{card('steady', '.state')}.dataset.state"
    await page.evaluate(f"{card('steady', '.pause')}.click()")
    await page.wait_for("document.getElementById('notice').textContent.includes('token')", 10)
    assert await page.evaluate(state) == "live"
    await page.evaluate(
        f"const t = document.getElementById('token'); t.value = {json.dumps(TOKEN)};"
        "t.dispatchEvent(new Event('change'))"
    )
    await page.evaluate(f"{card('steady', '.pause')}.click()")
    await page.wait_for(f"{state} === 'paused'", 30)  # after the captions in flight
    await page.evaluate(f"{card('steady', '.pause')}.click()")
    await page.wait_for(f"{state} === 'live'", 30)
    await page.evaluate(
        "document.getElementById('add-id').value = 'added';"
        f"document.getElementById('add-url').value = {json.dumps(url)};"
        "document.querySelector('#add-form button').click()"
    )
    await page.wait_for(f"{card('added', '.state')}?.dataset.state === 'live'", 60)
    await page.evaluate(f"window.confirm = () => true; {card('added', '.remove')}.click()")
    await page.wait_for(f"{card('added', '.state')}.dataset.state === 'stopped'", 60)
    assert TOKEN not in await page.evaluate("location.href + document.cookie")


async def _publish_markup(url: str) -> None:
    """A caption and a logo alert whose model text is markup, as anyone on the subject could."""
    client = await nats.connect(url)
    event = {
        "type": "caption",
        "stream": "intruder",
        "seq": 0,
        "keyframe": 0,
        "status": "ok",
        "frame": {"captured_at": "2026-12-01T07:00:00.000+00:00"},
        "caption": {"summary": MARKUP, "description": MARKUP},
    }
    logo = {"type": "logo", "seq": 1, "alert": "appeared", "brand": MARKUP, "matched": MARKUP}
    await client.publish(f"{PREFIX}.intruder.caption", orjson.dumps(event))
    await client.publish(f"{PREFIX}.intruder.logo", orjson.dumps(logo))
    await client.drain()


async def _screenshot(page: DevTools, tmp_path: Path) -> None:
    shot = await page.call("Page.captureScreenshot", format="png")
    target = (
        SCREENSHOT if os.environ.get("VIDCAP_SCREENSHOT") == "1" else tmp_path / SCREENSHOT.name
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))
