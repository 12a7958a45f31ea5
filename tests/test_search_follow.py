"""The index follows JetStream: what it holds equals a rebuild from the stream after the
indexer is killed mid-way (SIGKILL of `vidcap index`), after a NATS restart, with events
stored twice and deliveries repeated; and its answers are the hand-computed ones. A real
nats-server on 127.0.0.1 and a real `vidcap index` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from stream.bench.search_log import LogEvent, synthetic_log
from stream.config import NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.search.follower import Indexer
from stream.search.reports import airtime
from stream.search.store import dump, reading
from tests.conftest import free_port, schema_violations
from tests.test_search_queries import DUPLICATES, KNOWN_LOG, T0, build_index

BACKGROUND = 5_000
"""Events before the known log: enough that a kill lands mid-way."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()


async def _connect(url: str) -> Client:
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(StreamConfig(name="VIDCAP", subjects=["vidcap.>"]))
    except nats.js.errors.BadRequestError:
        pass  # it exists (a restarted server)
    return client


async def _publish(url: str, events: list[LogEvent], acked: bool = True) -> int:
    """Publish without Nats-Msg-Id (a re-publish is stored again); the stream's last seq."""
    client = await _connect(url)
    js = client.jetstream()
    expected = (await js.stream_info("VIDCAP")).state.last_seq + len(events)
    for event in events:
        if acked:
            await js.publish(event.subject("vidcap"), event.payload)
        else:  # fast: JetStream stores core publishes on its subjects too
            await client.publish(event.subject("vidcap"), event.payload)
    await client.flush()
    async with asyncio.timeout(10):
        while (info := await js.stream_info("VIDCAP")).state.last_seq < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await client.close()
    return int(info.state.last_seq)


