"""`vidcap bench scenes`: the detectors it compares, and their speed next to the tools users know.

In one run, on the same files: vidcap (decode + detect), PySceneDetect's ContentDetector and
AdaptiveDetector (PyAV backend), ffmpeg's scdet filter, and plain PyAV decoding (the floor).
Accuracy on the labelled sets is in scene_accuracy.py.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from stream.bench.scene_scores import Score, score, window
from stream.config import KeyframeConfig
from stream.keyframes.features import FeatureExtractor
from stream.keyframes.scan import SCAN_DECODER_OPTIONS, detect_scenes
from stream.keyframes.selector import KeyframeSelector

__all__ = ["Score", "score", "window"]  # the scoring rules, also known from this module


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    cuts: list[int] | None
    seconds: float
    cpu_seconds: float
    """CPU time of this process's threads and of child processes (ffmpeg)."""
    frames: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_seconds / self.frames


def cpu_seconds() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(name: str, frames: int, detect: Callable[[], list[int] | None]) -> Run:
    cpu, started = cpu_seconds(), time.perf_counter()
    cuts = detect()
    return Run(name, cuts, time.perf_counter() - started, cpu_seconds() - cpu, frames)


def vidcap_cuts(path: Path) -> list[int]:
    return detect_scenes(path, KeyframeConfig()).keyframes


def decode_only(path: Path, options: dict[str, str] | None = None) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.options = options or {}
        for _ in container.decode(stream):
            pass


def pyscenedetect_cuts(path: Path, detector_name: str) -> list[int]:
    import scenedetect

    detector = getattr(scenedetect, detector_name)()
    scenes = scenedetect.detect(str(path), detector, backend="pyav")
    return [start.frame_num for start, _ in scenes[1:]]


def ffmpeg_scdet_cuts(path: Path, fps: float) -> list[int] | None:
    if shutil.which("ffmpeg") is None:
        return None
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-vf", "scdet", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    times = re.findall(r"lavfi\.scd\.time: ([0-9.]+)", done.stderr)
    return [round(float(t) * fps) for t in times]


