"""Keyframe selection: golden cuts on generated clips, gap, heartbeat, the pure interface."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stream.config import KeyframeConfig
from stream.ingest import analysis_luma, model_image
from stream.keyframes import KeyframeSelector, content_change
from stream.sample_clip import ClipSpec, write_clip


def select(path: Path, config: KeyframeConfig) -> list[tuple[int, str]]:
    selector = KeyframeSelector(config)
    chosen = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            selection = selector.process_frame(
                float(frame.pts * frame.time_base), analysis_luma(frame, config.analysis_width)
            )
            if selection:
                chosen.append((index, selection.reason))
    return chosen


SPECS = {
    "320x240@25": ClipSpec(shots=4, shot_frames=50, fps=25),
    "640x360@30": ClipSpec(shots=6, shot_frames=30, fps=30, width=640, height=360),
    "qcif-mpeg4": ClipSpec(shots=3, shot_frames=40, fps=24, width=176, height=144, codec="mpeg4"),
}


@pytest.fixture(scope="module", params=list(SPECS))
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    spec = SPECS[request.param]
    return spec, write_clip(tmp_path_factory.mktemp("clips") / f"{request.param}.mp4", spec)


@pytest.mark.parametrize("analysis_width", [32, 64, 128])
@pytest.mark.parametrize("threshold", [8.0, 12.0, 20.0])
def test_golden_cuts_on_generated_clips(
    generated: tuple[ClipSpec, Path], analysis_width: int, threshold: float
) -> None:
    spec, clip = generated
    config = KeyframeConfig(threshold=threshold, analysis_width=analysis_width, min_gap_s=0.5)
    chosen = select(clip, config)
    expected = [(0, "start")] + [(cut, "cut") for cut in spec.cut_frames[1:]]
    assert chosen == expected


def test_heartbeat_gives_keyframes_on_a_static_picture() -> None:
    selector = KeyframeSelector(KeyframeConfig(max_interval_s=2.0, min_gap_s=0.5))
    still = np.full((36, 64), 128, np.uint8)
    chosen = [(n, s.reason) for n in range(250) if (s := selector.process_frame(n / 25, still))]
    assert chosen == [
        (0, "start"),
        (50, "interval"),
        (100, "interval"),
        (150, "interval"),
        (200, "interval"),
    ]


def test_min_gap_suppresses_cuts_too_close_together() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_gap_s=1.0, max_interval_s=60))
    dark, bright = np.zeros((36, 64), np.uint8), np.full((36, 64), 255, np.uint8)
    frames = [dark] * 30 + [bright] * 5 + [dark] * 30  # cuts at frame 30 and 35 (0.2 s apart)
    chosen = [n for n, f in enumerate(frames) if selector.process_frame(n / 25, f)]
    assert chosen == [0, 30]


def test_resolution_change_counts_as_a_cut() -> None:
    selector = KeyframeSelector(KeyframeConfig(min_gap_s=0.0))
    assert selector.process_frame(0.0, np.zeros((36, 64), np.uint8))
    selection = selector.process_frame(0.04, np.zeros((48, 64), np.uint8))
    assert selection is not None and selection.reason == "cut"


def test_content_change_is_a_percentage_of_full_scale() -> None:
    black, white = np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)
    assert content_change(black, white) == pytest.approx(100.0)
    assert content_change(white, white) == 0.0


def test_model_image_never_exceeds_the_configured_side() -> None:
    frame = av.VideoFrame.from_ndarray(np.zeros((2160, 3840, 3), np.uint8), format="rgb24")
    image = model_image(frame, 896)
    assert max(image.size) == 896 and image.size == (896, 504)
    small = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24")
    assert model_image(small, 896).size == (320, 240)