def _position(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with reading(db) as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
    except Exception:  # noqa: BLE001 (the file is being created)
        return 0
    return int(row[0]) if row else 0


async def _indexed(db: Path, position: int) -> None:
    async with asyncio.timeout(20):
        while _position(db) < position:  # noqa: ASYNC110 (another process may write it)
            await asyncio.sleep(0.02)


async def _index_until(url: str, db: Path, position: int, **options: object) -> Indexer:
    indexer = Indexer(NatsConfig(url=url), db, **options)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(indexer.run(stop))
    async with asyncio.timeout(20):
        while indexer.progress.position < position:  # noqa: ASYNC110 (set by the indexer)
            await asyncio.sleep(0.02)
    stop.set()
    await task
    return indexer


def _dump(db: Path) -> object:
    with reading(db) as connection:
        return dump(connection)


async def test_the_index_of_jetstream_gives_the_hand_computed_answers(
    tmp_path: Path, server: EmbeddedNatsServer
) -> None:
    assert [v for e in KNOWN_LOG for v in schema_violations(e.payload)] == []
    last = await _publish(server.url, KNOWN_LOG + DUPLICATES)
    indexer = await _index_until(server.url, tmp_path / "index.db", last)
    assert (indexer.progress.indexed, indexer.progress.duplicates) == (len(KNOWN_LOG), 3)
    with reading(tmp_path / "index.db") as db:
        assert [(r["brand"], r["seconds"]) for r in airtime(db, T0, T0 + 200, "ch3")] == [
            ("Coca-Cola", 130.0),
            ("BBC", 10.0),
            ("Nike", 10.0),
        ]
    direct = tmp_path / "direct.db"
    build_index(direct, KNOWN_LOG + DUPLICATES)
    assert _dump(tmp_path / "index.db") == _dump(direct)


async def test_incremental_equals_rebuild_after_a_kill_a_nats_restart_and_duplicates(
    tmp_path: Path, server: EmbeddedNatsServer
) -> None:
    background = list(synthetic_log(BACKGROUND, start_at=T0 - BACKGROUND))
    await _publish(server.url, background, acked=False)
    db = tmp_path / "index.db"
    killed_at = await _kill_mid_way(server.url, db, tmp_path)
    assert 0 < killed_at < BACKGROUND

    stop = asyncio.Event()
    indexer = Indexer(NatsConfig(url=server.url), db)
    task = asyncio.create_task(indexer.run(stop))
    half = len(KNOWN_LOG) // 2
    await _indexed(db, await _publish(server.url, KNOWN_LOG[:half]))
    server.kill()
    await asyncio.sleep(0.5)
    server.start()  # same port and data: the stream and the durable consumer are kept
    last = await _publish(server.url, KNOWN_LOG[half:] + DUPLICATES)
    await _indexed(db, last)
    stop.set()
    await task
    assert indexer.progress.duplicates >= len(DUPLICATES)

    rebuilt = tmp_path / "rebuilt.db"
    await _index_until(server.url, rebuilt, last, durable="rebuild-check")
    incremental = _dump(db)
    assert incremental == _dump(rebuilt)
    await _index_until(server.url, db, last, rebuild=True)  # `vidcap index --rebuild`
    assert _dump(db) == incremental


async def _kill_mid_way(url: str, db: Path, tmp_path: Path) -> int:
    """Start `vidcap index`, SIGKILL it once it has indexed some but not all events."""
    env = {**os.environ, "VIDCAP_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(  # noqa: ASYNC220 (polled below)
        [sys.executable, "-m", "stream.cli", "index", "--nats", url, "--db", str(db)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            while (position := _position(db)) == 0:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
    return position


@pytest.mark.parametrize("again", [3, len(KNOWN_LOG) + 3], ids=["shorter", "longer"])
async def test_a_stream_created_again_is_indexed_afresh(
    tmp_path: Path, server: EmbeddedNatsServer, again: int
) -> None:
    """An embedded nats-server's stream is new each run (a trial's second run stopped its
    index with an error; search served the first run's captions); an operator may delete
    one. Shorter or longer than the index's position, the new stream is indexed alone (a
    longer one lost its first events and kept the old ones)."""
    db = tmp_path / "index.db"
    await _index_until(server.url, db, await _publish(server.url, KNOWN_LOG))
    client = await nats.connect(server.url)
    await client.jetstream().delete_stream("VIDCAP")
    await client.close()
    last = await _publish(server.url, (KNOWN_LOG * 2)[:again])
    assert last == again
    followed = await _index_until(server.url, db, last)
    assert followed.progress.restarted == 1
    fresh = tmp_path / "fresh.db"
    await _index_until(server.url, fresh, last, durable="fresh")
    assert _dump(db) == _dump(fresh)
    more = await _publish(server.url, KNOWN_LOG[:1])
    same_stream = await _index_until(server.url, db, more)  # goes on where it was
    progress = same_stream.progress
    assert progress.restarted == 0 and progress.indexed + progress.duplicates == 1


async def test_a_consumer_deleted_under_the_indexer_is_made_again_after_its_position(
    tmp_path: Path, server: EmbeddedNatsServer
) -> None:
    """An operator's `nats consumer rm` (or a lost consumer) ends the pull request with a 409:
    the indexer goes on from its own position with a new consumer, losing nothing."""
    db = tmp_path / "index.db"
    half = len(KNOWN_LOG) // 2
    stop = asyncio.Event()
    indexer = Indexer(NatsConfig(url=server.url), db)
    task = asyncio.create_task(indexer.run(stop))
    await _indexed(db, await _publish(server.url, KNOWN_LOG[:half]))
    client = await nats.connect(server.url)
    await client.jetstream().delete_consumer("VIDCAP", "vidcap-index")
    await client.close()
    last = await _publish(server.url, KNOWN_LOG[half:])
    await _indexed(db, last)
    stop.set()
    await task
    assert indexer.progress.repositioned == 2
    assert (indexer.progress.indexed, indexer.progress.duplicates) == (len(KNOWN_LOG), 0)
    direct = tmp_path / "direct.db"
    build_index(direct, KNOWN_LOG)
    assert _dump(db) == _dump(direct)
