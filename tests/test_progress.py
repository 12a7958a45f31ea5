"""`vidcap scenes` shows a progress bar on a terminal (a real pseudo-terminal here) and none
when its output goes to a pipe or a file."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from stream.progress import frames_in


def scenes_on_a_terminal(video: Path) -> str:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "scenes", str(video)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0
    return output.decode(errors="replace")


def test_scenes_shows_a_bar_on_a_terminal_only(sample_clip: Path) -> None:
    frames = frames_in(str(sample_clip))
    assert frames == 200  # ClipSpec(shots=4, shot_frames=50)
    shown = scenes_on_a_terminal(sample_clip)
    assert f"{frames}/{frames}" in shown and "frame/s" in shown, shown
    piped = subprocess.run(
        [sys.executable, "-m", "stream.cli", "scenes", str(sample_clip)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert piped.stderr == "" and "frame/s" not in piped.stdout
    assert piped.stdout.startswith(f"{sample_clip}: 200 frames")
