"""Progress bars on a terminal (tqdm, on stderr; none when stderr is not a terminal): files
replayed by `vidcap run`, and `vidcap scenes`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import av
from tqdm import tqdm

from stream.config import StreamConfig
from stream.runner import Runner

REFRESH_S = 0.5


def frame_bar(description: str, total: int | None, position: int = 0) -> tqdm:  # type: ignore[type-arg]
    return tqdm(
        total=total or None,
        desc=description,
        unit="frame",
        file=sys.stderr,
        disable=None,  # tqdm's "only on a terminal"
        dynamic_ncols=True,
        position=position,
        leave=True,
    )


def frames_in(path: str) -> int | None:
    """The frame count a file's header declares (or its duration suggests); None if unknown."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = float(stream.average_rate or 0)
            seconds = container.duration / av.time_base if container.duration else 0
            return round(seconds * rate) or None
    except (OSError, av.error.FFmpegError, IndexError):
        return None  # the pipeline reports what is wrong with it


def replayed_files(streams: list[StreamConfig]) -> list[StreamConfig]:
    return [s for s in streams if not s.is_live and not s.loop and Path(s.url).is_file()]


async def show_replay_progress(runner: Runner) -> None:
    """One bar per file being replayed, from the frames its pipeline has decoded."""
    if not sys.stderr.isatty():
        return
    files = replayed_files(runner.config.streams)
    totals = await asyncio.gather(*(asyncio.to_thread(frames_in, s.url) for s in files))
    bars = {
        s.id: frame_bar(s.id, total, i)
        for i, (s, total) in enumerate(zip(files, totals, strict=True))
    }
    try:
        while True:
            await asyncio.sleep(REFRESH_S)
            for pipeline in runner.pipelines:
                bar = bars.get(pipeline.stream.id)
                if bar is not None:
                    bar.update(pipeline.stats.frames.count - bar.n)
    finally:
        for bar in bars.values():
            bar.close()
