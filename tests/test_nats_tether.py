"""vidcap's embedded nats-server ends with vidcap: killed (SIGKILL), vidcap leaves no server
running and no data folder behind; Ctrl-C to vidcap's process group leaves the server up for
vidcap's last events, and vidcap's own stop ends it. Real processes, real nats-server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# vidcap's side: `vidcap run`'s embedded server (no nats.url); Ctrl-C and SIGTERM are vidcap's
# to handle (here: ignored), and the server stops when the block ends (here: when stdin closes).
VIDCAP = """
import asyncio, signal, sys
from stream.config import parse_config
from stream.runner import nats_url

async def main():
    async with nats_url(parse_config({"streams": [{"id": "a", "url": "a.mp4"}]})) as url:
        print(url.rsplit(":", 1)[1], flush=True)
        await asyncio.to_thread(sys.stdin.read)
    print("stopped", flush=True)

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
asyncio.run(main())
"""


def start_vidcap() -> tuple[subprocess.Popen[str], int, Path]:
    vidcap = subprocess.Popen(
        [sys.executable, "-c", VIDCAP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    assert vidcap.stdout is not None
    port = int(vidcap.stdout.readline())
    (server,) = [p for p in psutil.Process(vidcap.pid).children(recursive=True) if is_nats(p)]
    store = server.cmdline()[server.cmdline().index("-sd") + 1]
    return vidcap, port, Path(store).parent


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def is_nats(process: psutil.Process) -> bool:
    try:
        return process.name() == "nats-server"
    except psutil.NoSuchProcess:
        return False


def servers_on(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if is_nats(process) and any(str(folder) in part for part in command):
            found.append(process)
    return found


def wait_until(condition: object, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("whole_group", [False, True])
def test_a_killed_vidcap_leaves_no_nats_server_and_no_folder(whole_group: bool) -> None:
    """SIGKILL to vidcap alone (the OOM killer), or to its process group (kill -9 %1: the
    tether was killed with vidcap, and the server, in a session of its own, ran on)."""
    vidcap, port, folder = start_vidcap()
    assert answers(port) and folder.is_dir() and len(servers_on(folder)) == 1
    if whole_group:
        os.killpg(vidcap.pid, signal.SIGKILL)
    else:
        vidcap.kill()
    vidcap.wait()
    assert wait_until(lambda: not answers(port), 10), "nats-server outlived vidcap"
    assert wait_until(lambda: not servers_on(folder) and not folder.exists(), 10), folder


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_group_leaves_the_server_to_vidcap_which_stops_it(signum: int) -> None:
    """SIGINT: a terminal's Ctrl-C; SIGTERM: a supervisor stopping the group."""
    vidcap, port, folder = start_vidcap()
    try:
        os.killpg(vidcap.pid, signum)
        time.sleep(1.5)
        assert answers(port), "the signal stopped the server before vidcap was done with it"
        assert vidcap.stdout is not None
        vidcap.stdin.close()  # type: ignore[union-attr]
        assert vidcap.stdout.readline().strip() == "stopped"
        assert vidcap.wait(15) == 0
        assert not answers(port) and not servers_on(folder) and not folder.exists()
    finally:
        if vidcap.poll() is None:
            vidcap.kill()


def test_a_killed_tether_leaves_the_server_to_vidcap_s_stop() -> None:
    """A trial SIGKILLed the tether, then stopped vidcap: nats-server outlived both (parent
    1, its data folder deleted under it). vidcap's own stop now ends the server itself when
    the tether is not there to."""
    from stream.delivery.nats_server import EmbeddedNatsServer

    server = EmbeddedNatsServer(tethered=True)
    server.start()
    folder = server.data_dir
    (nats,) = servers_on(folder)
    os.kill(server.pid, signal.SIGKILL)  # the tether
    assert wait_until(lambda: not psutil.pid_exists(server.pid) or _zombie(server.pid), 5)
    assert nats.is_running()
    server.stop()
    assert not servers_on(folder) and not folder.exists()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