def in_fresh_interpreter(function: str, video: Path, count: int) -> list[float]:
    """Run ``function(video, count)`` of this module in a new Python process and return the
    numbers it gives: its figures are then one stream's, not the benchmark's (which holds the
    labelled sets, other tools' threads and CPU affinity)."""
    code = (
        "import sys; from pathlib import Path; from stream.bench import scenes; "
        f"print(*scenes.{function}(Path(sys.argv[1]), int(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(video), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(value) for value in done.stdout.split()]


def _one_core_rate(video: Path, detect: bool) -> float:
    selector, extract = KeyframeSelector(KeyframeConfig()), FeatureExtractor(64)
    frames = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        started = time.perf_counter()
        for frame in container.decode(stream):
            if detect:
                selector.process_frame(frames, frames / 25, extract(frame))
            frames += 1
    return frames / (time.perf_counter() - started)


def one_core_rates(video: Path, rounds: int) -> tuple[float, float, float]:
    """Live decoding (deblocking on), pinned to one core with one decoder thread: median
    frames/s of decode only and of decode + detect over alternating rounds, and the median
    per-round ratio of the two. Pins the calling process: run it in a fresh interpreter."""
    os.sched_setaffinity(0, {0})
    _one_core_rate(video, True)  # warm-up
    timings = [(_one_core_rate(video, False), _one_core_rate(video, True)) for _ in range(rounds)]
    return (
        statistics.median(decode for decode, _ in timings),
        statistics.median(detect for _, detect in timings),
        statistics.median(decode / detect for decode, detect in timings),
    )


def resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def memory_passes(video: Path, passes: int) -> list[float]:
    """One stream's selector and extractor kept across several passes of the file: frames
    analysed, then the process's resident memory (MiB) after each pass."""
    selector, extract, index = KeyframeSelector(KeyframeConfig()), FeatureExtractor(64), 0
    sizes = []
    for _ in range(passes):
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                selector.process_frame(index, index / 25, extract(frame))
                index += 1
        sizes.append(resident_mib())
    return [index, *sizes]


def print_memory(video: Path, passes: int = 5) -> None:
    frames, *sizes = in_fresh_interpreter("memory_passes", video, passes)
    print(
        f"  resident memory of one stream's process after each of {passes} passes "
        f"({frames:.0f} frames): " + ", ".join(f"{size:.1f}" for size in sizes) + " MiB"
    )


SPEED_ROUNDS = 5


def print_speed(video: Path, rounds: int = SPEED_ROUNDS) -> None:
    """Each tool once untimed (imports, compiled-kernel cache, page cache), then ``rounds``
    rounds taking turns; ratios are medians of per-round ratios, so a slow spell of this
    machine hits both sides of a ratio alike."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        size = f"{stream.codec_context.width}x{stream.codec_context.height}"
        fps = float(stream.average_rate or 25)
    tools: dict[str, Callable[[], list[int] | None]] = {
        "PyAV decode only": lambda: decode_only(video),
        "PyAV decode, scan options": lambda: decode_only(video, SCAN_DECODER_OPTIONS),
        "vidcap decode+detect": lambda: vidcap_cuts(video),
        "PySceneDetect Content": lambda: pyscenedetect_cuts(video, "ContentDetector"),
        "PySceneDetect Adaptive": lambda: pyscenedetect_cuts(video, "AdaptiveDetector"),
        "ffmpeg scdet": lambda: ffmpeg_scdet_cuts(video, fps),
    }
    for detect in tools.values():
        detect()
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    for _ in range(rounds):
        for name, detect in tools.items():
            runs[name].append(timed(name, frames, detect))

    def ratio(name: str, of: Callable[[Run], float], to: str = "vidcap decode+detect") -> float:
        return statistics.median(of(a) / of(b) for a, b in zip(runs[name], runs[to], strict=True))

    print(f"\nspeed on {video.name} ({frames} frames, {size}; median of {rounds} rounds):")
    print(f"  {'':26} {'frames/s':>9} {'vs vidcap':>10} {'CPU ms/frame':>13}")
    for name, timings in runs.items():
        if timings[0].cuts is None and name == "ffmpeg scdet":
            print(f"  {name:26} (ffmpeg not installed)")
            continue
        print(
            f"  {name:26} {statistics.median(r.fps for r in timings):9.1f} "
            f"{ratio(name, lambda r: r.fps):9.2f}x "
            f"{statistics.median(r.cpu_ms_per_frame for r in timings):13.2f}"
        )
    content = "PySceneDetect Content"
    print(
        f"  vidcap vs PySceneDetect Content: {1 / ratio(content, lambda r: r.fps):.2f}x frames/s, "
        f"{ratio(content, lambda r: r.cpu_ms_per_frame):.2f}x less CPU per frame"
    )
    floor = "PyAV decode, scan options"  # what vidcap's scan decodes with
    print(
        "  detection over pure decode (same decoder options): "
        f"{(ratio(floor, lambda r: r.fps) - 1) * 100:+.1f} % wall time, "
        f"{(1 / ratio(floor, lambda r: r.cpu_ms_per_frame) - 1) * 100:+.1f} % CPU"
    )
    print(
        "  scan options (no deblocking) vs default decoding: "
        f"{1 / ratio('PyAV decode only', lambda r: r.fps, floor):.2f}x frames/s"
    )
    print_memory(video)
    decode_fps, detect_fps, cost = in_fresh_interpreter("one_core_rates", video, rounds)
    print(
        f"  one core, one decoder thread (live decoding): decode {decode_fps:.1f} frames/s, "
        f"decode+detect {detect_fps:.1f} frames/s (detection +{(cost - 1) * 100:.1f} %)"
        f" = {detect_fps / fps:.1f} real-time streams"
    )
