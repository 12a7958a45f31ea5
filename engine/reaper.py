"""No orphans: the engine's processes die with vidcap, however vidcap dies.

vLLM runs its engine core and workers as child processes. When vidcap is killed (SIGKILL, the
OOM killer) they outlive it and keep their memory, on a GPU host the very memory a restarted
vidcap needs. A small watchdog process, started just before the engine, holds one end of a
pipe from vidcap: when the pipe closes, vidcap is gone (or done with the engine), and the
watchdog kills every process it last saw descending from vidcap that started after it did.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Final

import psutil

POLL_S: Final = 0.5
STOP_WAIT_S: Final = 5.0


class Reaper:
    """vidcap's side: start the watchdog before the engine, ``close`` after closing it."""

    def __init__(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "engine.reaper", str(os.getpid()), repr(time.time())],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a signal to vidcap's process group must not reach it
        )

    @property
    def pid(self) -> int:
        return self._watchdog.pid

    def close(self) -> None:
        """The engine is closed: whatever of it is left is killed, then the watchdog ends."""
        if self._watchdog.stdin is not None:
            self._watchdog.stdin.close()
        try:
            self._watchdog.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
            self._watchdog.wait()


def engine_processes(parent: psutil.Process, since: float) -> list[psutil.Process]:
    """``parent``'s descendants started at or after ``since`` (the engine's), but us."""
    found = []
    for process in parent.children(recursive=True):
        try:
            if process.pid != os.getpid() and process.create_time() >= since - 1:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def watch(parent_pid: int, since: float) -> None:
    """Until stdin closes: remember the engine's processes; then kill those still running
    (psutil checks each is the same process, not a reused pid)."""
    parent = psutil.Process(parent_pid)
    seen: dict[int, psutil.Process] = {}
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable and not os.read(sys.stdin.fileno(), 1024):
            break  # EOF: vidcap exited or closed the engine
        if parent.is_running():
            for process in engine_processes(parent, since):
                seen.setdefault(process.pid, process)
    for process in list(seen.values()):  # and what those started since the last look
        try:
            for child in process.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    for process in seen.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(seen.values()), timeout=STOP_WAIT_S)


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]))
