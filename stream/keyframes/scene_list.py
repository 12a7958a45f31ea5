"""A file's scenes as `scenedetect list-scenes` writes them, plus the transitions and keyframes.

A scene starts at the first frame of the transition that opened it (frame 0 for the first)
and ends the frame before the next one starts, so scenes tile the file; a dissolve's blended
frames belong to the scene it leads into. The CSV has PySceneDetect's columns first (frame
numbers from 1, end frames inclusive, end time = the next scene's start time), then vidcap's:
the opening transition and the keyframe chosen. The JSON uses decoded frame indices from 0,
like the rest of vidcap's output.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from stream.keyframes.scan import SceneReport
from stream.keyframes.selector import Selection
from stream.keyframes.transitions import Transition

CSV_COLUMNS = (
    "Scene Number",
    "Start Frame",
    "Start Timecode",
    "Start Time (seconds)",
    "End Frame",
    "End Timecode",
    "End Time (seconds)",
    "Length (frames)",
    "Length (timecode)",
    "Length (seconds)",
    "Transition",
    "Transition First Frame",
    "Transition Last Frame",
    "Transition Confidence",
    "Keyframe Frames",
)


@dataclass(frozen=True, slots=True)
class Scene:
    number: int
    start: int
    end: int
    """Last frame of the scene (inclusive)."""
    start_s: float
    end_s: float
    """When the next scene starts (or the file ends)."""
    transition: Transition | None
    """The transition that opened the scene (none for the first)."""
    keyframes: tuple[Selection, ...]

    @property
    def frames(self) -> int:
        return self.end - self.start + 1


def scenes(report: SceneReport) -> list[Scene]:
    starts: list[tuple[int, float, Transition | None]] = [(0, 0.0, None)]
    for found in report.transitions:
        if found.first > starts[-1][0]:  # a transition inside the last one starts none
            starts.append((found.first, found.first_s, found))
    ends = [(start - 1, time_s) for start, time_s, _ in starts[1:]]
    ends.append((report.frames - 1, report.duration_s))
    listed = []
    for number, ((start, start_s, transition), (end, end_s)) in enumerate(
        zip(starts, ends, strict=True), start=1
    ):
        keyframes = tuple(s for s in report.selections if start <= s.index <= end)
        listed.append(Scene(number, start, end, start_s, end_s, transition, keyframes))
    return listed


def timecode(seconds: float) -> str:
    """HH:MM:SS.mmm, as PySceneDetect writes it."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis / 1000:06.3f}"


def to_csv(listed: list[Scene]) -> str:
    """PySceneDetect's list-scenes file: a ``Timecode List:`` line with each cut, then one row
    per scene."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Timecode List:", *(timecode(s.start_s) for s in listed[1:])])
    writer.writerow(CSV_COLUMNS)
    for scene in listed:
        length_s = scene.end_s - scene.start_s
        transition = scene.transition
        writer.writerow(
            [
                scene.number,
                scene.start + 1,
                timecode(scene.start_s),
                f"{scene.start_s:.3f}",
                scene.end + 1,
                timecode(scene.end_s),
                f"{scene.end_s:.3f}",
                scene.frames,
                timecode(length_s),
                f"{length_s:.3f}",
                transition.kind if transition else "",
                transition.first + 1 if transition else "",
                transition.last + 1 if transition else "",
                transition.confidence if transition else "",
                " ".join(str(k.index + 1) for k in scene.keyframes),
            ]
        )
    return out.getvalue()


def keyframe_json(selection: Selection) -> dict[str, Any]:
    return {
        "frame": selection.index,
        "time_s": round(selection.time_s, 6),
        "reason": selection.reason,
        "score": selection.score,
        "transition": selection.transition.wire() if selection.transition else None,
    }


def to_json(report: SceneReport) -> dict[str, Any]:
    """Scenes, transitions and keyframes; ``cuts`` lists where each scene after the first
    starts (the first frame of its transition)."""
    return {
        "frames": report.frames,
        "fps": round(report.fps, 6),
        "cuts": report.cuts,
        "scenes": [
            {
                "scene": scene.number,
                "start_frame": scene.start,
                "end_frame": scene.end,
                "start_time_s": round(scene.start_s, 6),
                "end_time_s": round(scene.end_s, 6),
                "start_timecode": timecode(scene.start_s),
                "end_timecode": timecode(scene.end_s),
                "frames": scene.frames,
                "transition": scene.transition.wire() if scene.transition else None,
                "keyframes": [k.index for k in scene.keyframes],
            }
            for scene in scenes(report)
        ],
        "transitions": [t.wire() for t in report.transitions],
        "keyframes": [keyframe_json(s) for s in report.selections],
    }


def to_text(listed: list[Scene]) -> str:
    """A table for the terminal: one line per scene, then its keyframes."""
    lines = [f"  {'scene':>5}  {'start':>12} {'frame':>7}  {'end':>12} {'frame':>7}  transition"]
    for scene in listed:
        transition = scene.transition
        opened = (
            f"{transition.kind} {transition.first}-{transition.last} "
            f"(confidence {transition.confidence:.2f})"
            if transition
            else "-"
        )
        lines.append(
            f"  {scene.number:>5}  {timecode(scene.start_s):>12} {scene.start:>7}  "
            f"{timecode(scene.end_s):>12} {scene.end:>7}  {opened}"
        )
        lines += [
            f"{'':9}keyframe {k.index} at {k.time_s:.3f} s: {k.reason}" for k in scene.keyframes
        ]
    return "\n".join(lines) + "\n"
