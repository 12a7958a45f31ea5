"""`vidcap index`, `vidcap search` and `vidcap report airtime|segments`.

They take NATS settings as the other commands do: ``--config FILE`` (its ``nats`` section:
URL, credentials, subject prefix, stream name), overridden by ``--nats`` and
``--stream-name``. The index file defaults to ``<cache>/search/index.db``
(``$VIDCAP_CACHE``, else ``~/.cache/vidcap``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from engine.cache import cache_dir
from engine.errors import VidcapError
from stream.config import ConfigError, IndexConfig, NatsConfig, load_yaml, parse_section
from stream.delivery import embedded_address
from stream.redact import redact
from stream.search import output
from stream.search.follower import DEFAULT_DURABLE, Indexer
from stream.search.queries import DEFAULT_LIMIT, MAX_LIMIT, SearchQuery, iso, parse_moment, search
from stream.search.query_text import QueryError
from stream.search.reports import DEFAULT_SEGMENTS, MAX_SEGMENTS, airtime, segments
from stream.search.store import reading

PROGRESS_EVERY_S: Final = 5.0
AIRTIME_COLUMNS: Final = ("stream", "brand", "on_screen", "seconds", "appearances", "open")
SEGMENT_COLUMNS: Final = (
    "stream",
    "start",
    "end",
    "seconds",
    "keyframes",
    "first_seq",
    "last_seq",
    "summary",
)


class NoIndexError(VidcapError):
    """There is no index file where one was looked for."""


def default_db() -> Path:
    return cache_dir() / "search" / "index.db"


def add_commands(commands: Any) -> None:
    """Register the search commands on vidcap's subcommand parser."""
    index = commands.add_parser("index", help="follow the JetStream events into a search index")
    _nats_options(index)
    _db_option(index)
    index.add_argument("--rebuild", action="store_true", help="empty the index, re-read JetStream")
    index.add_argument("--durable", default=DEFAULT_DURABLE, help="JetStream consumer name")
    index.set_defaults(handler=_index)

    find = commands.add_parser("search", help="search the indexed captions (newest first)")
    find.add_argument("text", nargs="?", default="", help='words, "phrases", word*, OR, -word')
    _db_option(find)
    _window_options(find, required=False)
    find.add_argument("--logo", help="words in one of the caption's logos")
    find.add_argument("--object", help="words in one of the caption's objects")
    find.add_argument("--content-type", help="text content_type contains")
    find.add_argument("--quality", help="text production_quality contains")
    find.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most {MAX_LIMIT}")
    find.add_argument("--json", action="store_true", help="one JSON object per result")
    find.set_defaults(handler=_search)

    report = commands.add_parser("report", help="airtime of logos, shot segments")
    reports = report.add_subparsers(required=True, metavar="REPORT")
    for name, summary, handler in (
        ("airtime", "on-screen time per brand per stream", _airtime),
        ("segments", "shots: consecutive keyframes of one shot", _segments),
    ):
        sub = reports.add_parser(name, help=summary)
        _db_option(sub)
        _window_options(sub, required=True)
        sub.add_argument("--format", choices=["table", "csv", "json"], default="table")
        sub.set_defaults(handler=handler)
        if name == "segments":
            sub.add_argument(
                "--limit", type=int, default=DEFAULT_SEGMENTS, help=f"≤ {MAX_SEGMENTS}"
            )


def _nats_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file; its nats section is used")
    parser.add_argument(
        "--nats",
        help="NATS URL (default: the config's, else the embedded server of the vidcap running "
        f"here, else {embedded_address.DEFAULT_URL})",
    )
    parser.add_argument("--stream-name", help="JetStream stream (default: the config's, VIDCAP)")


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, help=f"index file (default {default_db()})")


def _window_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--since", required=required, help="ISO time (UTC if no zone), or 90s / 10m / 2h / 1d ago"
    )
    parser.add_argument("--until", help="as --since (default: now)")
    parser.add_argument("--stream", help="only this stream id")


def nats_settings(args: argparse.Namespace) -> NatsConfig:
    """The config file's nats section (if any) with the command line's overrides."""
    data: dict[str, Any] = {}
    if args.config is not None:
        data = dict(load_yaml(args.config, ("nats",)).get("nats") or {})
    if args.nats:
        data["url"] = args.nats
    if args.stream_name:
        data["stream_name"] = args.stream_name
    if not data.get("url"):  # null in a config means vidcap run's embedded server
        data["url"] = embedded_address.tool_nats_url(None, "vidcap index")
    return parse_section(NatsConfig, data, str(args.config or "command line") + ": nats")


