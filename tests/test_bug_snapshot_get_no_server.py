"""A product bug found when trying `vidcap snapshot get` from outside, now fixed.

With no NATS server at ``--nats`` (the default URL, or a run's embedded server that has
stopped) ``vidcap snapshot get`` waited for one for ever, printing nothing: the command reused
``vidcap run``'s connect, which retries while the server is unreachable. A one-shot command
must give up with a message that says where it looked and what to do.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


def test_snapshot_get_without_a_server_fails_with_a_message(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "stream.cli", "snapshot", "get", "cam", "3"]
    command += ["-o", str(tmp_path / "frame.jpg"), "--nats", url, "--timeout", "2"]
    started = time.monotonic()
    # The bug is a wait without end: 60 s is far above the 2 s asked for.
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert f"no NATS server answered at {url} within 2 s" in done.stderr
    assert "--nats" in done.stderr  # says what to do
    assert "Traceback" not in done.stderr
    # Said once, as the command's own line, not a publisher's WARNING at each retry (a trial).
    assert "WARNING" not in done.stderr and "publisher" not in done.stderr, done.stderr
    assert done.stderr.count(f"vidcap snapshot: waiting for NATS at {url}") == 1, done.stderr
    assert not (tmp_path / "frame.jpg").exists()
    assert elapsed < 20
