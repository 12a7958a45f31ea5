"""`vidcap tail` against a real nats-server: readable lines, raw JSON, stream filter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import orjson
import pytest

from stream.config import NatsConfig, parse_config
from stream.delivery import embedded_address
from stream.delivery.events import (
    Envelope,
    Event,
    LogoEvent,
    LogoSighting,
    StatusEvent,
    wire_object,
)
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.runner import nats_url
from stream.sources.frames import SourceState
from stream.tail import format_event
from stream.tail_follow import _nats_answers
from tests.conftest import free_port


def status(stream: str, seq: int, state: SourceState) -> tuple[Envelope, StatusEvent]:
    return Envelope(stream, "s", seq), StatusEvent(state, "why", 1795564800.0)


async def start_tail(url: str, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream.cli",
        "tail",
        "--nats",
        url,
        "--prefix",
        "tl",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    banner = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"listening on" in banner
    return process


@pytest.mark.parametrize("jetstream", [False, True])
async def test_tail_prints_filtered_events(
    nats_server: EmbeddedNatsServer, jetstream: bool
) -> None:
    # JetStream (the default) too: its publishes carry a reply subject, which live tail once
    # took for a JetStream delivery (NotJSMessageError on every event, nothing printed).
    raw = await start_tail(nats_server.url, "--json", "--stream", "cam1")
    readable = await start_tail(nats_server.url)
    config = NatsConfig(
        url=nats_server.url, subject_prefix="tl", jetstream=jetstream, stream_name="TLLIVE"
    )
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.ensure_stream()
    await publisher.publish(*status("cam2", 0, "live"))
    await publisher.publish(*status("cam1", 0, "connecting"))
    await publisher.close()
    assert raw.stdout is not None and readable.stdout is not None
    line = await asyncio.wait_for(raw.stdout.readline(), 10)
    assert orjson.loads(line) == wire_object(*status("cam1", 0, "connecting"))  # cam2 filtered out
    lines = [await asyncio.wait_for(readable.stdout.readline(), 10) for _ in range(2)]
    assert [x.decode().strip() for x in lines] == [
        format_event(wire_object(*status("cam2", 0, "live"))),
        "cam1 #0 status  connecting: why",
    ]
    for process in (raw, readable):
        process.terminate()
        await process.wait()


async def test_tail_replays_from_jetstream_by_time_and_by_sequence(
    nats_server: EmbeddedNatsServer,
) -> None:
    config = NatsConfig(url=nats_server.url, subject_prefix="tl", stream_name="TL")
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.ensure_stream()
    logo = (
        Envelope("cam1", "s", 3),
        LogoEvent("appeared", "Nike", "swoosh", (LogoSighting(2, 4.0, 1795564800.0),)),
    )
    published: list[tuple[Envelope, Event]] = [
        status("cam1", 0, "connecting"),
        status("cam2", 0, "live"),
        status("cam1", 1, "live"),
        logo,
    ]
    for envelope, event in published:
        await publisher.publish(envelope, event)
    await publisher.close()

    common = ("--stream-name", "TL", "--json")
    by_time = await start_tail(nats_server.url, *common, "--since", "1h", "--stream", "cam1")
    by_seq = await start_tail(nats_server.url, *common, "--from-seq", "3", "--kind", "logo")
    assert by_time.stdout is not None and by_seq.stdout is not None
    replayed = [
        orjson.loads(await asyncio.wait_for(by_time.stdout.readline(), 10)) for _ in range(3)
    ]
    assert [(e["type"], e["seq"]) for e in replayed] == [("status", 0), ("status", 1), ("logo", 3)]
    only_logo = orjson.loads(await asyncio.wait_for(by_seq.stdout.readline(), 10))
    assert only_logo == wire_object(
        *logo
    )  # stream sequence 3 is cam1's "live"; --kind leaves the logo
    for process in (by_time, by_seq):
        process.terminate()
        await process.wait()


def test_since_accepts_durations_and_iso_times() -> None:
    from datetime import UTC, datetime

    from stream.tail import parse_since

    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    assert parse_since("90s", now) == datetime(2026, 11, 25, 13, 58, 30, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-25T13:00:00") == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="90s"):
        parse_since("yesterday")
    for too_far in ("99999999d", "9" * 40 + "s"):  # OverflowError with a traceback before
        with pytest.raises(ValueError, match="before the year 1"):
            parse_since(too_far, now)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["tail", "--from-seq", "-5"], "a stream sequence is 1 or more"),  # was a traceback
        (["tail", "--from-seq", "0"], "a stream sequence is 1 or more"),
        (["tail", "--stream", "a.b"], "invalid stream id 'a.b'"),  # would follow vidcap.a.b.*
        (["snapshot", "get", "a>", "1"], "invalid stream id 'a>'"),
    ],
)
def test_tools_refuse_what_cannot_be_on_nats(
    arguments: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(arguments)
    assert exit_.value.code == 2 and said in capsys.readouterr().err


async def test_tail_without_nats_follows_the_embedded_server_of_the_vidcap_running_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's quick start: `vidcap run` on the defaults starts nats-server on a random
    port; `vidcap tail` with no --nats found nothing at 4222 and warned every 2 s forever."""
    monkeypatch.setenv("VIDCAP_CACHE", str(tmp_path))  # the test's own: no real vidcap's file
    config = parse_config({"streams": [{"id": "a", "url": "a.mp4"}]})
    async with nats_url(config) as url:
        tail = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "stream.cli", "tail", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tail.stdout is not None and tail.stderr is not None
        said = [(await asyncio.wait_for(tail.stderr.readline(), 30)).decode() for _ in range(2)]
        assert said[0].strip() == (
            f"vidcap tail: the embedded nats-server of vidcap (pid {os.getpid()}) at {url}"
        )
        assert said[1].startswith(f"vidcap tail: listening on vidcap.*.* at {url}")
        client = await nats.connect(url)
        event = wire_object(*status("cam", 0, "live"))
        await client.publish("vidcap.cam.status", orjson.dumps(event))
        await client.close()
        assert orjson.loads(await asyncio.wait_for(tail.stdout.readline(), 10)) == event
        tail.terminate()
        await tail.wait()
    assert embedded_address.running_vidcap() is None  # stopped: forgotten


