"""`vidcap bench snapshots`: what a keyframe snapshot costs, on real footage.

The keyframes vidcap picks in each clip, scaled as the model gets them, are stored one after
another through ``SnapshotStore`` into a local nats-server's Object Store: JPEG bytes per
keyframe at each quality, and the store latency (encoding and put) p50/p95.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import av
import nats

from stream.config import NatsConfig, SnapshotsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.snapshots import SnapshotStore, encode_jpeg
from stream.keyframes.scan import detect_scenes
from stream.sources.model_picture import ModelPicture, ModelScaler

DEFAULT_MEDIA = Path("../shared/media/pyscenedetect")


def keyframe_pictures(path: Path, image_size: int) -> list[ModelPicture]:
    """The keyframes vidcap selects in ``path`` (no heartbeat), as the model gets them."""
    wanted = {selection.index for selection in detect_scenes(path).selections}
    pictures, scale = [], ModelScaler(image_size)
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                pictures.append(scale(frame))
    return pictures


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _store_all(url: str, pictures: list[ModelPicture], quality: int) -> list[float]:
    client = await nats.connect(url)
    settings = SnapshotsConfig(quality=quality, wait_s=10)
    store = await SnapshotStore.open(client.jetstream(), settings, NatsConfig(stream_name="BENCH"))
    latencies = []
    for number, picture in enumerate(pictures):
        started = time.perf_counter()
        name = f"bench/{quality:x}/{number}"
        outcome = await store.start(name, picture.image, picture.planes).settle()
        latencies.append(time.perf_counter() - started)
        if outcome.error is not None:
            raise RuntimeError(f"snapshot {number} not stored: {outcome.error}")
    await client.close()
    return latencies


def bench_snapshots(media: Path, qualities: list[int], image_size: int = 896) -> int:
    clips = sorted(media.glob("*.mp4"))
    if not clips:
        print(f"no .mp4 clips in {media}")
        return 1
    pictures = [p for clip in clips for p in keyframe_pictures(clip, image_size)]
    sizes = sorted({picture.image.size for picture in pictures})
    print(f"{len(pictures)} keyframes from {len(clips)} clips in {media}; sizes {sizes}")
    print("quality  kB p50  kB mean  kB p95  encode ms p50  store ms p50  store ms p95")
    server = EmbeddedNatsServer()
    server.start()
    try:
        for quality in qualities:
            encode_s, kilobytes = [], []
            for picture in pictures:
                started = time.perf_counter()
                jpeg = encode_jpeg(picture.image, quality, picture.planes)
                kilobytes.append(len(jpeg) / 1000)
                encode_s.append(time.perf_counter() - started)
            store_s = asyncio.run(_store_all(server.url, pictures, quality))
            print(
                f"{quality:>7}  {statistics.median(kilobytes):>6.1f}  "
                f"{statistics.fmean(kilobytes):>7.1f}  {_percentile(kilobytes, 0.95):>6.1f}  "
                f"{statistics.median(encode_s) * 1000:>13.2f}  "
                f"{statistics.median(store_s) * 1000:>12.2f}  "
                f"{_percentile(store_s, 0.95) * 1000:>12.2f}"
            )
    finally:
        server.stop()
    return 0
