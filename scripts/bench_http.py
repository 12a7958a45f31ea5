"""What the HTTP server costs (issue 15): CPU per scrape of /metrics with 32 streams' series,
and /readyz latency while 8 streams caption. The tiny vLLM engine on the CPU, an embedded
nats-server, and a client in another process (its CPU is not counted), all on 127.0.0.1.

    .venv/bin/python scripts/bench_http.py
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip

TOKEN = "bench-token-0123456789"
SCRAPES = 200
READINESS_PROBES = 120

# The client: its own process, so only the server's CPU is in vidcap's numbers.
_CLIENT = """
import sys, time, urllib.request
url, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for _ in range(count):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        size = len(response.read())
    print(f"{time.perf_counter() - started:.6f} {size}", flush=True)
    time.sleep(pause)
"""


def cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run_client(url: str, count: int, pause_s: float) -> list[tuple[float, int]]:
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, url, str(count), str(pause_s)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(float(a), int(b)) for a, b in (line.split() for line in out.splitlines())]


def config(streams: list[dict[str, Any]], nats_url: str) -> Any:
    return parse_config(
        {
            "streams": streams,
            "http": {"listen": "127.0.0.1:0", "token": TOKEN},  # stays up after files end
            "engine": {"model": "tiny", "max_num_seqs": 8, "request_timeout_s": 300},
            "keyframes": {"min_gap_s": 1.0},
            "nats": {"url": nats_url, "jetstream": False},
        }
    )


async def until(check: Any, timeout_s: float = 900) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (polls the runner's counters)
            await asyncio.sleep(0.5)


async def metrics_cost(clip: Path, nats_url: str) -> None:
    streams = [{"id": f"cam{i:02}", "url": str(clip)} for i in range(32)]
    runner = Runner(config(streams, nats_url))
    task = asyncio.create_task(runner.run(nats_url))
    await until(lambda: runner.running and len(runner.snapshots()) == 32)
    await until(lambda: all(s["state"] == "ended" for s in runner.snapshots()))
    await asyncio.sleep(2)  # captions in flight published
    url = f"{runner.http_url}/metrics"
    idle_start, idle_cpu = time.perf_counter(), cpu_s()
    await asyncio.sleep(10)
    idle_rate = (cpu_s() - idle_cpu) / (time.perf_counter() - idle_start)
    started, before = time.perf_counter(), cpu_s()
    results = await asyncio.to_thread(run_client, url, SCRAPES, 0.0)
    elapsed, used = time.perf_counter() - started, cpu_s() - before
    per_scrape_ms = (used - idle_rate * elapsed) / SCRAPES * 1000
    latencies = sorted(r[0] * 1000 for r in results)
    print(
        f"/metrics, 32 streams: {results[-1][1]} bytes per scrape; server CPU "
        f"{per_scrape_ms:.2f} ms per scrape (idle {idle_rate * 1000:.1f} ms/s subtracted); "
        f"latency p50 {statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms"
    )
    runner.request_stop()
    await task


async def readiness_under_load(clip: Path, nats_url: str) -> None:
    streams = [{"id": f"live{i}", "url": str(clip), "loop": True} for i in range(8)]
    runner = Runner(config(streams, nats_url))
    task = asyncio.create_task(runner.run(nats_url))
    await until(lambda: runner.running)
    await until(
        lambda: sum(s["captions"]["ok"] + s["captions"]["failed"] for s in runner.snapshots()) >= 8
    )
    results = await asyncio.to_thread(
        run_client, f"{runner.http_url}/readyz", READINESS_PROBES, 0.25
    )
    latencies = sorted(r[0] * 1000 for r in results)
    captions = sum(s["captions"]["ok"] + s["captions"]["failed"] for s in runner.snapshots())
    p95 = latencies[int(0.95 * len(latencies))]
    print(
        f"/readyz while 8 streams caption ({captions} captions so far): p50 "
        f"{statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
        f"max {latencies[-1]:.1f} ms over {len(latencies)} probes; "
        f"{sum(latency < 50 for latency in latencies)}/{len(latencies)} under 50 ms"
    )
    runner.request_stop()
    await task


async def main() -> None:
    with (
        tempfile.TemporaryDirectory() as scratch,
        EmbeddedNatsServer(Path(scratch) / "nats") as nats,
    ):
        short = write_clip(Path(scratch) / "short.mp4", ClipSpec(shots=2, shot_frames=25))
        await metrics_cost(short, nats.url)
        await readiness_under_load(short, nats.url)


if __name__ == "__main__":
    asyncio.run(main())
