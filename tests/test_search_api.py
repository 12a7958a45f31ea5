"""`/api/search`, `/api/airtime`, `/api/segments` on the real HTTP server: answers equal to the
index's, 503 without an index, every parameter bounded, FTS5 syntax only ever text, reads
open like the other `GET /api` routes (whatever Authorization a client sends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stream.config import HttpConfig
from stream.service.http_server import HttpServer
from stream.service.search_api import SearchApi
from tests.test_search_queries import DUPLICATES, KNOWN_LOG, build_index

WINDOW = {"since": "2026-05-28T20:26:40Z", "until": "2026-05-28T20:30:00Z"}


async def _serve(db: Path | None) -> HttpServer:
    server = HttpServer(HttpConfig(listen="127.0.0.1:0", token="api-token-0123456789"))
    SearchApi(db).mount(server.app)
    await server.start()
    return server


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    db = tmp_path / "index.db"
    build_index(db, KNOWN_LOG + DUPLICATES)
    server = await _serve(db)
    yield server.url
    await server.close()


async def _get(url: str, params: Any = None, **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params=params, headers=headers) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_search_airtime_and_segments_answer_from_the_index(base: str) -> None:
    status, body = await _get(f"{base}/api/search", {"q": "crowd", "stream": "ch3"})
    assert status == 200
    assert [(r["stream"], r["seq"], r["js_seq"]) for r in body["results"]] == [
        ("ch3", 5, 9),
        ("ch3", 4, 8),
    ]
    status, body = await _get(f"{base}/api/search", {"logo": "nike", "limit": "1"})
    assert (status, [(r["stream"], r["seq"]) for r in body["results"]]) == (200, [("ch3", 5)])
    status, body = await _get(f"{base}/api/airtime", {**WINDOW, "stream": "ch4"})
    assert status == 200
    assert body == {
        "since": "2026-05-28T20:26:40.000+00:00",
        "until": "2026-05-28T20:30:00.000+00:00",
        "airtime": [
            {"stream": "ch4", "brand": "Adidas", "seconds": 100.0, "appearances": 1, "open": 1},
            {"stream": "ch4", "brand": "Nike", "seconds": 40.0, "appearances": 1, "open": 0},
        ],
    }
    status, body = await _get(f"{base}/api/segments", {**WINDOW, "stream": "ch3", "limit": "2"})
    assert status == 200
    assert [(s["first_seq"], s["last_seq"], s["seconds"]) for s in body["segments"]] == [
        (1, 2, 20.0),
        (4, 5, 20.0),
    ]


async def test_reads_are_open_like_the_other_api_reads(base: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, _ = await _get(f"{base}/api/search", {"q": "crowd"}, **headers)
        assert status == 200
    async with aiohttp.ClientSession() as http, http.post(f"{base}/api/search") as response:
        assert response.status == 405


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("search", {"limit": "1001"}, "limit must be an integer from 1 to 1000"),
        ("search", {"limit": "0"}, "limit must be"),
        ("search", {"limit": "-1"}, "limit must be"),
        ("search", {"limit": "1e9"}, "limit must be"),
        ("search", {"q": "x" * 501}, "q is longer than 500"),
        ("search", {"logo": "x" * 201}, "logo is longer than 200"),
        ("search", {"q": " ".join(["w"] * 33)}, "more than 32 search terms"),
        ("search", {"q": 'crowd "'}, "unbalanced double quote"),
        ("search", {"q": "-crowd"}, "needs a term before it"),
        ("search", {"text": "crowd"}, "unknown parameter(s) text"),
        ("search", [("q", "a"), ("q", "b")], "q given more than once"),
        ("search", {"since": "yesterday"}, "since 'yesterday': use an ISO time"),
        ("search", {"since": "99999999999d"}, "use an ISO time"),
        ("search", {"since": "1h", "until": "2h"}, "window is empty"),
        ("airtime", {}, "since is required"),
        ("airtime", {"since": "1h", "limit": "5"}, "unknown parameter(s) limit"),
        ("segments", {**WINDOW, "limit": "5001"}, "from 1 to 5000"),
        ("search", {"limit": "\u00b2"}, "limit must be"),  # isdigit() says yes, int() no
        ("search", {"limit": "\u0665"}, "limit must be"),  # an Arabic-Indic 5
        ("segments", {**WINDOW, "limit": "\u2460"}, "limit must be"),
        ("search", {"since": "\u0665m"}, "use an ISO time"),
        ("search", {"q": "a\u0000b"}, "q contains a control character"),
        ("search", {"stream": "../x"}, "stream id"),
    ],
)
async def test_every_parameter_is_bounded(base: str, path: str, params: Any, message: str) -> None:
    status, body = await _get(f"{base}/api/{path}", params)
    assert status == 400
    assert message in body["error"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('NEAR(crowd stadium) OR "x"', 0),  # the words "near(crowd", "stadium)", "x"
        ("description:anchor", 0),  # one word, not a column filter
        ("crowd*)(", 2),  # punctuation is a separator: the word crowd
        ("'; DROP TABLE captions; --", 0),
    ],
)
async def test_fts5_syntax_in_the_text_is_only_text(base: str, text: str, found: int) -> None:
    status, body = await _get(f"{base}/api/search", {"q": text})
    assert (status, len(body["results"])) == (200, found)
    status, body = await _get(f"{base}/api/search", {"q": "crowd"})
    assert len(body["results"]) == 2  # the index is still whole


@pytest.mark.parametrize("configured", [False, True])
async def test_without_an_index_the_routes_answer_503(tmp_path: Path, configured: bool) -> None:
    server = await _serve(tmp_path / "missing.db" if configured else None)
    try:
        for path, params in (("search", {}), ("airtime", WINDOW), ("segments", WINDOW)):
            status, body = await _get(f"{server.url}/api/{path}", params)
            assert status == 503
            assert "no search index" in body["error"]
    finally:
        await server.close()
