"""A keyframe's model picture reuses the memory of the ones before it. Pillow gave each
picture's memory back on release by default and, with a decoder's frames in memory, every 720p
keyframe then faulted its pages in afresh: 850 page faults and about 2.5 ms of CPU a keyframe,
more than the scaling itself (`vidcap bench engine` hid it: its warm-up kept 200 pictures
alive, and the heap reused their holes). Measured in a fresh interpreter, with 20 decoded
frames held as a decoder's pool and queue hold theirs (8 were too few to show it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stream.sample_clip import ClipSpec, write_clip

STEADY_STATE_FAULTS = """
import itertools, resource, sys
import av
from stream.sources.model_picture import ModelScaler

with av.open(sys.argv[1]) as container:
    frames = list(itertools.islice(container.decode(video=0), 20))
scale = ModelScaler(896)
for frame in frames:
    scale(frame)  # the first pictures: their memory is new
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for frame in frames * 3:
    scale(frame)  # each picture released before the next, as keyframes go
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (len(frames) * 3))
"""


def test_a_720p_keyframe_s_picture_faults_in_no_new_memory(tmp_path: Path) -> None:
    spec = ClipSpec(shots=1, shot_frames=20, width=1280, height=720)
    clip = write_clip(tmp_path / "720p.mp4", spec)
    run = subprocess.run(
        [sys.executable, "-c", STEADY_STATE_FAULTS, str(clip)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    faults_per_keyframe = float(run.stdout)
    # A 896x504 RGB picture is 441 pages: it was 850 faults a keyframe.
    assert faults_per_keyframe < 50, faults_per_keyframe
