"""Keyframe snapshots in a real nats-server's Object Store: stored while the model works, named
by their caption events, fetched with `vidcap snapshot get`; retention by age; a full bucket or
a slow store never holds events back."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import numpy as np
import orjson
import pytest
from nats.aio.msg import Msg
from nats.js.api import ObjectStoreConfig
from PIL import Image

from engine.vllm_engine import VllmEngine
from stream.config import NatsConfig, SnapshotsConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.object_read import CHUNK_WAIT_S
from stream.delivery.snapshots import SnapshotStore, snapshot_bucket
from stream.delivery.story import find_event
from stream.runner import Runner
from stream.sample_clip import ClipSpec
from tests.conftest import engine_and_nats

NATS = NatsConfig(stream_name="SNAP")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Incompressible pictures: the worst case for a bucket's size."""
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


async def open_store(url: str, **settings: Any) -> tuple[nats.NATS, SnapshotStore]:
    client = await nats.connect(url)
    store = await SnapshotStore.open(client.jetstream(), SnapshotsConfig(**settings), NATS)
    return client, store


async def test_a_stored_snapshot_is_the_picture_as_sent(nats_server: EmbeddedNatsServer) -> None:
    client, store = await open_store(nats_server.url, wait_s=5)
    picture = noise(896, 504)
    outcome = await store.start("cam/ab12/0", picture).settle()
    assert outcome.error is None and outcome.stored is not None
    assert (outcome.stored.width, outcome.stored.height) == (896, 504)
    assert outcome.stored.bucket == snapshot_bucket("SNAP") == "SNAP_SNAPSHOTS"
    jpeg = await store.get("cam/ab12/0")
    assert jpeg is not None and len(jpeg) == outcome.stored.bytes
    decoded = Image.open(io.BytesIO(jpeg))
    assert decoded.format == "JPEG" and decoded.size == picture.size
    assert await store.get("cam/ab12/1") is None
    await client.close()


async def test_retention_by_age_removes_old_snapshots(nats_server: EmbeddedNatsServer) -> None:
    client, store = await open_store(nats_server.url, max_age_s=1, wait_s=5)
    assert (await store.start("cam/ab12/0", noise(64, 64)).settle()).stored is not None
    assert await store.get("cam/ab12/0") is not None
    for _ in range(50):  # the server expires by age about once a second
        await asyncio.sleep(0.2)
        if await store.get("cam/ab12/0") is None:
            break
    assert await store.get("cam/ab12/0") is None
    await client.close()


@pytest.mark.parametrize("size", [(64, 64), (896, 504)])  # one chunk; 300 kB in three
async def test_a_snapshot_half_aged_out_reads_as_gone_at_once(
    nats_server: EmbeddedNatsServer, size: tuple[int, int]
) -> None:
    """Its chunks were written first, so they expire first: for a moment its description is
    there and its data is not. nats-py's get then waits for the data for ever (CI hung 10 min
    in the test above); the dashboard's read timed out as "store did not answer"."""
    client, store = await open_store(nats_server.url, wait_s=5)
    stored = (await store.start("cam/ab12/0", noise(*size)).settle()).stored
    assert stored is not None
    bucket = await client.jetstream().object_store(stored.bucket)
    info = await bucket.get_info(stored.name)
    chunks = f"$O.{stored.bucket}.C.{info.nuid}"
    await client.jetstream().purge_stream(f"OBJ_{stored.bucket}", subject=chunks)
    async with asyncio.timeout(CHUNK_WAIT_S + 2):
        assert await store.get(stored.name) is None
    await client.close()


async def test_reading_a_snapshot_takes_two_jetstream_requests(
    nats_server: EmbeddedNatsServer,
) -> None:
    """Every dashboard thumbnail is a read: nats-py's get makes four requests (stream info,
    description, stream lookup, a consumer); vidcap's reader two."""
    client, store = await open_store(nats_server.url, wait_s=5)
    names = ["cam/ab12/0", "cam/ab12/10", "cam/ab12/100"]  # base64 with and without padding
    for number, name in enumerate(names):
        assert (await store.start(name, noise(320, 180, number)).settle()).stored is not None
    requests: list[str] = []

    async def count(message: Msg) -> None:
        requests.append(message.subject)

    watcher = await nats.connect(nats_server.url)
    await watcher.subscribe("$JS.API.>", cb=count)
    await watcher.flush()
    for name in names:
        jpeg = await store.get(name)
        assert jpeg is not None and Image.open(io.BytesIO(jpeg)).size == (320, 180)
    await client.flush()
    await watcher.flush()
    await asyncio.sleep(0.2)
    assert requests == ["$JS.API.STREAM.MSG.GET.OBJ_SNAP_SNAPSHOTS"] * 2 * len(names)
    await watcher.close()
    await client.close()


