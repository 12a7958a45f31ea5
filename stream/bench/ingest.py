"""`vidcap bench ingest`: what live ingest costs, for 1, 4 and 8 RTSP streams of 720p25 H.264.

A real GStreamer RTSP server (one process, one session per client) plays a generated 720p25
clip with a cut every 2 s in real time. vidcap's own ingest path runs for each stream:
PyAV/FFmpeg RTSP client, decode, keyframe selection, the model-size RGB picture of each
keyframe, the handoff to the event loop. No engine: this measures ingest alone.

Printed per stream count:
- CPU per stream, in % of one core (this process only; the server is another process);
- keyframe delay: decoded -> keyframe available to the engine (exact, our own pipeline), and
  sent -> available (the server's send time estimated from pts and the earliest arrival, so
  it adds network, RTP jitter buffer and decode);
- decoded frames/s per stream (25 means real time) and resident memory at start and end.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stream.bench.rtsp_peer import RtspPeer
from stream.config import KeyframeConfig, StreamConfig
from stream.sample_clip import ClipSpec, write_clip
from stream.sources.frames import FrameTime, Keyframe, SourceStatus
from stream.sources.handoff import KeyframeHandoff
from stream.sources.ingest import Ingest

CLIP = ClipSpec(shots=24, shot_frames=50, fps=25, width=1280, height=720)  # 48 s, cut every 2 s
WARMUP_S = 3.0
IMAGE_SIZE = 896
RSS_EVERY_S = 60.0  # long runs print resident memory this often (is it flat?)


@dataclass
class StreamLog:
    live_at: float | None = None
    # (available at, frame time): the keyframe's picture is not kept, or the bench would be
    # what grows.
    keyframes: list[tuple[float, FrameTime]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Result:
    streams: int
    seconds: float
    cpu_s: float
    decode_delays: list[float]
    send_delays: list[float]
    frames_per_s: float
    rss_start_mib: float
    rss_end_mib: float

    @property
    def cpu_per_stream_pct(self) -> float:
        return 100 * self.cpu_s / self.seconds / self.streams


def clip_path(cache: Path) -> Path:
    path = cache / "bench" / f"ingest-{CLIP.width}x{CLIP.height}-{CLIP.frames}.mp4"
    if not path.exists():
        print(f"writing the 720p25 bench clip {path} ...", flush=True)
        write_clip(path.with_suffix(".part.mp4"), CLIP).rename(path)
    return path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


async def consume(handoff: KeyframeHandoff, log: StreamLog) -> None:
    while (item := await handoff.get()) is not None:
        if isinstance(item, SourceStatus):
            if item.state == "live":
                log.live_at = time.time()
        elif isinstance(item, Keyframe):
            log.keyframes.append((time.time(), item.time))


async def measure(url: str, streams: int, seconds: float) -> Result:
    loop = asyncio.get_running_loop()
    logs = [StreamLog() for _ in range(streams)]
    ingests, tasks = [], []
    for number, log in enumerate(logs):
        config = StreamConfig(id=f"bench-{number}", url=url, live=True, read_timeout_s=5)
        handoff = KeyframeHandoff(64, "drop_oldest", loop)
        ingest = Ingest(config, KeyframeConfig(), IMAGE_SIZE, handoff)
        ingests.append(ingest)
        tasks += [asyncio.create_task(ingest.run()), asyncio.create_task(consume(handoff, log))]
    async with asyncio.timeout(60):
        while any(log.live_at is None for log in logs):  # noqa: ASYNC110 (polled, 2 threads)
            await asyncio.sleep(0.1)
    await asyncio.sleep(WARMUP_S)
    start, cpu_start, rss_start = time.time(), cpu_seconds(), rss_mib()
    while (left := start + seconds - time.time()) > 0:
        await asyncio.sleep(min(left, RSS_EVERY_S))
        if left > RSS_EVERY_S:
            print(
                f"  {streams} streams, {time.time() - start:5.0f} s: RSS {rss_mib():.0f} MiB",
                flush=True,
            )
    end, cpu_end, rss_end = time.time(), cpu_seconds(), rss_mib()
    for ingest in ingests:
        ingest.stop()
    await asyncio.gather(*tasks)
    return summarise(logs, streams, start, end, cpu_end - cpu_start, rss_start, rss_end)


def summarise(
    logs: list[StreamLog],
    streams: int,
    start: float,
    end: float,
    cpu_s: float,
    rss_start: float,
    rss_end: float,
) -> Result:
    decode_delays, send_delays, rates = [], [], []
    for log in logs:
        window = [(at, ft) for at, ft in log.keyframes if start <= at <= end]
        origins = session_origins(log.keyframes)
        for at, ft in window:
            decode_delays.append(at - ft.captured_at)
            if ft.index in origins:
                send_delays.append(at - origins[ft.index])
        if len(window) >= 2:
            (first_at, first), (last_at, last) = window[0], window[-1]
            rates.append((last.index - first.index) / (last_at - first_at))
    return Result(
        streams,
        end - start,
        cpu_s,
        decode_delays,
        send_delays,
        float(np.mean(rates)) if rates else 0.0,
        rss_start,
        rss_end,
    )


def session_origins(keyframes: list[tuple[float, FrameTime]]) -> dict[int, float]:
    """Estimated send time of each keyframe: the server sends a frame at its session's start
    + pts, and the earliest arrival in a session bounds that start. A session (the server
    plays the file again after a reconnect) begins where pts go backwards."""
    sessions: list[list[tuple[FrameTime, float]]] = []
    previous = None
    for _, ft in keyframes:
        if ft.pts is None or ft.time_base is None:
            continue
        media = float(ft.pts * ft.time_base)
        if previous is None or media < previous:
            sessions.append([])
        sessions[-1].append((ft, media))
        previous = media
    origins = {}
    for session in sessions:
        start = min(ft.captured_at - media for ft, media in session)
        origins.update({ft.index: start + media for ft, media in session})
    return origins


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def bench_ingest(cache: Path, counts: list[int], seconds: float) -> int:
    server = RtspPeer.for_file(clip_path(cache))
    url = server.start()
    try:
        print(f"RTSP server (GStreamer) at {url}: {CLIP.width}x{CLIP.height}@{CLIP.fps} H.264")
        print(f"{seconds:g} s measured per row, after {WARMUP_S:g} s warm-up\n")
        print(
            f"{'streams':>7} {'CPU %/stream':>12} {'decoded->kf p50/p95 ms':>23} "
            f"{'sent->kf p50/p95 ms':>20} {'frames/s':>9} {'RSS MiB start/end':>18}"
        )
        for count in counts:
            result = await measure(url, count, seconds)
            print(
                f"{count:7d} {result.cpu_per_stream_pct:12.1f} "
                f"{percentile(result.decode_delays, 50):11.0f} /"
                f"{percentile(result.decode_delays, 95):6.0f}    "
                f"{percentile(result.send_delays, 50):8.0f} /"
                f"{percentile(result.send_delays, 95):6.0f}    "
                f"{result.frames_per_s:9.1f} "
                f"{result.rss_start_mib:9.0f} /{result.rss_end_mib:6.0f}",
                flush=True,
            )
    finally:
        server.kill()
    return 0
