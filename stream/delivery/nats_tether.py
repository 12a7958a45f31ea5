"""The embedded nats-server ends with vidcap, however vidcap ends.

vidcap starts this small process, which starts nats-server and waits on a pipe from vidcap.
When the pipe closes (vidcap stops the server, exits, or is killed: SIGKILL, the OOM killer)
or vidcap's process is gone (a process vLLM forked from vidcap may hold the pipe open), it
stops nats-server (SIGTERM: JetStream syncs and exits), waits for it, and removes the
server's folder when vidcap made it. Ctrl-C in a terminal, or a supervisor's SIGTERM to the
group, signals vidcap's whole process group: this process runs in a session of its own
(nats-server with it) and ignores both, so the server stays up while vidcap publishes its
last events, and vidcap stops it after them.

    python -m stream.delivery.nats_tether <folder to remove, or -> <nats-server command ...>
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from typing import Final

POLL_S: Final = 0.5
STOP_WAIT_S: Final = 5.0


def vidcap_is_gone(parent_pid: int) -> bool:
    """Stdin closed, or this process was handed to another parent (vidcap died)."""
    readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
    if readable and not os.read(sys.stdin.fileno(), 1024):
        return True
    return os.getppid() != parent_pid


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(folder: str, command: list[str]) -> int:
    parent_pid = os.getppid()
    for signum in (signal.SIGINT, signal.SIGTERM):  # vidcap's to act on; it ends us after
        signal.signal(signum, signal.SIG_IGN)
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        while server.poll() is None and not vidcap_is_gone(parent_pid):
            pass
    finally:
        stop(server)
        if folder != "-":
            shutil.rmtree(folder, ignore_errors=True)
    return server.returncode if server.returncode > 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
