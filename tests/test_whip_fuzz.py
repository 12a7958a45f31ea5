"""Random requests against the WHIP endpoint: methods, paths, headers (bytes that are not
UTF-8, wrong lengths, chunked bodies), bodies (random bytes, mutated real offers). No answer
may be a 5xx other than 503 (``max_sessions``), nothing may be logged at ERROR or with a
traceback, and threads, memory, connections and sessions must come back to a bound.

    VIDCAP_WHIP_FUZZ_CASES=10000 .venv/bin/python -m pytest -q tests/test_whip_fuzz.py -s

runs the long version (the suite runs 1,000 cases); VIDCAP_WHIP_FUZZ_SEED picks the seed.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import random
import threading

import psutil
import pytest

from tests.test_whip_server import TOKEN, port_of, serving, video_offer

CASES = int(os.environ.get("VIDCAP_WHIP_FUZZ_CASES", "1000"))
SEED = int(os.environ.get("VIDCAP_WHIP_FUZZ_SEED", "14"))
CONCURRENCY = 16
THREAD_GROWTH = 8  # aiortc/asyncio executor threads, made once and reused
RSS_GROWTH_MB = 32  # after a warm-up; measured +3 MiB for 1,000 cases, +14 for 16,000

METHODS = [b"POST"] * 20 + [b"DELETE", b"PATCH", b"OPTIONS", b"GET", b"PUT", b"HEAD", b"P\xffST"]
STREAMS = [
    b"cam",
    b"cam1",
    b"a%0A",
    b"cam%0A",
    b"%2e%2e",
    b"a.b",
    b"x" * 70,
    b"%ff",
    b"caf\xc3\xa9",
]


class Fuzzer:
    def __init__(self, rng: random.Random, offer: bytes) -> None:
        self.rng = rng
        self.offer = offer
        self.offer_lines = offer.split(b"\r\n")

    def junk(self, n: int) -> bytes:
        return self.rng.randbytes(self.rng.randrange(n + 1))

    def text(self, n: int) -> bytes:
        """Mostly printable ASCII (a valid header value), sometimes UTF-8 or raw bytes."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.6:
            return bytes(rng.randrange(32, 127) for _ in range(rng.randrange(n + 1)))
        if kind < 0.8:
            return "".join(chr(rng.randrange(0xA0, 0x2FFF)) for _ in range(n // 3)).encode()
        return self.junk(n).replace(b"\r", b"").replace(b"\n", b"")

    def path(self) -> bytes:
        rng = self.rng
        stream = b"cam%d" % rng.randrange(50)
        if rng.random() < 0.3:
            stream = rng.choice(STREAMS) if rng.random() < 0.7 else self.junk(12).hex().encode()
        path = b"/whip/" + stream
        if rng.random() < 0.1:
            path += b"/" + rng.choice([b"0" * 32, self.junk(8).hex().encode(), b"%00"])
        if rng.random() < 0.05:
            path = rng.choice([b"/", b"/whip", b"/whip/", b"*", b"/whip//x", b"/\x00"])
        return path

    def authorization(self) -> bytes | None:
        good = f"Bearer {TOKEN}".encode()
        return self.rng.choice(
            [
                good,
                good,
                good,
                None,
                b"Bearer " + self.text(40),
                b"Bearer " + TOKEN.encode()[:-1],
                b"bearer " + TOKEN.encode(),
                good + b"\xff",
                b"Basic " + self.junk(20).hex().encode(),
                b"Bearer " + b"A" * 5000,
            ]
        )

    def body(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return self.offer
        if kind == 1:  # lines dropped, repeated, shuffled
            lines = [line for line in self.offer_lines if rng.random() > 0.15]
            for _ in range(rng.randrange(4)):
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(self.offer_lines))
            if rng.random() < 0.3:
                rng.shuffle(lines)
            return b"\r\n".join(lines)
        if kind == 2:  # bytes flipped
            body = bytearray(self.offer)
            for _ in range(rng.randrange(1, 20)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            return bytes(body)
        if kind == 3:  # values replaced by junk
            lines = list(self.offer_lines)
            for _ in range(rng.randrange(1, 6)):
                i = rng.randrange(len(lines))
                key = lines[i][:2]
                lines[i] = key + rng.choice([self.junk(30), b"-1", b"99999999999999999999", b""])
            return b"\r\n".join(lines)
        if kind == 4:
            return self.junk(2000)
        return self.offer[: rng.randrange(len(self.offer))]

    def request(self) -> tuple[bytes, bytes]:
        """(head, body) of one case."""
        rng = self.rng
        body = self.body() if rng.random() < 0.9 else b""
        lines = [rng.choice(METHODS) + b" " + self.path() + b" HTTP/1.1", b"Host: 127.0.0.1"]
        if (auth := self.authorization()) is not None:
            lines.append(b"Authorization: " + auth)
        lines.append(
            b"Content-Type: "
            + rng.choice(
                [b"application/sdp"] * 16
                + [b"text/plain", b"application/sdp; charset=latin-1", b"\xff/\xfe", b";;;", b""]
            )
        )
        chunked = rng.random() < 0.05
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if rng.random() < 0.8 else body
        else:
            length = rng.choice([len(body)] * 8 + [len(body) + 5, max(0, len(body) - 5), -1])
            if rng.random() < 0.03:
                lines.append(b"Content-Length: " + rng.choice([b"abc", b"1e3", b"\xff", b" 5"]))
            else:
                lines.append(b"Content-Length: %d" % length)
        for _ in range(rng.randrange(3) if rng.random() < 0.5 else 0):
            name = rng.choice([b"User-Agent", b"Origin", b"X-" + self.junk(6).hex().encode()])
            lines.append(name + b": " + self.text(60))
        if rng.random() < 0.03:
            lines.append(self.junk(30))  # a header line that is not one
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n", body


async def send(port: int, head: bytes, body: bytes) -> int | None:
    """The answer's status; None when the server closed without one (allowed: framing so
    broken that there is no request to answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(30):
            line = await reader.readline()
        return int(line.split()[1]) if line.startswith(b"HTTP/1.") else None
    except ConnectionError:
        return None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


class Tracebacks(logging.Handler):
    """Keeps only the records that fail the test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.exc_text:
            self.bad.append(f"{record.name}: {record.getMessage()}")


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


async def test_random_requests_never_get_a_500_or_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fuzzer = Fuzzer(random.Random(SEED), (await video_offer()).encode())
    # aiohttp's line per bad request goes only to the checking handler: pytest's capture
    # would keep thousands of them, and their memory would be what the test measures.
    tracebacks = Tracebacks()
    per_connection = logging.getLogger("stream.service.http_server.aiohttp")
    monkeypatch.setattr(per_connection, "propagate", False)
    per_connection.addHandler(tracebacks)
    logging.getLogger().addHandler(tracebacks)
    statuses: collections.Counter[int | None] = collections.Counter()
    async with serving(
        max_sessions=4,
        ice_timeout_s=0.5,
        request_timeout_s=2,
        max_connections=4 * CONCURRENCY,
    ) as server:
        port = port_of(server)

        async def cases(count: int) -> None:
            """``count`` cases, CONCURRENCY at a time, each made when it is sent."""
            left = iter(range(count))

            async def client() -> None:
                for _ in left:
                    head, body = fuzzer.request()
                    status = await send(port, head, body)
                    statuses[status] += 1
                    assert status is None or status < 500 or status == 503, (status, head)

            await asyncio.gather(*(client() for _ in range(CONCURRENCY)))

        warm_up = min(200, CASES // 5)
        await cases(warm_up)
        threads, rss = threading.active_count(), rss_mb()
        await cases(CASES - warm_up)
        async with asyncio.timeout(30):
            while server.sessions or server.connections:  # noqa: ASYNC110 (counts, no event)
                await asyncio.sleep(0.1)
        grown_threads, grown_mb = threading.active_count() - threads, rss_mb() - rss
    print(
        f"\nWHIP fuzz: {CASES} cases, seed {SEED}: statuses {sorted(statuses.items(), key=str)};"
        f" threads {threads} -> +{grown_threads}; RSS {rss:.0f} MiB -> {grown_mb:+.1f} MiB"
    )
    logging.getLogger().removeHandler(tracebacks)
    per_connection.removeHandler(tracebacks)
    assert not tracebacks.bad, tracebacks.bad[:5]
    assert statuses[201] > 0 and statuses[400] > 0  # the cases reach the SDP parser and past
    assert grown_threads <= THREAD_GROWTH
    assert grown_mb <= RSS_GROWTH_MB
