"""`index.enabled` in `vidcap run`: the run follows its own events into the search index and
serves `/api/search` from it. nats-server, the file and the HTTP server are real; the engine
is the fixed stand-in of test_nats_permissions (what is tested is the index's wiring)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from stream.search.store import IndexStore
from tests.test_nats_permissions import FixedEngine


async def test_a_run_indexes_its_captions_and_serves_the_search(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=3, shot_frames=15))
    config = parse_config(
        {
            "streams": [{"id": "cam", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "http": {"listen": "127.0.0.1:0", "token": "search-test-token-0123"},  # until stopped
            "nats": {"url": nats_server.url},
            "index": {"enabled": True, "db": str(tmp_path / "index.db")},
        }
    )
    runner = Runner(config)
    running = asyncio.create_task(runner.run(nats_server.url, FixedEngine()))
    hits: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession() as http:
            while len(hits) < 3:
                await asyncio.sleep(0.2)
                if not runner.http_url:
                    continue
                params = {"q": "test card", "stream": "cam"}
                async with http.get(f"{runner.http_url}/api/search", params=params) as response:
                    if response.status == 200:
                        hits = (await response.json())["results"]
    finally:
        runner.request_stop()
        assert await running == 0
    assert {hit["stream"] for hit in hits} == {"cam"}
    assert sorted(hit["keyframe"] for hit in hits) == [0, 1, 2]


async def test_a_stopped_index_is_not_served_as_if_it_followed(
    nats_server: EmbeddedNatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its answers would be stale, without a word (a trial saw old results served)."""
    db = tmp_path / "index.db"
    IndexStore(db, "ANOTHER_STREAM").close()  # this index cannot follow VIDCAP
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=2, shot_frames=15))
    config = parse_config(
        {
            "streams": [{"id": "cam", "url": str(clip)}],
            "http": {"listen": "127.0.0.1:0", "token": "search-test-token-0123"},
            "nats": {"url": nats_server.url},
            "index": {"enabled": True, "db": str(db)},
        }
    )
    runner = Runner(config)
    running = asyncio.create_task(runner.run(nats_server.url, FixedEngine()))
    try:
        async with asyncio.timeout(60):
            while runner.index_stopped is None or not runner.http_url:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{runner.http_url}/api/search", params={"q": "card"}) as response,
        ):
            assert response.status == 503
            error = (await response.json())["error"]
    finally:
        runner.request_stop()
        assert await running == 0
    assert error.startswith("the search index stopped (search index ") and "ANOTHER" in error
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].startswith("the search index stopped:")
    caplog.clear()  # the one ERROR expected