async def test_a_full_bucket_refuses_and_says_full(
    nats_server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = await open_store(nats_server.url, max_bytes=16 << 20, wait_s=5)
    outcomes = [await store.start(f"cam/ab12/{n}", noise(896, 504, n)).settle() for n in range(80)]
    errors = [o.error for o in outcomes]
    first_full = errors.index("full")  # 300 kB of noise each: 16 MiB holds about 55
    assert 40 < first_full < 60 and set(errors[first_full:]) == {"full"}, errors
    assert all(o.stored is not None for o in outcomes[:first_full])
    assert store.metrics.outcomes.labels("full")._value.get() == 80 - first_full
    said = [r for r in caplog.records if "snapshot not stored (full)" in r.getMessage()]
    assert len(said) == 1  # once per kind: every event says it in its own field
    await client.close()


async def test_an_event_waits_at_most_wait_s(nats_server: EmbeddedNatsServer) -> None:
    client, store = await open_store(nats_server.url, wait_s=0)
    outcome = await store.start("cam/ab12/0", noise(896, 504)).settle()
    assert (outcome.stored, outcome.error) == (None, "slow")  # encoding alone takes longer
    await client.close()


async def run_clip(
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    clip: Path,
    stream_name: str | None = "SNAP",
) -> list[dict[str, Any]]:
    """The clip captioned; JetStream under ``stream_name``, else core NATS."""
    config = parse_config(
        {
            "streams": [{"id": "cam", "url": str(clip)}],
            **engine_and_nats(
                nats_server.url, "snap", tiny_model, stream_name=stream_name, short_captions=True
            ),
        }
    )
    events: list[dict[str, Any]] = []
    assert await Runner(config, events.append).run(nats_server.url, engine=vllm_engine) == 0
    return events


async def test_every_caption_names_its_snapshot_and_vidcap_snapshot_get_fetches_it(
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    sample_clip: Path,
    clip_spec: ClipSpec,
    tmp_path: Path,
) -> None:
    events = await run_clip(nats_server, vllm_engine, tiny_model, sample_clip)
    captions = [e for e in events if e["type"] == "caption"]
    assert len(captions) == clip_spec.shots
    client = await nats.connect(nats_server.url)
    bucket = await client.jetstream().object_store("SNAP_SNAPSHOTS")
    for caption in captions:
        reference = caption["snapshot"]
        assert caption["snapshot_error"] is None and reference["bucket"] == "SNAP_SNAPSHOTS"
        jpeg = (await bucket.get(reference["name"])).data
        assert jpeg is not None and len(jpeg) == reference["bytes"]
        size = Image.open(io.BytesIO(jpeg)).size
        # The picture the model got: the keyframe scaled to fit engine.image_size.
        assert size == (reference["width"], reference["height"])
        assert max(size) == 896 or size == (clip_spec.width, clip_spec.height)
    found = await find_event(client.jetstream(), "SNAP", "snap", "cam", captions[-1]["seq"])
    assert found == captions[-1]
    await client.close()

    last = captions[-1]
    where = ["--nats", nats_server.url, "--prefix", "snap", "--stream-name", "SNAP"]

    async def snapshot_get(seq: int, output: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "stream.cli", "snapshot", "get", "cam", str(seq)]
        run = [*command, "-o", str(output), *where]
        return await asyncio.to_thread(subprocess.run, run, capture_output=True, text=True)

    done = await snapshot_get(last["seq"], tmp_path / "last.jpg")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "last.jpg").read_bytes() == jpeg
    assert last["snapshot"]["name"] in done.stdout
    status = next(e for e in events if e["type"] == "status")
    refused = await snapshot_get(status["seq"], tmp_path / "x.jpg")
    assert refused.returncode == 1 and "a status event, not a caption" in refused.stderr
    refused = await snapshot_get(9999, tmp_path / "y.jpg")
    assert refused.returncode == 1 and "holds no event cam #9999" in refused.stderr
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "y.jpg").exists()
    refused = await snapshot_get(last["seq"], tmp_path / "no-such-folder" / "z.jpg")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "cannot write" in refused.stderr and "No such file or directory" in refused.stderr


async def test_a_full_bucket_stops_no_event(
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    sample_clip: Path,
    clip_spec: ClipSpec,
) -> None:
    # A bucket made before the run, too small for even one snapshot: vidcap binds it as is.
    client = await nats.connect(nats_server.url)
    await client.jetstream().create_object_store(
        "SNAP_SNAPSHOTS", ObjectStoreConfig(bucket="SNAP_SNAPSHOTS", max_bytes=1024)
    )
    await client.close()
    events = await run_clip(nats_server, vllm_engine, tiny_model, sample_clip)
    captions = [e for e in events if e["type"] == "caption"]
    assert len(captions) == clip_spec.shots
    assert {(c["snapshot"], c["snapshot_error"]) for c in captions} == {(None, "full")}
    assert [e["seq"] for e in events] == list(range(len(events)))


async def test_without_jetstream_events_say_disabled(
    nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path, sample_clip: Path
) -> None:
    events = await run_clip(nats_server, vllm_engine, tiny_model, sample_clip, None)
    captions = [e for e in events if e["type"] == "caption"]
    assert captions and {(c["snapshot"], c["snapshot_error"]) for c in captions} == {
        (None, "disabled")
    }


@pytest.mark.parametrize("seqs", [[0, 1, 2, 5, 6, 9], [3]])
async def test_find_event_by_seq_among_other_streams(
    nats_server: EmbeddedNatsServer, seqs: list[int]
) -> None:
    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    await js.add_stream(name="FIND", subjects=["find.>"])
    for seq in seqs:  # interleaved with another stream's events, seqs with gaps
        for stream in ("cam", "other"):
            body = {"stream": stream, "seq": seq, "type": "status"}
            await js.publish(f"find.{stream}.status", orjson.dumps(body))
    for seq in range(max(seqs) + 2):
        found = await find_event(js, "FIND", "find", "cam", seq)
        assert (found is not None) == (seq in seqs), seq
        assert found is None or (found["stream"], found["seq"]) == ("cam", seq)
    await client.close()
