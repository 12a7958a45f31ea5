"""What the HTTP server costs (issue 15): CPU per scrape of /metrics with 32 streams' series,
and /readyz latency while 8 streams caption. A real `vidcap run` (tiny vLLM engine on the CPU,
embedded nats-server); the client is this process, so its CPU is not counted.

    .venv/bin/python scripts/bench_http.py
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from stream.sample_clip import ClipSpec, write_clip

TOKEN = "bench-token-0123456789"
SCRAPES = 200
READINESS_PROBES = 120


@contextmanager
def vidcap(streams: list[dict[str, Any]], scratch: Path) -> Iterator[tuple[psutil.Process, str]]:
    config = scratch / f"bench-{len(streams)}.json"
    settings = {
        "streams": streams,
        "http": {"listen": "127.0.0.1:0", "token": TOKEN},  # stays up after files end
        "engine": {"model": "tiny", "max_num_seqs": 8, "request_timeout_s": 300},
        "keyframes": {"min_gap_s": 1.0},
    }
    config.write_text(json.dumps(settings))
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
    try:
        yield psutil.Process(process.pid), _http_base(lines)
    finally:
        process.terminate()
        process.wait(120)


def _http_base(lines: list[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in lines:
            if found := re.search(r"HTTP at (http://\S+)", line):
                return found.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"vidcap printed no HTTP line: {lines}")


def get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
    return time.perf_counter() - started, body


def streams_of(base: str) -> list[dict[str, Any]]:
    return list(json.loads(get(f"{base}/api/streams")[1])["streams"])


def until(check: Any, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark stalled")
        time.sleep(0.5)


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def metrics_cost(clip: Path, scratch: Path) -> None:
    streams = [{"id": f"cam{i:02}", "url": str(clip)} for i in range(32)]
    with vidcap(streams, scratch) as (server, base):
        until(lambda: len(streams_of(base)) == 32)
        until(lambda: all(s["state"] == "ended" for s in streams_of(base)))
        time.sleep(2)  # the last captions published
        idle_start, idle_cpu = time.perf_counter(), cpu_s(server)
        time.sleep(10)
        idle_rate = (cpu_s(server) - idle_cpu) / (time.perf_counter() - idle_start)
        started, before = time.perf_counter(), cpu_s(server)
        results = [get(f"{base}/metrics") for _ in range(SCRAPES)]
        elapsed, used = time.perf_counter() - started, cpu_s(server) - before
    per_scrape_ms = (used - idle_rate * elapsed) / SCRAPES * 1000
    latencies = sorted(r[0] * 1000 for r in results)
    print(
        f"/metrics, 32 streams: {len(results[-1][1])} bytes per scrape; vidcap CPU "
        f"{per_scrape_ms:.2f} ms per scrape (idle {idle_rate * 1000:.1f} ms/s subtracted); "
        f"latency p50 {statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms",
        flush=True,
    )


def readiness_under_load(clip: Path, scratch: Path) -> None:
    streams = [{"id": f"live{i}", "url": str(clip), "loop": True} for i in range(8)]
    with vidcap(streams, scratch) as (_, base):

        def captions() -> int:
            return sum(s["captions"]["ok"] + s["captions"]["failed"] for s in streams_of(base))

        until(lambda: captions() >= 8)
        latencies = []
        for _ in range(READINESS_PROBES):
            latency, body = get(f"{base}/readyz")
            assert json.loads(body)["status"] == "ready", body
            latencies.append(latency * 1000)
            time.sleep(0.25)
        done = captions()
    latencies.sort()
    p95 = latencies[int(0.95 * len(latencies))]
    print(
        f"/readyz while 8 streams caption ({done} captions by the end): p50 "
        f"{statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, max {latencies[-1]:.1f} ms "
        f"over {len(latencies)} probes; {sum(x < 50 for x in latencies)} under 50 ms",
        flush=True,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        clip = write_clip(scratch / "short.mp4", ClipSpec(shots=2, shot_frames=25))
        metrics_cost(clip, scratch)
        readiness_under_load(clip, scratch)


if __name__ == "__main__":
    main()
