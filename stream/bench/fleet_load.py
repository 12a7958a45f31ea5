"""`vidcap bench fleet --load`: streams per ingest node at 720p25, with 1 and with 3 nodes.

One GStreamer RTSP server plays the 720p25 bench clip of `vidcap bench ingest` (a cut every
2 s) in real time to each client. The same stream set (``--streams`` cameras) is run by one
`vidcap run` node, then shared by three through leases on an embedded nats-server. Once the
shares settle, each node's CPU (process and children) and each stream's decoded frames/s (its
`GET /api/streams`, 25 is real time) are measured. The engine is a NATS worker that is not
there: each keyframe fails after a second, so this is ingest, keyframes, snapshots, events and
leases, the part an ingest node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import orjson
import psutil

from stream.bench.fleet import STREAM_NAME, settled
from stream.bench.ingest import clip_path
from stream.bench.rtsp_peer import RtspPeer
from stream.delivery.nats_server import EmbeddedNatsServer

WARMUP_S = 4.0
REAL_TIME_FPS = 24.0
"""A stream decoding at least this many frames/s (of 25) keeps up."""


async def bench_fleet_load(cache: Path, stream_count: int, seconds: float) -> None:
    peer = RtspPeer.for_file(clip_path(cache))
    url = peer.start()
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            EmbeddedNatsServer(Path(folder) / "nats") as server,
        ):
            print(f"{stream_count} RTSP streams of 720p25 H.264, measured {seconds:g} s")
            for nodes in (1, 3):
                await _measure(Path(folder), server.url, url, stream_count, nodes, seconds)
    finally:
        peer.kill()


async def _measure(
    folder: Path, nats_url: str, camera: str, stream_count: int, nodes: int, seconds: float
) -> None:
    streams = [f"cam{n}" for n in range(stream_count)]
    ports = [free_tcp_port() for _ in range(nodes)]
    processes = [_spawn(folder, nats_url, camera, streams, port) for port in ports]
    try:
        client = await nats.connect(nats_url)
        await asyncio.wait_for(settled(client.jetstream(), streams, nodes), 120)
        await client.close()
        await asyncio.sleep(WARMUP_S)
        usage = [psutil.Process(p.pid) for p in processes]
        before = [_cpu_seconds(process) for process in usage]
        started = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - started
        cpu = [(_cpu_seconds(p) - b) / wall for p, b in zip(usage, before, strict=True)]
        for n, (port, share) in enumerate(zip(ports, cpu, strict=True)):
            rates = [s["source_fps"] for s in _streams(port) if s["state"] == "live"]
            keeping_up = sum(rate >= REAL_TIME_FPS for rate in rates)
            per_stream = share / len(rates) if rates else float("nan")
            print(
                f"{nodes} node(s), node {n}: {len(rates)} streams, {keeping_up} at real time "
                f"(min {min(rates, default=0):.1f} fps); {share:.1%} of a core, "
                f"{per_stream:.1%} per stream -> {0.5 / per_stream:.0f} streams per core "
                "at half load"
            )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)
            process.kill()


def _spawn(
    folder: Path, nats_url: str, camera: str, streams: list[str], port: int
) -> subprocess.Popen[bytes]:
    settings = {
        "streams": [{"id": name, "url": camera} for name in streams],
        "engine": {"kind": "nats", "worker_timeout_s": 1},
        "nats": {"url": nats_url, "stream_name": STREAM_NAME, "subject_prefix": "load"},
        "leases": {"ttl_s": 3},
        "http": {"listen": f"127.0.0.1:{port}"},
    }
    config = folder / f"node-{port}.json"
    config.write_bytes(orjson.dumps(settings))
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _streams(port: int) -> list[dict[str, Any]]:
    address = f"http://127.0.0.1:{port}/api/streams"  # our own node
    with urllib.request.urlopen(address, timeout=5) as reply:  # noqa: S310
        return list(orjson.loads(reply.read())["streams"])


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
