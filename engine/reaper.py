"""No orphans: the engine's processes die with vidcap, however vidcap dies.

vLLM runs its engine core and workers as child processes. When vidcap is killed (SIGKILL, the
OOM killer) they outlive it and keep their memory, on a GPU host the very memory a restarted
vidcap needs. A small watchdog process, started just before the engine, holds one end of a
pipe from vidcap: when the pipe closes or vidcap's process is gone (a child vLLM forked keeps
the pipe open), vidcap is gone (or done with the engine), and the watchdog kills the engine's
processes: those it saw descending from vidcap, and those carrying its mark in their
environment (set while vLLM starts them), which finds them even once vidcap is gone and they
were handed to init before the watchdog had seen them.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psutil

POLL_S: Final = 0.5
STOP_WAIT_S: Final = 5.0
MARK_VARIABLE: Final = "VIDCAP_ENGINE_MARK"


class Reaper:
    """vidcap's side: start the watchdog before the engine, start the engine's processes
    inside ``marking()``, ``close`` after closing the engine."""

    def __init__(self) -> None:
        self._mark = uuid.uuid4().hex
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.reaper",
                str(os.getpid()),
                repr(time.time()),
                self._mark,
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a signal to vidcap's process group must not reach it
        )

    @contextmanager
    def marking(self) -> Iterator[None]:
        """Processes started in this block inherit the mark the watchdog looks for."""
        before = os.environ.get(MARK_VARIABLE)
        os.environ[MARK_VARIABLE] = self._mark
        try:
            yield
        finally:
            if before is None:
                del os.environ[MARK_VARIABLE]
            else:
                os.environ[MARK_VARIABLE] = before

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


def marked_processes(mark: str, since: float) -> list[psutil.Process]:
    """Processes started since ``since`` whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.pid != os.getpid()
                and process.create_time() >= since - 1
                and process.environ().get(MARK_VARIABLE) == mark
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def watch(parent_pid: int, since: float, mark: str) -> None:
    """Until stdin closes or vidcap is gone: remember the engine's processes; then kill those
    still running, and any carrying the mark (psutil checks each is the same process, not a
    reused pid)."""
    parent = psutil.Process(parent_pid)
    seen: dict[int, psutil.Process] = {}
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable and not os.read(sys.stdin.fileno(), 1024):
            break  # EOF: vidcap exited or closed the engine
        if not parent.is_running():
            # Gone without the EOF: a process vLLM forked from vidcap holds the pipe's end.
            break
        for process in engine_processes(parent, since):
            seen.setdefault(process.pid, process)
    for process in marked_processes(mark, since):
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
    watch(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
