"""Eight streams in one process over the fault matrix: unusual but valid video (8K, 10-bit
4:4:4, grey, variable frame rate, rotated, corrupt packets) is captioned; a source with no
video and an unreachable camera get status events; nobody disturbs anybody else."""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import fastjsonschema
import numpy as np
from PIL import Image

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.delivery.snapshots import encode_jpeg
from stream.runner import Runner
from stream.sample_clip import ClipSpec, shot_frame, write_clip
from stream.sources.model_picture import ModelScaler
from tests.conftest import engine_and_nats, free_port

VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}
SPEC = ClipSpec(shots=2, shot_frames=12)


def write_video(
    path: Path,
    codec: str,
    pix_fmt: str,
    frames: list[np.ndarray],
    pts: list[int] | None = None,
    rotation: int = 0,
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec)
        assert isinstance(stream, av.VideoStream)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        # Millisecond time base in the encoder too, or it snaps pts to a fixed frame rate.
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = pts[i] if pts else i * 40
            frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def shots() -> list[np.ndarray]:
    return [shot_frame(SPEC, s, o) for s in range(SPEC.shots) for o in range(SPEC.shot_frames)]


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        assert isinstance(stream, av.AudioStream)
        for i in range(20):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def corrupt_copy(source: Path, target: Path) -> Path:
    """Overwrite stretches in the middle of the media data with noise, as a lossy link would."""
    data = bytearray(source.read_bytes())
    noise = np.random.default_rng(7).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()
    for start in range(len(data) // 3, 2 * len(data) // 3, len(data) // 8):
        data[start : start + 1500] = noise[:1500]
    target.write_bytes(bytes(data))
    return target


def test_a_rotated_source_reaches_the_model_upright(tmp_path: Path) -> None:
    pixels = np.zeros((240, 320, 3), np.uint8)
    pixels[:, :40] = 255  # a white band down the left edge, as stored
    clip = write_video(tmp_path / "phone.mp4", "libx264", "yuv420p", [pixels] * 3, rotation=90)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
    assert frame.rotation == 90
    picture = ModelScaler(896)(frame)
    # The planes are as stored: the snapshot is encoded from the turned picture instead.
    assert picture.planes is None
    snapshot = Image.open(io.BytesIO(encode_jpeg(picture.image, 80, picture.planes)))
    for image in (np.asarray(picture.image), np.asarray(snapshot)):
        assert image.shape[:2] == (320, 240)  # portrait, as a player shows it
        assert image[-30:].mean() > 200 and image[:-50].mean() < 30  # the band is at the bottom


async def test_eight_streams_over_the_fault_matrix(
    tmp_path: Path, nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path
) -> None:
    big_shots = [  # 7680x4320
        np.repeat(np.repeat(shot_frame(SPEC, shot, 0), 18, axis=0), 24, axis=1) for shot in (0, 1)
    ]
    big = [big_shots[0]] * 5 + [big_shots[1]] * 5
    vfr_pts = np.cumsum([0] + [20, 60, 33, 90, 40] * 5)[: len(shots())].tolist()
    sources = {
        "eight-k": write_video(tmp_path / "8k.mp4", "libx264", "yuv420p", big),
        "hibit-444": write_video(tmp_path / "444.mkv", "ffv1", "yuv444p10le", shots()),
        "grey": write_video(tmp_path / "grey.mkv", "ffv1", "gray", shots()),
        "vfr": write_video(tmp_path / "vfr.mkv", "libx264", "yuv420p", shots(), pts=vfr_pts),
        "rotated": write_video(tmp_path / "rot.mp4", "libx264", "yuv420p", shots(), rotation=-90),
        "corrupt": corrupt_copy(write_clip(tmp_path / "ok.mp4", SPEC), tmp_path / "bad.mp4"),
    }
    bad = {
        "audio-only": str(write_audio_only(tmp_path / "talk.m4a")),
        "unreachable": f"rtsp://127.0.0.1:{free_port()}/cam",
    }
    config = parse_config(
        {
            "streams": [{"id": k, "url": str(v)} for k, v in sources.items()]
            + [
                {"id": k, "url": v, "open_timeout_s": 1, "reconnect_initial_s": 0.2}
                for k, v in bad.items()
            ],
            "keyframes": {"min_gap_s": 0.1},
            **engine_and_nats(nats_server.url, "matrix", tiny_model, short_captions=True),
        }
    )
    assert len(config.streams) == 8
    events: dict[str, list[dict[str, Any]]] = {s.id: [] for s in config.streams}
    files_done: set[str] = set()

    def on_event(event: dict[str, Any]) -> None:
        events[event["stream"]].append(event)
        if event.get("state") in ("ended", "failed") and event["stream"] in sources:
            files_done.add(event["stream"])
            if files_done == set(sources):
                runner.request_stop()  # the unreachable camera would be retried forever

    runner = Runner(config, on_event)
    # "audio-only" fails for good (no video): README's exit status 1; the others carry on.
    assert await asyncio.wait_for(runner.run(nats_server.url, engine=vllm_engine), 300) == 1

    for stream_id, stream_events in events.items():
        assert [e["seq"] for e in stream_events] == list(range(len(stream_events))), stream_id
        for event in stream_events:
            VALIDATE[event["type"]](event)
    for stream_id in sources:
        states = [e["state"] for e in events[stream_id] if e["type"] == "status"]
        assert states == ["connecting", "live", "ended"], (stream_id, states)
        captions = [e for e in events[stream_id] if e["type"] == "caption"]
        assert captions and captions[0]["selection"]["reason"] == "start", stream_id
    for stream_id in ("eight-k", "hibit-444", "grey", "vfr", "rotated"):
        cuts = [e for e in events[stream_id] if e["type"] == "caption"]
        assert [c["selection"]["reason"] for c in cuts] == ["start", "cut"], stream_id
    vfr_times = [c["frame"]["time_s"] for c in events["vfr"] if c["type"] == "caption"]
    assert vfr_times == [0.0, vfr_pts[SPEC.shot_frames] / 1000]  # media time, not frame count

    audio = [(e["state"], e["detail"]) for e in events["audio-only"]]
    assert audio == [("connecting", audio[0][1]), ("failed", audio[1][1])]
    assert "no video stream" in audio[1][1] and "audio" in audio[1][1]
    unreachable = [e["state"] for e in events["unreachable"]]
    assert unreachable[0] == "connecting" and unreachable[-1] == "stopped"
    assert set(unreachable[1:-1]) == {"reconnecting"} and len(unreachable) >= 3
