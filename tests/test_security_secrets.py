"""Secrets never leave a source: `vidcap run` against an unreachable camera, a refusing port and
an RTSP server that fails authentication, with credentials in every URL; no published event
and no line vidcap writes may contain any of them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import orjson
import pytest

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.redact import MASK, Redactor, redact

SECRETS = ["S3cretPass", "T0kenSecret", "p@ss/w0rd", "w0rd", "Auth:Secret", "SigSecret", "hunter22"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://u:S3cretPass@cam/s", "rtsp://***@cam/s"),
        ("'rtsp://admin:p@ss/w0rd@10.0.0.1:554/live'", "'rtsp://***@10.0.0.1:554/live'"),
        ("http://cam/hls.m3u8?token=T0kenSecret&x=1", "http://cam/hls.m3u8?token=***&x=1"),
        ("https://h/p?X-Amz-Signature=SigSecret", "https://h/p?X-Amz-Signature=***"),
        (
            "https://h/p?auth_key=a&sig=b&password=c",
            "https://h/p?auth_key=***&sig=***&password=***",
        ),
        ("nats://vidcap:hunter22@nats:4222", "nats://***@nats:4222"),
        ("connect failed: password=hunter22", "connect failed: password=***"),
        ("rtsp://cam/stream", "rtsp://cam/stream"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_source_redacts_its_own_secrets_however_they_are_quoted() -> None:
    url = "rtsp://admin:p%40ss%2Fw0rd@cam/s?token=T0kenSecret"
    shown = Redactor([url])("auth p@ss/w0rd for p%40ss%2Fw0rd; tok T0kenSecret; rtsp://adm")
    assert "w0rd" not in shown and "T0kenSecret" not in shown and MASK in shown


async def _rtsp_401(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An RTSP server that refuses every request, credentials or not."""
    try:
        while request := await reader.readuntil(b"\r\n\r\n"):
            cseq = next(
                (
                    ln.split(b":", 1)[1].strip()
                    for ln in request.split(b"\r\n")
                    if ln.lower().startswith(b"cseq")
                ),
                b"1",
            )
            writer.write(
                b"RTSP/1.0 401 Unauthorized\r\nCSeq: "
                + cseq
                + b'\r\nWWW-Authenticate: Basic realm="cam"\r\n'
                b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def rtsp_401() -> AsyncIterator[int]:
    server = await asyncio.start_server(_rtsp_401, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream(stream_id: str, url: str) -> dict[str, object]:
    return {
        "id": stream_id,
        "url": url,
        "live": True,
        "open_timeout_s": 1,
        "read_timeout_s": 1,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.2,
        "reconnect_max_attempts": 2,
    }


async def test_no_secret_in_any_event_or_log_line(
    nats_server: EmbeddedNatsServer, rtsp_401: int, tmp_path: Path
) -> None:
    streams = [
        # TEST-NET-1: nothing answers (unreachable, or no route on a machine without network)
        _stream("unreachable", "rtsp://user:S3cretPass@192.0.2.1:554/stream?token=T0kenSecret"),
        _stream("refused", f"rtsp://admin:p@ss/w0rd@127.0.0.1:{closed_port()}/live?sig=SigSecret"),
        _stream("auth", f"rtsp://viewer:Auth:Secret@127.0.0.1:{rtsp_401}/cam?password=hunter22"),
        _stream("http", f"http://u:S3cretPass@127.0.0.1:{closed_port()}/x.m3u8?token=T0kenSecret"),
    ]
    config = {
        "streams": streams,
        "engine": {"kind": "nats", "model_id": "m", "worker_timeout_s": 1, "worker_attempts": 1},
        "nats": {"url": nats_server.url, "subject_prefix": "sec", "stream_name": "SEC"},
    }
    path = tmp_path / "vidcap.yaml"
    path.write_text(orjson.dumps(config).decode())
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", "run", "--config", str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    output = (stdout + stderr).decode(errors="replace")

    events = await _stored_events(nats_server.url)
    states = {(e["stream"], e.get("state")) for e in events}
    for stream in ("unreachable", "refused", "auth", "http"):
        assert (stream, "failed") in states, (stream, states, output[-3000:])
    assert any(state == "reconnecting" for _, state in states), states
    assert "WARNING" in output and "stream refused" in output, output[-3000:]
    published = b"\n".join(orjson.dumps(e) for e in events).decode()
    for secret in SECRETS:
        assert secret not in published, (secret, published)
        assert secret not in output, (secret, output)


async def _stored_events(url: str) -> list[dict[str, object]]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info("SEC")
        return [
            orjson.loads((await js.get_msg("SEC", seq)).data or b"{}")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await client.drain()
