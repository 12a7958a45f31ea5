"""`vidcap bench fleet`: how fast a killed vidcap's streams move, and what the leases cost.

Two `vidcap run` nodes share looped-file streams on an embedded nats-server (leases on, TTL
``--ttl``). Each round SIGKILLs the node that owns streams, times until every one of them is
held again by the survivor (read from the lease bucket), then starts a replacement node and
waits for the shares to settle. Meanwhile a subscriber counts the key-value writes (lease
renewals and presence heartbeats) per stream and second. The engine is not needed for this
(an unreachable worker: the takeover is the lease's and the pipeline's start, not a caption).
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson
import psutil

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.fleet.fleet import Fleet
from stream.fleet.leases import lease_bucket
from stream.fleet.presence import presence_bucket
from stream.sample_clip import ClipSpec, write_clip

STREAM_NAME = "BENCH"


async def lease_holders(js: Any, streams: list[str]) -> dict[str, str | None]:
    """Each stream's lease holder (its session), None when free."""
    kv = await js.key_value(lease_bucket(STREAM_NAME))
    holders: dict[str, str | None] = {}
    for stream in streams:
        try:
            holders[stream] = orjson.loads((await kv.get(stream)).value or b"{}").get("session")
        except nats.js.errors.KeyNotFoundError:
            holders[stream] = None
    return holders


async def settled(js: Any, streams: list[str], nodes: int) -> dict[str, str | None]:
    """Wait until every stream is held and the holders' counts differ by at most one."""
    while True:
        try:
            holders = await lease_holders(js, streams)
        except nats.js.errors.BucketNotFoundError:
            holders = {}
        counts = [list(holders.values()).count(s) for s in set(holders.values())]
        if holders and None not in holders.values() and len(counts) == nodes:
            if max(counts) - min(counts) <= 1:
                return holders
        await asyncio.sleep(0.1)


async def bench_fleet(stream_count: int, kills: int, ttl_s: float) -> int:
    streams = [f"cam{n}" for n in range(stream_count)]
    with (
        tempfile.TemporaryDirectory() as folder,
        EmbeddedNatsServer(Path(folder) / "nats") as server,
    ):
        clip = write_clip(Path(folder) / "clip.mp4", ClipSpec(shots=4, shot_frames=25, fps=25))
        config = Path(folder) / "vidcap.yaml"
        settings = {
            "streams": [{"id": name, "url": str(clip), "loop": True} for name in streams],
            "engine": {"kind": "nats", "worker_timeout_s": 1},
            "nats": {"url": server.url, "stream_name": STREAM_NAME, "subject_prefix": "bench"},
            "leases": {"ttl_s": ttl_s},
            "http": {"listen": None},
        }
        config.write_bytes(orjson.dumps(settings))
        command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
        client = await nats.connect(server.url)
        js = client.jetstream()
        writes = 0

        async def count(_msg: Any) -> None:
            nonlocal writes
            writes += 1

        for bucket in (lease_bucket(STREAM_NAME), presence_bucket(STREAM_NAME)):
            await client.subscribe(f"$KV.{bucket}.>", cb=count)
        spawn = lambda: subprocess.Popen(  # noqa: E731
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        nodes = {process.pid: process for process in (spawn(), spawn())}
        print(f"{stream_count} streams, 2 nodes, leases.ttl_s {ttl_s:g}, {kills} kills")
        takeovers: list[float] = []
        try:
            await asyncio.wait_for(settled(js, streams, 2), 120)
            writes, started = 0, time.monotonic()
            await asyncio.sleep(5 * ttl_s)
            rate = writes / (time.monotonic() - started) / stream_count
            for round_no in range(kills):
                holders = await lease_holders(js, streams)
                victim_session = next(s for s in holders.values() if s is not None)
                victim = await pid_of(js, victim_session)
                moved = [s for s, h in holders.items() if h == victim_session]
                nodes.pop(victim).send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                while True:
                    now = await lease_holders(js, moved)
                    if all(h not in (None, victim_session) for h in now.values()):
                        break
                    await asyncio.sleep(0.05)
                takeovers.append(time.monotonic() - killed_at)
                print(
                    f"kill {round_no}: {len(moved)} stream(s) taken over in {takeovers[-1]:.2f} s"
                )
                replacement = spawn()
                nodes[replacement.pid] = replacement
                await asyncio.wait_for(settled(js, streams, 2), 120)
        finally:
            for process in nodes.values():
                process.send_signal(signal.SIGTERM)
            for process in nodes.values():
                process.wait(60)
            await client.close()
    print(
        f"takeover after SIGKILL: p50 {statistics.median(takeovers):.2f} s, "
        f"max {max(takeovers):.2f} s (leases.ttl_s {ttl_s:g} + polling and start)"
    )
    print(f"lease and presence writes: {rate:.2f} per stream per second in steady state")
    return 0


async def pid_of(js: Any, session: str) -> int:
    kv = await js.key_value(presence_bucket(STREAM_NAME))
    for key in await kv.keys():
        node = orjson.loads((await kv.get(key)).value or b"{}")
        if node.get("session") == session:
            return int(node["pid"])
    raise LookupError(f"no live node with session {session}")


async def _story_unwritten() -> bool:
    return True  # no pipelines here: no story to check


async def bench_lease_cpu(stream_count: int, seconds: float, ttl_s: float) -> None:
    """The CPU of leases and presence alone: one process holds ``stream_count`` leases (no
    pipelines) and renews them for ``seconds``; its own CPU time and nats-server's."""
    with (
        tempfile.TemporaryDirectory() as folder,
        EmbeddedNatsServer(Path(folder) / "nats") as server,
    ):
        client = await nats.connect(server.url)
        fleet = Fleet(client.jetstream(), STREAM_NAME, ttl_s, "bench-node", "bench-session")
        await fleet.join()
        stopping = asyncio.Event()
        leases = [await fleet.acquire(f"cam{n}", stopping) for n in range(stream_count)]
        keeping = [fleet.leases.keep(lease, _story_unwritten) for lease in leases if lease]
        work = [asyncio.create_task(keep) for keep in keeping]
        work.append(asyncio.create_task(fleet.run(stopping)))
        await asyncio.sleep(ttl_s)  # past the first renewals
        server_process = psutil.Process(server.pid)
        ours, theirs = time.process_time(), sum(server_process.cpu_times()[:2])
        started = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - started
        ours = (time.process_time() - ours) / wall
        theirs = (sum(server_process.cpu_times()[:2]) - theirs) / wall
        stopping.set()
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        await client.close()
    print(
        f"leases and presence alone, {stream_count} streams, ttl {ttl_s:g} s, {wall:.0f} s: "
        f"vidcap {ours:.2%} of a core ({ours / stream_count * 1e6:.0f} µs CPU per stream "
        f"per second), nats-server {theirs:.2%} ({theirs / stream_count * 1e6:.0f} µs)"
    )
