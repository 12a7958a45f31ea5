"""`vidcap bench scenes`, accuracy: every detector on both labelled sets (labelled_set.py),
scored by issue 20's rule; vidcap's transitions (found, boundaries) and keyframe lag; then the
speed comparison (scenes.py) on the first set's video and any given ones."""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stream.bench.labelled_set import SETS, LabelledVideo, SetSpec, build, find_sources
from stream.bench.scene_scores import (
    BOUNDARY_FRAMES,
    ISSUE_20,
    Boundaries,
    Score,
    boundaries,
    lags,
    score,
)
from stream.bench.scenes import ffmpeg_scdet_cuts, print_speed, pyscenedetect_cuts, timed
from stream.config import KeyframeConfig
from stream.keyframes.scan import SceneReport, detect_scenes

VARIANTS = (0, 1, 2)
DEFAULT_MEDIA = [Path("../shared/media/pyscenedetect")]
HARD_LAG_TARGET, GRADUAL_LAG_TARGET = 4, 10  # issue 20: frames after a cut / a gradual end


@dataclass(slots=True)
class SetResults:
    """One labelled set's numbers, summed over its variants."""

    scores: dict[str, list[dict[str, Score]]] = field(default_factory=dict)
    lags: dict[str, list[int]] = field(default_factory=lambda: {"hard": [], "gradual": []})
    boundaries: list[Boundaries] = field(default_factory=list)


def run_benchmark(videos: list[Path], media: list[Path]) -> int:
    first_video: Path | None = None
    with tempfile.TemporaryDirectory() as scratch:
        for spec in SETS:
            sources = find_sources(media, spec)
            if missing := sorted(set(spec.shots) - set(sources)):
                print(f"{spec.name} set: no {', '.join(missing)} in the media folders; skipped")
                continue
            print(f"\n==== {spec.name} set, from {', '.join(sorted(sources))}", flush=True)
            results = SetResults()
            for variant in VARIANTS:
                video = Path(scratch) / f"{spec.name}-{variant}.mp4"
                labelled = build(sources, video, variant, spec)
                print_accuracy(labelled, f"{spec.name} set, variant {variant}", results)
                first_video = first_video or labelled.path
            print_set_totals(spec, results)
        if first_video is None:
            print(f"no labelled set's clips in {', '.join(map(str, media))}", file=sys.stderr)
            return 2
        for video in [first_video, *videos]:
            print_speed(video)
    return 0


HEADER = (
    f"{'detector':24} {'P':>5} {'R':>5} {'F1':>5} | {'hard R':>6} {'gradual R':>9} "
    f"{'false alarms':>12} {'in distractors':>14}"
)


def row(name: str, scores: dict[str, Score]) -> str:
    total = scores["all"]
    return (
        f"{name:24} {total.precision:5.3f} {total.recall:5.3f} {total.f1:5.3f} | "
        f"{scores['hard'].recall:6.3f} {scores['gradual'].recall:9.3f} "
        f"{total.false_positives:12d} {scores['distractor'].false_positives:14d}"
    )


def print_accuracy(labelled: LabelledVideo, title: str, results: SetResults) -> None:
    frames, events = labelled.frames, labelled.events
    reports: list[SceneReport] = []

    def vidcap() -> list[int]:
        reports.append(detect_scenes(labelled.path, KeyframeConfig()))
        return reports[-1].keyframes

    detectors: dict[str, Callable[[], list[int] | None]] = {
        "vidcap": vidcap,
        "PySceneDetect Content": lambda: pyscenedetect_cuts(labelled.path, "ContentDetector"),
        "PySceneDetect Adaptive": lambda: pyscenedetect_cuts(labelled.path, "AdaptiveDetector"),
        "ffmpeg scdet": lambda: ffmpeg_scdet_cuts(labelled.path, 25.0),
    }
    kinds = Counter(e.kind for e in events)
    print(
        f"\n== {title}: {frames} frames 1280x720@25, {kinds['hard']} hard cuts, "
        f"{kinds['gradual']} gradual transitions, {kinds['distractor']} distractors"
    )
    print(HEADER)
    for name, detect in detectors.items():
        run = timed(name, frames, detect)
        if run.cuts is None:
            print(f"{name:24} (not available)")
            continue
        scores = score(run.cuts, events, ISSUE_20)
        results.scores.setdefault(name, []).append(scores)
        print(row(name, scores))
    (report,) = reports
    found = boundaries(report.transitions, events)
    results.boundaries.append(found)
    for kind, values in lags(report.keyframes, events, ISSUE_20).items():
        results.lags[kind] += values
    print(boundary_line(found))


def boundary_line(found: Boundaries) -> str:
    return (
        f"vidcap transitions: {found.found}/{found.wanted} found "
        f"({found.gradual_found}/{found.gradual_wanted} gradual), first and last frame within "
        f"{BOUNDARY_FRAMES} of the truth for {found.accurate}/{found.found} "
        f"({found.accurate / max(found.found, 1):.0%})"
    )


def summed(per_variant: list[dict[str, Score]]) -> dict[str, Score]:
    return {
        kind: Score(*(sum(getattr(s[kind], f) for s in per_variant) for f in Score.__slots__))
        for kind in per_variant[0]
    }


def print_set_totals(spec: SetSpec, results: SetResults) -> None:
    print(f"\n== {spec.name} set, all {len(VARIANTS)} variants together")
    print(HEADER)
    for name, per_variant in results.scores.items():
        print(row(name, summed(per_variant)))
    total = Boundaries(
        *(sum(getattr(b, f) for b in results.boundaries) for f in Boundaries.__slots__)
    )
    print(boundary_line(total))
    for kind, target in (("hard", HARD_LAG_TARGET), ("gradual", GRADUAL_LAG_TARGET)):
        print(lag_line(kind, results.lags[kind], target))


def lag_line(kind: str, values: list[int], target: int) -> str:
    """The distribution of keyframe lags (frames after the change), and the share within
    the target."""
    if not values:
        return f"vidcap keyframe lag after {kind} transitions: none found"
    spread = ", ".join(f"{lag:+d}: {n}" for lag, n in sorted(Counter(values).items()))
    within = sum(lag <= target for lag in values) / len(values)
    return (
        f"vidcap keyframe lag after {kind} transitions (frames: count): {spread}; "
        f"median {statistics.median(values):+.1f}, max {max(values):+d}, "
        f"{within:.0%} within {target}"
    )
