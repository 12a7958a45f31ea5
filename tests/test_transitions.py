"""Transitions the selector reports (kind, first and last frame, confidence) apart from the
keyframe it chooses; the scene list `vidcap scenes` prints from them (CSV like
`scenedetect list-scenes`, JSON); golden transitions on PySceneDetect's shared clips."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from stream.config import KeyframeConfig
from stream.keyframes import scene_list
from stream.keyframes.features import FrameFeatures
from stream.keyframes.scan import detect_scenes
from stream.keyframes.selector import KeyframeSelector, Selection
from stream.keyframes.transitions import Transition
from stream.sample_clip import ClipSpec, write_clip
from tests.test_keyframes import FPS, H, W, features, texture

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media" / "pyscenedetect"


def selections(frames: list[FrameFeatures]) -> list[Selection]:
    selector = KeyframeSelector(KeyframeConfig(min_gap_s=0.2, max_interval_s=3600))
    chosen: list[Selection] = []
    for index, frame in enumerate(frames):
        chosen += selector.process_frame(index, index / FPS, frame)
    return chosen + selector.flush()


def only_transition(frames: list[FrameFeatures]) -> tuple[Transition, Selection]:
    start, keyframe = selections(frames)
    assert start.reason == "start" and start.transition is None
    assert keyframe.transition is not None
    return keyframe.transition, keyframe


def test_a_hard_cut_is_one_frame_and_its_own_keyframe() -> None:
    transition, keyframe = only_transition(
        [features(texture(1))] * 40 + [features(texture(2))] * 40
    )
    assert (transition.kind, transition.first, transition.last) == ("cut", 40, 40)
    assert transition.first_s == transition.last_s == 40 / FPS
    assert 0.5 < transition.confidence <= 1.0
    assert (keyframe.index, keyframe.reason) == (40, "cut")


@pytest.mark.parametrize("length", [10, 25, 50])
def test_a_dissolve_is_located_to_within_3_frames(length: int) -> None:
    a, b = texture(8), texture(9) * 0.6 + 60
    mix = [features(a * (1 - k / length) + b * (k / length)) for k in range(1, length)]
    frames = [features(a)] * 30 + mix + [features(b)] * 30
    transition, keyframe = only_transition(frames)
    arrived = 30 + length - 1  # the first frame of b alone
    assert transition.kind == "dissolve"
    assert abs(transition.first - 30) <= 3 and abs(transition.last - arrived) <= 3
    assert transition.confidence > 0.5
    # The keyframe shows the new shot and comes at most 10 frames after the transition.
    assert arrived - 3 <= keyframe.index <= arrived + 10
    assert keyframe.reason == "transition"


def fade(picture: np.ndarray, frames: int, out: bool) -> list[FrameFeatures]:
    levels = [k / frames for k in range(1, frames + 1)]
    return [features(picture * (1 - level if out else level)) for level in levels]


def test_a_fade_out_and_in_spans_both_fades() -> None:
    a, b = texture(10), texture(11)
    black = [features(np.zeros((H, W)))] * 10
    frames = [features(a)] * 30 + fade(a, 20, True) + black + fade(b, 20, False)
    transition, keyframe = only_transition(frames + [features(b)] * 30)
    assert transition.kind == "fade_out_in"
    assert abs(transition.first - 30) <= 3 and abs(transition.last - 79) <= 3
    assert 76 <= keyframe.index <= 89 and not frames[min(keyframe.index, 79)].blank


def test_a_fade_in_from_black_at_the_start() -> None:
    black = [features(np.zeros((H, W)))] * 10
    transition, keyframe = only_transition(
        black + fade(texture(12), 20, False) + [features(texture(12))] * 20
    )
    assert transition.kind == "fade_in"
    assert abs(transition.last - 29) <= 3 and keyframe.index >= 26


def test_a_fade_out_then_a_cut_in_is_a_fade_out() -> None:
    a, b = texture(13), texture(14)
    black = [features(np.zeros((H, W)))] * 10
    frames = [features(a)] * 30 + fade(a, 20, True) + black + [features(b)] * 30
    transition, keyframe = only_transition(frames)
    assert transition.kind == "fade_out"
    assert abs(transition.first - 30) <= 3 and transition.last == 60
    assert (keyframe.index, keyframe.reason) == (60, "cut")


def test_start_and_heartbeats_carry_no_transition() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_gap_s=0.2, max_interval_s=1.0))
    chosen: list[Selection] = []
    for index in range(3 * FPS):
        chosen += selector.process_frame(index, index / FPS, features(texture(15)))
    assert [s.reason for s in chosen] == ["start", "interval", "interval"]
    assert all(s.transition is None for s in chosen)


# ---- the scene list ----


@pytest.fixture(scope="module")
def clip_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClipSpec, object]:
    spec = ClipSpec(shots=3, shot_frames=40, fps=25)
    clip = write_clip(tmp_path_factory.mktemp("scenes") / "clip.mp4", spec)
    return spec, detect_scenes(clip, KeyframeConfig())


def test_scene_list_csv_reads_like_list_scenes(clip_report: tuple) -> None:
    spec, report = clip_report
    lines = scene_list.to_csv(scene_list.scenes(report)).splitlines()
    assert lines[0] == "Timecode List:,00:00:01.600,00:00:03.200"
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[1:]))))
    assert [int(r["Start Frame"]) for r in rows] == [1, 41, 81]  # from 1, as PySceneDetect
    assert [int(r["End Frame"]) for r in rows] == [40, 80, 120]  # inclusive
    assert [r["End Timecode"] for r in rows] == [
        "00:00:01.600",
        "00:00:03.200",
        "00:00:04.800",
    ]
    assert [int(r["Length (frames)"]) for r in rows] == [40] * 3
    assert [r["Transition"] for r in rows] == ["", "cut", "cut"]
    assert [r["Keyframe Frames"] for r in rows] == ["1", "41", "81"]
    assert float(rows[1]["Length (seconds)"]) == pytest.approx(1.6)


def test_scene_list_json_has_scenes_transitions_and_keyframes(clip_report: tuple) -> None:
    spec, report = clip_report
    body = scene_list.to_json(report)
    assert body["cuts"] == spec.cut_frames[1:]
    assert [(s["start_frame"], s["end_frame"]) for s in body["scenes"]] == [
        (0, 39),
        (40, 79),
        (80, 119),
    ]
    assert [t["kind"] for t in body["transitions"]] == ["cut", "cut"]
    assert [k["frame"] for k in body["keyframes"]] == [0, 40, 80]
    assert body["keyframes"][0]["transition"] is None
    assert body["keyframes"][1]["transition"]["first_frame"] == 40


def test_scenes_tile_the_file_when_a_dissolve_leads_in() -> None:
    from stream.keyframes.scan import SceneReport

    dissolve = Transition("dissolve", 30, 45, 1.2, 1.8, 0.9)
    chosen = [Selection(0, 0.0, "start", 0.0), Selection(46, 1.84, "transition", 80.0, dissolve)]
    listed = scene_list.scenes(SceneReport(100, 25.0, chosen, 4.0))
    assert [(s.start, s.end, s.frames) for s in listed] == [(0, 29, 30), (30, 99, 70)]
    assert listed[1].transition == dissolve and [k.index for k in listed[1].keyframes] == [46]
    assert scene_list.timecode(3725.5) == "01:02:05.500"


# ---- golden transitions on PySceneDetect's clips (shared media, when present) ----

GOLDEN = {
    # Checked frame by frame (mean and contrast of each frame): a cut; a cut to black then a
    # fade in until 240; a fade out from 331, black, a fade in until 423; a dissolve 529-558.
    "testvideo.mp4": [
        ("cut", 30, 30),
        ("fade_in", 180, 240),
        ("fade_out_in", 331, 423),
        ("dissolve", 529, 558),
    ],
    "goldeneye-vfr-drop3.mp4": [("cut", 60, 60), ("cut", 140, 140)],  # PySceneDetect: 60, 140
}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared media not present")
@pytest.mark.parametrize("clip", list(GOLDEN))
def test_golden_transitions_on_shared_clips(clip: str) -> None:
    report = detect_scenes(SHARED / clip, KeyframeConfig())
    found = [(t.kind, t.first, t.last) for t in report.transitions]
    assert [kind for kind, _, _ in found] == [kind for kind, _, _ in GOLDEN[clip]]
    for (_, first, last), (_, true_first, true_last) in zip(found, GOLDEN[clip], strict=True):
        assert abs(first - true_first) <= 3 and abs(last - true_last) <= 3
    for keyframe, (kind, _, true_last) in zip(report.keyframes, GOLDEN[clip], strict=True):
        assert -3 <= keyframe - true_last <= (4 if kind == "cut" else 10)


# ---- caption events carry the transition (optional: events without one read as before) ----


def test_a_caption_event_carries_the_transition_that_led_to_its_keyframe() -> None:
    import fastjsonschema

    from stream.delivery.events import CaptionEvent, Envelope, wire_object
    from stream.delivery.schemas import EVENT_SCHEMAS
    from tests.test_events import CUT, OK

    validate = fastjsonschema.compile(EVENT_SCHEMAS["caption-event"])
    dissolve = Transition("dissolve", 131, 149, 5.24, 5.96, 0.9)
    event = CaptionEvent(2, CUT, "transition", 88.0, OK, "m", 0.1, transition=dissolve)
    wired = wire_object(Envelope("cam1", "s", 3), event)
    assert wired["selection"]["transition"] == {
        "kind": "dissolve",
        "first_frame": 131,
        "last_frame": 149,
        "first_time_s": 5.24,
        "last_time_s": 5.96,
        "confidence": 0.9,
    }
    validate(wired)
    plain = wire_object(Envelope("cam1", "s", 3), CaptionEvent(0, CUT, "start", 0.0, OK, "m", 0.1))
    assert "transition" not in plain["selection"]
    validate(plain)  # as events were before
    bad = {**wired["selection"]["transition"], "kind": "wipe"}
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({**wired, "selection": {**wired["selection"], "transition": bad}})
