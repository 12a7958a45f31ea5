"""Frame bombs: a source whose frames exceed the stream's max_pixels fails with a `failed`
status event, decodes nothing at that size, and the stream ends cleanly."""

from __future__ import annotations

import asyncio
import resource
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from stream.config import KeyframeConfig, StreamConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from stream.sources.frames import FrameTime, SourceStatus
from stream.sources.handoff import KeyframeHandoff
from stream.sources.health import SourceHealth, StatusReport
from stream.sources.ingest import Ingest
from stream.sources.pyav import VideoSource


def test_the_default_admits_8k_and_refuses_more() -> None:
    assert StreamConfig(id="a", url="x").max_pixels == 7680 * 4320


def test_a_12000_square_mjpeg_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    make = f"from PIL import Image; Image.new('L', (12000, 12000), 128).save({str(bomb)!r})"
    subprocess.run([sys.executable, "-c", make], check=True)  # not in this process's peak
    reports: list[tuple[str, str]] = []
    source = VideoSource(StreamConfig(id="bomb", url=str(bomb)))
    health = SourceHealth(5.0, lambda state, detail, **_: reports.append((state, detail)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    frames = list(source.frames(threading.Event(), health, health._report))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert frames == []
    assert reports[-1][0] == "failed" and "12000x12000" in reports[-1][1], reports
    assert "exceed max_pixels 33177600" in reports[-1][1]
    assert grown_mb < 100, f"grew {grown_mb:.0f} MB"  # one decoded frame would be 216 MB


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height``, with a few rows of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + b"\x00" * width * 3) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("loop", [False, True])
def test_a_30000_square_png_fails_not_ends(tmp_path: Path, loop: bool) -> None:
    # Found by a trial: FFmpeg refuses it as corrupt data (its size is known only at decode,
    # and over max_pixels), so no frame came and the file was reported `ended`; looped, it
    # was opened again and again.
    png = tmp_path / "huge.png"
    png.write_bytes(_png_claiming(30000, 30000))
    reports: list[tuple[str, str]] = []
    source = VideoSource(StreamConfig(id="huge", url=str(png), loop=loop))
    health = SourceHealth(5.0, lambda state, detail, **_: reports.append((state, detail)))
    assert list(source.frames(threading.Event(), health, health._report)) == []
    assert reports[-1][0] == "failed", reports
    assert reports[-1][1].startswith("no frame could be decoded: 1 corrupt packet(s)")
    assert "max_pixels, 33177600" in reports[-1][1]


async def test_a_stream_over_max_pixels_fails_and_ends(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=2, shot_frames=10))  # 320x240
    config = parse_config(
        {
            "streams": [{"id": "big", "url": str(clip), "max_pixels": 320 * 240 - 1}],
            "engine": {"kind": "nats", "model_id": "m", "worker_timeout_s": 1},
            "nats": {"url": nats_server.url, "subject_prefix": "fb", "stream_name": "FB"},
        }
    )
    events: list[dict[str, Any]] = []
    assert await Runner(config, events.append).run(nats_server.url) == 1  # a failed stream
    assert [e["type"] for e in events] == ["status", "status"], events
    assert events[-1]["state"] == "failed" and "320x240" in events[-1]["detail"]


class _HugeFrames:
    """Any FrameSource (WHIP too) is checked frame by frame: here a frame grows mid-stream."""

    def frames(
        self, stop: threading.Event, health: SourceHealth, report: StatusReport
    ) -> Iterator[tuple[av.VideoFrame, FrameTime]]:
        for index, side in enumerate((64, 64, 2000)):
            frame = av.VideoFrame(side, side, "yuv420p")
            yield frame, FrameTime(index, None, None, index / 25, 0.0)


async def test_ingest_refuses_a_frame_over_max_pixels_from_any_source() -> None:
    config = StreamConfig(id="whipish", url="whip://x", live=False, max_pixels=1000 * 1000)
    handoff = KeyframeHandoff(8, "block", asyncio.get_running_loop())
    ingest = Ingest(config, KeyframeConfig(), 64, handoff, _HugeFrames())
    run = asyncio.create_task(ingest.run())
    items = []
    while (item := await handoff.get()) is not None:
        items.append(item)
    await run
    statuses = [i for i in items if isinstance(i, SourceStatus)]
    assert statuses[-1].state == "failed" and "2000x2000" in statuses[-1].detail, statuses
