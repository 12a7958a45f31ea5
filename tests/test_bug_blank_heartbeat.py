"""A product bug found while testing README promises (issue 13), now fixed: the heartbeat
skips blank frames.

README: "black, white, a solid card, or black with one line of text is never a keyframe
(except a stream's first frame)". The heartbeat (``interval``) does not check ``blank``: a
camera showing black for longer than ``max_interval_s`` gets a blank keyframe per interval.
"""

from __future__ import annotations

import pytest

from tests.test_keyframes import run, shot
from tests.test_selector_promises import BLANKS


@pytest.mark.parametrize("name", list(BLANKS))
def test_a_long_blank_stretch_gets_no_heartbeat_keyframe(name: str) -> None:
    # 30 frames of a shot, then 6 s of a blank picture, with a 2 s heartbeat at 25 fps.
    assert run(shot(1, 30) + [BLANKS[name]] * 150, max_interval_s=2.0) == [(0, "start")]