async def _said(tail: asyncio.subprocess.Process, until: str, heard: list[str]) -> None:
    """Read tail's stderr into ``heard`` through the first line that contains ``until``."""
    assert tail.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(tail.stderr.readline(), 30)).decode()
        assert line, f"tail ended before saying {until!r}; it said {heard}"
        heard.append(line.strip())
        if until in line:
            return
    raise AssertionError(f"tail did not say {until!r} within 30 s; it said {heard[-5:]}")


async def test_tail_follows_each_vidcap_run_here_one_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vidcap tail` on the defaults left open while vidcap stops and starts again (each run's
    embedded nats-server has a new port): it retried the stopped run's port for ever with a
    WARNING every 2 s, and never showed the next run. Stand-ins for the two vidcaps: a real
    nats-server each, and a process whose pid the address file names (one killed, as by
    SIGKILL, one that stopped cleanly and removed its file)."""
    if await _nats_answers(embedded_address.DEFAULT_URL):
        pytest.skip(f"a NATS server answers at {embedded_address.DEFAULT_URL} on this machine")
    monkeypatch.setenv("VIDCAP_CACHE", str(tmp_path))
    tail = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stream.cli", "tail", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tail.stdout is not None
    heard: list[str] = []
    await _said(tail, "no vidcap is running here", heard)
    try:
        for run, ends in enumerate(["killed", "stopped"]):
            server = EmbeddedNatsServer(jetstream=False)
            server.start()
            vidcap = await asyncio.create_subprocess_exec("sleep", "600")
            address = tmp_path / "embedded-nats.json"
            address.write_bytes(orjson.dumps({"url": server.url, "pid": vidcap.pid}))
            await _said(tail, "listening on", heard)
            assert (
                f"the embedded nats-server of vidcap (pid {vidcap.pid}) at {server.url}"
                in (heard[-2])
            )
            client = await nats.connect(server.url)
            event = wire_object(*status("cam", run, "live"))
            await client.publish("vidcap.cam.status", orjson.dumps(event))
            await client.close()
            assert orjson.loads(await asyncio.wait_for(tail.stdout.readline(), 10)) == event
            server.stop()
            if ends == "stopped":
                address.unlink()
            vidcap.kill()
            await vidcap.wait()
            await _said(tail, f"vidcap (pid {vidcap.pid}) has stopped", heard)
            assert "waiting for the next vidcap here" in heard[-1]
    finally:
        tail.terminate()
        await tail.wait()
    assert not [line for line in heard if "WARNING" in line or "Traceback" in line], heard
    assert sum("reconnecting" in line for line in heard) <= 2  # once a run, not each attempt
    assert not [line for line in heard if "waiting for NATS" in line], heard  # it was lost


async def test_tail_waits_for_a_given_nats_saying_so_once(tmp_path: Path) -> None:
    """`--nats` naming a server that is not up yet: one line that says so, then the events
    once it is up (it was a WARNING every 2 s)."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    tail = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stream.cli", "tail", "--json", "--nats", url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tail.stdout is not None
    heard: list[str] = []
    server = EmbeddedNatsServer(jetstream=False, port=port)
    try:
        await _said(tail, f"waiting for NATS at {url}", heard)
        await asyncio.sleep(2.5)  # another of nats-py's attempts (every 2 s)
        server.start()
        await _said(tail, "listening on", heard)
        client = await nats.connect(url)
        event = wire_object(*status("cam", 0, "live"))
        await client.publish("vidcap.cam.status", orjson.dumps(event))
        await client.close()
        assert orjson.loads(await asyncio.wait_for(tail.stdout.readline(), 10)) == event
    finally:
        tail.terminate()
        await tail.wait()
        server.stop()
    assert len(heard) == 2, heard


async def test_tail_gives_up_a_vidcap_that_stops_before_it_got_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address file names a running vidcap whose server does not answer (it is stopping):
    tail waited for that server for ever, though the vidcap was gone."""
    if await _nats_answers(embedded_address.DEFAULT_URL):
        pytest.skip(f"a NATS server answers at {embedded_address.DEFAULT_URL} on this machine")
    monkeypatch.setenv("VIDCAP_CACHE", str(tmp_path))
    vidcap = await asyncio.create_subprocess_exec("sleep", "600")
    dead = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "embedded-nats.json").write_bytes(orjson.dumps({"url": dead, "pid": vidcap.pid}))
    tail = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stream.cli", "tail"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    heard: list[str] = []
    try:
        await _said(tail, f"waiting for NATS at {dead}", heard)
        vidcap.kill()
        await vidcap.wait()
        await _said(tail, f"vidcap (pid {vidcap.pid}) has stopped", heard)
    finally:
        tail.terminate()
        await tail.wait()
        if vidcap.returncode is None:
            vidcap.kill()


def test_a_replay_where_no_jetstream_stream_is_says_so(nats_server: EmbeddedNatsServer) -> None:
    """It was a traceback ending in "NotFoundError: ... stream not found"."""
    command = [sys.executable, "-m", "stream.cli", "tail", "--nats", nats_server.url]
    done = subprocess.run(
        [*command, "--since", "1h", "--stream-name", "NOPE"], capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        f"vidcap tail: no JetStream stream NOPE at {nats_server.url}: nothing to replay "
        "(vidcap makes it once its engine has loaded; --stream-name names another)"
    )


async def test_tail_outlives_messages_that_are_no_events(nats_server: EmbeddedNatsServer) -> None:
    """Not JSON, a JSON array: each was a traceback that ended the tail."""
    tail = await start_tail(nats_server.url)
    assert tail.stdout is not None
    client = await nats.connect(nats_server.url)
    event = wire_object(*status("cam", 0, "live"))
    for junk in (b"not json", b"[1, 2]", orjson.dumps(event)):
        await client.publish("tl.cam.status", junk)
    await client.close()
    lines = [(await asyncio.wait_for(tail.stdout.readline(), 10)).decode() for _ in range(3)]
    tail.terminate()
    await tail.wait()
    assert lines[0].startswith("(a message of 8 bytes that is no JSON object")
    assert lines[1].startswith("(a message of 6 bytes that is no JSON object")
    assert lines[2].startswith("cam #0 status  live")
