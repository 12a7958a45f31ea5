"""`vidcap bench index`: what the search index costs: indexing events/s (from memory into
SQLite, and the whole path from a real nats-server's JetStream), query latency p50/p95, and
the index size, on a synthetic log of plausible events (captions with objects, actions and
logos, logo alerts, status events) over 4 streams.

    vidcap bench index --events 200000
    vidcap bench index --events 1000000 --no-nats
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig

from stream.bench.search_log import synthetic_log
from stream.config import NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.search.follower import FETCH_BATCH, Indexer
from stream.search.queries import SearchQuery, search
from stream.search.reports import airtime, segments
from stream.search.store import IndexStore, StoredMessage, reading

START = 1_780_000_000.0
ROUNDS = 50


def bench_index(events: int, through_nats: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="vidcap-bench-search-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        payloads = [event.payload for event in synthetic_log(events, start_at=START)]
        print(f"{events} events generated in {time.perf_counter() - started:.1f} s")
        db = root / "memory.db"
        rate = _index_from_memory(db, payloads)
        captions = _count(db, "captions")
        size = db.stat().st_size
        print(f"index from memory: {rate:,.0f} events/s; {captions} captions")
        per_million = size / captions * 1e6 / 2**30
        print(f"index size: {size / 2**20:.1f} MiB ({per_million:.2f} GiB per 1M captions)")
        if through_nats:
            rate = asyncio.run(_index_from_jetstream(root, payloads))
            print(f"index from JetStream: {rate:,.0f} events/s")
        _queries(db, events)
    return 0


def _index_from_memory(db: Path, payloads: list[bytes]) -> float:
    store = IndexStore(db, "VIDCAP")
    messages = [StoredMessage(n, data) for n, data in enumerate(payloads, start=1)]
    started = time.perf_counter()
    for first in range(0, len(messages), FETCH_BATCH):
        store.apply(messages[first : first + FETCH_BATCH])
    elapsed = time.perf_counter() - started
    store.close()
    return len(messages) / elapsed


async def _index_from_jetstream(root: Path, payloads: list[bytes]) -> float:
    with EmbeddedNatsServer(root / "nats") as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(StreamConfig(name="VIDCAP", subjects=["vidcap.>"]))
        for n, data in enumerate(payloads):
            await client.publish(f"vidcap.cam{n % 4}.caption", data)  # the subject is not read
        await client.flush()
        while (await js.stream_info("VIDCAP")).state.messages < len(payloads):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await client.close()
        indexer = Indexer(NatsConfig(url=server.url), root / "jetstream.db", writer_thread=False)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(indexer.run(stop))
        while indexer.progress.position < len(payloads):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return len(payloads) / elapsed


def _queries(db: Path, events: int) -> None:
    end = START + events / 4
    hour = (end - 3600, end)
    cases: dict[str, Callable[[Any], Any]] = {
        "one common word (crowd)": lambda c: search(c, SearchQuery("crowd")),
        "two words (referee running)": lambda c: search(c, SearchQuery("referee running")),
        "phrase + stream": lambda c: search(c, SearchQuery('"in a stadium"', stream="cam2")),
        "rare: word AND logo AND object": lambda c: search(
            c, SearchQuery("chef", logo="heineken", object="umbrella")
        ),
        "no match (zebra)": lambda c: search(c, SearchQuery("zebra")),
        "filters only, last hour": lambda c: search(
            c, SearchQuery(content_type="news", quality="amateur", since=hour[0])
        ),
        "word in the first hour (old)": lambda c: search(
            c, SearchQuery("crowd", until=START + 3600, limit=100)
        ),
        "airtime, whole log": lambda c: airtime(c, START, end),
        "segments, last hour, one stream": lambda c: segments(c, *hour, "cam1", 1000),
    }
    print(f"query latency over {ROUNDS} runs each (ms):")
    with reading(db) as connection:
        for name, run in cases.items():
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                run(connection)
                times.append((time.perf_counter() - started) * 1000)
            p95 = statistics.quantiles(times, n=20)[-1]
            print(f"  {name:34} p50 {statistics.median(times):7.2f}  p95 {p95:7.2f}")


def _count(db: Path, table: str) -> int:
    with reading(db) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
