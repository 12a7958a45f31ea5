"""Several streams in one process: bad sources are reported, good ones go on; shutdown drains."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import nats
import orjson
import pytest

from engine.vllm_engine import VllmEngine
from stream.config import StreamConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from stream.sources.health import SourceHealth
from stream.sources.pyav import VideoSource
from tests.conftest import engine_and_nats, free_port


async def test_bad_streams_get_status_events_and_never_stop_the_good_one(
    tmp_path: Path,
    sample_clip: Path,
    clip_spec: ClipSpec,
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"this is not a video\n" * 100)
    config = parse_config(
        {
            "streams": [
                {"id": "good", "url": str(sample_clip)},
                {"id": "missing", "url": str(tmp_path / "nowhere.mp4")},
                {"id": "garbage", "url": str(not_video)},
                {
                    "id": "refused",
                    "url": f"rtsp://127.0.0.1:{free_port()}/cam",
                    "open_timeout_s": 1,
                    "reconnect_initial_s": 0.2,
                    "reconnect_max_s": 0.4,
                },
            ],
            **engine_and_nats(nats_server.url, "iso", tiny_model, stream_name="ISO"),
        }
    )
    events: dict[str, list[dict[str, Any]]] = {s.id: [] for s in config.streams}

    def on_event(event: dict[str, Any]) -> None:
        events[event["stream"]].append(event)
        if event["stream"] == "good" and event.get("state") == "ended":
            runner.request_stop()  # the live one would retry forever

    runner = Runner(config, on_event)
    status = await asyncio.wait_for(runner.run(nats_server.url, engine=vllm_engine), 180)
    assert status == 1  # "missing" and "garbage" failed for good: README's exit status 1

    good = events["good"]
    assert [e["keyframe"] for e in good if e["type"] == "caption"] == list(range(clip_spec.shots))
    assert [e.get("state") for e in good if e["type"] == "status"] == [
        "connecting",
        "live",
        "ended",
    ]
    for stream_id in ("missing", "garbage"):
        states = [(e["state"], e["detail"]) for e in events[stream_id]]
        assert [s for s, _ in states] == ["connecting", "failed"], states
        assert "Error" in states[-1][1]
    refused = [e["state"] for e in events["refused"]]
    assert refused[0] == "connecting" and "reconnecting" in refused and refused[-1] == "stopped"
    for stream_events in events.values():
        assert [e["seq"] for e in stream_events] == list(range(len(stream_events)))


async def test_a_file_is_replayed_at_the_engines_pace_without_losing_keyframes(
    tmp_path: Path, nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path
) -> None:
    spec = ClipSpec(shots=8, shot_frames=10, fps=25)
    clip = write_clip(tmp_path / "fast-cuts.mp4", spec)
    config = parse_config(
        {
            "streams": [{"id": "fast", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.1},
            **engine_and_nats(nats_server.url, "pace", tiny_model, short_captions=True),
            "pipeline": {"max_pending_keyframes": 1, "max_in_flight_per_stream": 1},
        }
    )
    seen: list[dict[str, Any]] = []
    status = await Runner(config, seen.append).run(nats_server.url, engine=vllm_engine)
    assert status == 0
    captions = [e for e in seen if e["type"] == "caption"]
    assert [c["frame"]["index"] for c in captions] == spec.cut_frames
    assert not [e for e in seen if e.get("state") == "keyframes_dropped"]


def test_sigterm_drains_publishes_and_exits_zero(
    tmp_path: Path, nats_server: EmbeddedNatsServer, vllm_server: str
) -> None:
    # The suite's `vllm serve` as the engine (kind openai): the drain is the runner's, the same
    # for every engine kind, and an in-process engine's start costs the suite about 100 s more
    # (test_engine_load_signals and test_no_orphans signal vidcaps with their own vLLM).
    clip = write_clip(tmp_path / "loop.mp4", ClipSpec(shots=2, shot_frames=25))
    config = tmp_path / "vidcap.yaml"
    engine = {"kind": "openai", "url": vllm_server, "model": "tiny-gemma3"}
    config.write_text(
        orjson.dumps(
            {
                "streams": [{"id": "looped", "url": str(clip), "loop": True}],
                **engine_and_nats(nats_server.url, "sig", stream_name="SIG"),
                "engine": engine,
            }
        ).decode()
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    # Read every line from the one buffered reader: communicate() after a partial read reads
    # the pipe itself and loses lines the reader had already buffered (an event went missing).
    output = []
    for line in process.stdout:  # at the third caption, ask it to stop; read on to the end
        output.append(line)
        if line.startswith("looped #") and " kf 2 " in line:
            process.send_signal(signal.SIGTERM)
        if line.startswith("vidcap: stopping:"):
            process.send_signal(signal.SIGTERM)  # an impatient second one: said, not silent
    assert process.wait(timeout=120) == 0, "".join(output)
    assert "vidcap: stopping: finishing the captions in flight" in "".join(output)  # said at once
    assert "vidcap: still stopping: the captions in flight" in "".join(output)
    printed = [line for line in "".join(output).splitlines() if line.startswith("looped #")]
    assert printed[-1].startswith(f"looped #{len(printed) - 1} status  stopped"), "".join(output)

    async def stored() -> list[dict[str, Any]]:
        client = await nats.connect(nats_server.url)
        subscription = await client.jetstream().subscribe("sig.>", ordered_consumer=True)
        info = await client.jetstream().stream_info("SIG")
        messages = [await subscription.next_msg(timeout=5) for _ in range(info.state.messages)]
        await client.close()
        return [orjson.loads(m.data) for m in messages]

    events = asyncio.run(stored())
    assert [e["seq"] for e in events] == list(range(len(printed)))
    assert events[-1]["state"] == "stopped"


def write_hls(source: Path, directory: Path) -> Path:
    """Remux a clip into an HLS VOD playlist with 1-second segments (PyAV's hls muxer)."""
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / "index.m3u8"
    options = {"hls_time": "1", "hls_playlist_type": "vod"}
    with (
        av.open(str(source)) as src,
        av.open(str(playlist), "w", format="hls", options=options) as out,
    ):
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                out.mux(packet)
    return playlist


@pytest.fixture
def http_directory(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a fresh directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def source_states(url: str, **settings: Any) -> list[tuple[str, str]]:
    """A real source's status reports (FFmpeg over HTTP) until it ends or would reconnect."""
    config = StreamConfig.model_validate({"id": "h", "url": url, **settings})
    reports: list[tuple[str, str]] = []
    stop = threading.Event()

    def report(state: str, detail: str, **_: Any) -> None:
        reports.append((state, detail))
        if state == "reconnecting":
            stop.set()

    for _ in VideoSource(config).frames(stop, SourceHealth(5.0, report), report):
        pass
    return reports


def test_a_vod_playlist_over_http_ends_at_its_end(
    http_directory: tuple[Path, str], sample_clip: Path, clip_spec: ClipSpec
) -> None:
    """A trial: a finished HLS playlist given as a URL (live by default) was read again and
    again, as fast as it downloaded, each pass captioned anew. Its length is known: it ends.
    `live: true` still reads it again; a playlist without its end marker is live."""
    root, base_url = http_directory
    vod = write_hls(sample_clip, root / "clip")
    url = f"{base_url}/clip/index.m3u8"
    states = source_states(url)
    assert [state for state, _ in states] == ["connecting", "live", "ended"], states
    assert states[-1][1].startswith(f"end of the recording after {clip_spec.frames} frames")
    again = source_states(url, live=True, reconnect_initial_s=0.1)
    assert [state for state, _ in again] == ["connecting", "live", "reconnecting"]
    open_ended = vod.read_text().replace("#EXT-X-ENDLIST\n", "")
    (root / "clip" / "live.m3u8").write_text(open_ended.replace("#EXT-X-PLAYLIST-TYPE:VOD\n", ""))
    live = VideoSource(
        StreamConfig.model_validate({"id": "h", "url": f"{base_url}/clip/live.m3u8"})
    )
    with av.open(f"{base_url}/clip/live.m3u8", timeout=(5, 5)) as container:
        assert not live._is_recording(container)


def test_a_recording_cut_short_fails_rather_than_ends(
    http_directory: tuple[Path, str], tmp_path: Path
) -> None:
    """A trial killed the HTTP server of a 192 s playlist at 98 s: FFmpeg skipped the
    segments it could not fetch and vidcap said `ended ... after 2940 frames`, exit status 0.
    Here the last half's segments are gone (404); the whole playlist still ends."""
    root, base_url = http_directory
    clip = write_clip(tmp_path / "eight.mp4", ClipSpec(shots=8, shot_frames=25))
    write_hls(clip, root / "clip")
    url = f"{base_url}/clip/index.m3u8"
    assert [state for state, _ in source_states(url)][-1] == "ended"
    for segment in range(4, 8):
        (root / "clip" / f"index{segment}.ts").unlink()
    states = source_states(url)
    assert [state for state, _ in states] == ["connecting", "live", "failed"], states
    assert states[-1][1].startswith("the recording ended early: 100 frames, 4.0 s of its 8.0 s")


def test_a_vod_playlist_is_timed_by_its_pts(
    http_directory: tuple[Path, str], sample_clip: Path, clip_spec: ClipSpec
) -> None:
    """A recording downloads faster than it plays: timed by the wall clock, as a live URL
    is, its frames came about a millisecond apart and the keyframe selector's gaps and
    heartbeat saw the whole clip as a moment. Its pipeline is told, to keep every keyframe."""
    root, base_url = http_directory
    write_hls(sample_clip, root / "clip")
    config = StreamConfig.model_validate({"id": "h", "url": f"{base_url}/clip/index.m3u8"})
    told: list[bool] = []

    def report(state: str, detail: str, **_: Any) -> None:
        pass

    source = VideoSource(config, lambda: told.append(True))
    frames = source.frames(threading.Event(), SourceHealth(5, report), report)
    times = [at.time_s for _, at in frames]
    assert told == [True]
    assert len(times) == clip_spec.frames
    assert times[-1] - times[0] == pytest.approx((clip_spec.frames - 1) / clip_spec.fps, abs=0.01)


# live unset: a URL, but a recording (its length is known); it was captioned once, at frame 0
@pytest.mark.parametrize("live", [False, None])
async def test_hls_over_http_is_captioned_like_a_file(
    live: bool | None,
    http_directory: tuple[Path, str],
    sample_clip: Path,
    clip_spec: ClipSpec,
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
) -> None:
    root, base_url = http_directory
    write_hls(sample_clip, root / "clip")
    config = parse_config(
        {
            "streams": [{"id": "hls", "url": f"{base_url}/clip/index.m3u8", "live": live}],
            **engine_and_nats(nats_server.url, "hls", tiny_model),
        }
    )
    seen: list[dict[str, Any]] = []
    assert await Runner(config, seen.append).run(nats_server.url, engine=vllm_engine) == 0
    captions = [e for e in seen if e["type"] == "caption"]
    assert [c["frame"]["index"] for c in captions] == clip_spec.cut_frames
    assert [e["state"] for e in seen if e["type"] == "status"] == ["connecting", "live", "ended"]
