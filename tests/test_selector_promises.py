"""README promises of the keyframe selector, on synthetic pictures: a blank picture (black,
white, a solid card, black with a faint line of text) is never a keyframe except as a
stream's first frame; a flash that fades back is no cut by the reversion check alone."""

from __future__ import annotations

import numpy as np
import pytest

from stream.keyframes.features import FrameFeatures
from tests.test_keyframes import H, W, features, run, shot, texture


def faint_text_on_black() -> np.ndarray:
    """A line of small text as the 64-pixel analysis picture sees it: a few dim pixels."""
    picture = np.zeros((H, W))
    picture[20, 12:52] = 30
    return picture


BLANKS: dict[str, FrameFeatures] = {
    "black": features(np.zeros((H, W))),
    "white": features(np.full((H, W), 255.0)),
    "card": features(np.full((H, W), 100.0), 90, 190),
    "text": features(faint_text_on_black()),
}


@pytest.mark.parametrize("name", list(BLANKS))
def test_a_cut_to_a_blank_picture_is_no_keyframe(name: str) -> None:
    blank = BLANKS[name]
    assert blank.blank
    assert run(shot(1, 30) + [blank] * 30) == [(0, "start")]


@pytest.mark.parametrize("name", list(BLANKS))
def test_a_blank_first_frame_is_still_the_start(name: str) -> None:
    assert run([BLANKS[name]] * 10) == [(0, "start")]


def test_the_picture_after_a_blank_stretch_is_a_keyframe() -> None:
    chosen = run(shot(1, 30) + [BLANKS["black"]] * 30 + shot(2, 30))
    assert chosen[0] == (0, "start") and len(chosen) == 2
    assert chosen[1][0] >= 60  # on the new shot, never on black


@pytest.mark.parametrize("steps", [2, 3])
def test_a_flash_that_fades_back_within_flash_frames_is_no_cut(steps: int) -> None:
    # Each frame after the flash changes little (no pan guard), but by the flash_frames-th
    # the old picture is back: only the reversion check tells this from a cut.
    base = texture(3)
    flash = base * 0.3 + 200
    fading = [features(flash * (1 - k / steps) + base * (k / steps)) for k in range(steps)]
    frames = [features(base)] * 30 + fading + [features(base)] * 30
    assert run(frames, flash_frames=steps) == [(0, "start")]
