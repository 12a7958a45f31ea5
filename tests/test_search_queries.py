"""The search index over a known event log: full-text queries with filters, logo airtime
and segments against answers computed by hand, duplicates changing nothing, and the CLI's
output (plain text with control characters removed, JSON, table, CSV, clear errors).
The log is made by the wire-format function and checked against the published schemas."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

import orjson
import pytest

from stream.bench.search_log import LogEvent, caption, caption_text, logo, status
from stream.cli import _parser, main
from stream.delivery import embedded_address
from stream.delivery.events import CaptionEvent, Envelope
from stream.delivery.snapshots import Snapshot, SnapshotOutcome
from stream.search.commands import configured_db, nats_settings
from stream.search.queries import SearchQuery, search
from stream.search.query_text import QueryError
from stream.search.reports import airtime, segments
from stream.search.store import IndexStore, SearchIndexError, StoredMessage, dump, reading
from tests.conftest import schema_violations

T0: Final = 1_780_000_000.0  # 2026-05-28T20:26:40Z
T0_ISO: Final = "2026-05-28T20:26:40Z"


def _at(stream: str, session: str, seq: int) -> Envelope:
    return Envelope(stream, session, seq)


def _ch3(seq: int) -> Envelope:
    return _at("ch3", "s1", seq)


def _ch4(seq: int, session: str = "a") -> Envelope:
    return _at("ch4", session, seq)


ANCHOR = caption_text(
    "A news anchor sits at a desk in a TV studio.",
    "An anchor reads the news.",
    objects=["desk", "microphone"],
    environment="TV studio",
    content_type="news broadcast",
    production_quality="professional studio",
    logos=["BBC logo, lower left"],
)
CROWD = caption_text(
    "A crowd cheers outdoors at a football stadium.",
    "Crowds cheer in a stadium.",
    objects=["flag", "crowd"],
    actions=["fans cheering"],
    environment="stadium, outdoors",
    content_type="sports",
    production_quality="amateur phone video",
    logos=["white Nike swoosh on a banner"],
)
STREET = caption_text(
    "A reporter walks down a street at night.",
    "A reporter on a street.",
    objects=["lamp post"],
    environment="street at night",
    content_type="news report",
)
ADVERT = caption_text(
    "A red can of soda on a table.",
    "A soda advert.",
    objects=["can"],
    content_type="advertisement",
    logos=["red Coca-Cola logo"],
)
SHOES = caption_text(
    "Nike shoes on a shop shelf.",
    "Shoes on a shelf.",
    objects=["shoes", "shelf"],
    logos=["Nike logo"],
)
BALL = caption_text(
    "A football lies on the grass.\x1b[31m",  # model text may carry anything
    "A ball on grass.\x1b]0;pwned\x07",
    objects=["ball"],
    logos=["Adidas logo"],
)

KNOWN_LOG: Final[list[LogEvent]] = [
    status(_ch3(0), "live", T0),
    caption(_ch3(1), 0, T0, ANCHOR, "start"),
    caption(_ch4(0), 0, T0 + 5, SHOES, "start"),
    caption(_ch3(2), 1, T0 + 10, ANCHOR, "interval"),
    logo(_ch3(3), "appeared", "BBC", [(1, T0), (2, T0 + 10)]),
    caption(_ch4(1), 1, T0 + 15, SHOES, "interval"),
    logo(_ch4(2), "appeared", "Nike", [(0, T0 + 5), (1, T0 + 15)]),
    caption(_ch3(4), 2, T0 + 20, CROWD, "cut"),
    caption(_ch3(5), 3, T0 + 30, CROWD, "interval"),
    logo(_ch3(6), "appeared", "Nike", [(4, T0 + 20), (5, T0 + 30)]),
    caption(_ch3(7), 4, T0 + 40, STREET, "cut"),
    status(_ch4(3), "stopped", T0 + 45),  # closes ch4's Nike: 5 -> 45
    caption(_ch3(8), 5, T0 + 50, None, "interval"),  # a failed caption
    caption(_ch3(9), 6, T0 + 60, STREET, "interval"),
    logo(_ch3(10), "disappeared", "BBC", [(2, T0 + 10), (9, T0 + 60)]),  # BBC: 0 -> 10
    logo(_ch3(11), "disappeared", "Nike", [(5, T0 + 30), (9, T0 + 60)]),  # Nike: 20 -> 30
    caption(_ch3(12), 7, T0 + 70, ADVERT, "cut"),
    caption(_ch3(13), 8, T0 + 80, ADVERT, "interval"),
    logo(_ch3(14), "appeared", "Coca-Cola", [(12, T0 + 70), (13, T0 + 80)]),  # open
    status(
        _ch4(4, "b"),
        "resumed",
        T0 + 100,
        previous_session="a",
        previous_end="stopped",
        last_seq=3,
        gap_s=55.0,
    ),
    caption(_ch4(5, "b"), 2, T0 + 100, BALL, "start"),
    caption(_ch4(6, "b"), 3, T0 + 110, BALL, "interval"),
    logo(_ch4(7, "b"), "appeared", "Adidas", [(5, T0 + 100), (6, T0 + 110)]),  # open
]
DUPLICATES: Final = [KNOWN_LOG[7], KNOWN_LOG[9], KNOWN_LOG[14]]
"""Events JetStream may hold twice (published again outside its duplicate window)."""


def test_the_known_log_is_valid_events() -> None:
    assert [v for event in KNOWN_LOG for v in schema_violations(event.payload)] == []


def build_index(path: Path, events: list[LogEvent], batch: int = 5) -> None:
    store = IndexStore(path, "VIDCAP")
    messages = [StoredMessage(n, e.payload) for n, e in enumerate(events, start=1)]
    for first in range(0, len(messages), batch):
        store.apply(messages[first : first + batch])
    store.close()


@pytest.fixture
def index(tmp_path: Path) -> Path:
    path = tmp_path / "index.db"
    build_index(path, KNOWN_LOG + DUPLICATES)
    return path


def _found(path: Path, query: SearchQuery) -> list[tuple[str, int]]:
    with reading(path) as db:
        return [(hit["stream"], hit["seq"]) for hit in search(db, query)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (SearchQuery("crowd"), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery("crowds cheering"), [("ch3", 5), ("ch3", 4)]),  # stemmed
        (SearchQuery('"football stadium"'), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery("street OR stadium"), [("ch3", 9), ("ch3", 7), ("ch3", 5), ("ch3", 4)]),
        (SearchQuery("news -night"), [("ch3", 2), ("ch3", 1)]),
        (SearchQuery("stad*"), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery("coca-cola"), [("ch3", 13), ("ch3", 12)]),
        (SearchQuery(logo="nike"), [("ch3", 5), ("ch3", 4), ("ch4", 1), ("ch4", 0)]),
        (SearchQuery("nike", stream="ch4"), [("ch4", 1), ("ch4", 0)]),
        (SearchQuery("anchor", since=T0 + 5), [("ch3", 2)]),
        (SearchQuery("crowd", until=T0 + 25), [("ch3", 4)]),
        (SearchQuery("crowd", until=T0), []),
        (SearchQuery("crowd", since=T0 + 3600), []),
        (SearchQuery(stream="ch4", until=T0 + 10), [("ch4", 0)]),
        (SearchQuery(object="flag"), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery(object="lamp"), [("ch3", 9), ("ch3", 7)]),
        (SearchQuery(content_type="SPORTS"), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery(quality="amateur"), [("ch3", 5), ("ch3", 4)]),
        (SearchQuery(content_type="news", object="desk"), [("ch3", 2), ("ch3", 1)]),
        (SearchQuery(content_type="100%"), []),  # LIKE wildcards are text
        (SearchQuery("crowd", limit=1), [("ch3", 5)]),
        (SearchQuery('NEAR(crowd stadium) OR "x"'), []),  # FTS5 syntax is only text
        (SearchQuery("description:anchor"), []),
    ],
)
def test_queries_match_hand_computed_answers(
    index: Path, query: SearchQuery, expected: list[tuple[str, int]]
) -> None:
    assert _found(index, query) == expected


def test_without_text_every_ok_caption_is_listed_newest_first(index: Path) -> None:
    assert _found(index, SearchQuery(stream="ch3", limit=100)) == [
        ("ch3", seq)
        for seq in (13, 12, 9, 7, 5, 4, 2, 1)  # 8, failed, is not
    ]


def test_a_hit_names_its_snapshot(tmp_path: Path) -> None:
    where = _at("ch5", "ab12cd34ef56", 0)
    plain = caption(where, 0, T0, CROWD)
    picture = Snapshot("VIDCAP_SNAPSHOTS", "ch5/ab12cd34ef56/0", 30000, 896, 504)
    assert isinstance(plain.event, CaptionEvent)
    event = dataclasses.replace(plain.event, snapshot=SnapshotOutcome(picture, None))
    older = caption(_at("ch5", "ab12cd34ef56", 1), 1, T0 + 1, CROWD)  # caption/1-like: none
    build_index(tmp_path / "index.db", [LogEvent(where, event), older])
    with reading(tmp_path / "index.db") as db:
        hits = search(db, SearchQuery("crowd", stream="ch5"))
    assert [h["snapshot"] for h in hits] == [None, {"bucket": picture.bucket, "name": picture.name}]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('crowd "stadium', "unbalanced double quote"),
        ("-crowd", "needs a term before it"),
        ("crowd OR", "needs a term after it"),
        ("x" * 501, "longer than 500"),
        (" ".join(["w"] * 33), "more than 32"),
    ],
)
def test_unusable_search_text_is_a_clear_error(index: Path, text: str, why: str) -> None:
    with pytest.raises(QueryError, match=why):
        _found(index, SearchQuery(text))


def test_bounds_are_checked() -> None:
    with pytest.raises(QueryError, match="limit"):
        SearchQuery(limit=1001)
    with pytest.raises(QueryError, match="window is empty"):
        SearchQuery(since=T0, until=T0)


def test_airtime_matches_hand_computed_intervals(index: Path) -> None:
    with reading(index) as db:
        whole = airtime(db, T0, T0 + 200)
        part = airtime(db, T0 + 25, T0 + 90)
        ch4 = airtime(db, T0, T0 + 200, "ch4")
    assert [
        (r["stream"], r["brand"], r["seconds"], r["appearances"], r["open"]) for r in whole
    ] == [
        ("ch3", "Coca-Cola", 130.0, 1, 1),  # open since 70: clipped to the window's end
        ("ch3", "BBC", 10.0, 1, 0),
        ("ch3", "Nike", 10.0, 1, 0),
        ("ch4", "Adidas", 100.0, 1, 1),
        ("ch4", "Nike", 40.0, 1, 0),  # closed by session a's `stopped`
    ]
    assert [(r["stream"], r["brand"], r["seconds"]) for r in part] == [
        ("ch3", "Coca-Cola", 20.0),
        ("ch3", "Nike", 5.0),
        ("ch4", "Nike", 20.0),
    ]
    assert [r["brand"] for r in ch4] == ["Adidas", "Nike"]


def test_segments_merge_the_keyframes_of_one_shot(index: Path) -> None:
    with reading(index) as db:
        shots = segments(db, T0, T0 + 200, "ch3")
    assert [
        (s["start"], s["end"], s["keyframes"], s["first_seq"], s["last_seq"], s["summary"])
        for s in shots
    ] == [
        (
            "2026-05-28T20:26:40.000+00:00",
            "2026-05-28T20:27:00.000+00:00",
            2,
            1,
            2,
            ANCHOR["summary"],
        ),
        (
            "2026-05-28T20:27:00.000+00:00",
            "2026-05-28T20:27:20.000+00:00",
            2,
            4,
            5,
            CROWD["summary"],
        ),
        (
            "2026-05-28T20:27:20.000+00:00",
            "2026-05-28T20:27:50.000+00:00",
            3,
            7,
            9,
            STREET["summary"],
        ),
        (
            "2026-05-28T20:27:50.000+00:00",
            "2026-05-28T20:28:00.000+00:00",
            2,
            12,
            13,
            ADVERT["summary"],
        ),
    ]


def test_duplicates_and_batching_change_nothing(tmp_path: Path, index: Path) -> None:
    once = tmp_path / "once.db"
    build_index(once, KNOWN_LOG, batch=1)
    with reading(once) as a, reading(index) as b:
        left, right = dump(a), dump(b)
    # js_seq differs only where the duplicates came later: none of the originals moved.
    assert left == right


def test_cli_search_prints_plain_text_without_control_characters(
    index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "ball", "--db", str(index)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "2026-05-28T20:28:30.000+00:00  ch4 #6 kf 3  A ball on grass.]0;pwned  "
        "[logos: Adidas logo]  [js 22]",
        "2026-05-28T20:28:20.000+00:00  ch4 #5 kf 2  A ball on grass.]0;pwned  "
        "[logos: Adidas logo]  [js 21]",
    ]
    assert main(["search", "ball", "--db", str(index), "--json", "--limit", "1"]) == 0
    hit = orjson.loads(capsys.readouterr().out)
    assert (hit["stream"], hit["seq"], hit["logos"]) == ("ch4", 6, ["Adidas logo"])


def test_cli_reports_as_table_csv_and_json(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    window = ["--db", str(index), "--since", T0_ISO, "--until", "2026-05-28T20:30:00Z"]
    assert main(["report", "airtime", *window]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "stream  brand      on_screen  seconds  appearances  open",
        "ch3     Coca-Cola  0:02:10      130.0            1     1",
        "ch3     BBC        0:00:10       10.0            1     0",
        "ch3     Nike       0:00:10       10.0            1     0",
        "ch4     Adidas     0:01:40      100.0            1     1",
        "ch4     Nike       0:00:40       40.0            1     0",
    ]
    assert main(["report", "airtime", *window, "--stream", "ch4", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "stream,brand,on_screen,seconds,appearances,open",
        "ch4,Adidas,0:01:40,100.0,1,1",
        "ch4,Nike,0:00:40,40.0,1,0",
    ]
    assert main(["report", "segments", *window, "--stream", "ch4", "--format", "json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["since"] == "2026-05-28T20:26:40.000+00:00"
    assert [(s["session"], s["keyframes"], s["seconds"]) for s in document["segments"]] == [
        ("a", 2, 40.0),  # to session a's last event (stopped at +45)
        ("b", 2, 10.0),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "x", "--since", "yesterday"], "--since 'yesterday': use an ISO time"),
        (["search", "x", "--until", "99999999999d"], "--until '99999999999d'"),
        (["search", "x", "--limit", "100000"], "limit must be between 1 and 1000"),
        (["search", 'x "y'], "unbalanced double quote"),
        (["report", "airtime", "--since", "1h", "--until", "2h"], "window is empty"),
        (["report", "segments", "--since", "1h", "--limit", "0"], "--limit must be between"),
        (["index", "--durable", "a b"], "--durable 'a b': use 1-64 of"),
    ],
)
def test_cli_refuses_bad_arguments_clearly(
    index: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*argv, "--db", str(index)]) == 2
    assert message in capsys.readouterr().err


def test_cli_without_an_index_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "x", "--db", str(tmp_path / "none.db")]) == 2
    assert "run `vidcap index`" in capsys.readouterr().err


def test_index_takes_nats_settings_from_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vidcap.yaml"
    config.write_text(
        "streams: [{id: a, url: a.mp4}]\n"
        "nats: {url: null, stream_name: EVENTS, user: idx, password: '${IDX_PASSWORD}'}\n"
        "http: {token: '${NOT_SET_FOR_THE_INDEX}'}\n"  # only vidcap run needs it
        f"index: {{db: {tmp_path / 'run.db'}}}\n"
    )
    monkeypatch.setenv("IDX_PASSWORD", "s3cret-pass")
    args = _parser().parse_args(["index", "--config", str(config)])
    settings = nats_settings(args)
    assert configured_db(args.config) == tmp_path / "run.db"  # the file its run serves
    assert (settings.url, settings.stream_name, settings.user) == (
        "nats://127.0.0.1:4222",  # null is vidcap run's embedded server: none runs
        "EVENTS",
        "idx",
    )
    embedded_address.remember("nats://127.0.0.1:43210")  # as a running vidcap's (this pid)
    try:
        assert nats_settings(args).url == "nats://127.0.0.1:43210"
    finally:
        embedded_address.forget()
    assert settings.password is not None and settings.password.get_secret_value() == "s3cret-pass"
    args = _parser().parse_args(
        ["index", "--config", str(config), "--nats", "nats://10.0.0.2:4222", "--stream-name", "X"]
    )
    assert (nats_settings(args).url, nats_settings(args).stream_name) == (
        "nats://10.0.0.2:4222",
        "X",
    )


def test_a_batch_delivered_again_is_skipped_by_position(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    messages = [StoredMessage(n, e.payload) for n, e in enumerate(KNOWN_LOG, start=1)]
    store = IndexStore(path, "VIDCAP")
    assert store.apply(messages[:10]).indexed == 10
    with reading(path) as db:
        before = dump(db)
    again = store.apply(messages[5:10])  # its ack was lost: JetStream delivers it again
    assert (again.indexed, again.duplicates, again.skipped, store.position) == (0, 0, 5, 10)
    with reading(path) as db:
        assert dump(db) == before
    store.close()
    with pytest.raises(SearchIndexError, match="follows JetStream stream 'VIDCAP', not 'OTHER'"):
        IndexStore(path, "OTHER")
