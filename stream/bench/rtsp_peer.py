"""Start and fault a real RTSP server (GStreamer, see rtsp_server.py) from the venv's Python.

Used by the tests and by `vidcap bench ingest`. GStreamer's Python bindings are Debian's, so
the server runs under /usr/bin/python3 in its own process, which also lets a test freeze it
(SIGSTOP), kill it and start it again on the same port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
START_TIMEOUT_S = 20.0


class RtspPeer:
    """One RTSP server process serving a file or an endless test pattern on 127.0.0.1."""

    def __init__(self, *source: str) -> None:
        self._source = list(source)
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @classmethod
    def for_file(cls, path: Path) -> RtspPeer:
        return cls(str(path))

    @classmethod
    def for_pattern(cls, width: int, height: int, fps: int = 25) -> RtspPeer:
        return cls("--pattern", f"{width}x{height}", "--fps", str(fps))

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/stream"

    def start(self) -> str:
        """Start (or start again, on the same port once one was assigned); returns the URL."""
        self._process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), *self._source, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        self.port = _read_port(self._process)
        return self.url

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a frozen process dies at once too
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)


def _read_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("PORT "):
            return int(line.split()[1])
        if not line and process.poll() is not None:
            raise RuntimeError(f"RTSP server exited with {process.returncode}")
    process.kill()
    raise RuntimeError("RTSP server did not report its port")
