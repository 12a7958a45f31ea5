"""How detections on a labelled set are scored: keyframes against the true scene changes
(each matched at most once, the rest false alarms), the keyframes' lag behind the change, and
how close the reported transitions' first and last frames come to the truth."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stream.bench.labelled_set import Event
from stream.keyframes.transitions import Transition


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Where a keyframe counts for a transition: from ``hard_early`` frames before a hard cut
    to ``hard_late`` after it; from a gradual transition's start to ``settle`` frames after
    its end (the new shot's first frame alone); around a distractor, ``hard_early`` either
    side."""

    hard_early: int = 2
    hard_late: int = 2
    settle: int = 12


LEGACY = Tolerance()
"""The benchmark's first rule: +-2 frames around a cut, 12 after a gradual transition."""
ISSUE_20 = Tolerance(hard_early=2, hard_late=5, settle=15)
"""Issue 20's rule: at most 5 frames after a hard cut, at most 15 after a gradual ends."""
BOUNDARY_FRAMES = 3  # a reported first/last frame this close to the truth is accurate


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


def window(event: Event, tolerance: Tolerance = LEGACY) -> tuple[int, int]:
    if event.kind == "hard":
        return event.start - tolerance.hard_early, event.start + tolerance.hard_late
    if event.kind == "gradual":
        return event.start, event.end + tolerance.settle
    return event.start, event.end + tolerance.hard_early


def match(
    cuts: Iterable[int], events: Sequence[Event], tolerance: Tolerance = LEGACY
) -> tuple[dict[Event, int], list[int]]:
    """Each scene change's detection (the first inside its window, each used once), and the
    detections left over."""
    unmatched = sorted(cuts)
    matched = {}
    for event in (e for e in events if e.kind != "distractor"):
        low, high = window(event, tolerance)
        hit = next((c for c in unmatched if low <= c <= high), None)
        if hit is not None:
            matched[event] = hit
            unmatched.remove(hit)
    return matched, unmatched


def score(cuts: list[int], events: list[Event], tolerance: Tolerance = LEGACY) -> dict[str, Score]:
    """Per category: each scene change matched at most once; other detections are false
    positives, charged to the distractor, gradual or hard category whose window they fall in
    (a second detection for one transition is a false positive of that category)."""
    matched, unmatched = match(cuts, events, tolerance)
    counts = {kind: [0, 0, 0] for kind in ("hard", "gradual", "distractor")}
    for event in (e for e in events if e.kind != "distractor"):
        counts[event.kind][0 if event in matched else 1] += 1
    for cut in unmatched:
        inside = [e for e in events if window(e, tolerance)[0] <= cut <= window(e, tolerance)[1]]
        counts[inside[0].kind if inside else "hard"][2] += 1
    scores = {kind: Score(*values) for kind, values in counts.items()}
    scores["all"] = Score(*(sum(v[i] for v in counts.values()) for i in range(3)))
    return scores


def lags(cuts: list[int], events: list[Event], tolerance: Tolerance) -> dict[str, list[int]]:
    """Frames from each found scene change to its keyframe: from a hard cut's frame, from the
    first frame of the new shot alone after a gradual transition (negative: earlier)."""
    matched, _ = match(cuts, events, tolerance)
    found: dict[str, list[int]] = {"hard": [], "gradual": []}
    for event, keyframe in matched.items():
        found[event.kind].append(keyframe - (event.start if event.kind == "hard" else event.end))
    return found


@dataclass(frozen=True, slots=True)
class Boundaries:
    wanted: int
    found: int
    """True transitions with a reported transition overlapping them."""
    accurate: int
    """Of those, reported with first and last frame within BOUNDARY_FRAMES of the truth."""
    gradual_wanted: int
    gradual_found: int


def boundaries(reported: list[Transition], events: list[Event]) -> Boundaries:
    """Each true transition paired with the reported one that overlaps it (its span widened
    by BOUNDARY_FRAMES), each reported one used once."""
    left = list(reported)
    wanted = found = accurate = gradual_wanted = gradual_found = 0
    for event in (e for e in events if e.kind != "distractor"):
        wanted += 1
        gradual_wanted += event.kind == "gradual"
        low, high = event.start - BOUNDARY_FRAMES, event.end + BOUNDARY_FRAMES
        hit = next((t for t in left if t.first <= high and t.last >= low), None)
        if hit is None:
            continue
        left.remove(hit)
        found += 1
        gradual_found += event.kind == "gradual"
        close = abs(hit.first - event.start) <= BOUNDARY_FRAMES
        accurate += close and abs(hit.last - event.end) <= BOUNDARY_FRAMES
    return Boundaries(wanted, found, accurate, gradual_wanted, gradual_found)