def _index(args: argparse.Namespace) -> int:
    config = nats_settings(args)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.durable):
        raise ConfigError(f"--durable {args.durable[:80]!r}: use 1-64 of A-Z a-z 0-9 _ -")
    db = args.db or configured_db(args.config) or default_db()
    # Its own process: writing on the loop's thread is faster (no GIL contention).
    indexer = Indexer(config, db, durable=args.durable, rebuild=args.rebuild, writer_thread=False)
    where = f"{redact(config.url or '')} stream {config.stream_name}"
    print(f"vidcap index: {where} -> {db} (Ctrl-C stops)", file=sys.stderr, flush=True)
    asyncio.run(_follow_until_signal(indexer))
    progress = indexer.progress
    print(
        f"vidcap index: stopped; {progress.indexed} events indexed in this run, at stream "
        f"sequence {progress.position}",
        file=sys.stderr,
    )
    return 0


def configured_db(config: Path | None) -> Path | None:
    """The config file's ``index.db``: the file its `vidcap run` serves search from."""
    if config is None:
        return None
    data = load_yaml(config, ("index",)).get("index") or {}
    return parse_section(IndexConfig, data, f"{config}: index").db


async def _follow_until_signal(indexer: Indexer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reporter = asyncio.create_task(_report_progress(indexer))
    try:
        await indexer.run(stop)
    finally:
        reporter.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _report_progress(indexer: Indexer) -> None:
    """A line when the index catches up, then every few seconds while new events come."""
    shown = (-1, False)
    once_caught_up = False
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S if shown[1] else 1.0)
        p = indexer.progress
        if (p.position, p.caught_up) == shown or not (p.caught_up or p.indexed):
            continue  # nothing new, or nothing yet (NATS or the stream not there)
        # Once caught up, each new event is followed, not caught up with (a trial read
        # "catching up" for every event after "up to date").
        state = "up to date" if p.caught_up else "following" if once_caught_up else "catching up"
        once_caught_up = once_caught_up or p.caught_up
        print(
            f"vidcap index: {state}: {p.indexed} events indexed ({p.duplicates} duplicates, "
            f"{p.skipped} skipped), at stream sequence {p.position}",
            file=sys.stderr,
            flush=True,
        )
        shown = (p.position, p.caught_up)


def _search(args: argparse.Namespace) -> int:
    since, until = _window(args, until_now=False)
    query = SearchQuery(
        text=args.text,
        stream=args.stream,
        since=since,
        until=until,
        logo=args.logo,
        object=args.object,
        content_type=args.content_type,
        quality=args.quality,
        limit=args.limit,
    )
    hits = _query(args, lambda db: search(db, query))
    for hit in hits:
        _out(output.json_line(hit) if args.json else output.search_line(hit))
    if not hits and not args.json:
        print("vidcap search: no captions match", file=sys.stderr)
    return 0


def _airtime(args: argparse.Namespace) -> int:
    since, until = _window(args, until_now=True)
    assert since is not None and until is not None
    rows = _query(args, lambda db: airtime(db, since, until, args.stream))
    for row in rows:
        row["on_screen"] = output.duration(row["seconds"])
    window = {"since": iso(since), "until": iso(until)}
    _print_report(args.format, rows, AIRTIME_COLUMNS, {**window, "airtime": rows})
    return 0


def _segments(args: argparse.Namespace) -> int:
    since, until = _window(args, until_now=True)
    assert since is not None and until is not None
    if not 1 <= args.limit <= MAX_SEGMENTS:
        raise QueryError(f"--limit must be between 1 and {MAX_SEGMENTS}")
    rows = _query(args, lambda db: segments(db, since, until, args.stream, args.limit))
    window = {"since": iso(since), "until": iso(until)}
    _print_report(args.format, rows, SEGMENT_COLUMNS, {**window, "segments": rows})
    return 0


def _print_report(
    kind: str, rows: list[dict[str, Any]], columns: tuple[str, ...], document: dict[str, Any]
) -> None:
    if kind == "json":
        _out(output.json_line(document))
    elif kind == "csv":
        _out(output.csv_text(rows, columns))
    else:
        _out(output.table(rows, columns))


def _out(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) ends the output quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


def _window(args: argparse.Namespace, *, until_now: bool) -> tuple[float | None, float | None]:
    since = parse_moment("--since", args.since)
    until = parse_moment("--until", args.until)
    return since, until if until is not None or not until_now else time.time()


def _query(
    args: argparse.Namespace, run: Callable[[Any], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    db = args.db or default_db()
    if not db.exists():
        raise NoIndexError(f"no search index at {db}: run `vidcap index` (or give --db)")
    with reading(db) as connection:
        return run(connection)
