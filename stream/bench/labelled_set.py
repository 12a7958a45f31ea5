"""A labelled scene-change set built from real footage, with exact ground truth.

Single shots (decoded-frame ranges checked by eye) are cut out of real clips, scaled to one
size and re-joined with hard cuts, dissolves and fades; distractors (camera flashes,
brightness ramps, fast pans, a frozen picture) are inserted inside shots. Every event's frame
range is known exactly because we write every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 25
SHOT_FRAMES = 40
# Shots as [start, end) decoded-frame ranges, each checked by eye on a contact sheet.
SHOTS: dict[str, list[tuple[int, int]]] = {
    "bikes.mp4": [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242)],
    "goldeneye-vfr-drop3.mp4": [(0, 60), (60, 140), (140, 160)],
    "testvideo.mp4": [(30, 180), (242, 330), (426, 530), (569, 650)],
    "bigbuckbunny.mp4": [(0, 132)],
    "carphone_pristine.mp4": [(0, 120)],
}

Kind = Literal["hard", "gradual", "distractor"]


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    name: str
    start: int
    end: int
    """Last frame of the event; a detection for it counts up to ``end`` + settle allowance."""


@dataclass(slots=True)
class LabelledVideo:
    path: Path
    frames: int
    events: list[Event] = field(default_factory=list)


def find_sources(directories: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in directories:
        for name in SHOTS:
            if (directory / name).exists():
                found.setdefault(name, directory / name)
    return found


def load_shots(sources: dict[str, Path]) -> list[list[np.ndarray]]:
    """Each labelled shot as RGB frames at WIDTH x HEIGHT (at most SHOT_FRAMES, from its middle)."""
    shots = []
    for name, path in sorted(sources.items()):
        frames = list(_decode(path))
        for start, end in SHOTS[name]:
            length = min(SHOT_FRAMES, end - start)
            first = start + (end - start - length) // 2
            shots.append(frames[first : first + length])
    return shots


def _decode(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
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


def build(sources: dict[str, Path], path: Path, variant: int = 0) -> LabelledVideo:
    """Write the labelled video; joins and distractors take turns over the shot list.

    ``variant`` shifts which join and distractor each shot gets (and reverses the shot order
    for odd variants), so the same footage gives differently arranged sets: variant 0 was
    looked at while tuning the detector, the others were not.
    """
    shots = load_shots(sources)
    if variant % 2:
        shots.reverse()
    writer = _Writer(path)
    video = LabelledVideo(path, 0)
    joins = ["hard", "dissolve", "hard", "fade", "hard"]
    distractors = ["flash", "ramp", "pan", "freeze", None]
    for n, shot in enumerate(shots):
        if n > 0:
            _join(writer, video, joins[(n + variant) % len(joins)], shots[n - 1][-1], shot)
        _write_shot(writer, video, shot, distractors[(n + 2 * variant) % len(distractors)])
    writer.close()
    video.frames = writer.count
    return video


def _join(w: _Writer, video: LabelledVideo, how: str, last: np.ndarray, shot: list) -> None:
    a, b = last.astype(np.float32), shot[0].astype(np.float32)
    start = w.count
    if how == "hard":
        video.events.append(Event("hard", "cut", start, start))
        return
    if how == "dissolve":
        for k in range(1, 16):
            w.write(a * (1 - k / 16) + b * (k / 16))
        video.events.append(Event("gradual", "dissolve", start, w.count))
        return
    for k in range(1, 11):
        w.write(a * (1 - k / 10))
    for _ in range(5):
        w.write(np.zeros_like(a))
    for k in range(1, 11):
        w.write(b * (k / 10))
    video.events.append(Event("gradual", "fade", start, w.count))


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
