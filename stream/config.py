"""Typed, validated configuration. Unknown keys and bad values fail at start-up, by name."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.config import EngineConfig
from engine.errors import VidcapError
from stream.ids import validate_stream_id

StreamId = Annotated[str, AfterValidator(validate_stream_id)]
# What FFmpeg opens as a URL (its protocols, and the RTSP demuxer's schemes), and WHIP's own.
URL_SCHEMES = sorted(
    """rtsp rtsps rtmp rtmps rtmpe rtmpt rtmpte rtmpts http https hls srt rist rtp srtp udp
    udplite tcp tls file ftp sftp smb mmsh mmst icecast data unix whip""".split()
)
_PROTOCOL_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(?::|,.*:)", re.DOTALL)
"""How FFmpeg tells a protocol from a file name: scheme characters, then ':' ("concat:a|b"),
or ',' with a ':' later ("subfile,,start,0,end,0,,:/etc/passwd", protocol options)."""
API_URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "hls", "srt"})
"""Schemes a stream added through the API may use (or a file path): network video sources,
none that reaches local files or raw sockets (file, data, tcp, udp, unix, ...)."""
_SECRET_KEY = re.compile(r"(?i)(^|[._])(token|password|credential|secret|seed)$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(VidcapError):
    """The configuration cannot be used; the message names each bad key and value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SectionT = TypeVar("SectionT", bound=BaseModel)


class StreamConfig(_Section):
    id: StreamId
    """Stream id; becomes a NATS subject token (A-Z a-z 0-9 _ -)."""
    url: str = Field(min_length=1)
    """File path, rtsp://, rtsps://, http(s):// (HLS) or any URL FFmpeg opens."""
    live: bool | None = None
    """Live sources reconnect when they end; default: true for network URLs, false for files.
    Left unset, an http(s) URL whose length is known (a finished HLS playlist) is read as a
    file is: timed by its pts, each keyframe waiting for the engine, ended at its end."""
    loop: bool = False
    """Replay a file forever (demos and soak tests)."""
    resume: bool = True
    """A file whose earlier run was interrupted (vidcap killed mid-way) continues after the
    last keyframe JetStream holds for it; false: from the start (seq still goes on)."""
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    """Longest wait for a source to open."""
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    """Longest wait for data once open; FFmpeg reports a frozen server after about twice this."""
    stall_timeout_s: float = Field(5.0, gt=0, le=3600)
    """A live source that sends no frame for this long is reported ``stalled`` (it keeps
    waiting for data until the read timeout, then reconnects)."""
    reconnect_initial_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)
    reconnect_jitter: float = Field(0.2, ge=0, lt=1)
    """Each backoff delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    reconnect_max_attempts: int = Field(0, ge=0)
    """Consecutive failed reconnects before the stream is ``failed``; 0 retries forever."""
    options: dict[str, str] = Field(default_factory=dict)
    """Extra FFmpeg demuxer options, passed through unchanged."""
    priority: int = Field(0, ge=-100, le=100)
    """Under overload, a free engine slot goes to the waiting stream of highest priority
    first; streams of one priority share in turn."""
    max_staleness_s: float | None = Field(None, gt=0, le=3600)
    """A keyframe that would reach the engine later than this after capture is dropped and
    reported (``keyframes_dropped``, reason ``deadline``); none: no deadline."""
    max_pixels: int = Field(7680 * 4320, ge=64 * 64, le=2**31 - 1)
    """Frames with more pixels than this fail the stream (``failed``, nothing decoded at that
    size): a decompression bomb, or a camera set wrong. Default 8K UHD, 7680x4320."""

    @property
    def is_live(self) -> bool:
        if self.live is not None:
            return self.live
        return re.match(r"^[a-z][a-z0-9+.-]*://", self.url) is not None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise ValueError("control characters in a URL")
        if "://" not in url and _PROTOCOL_PREFIX.match(url):
            # FFmpeg reads "concat:a|b", "subfile,,...:" as protocols, not as file names.
            raise ValueError("a protocol prefix without //; write a file path as ./name")
        scheme = url.split("://", 1)[0].lower() if "://" in url else None
        if scheme is not None and scheme not in URL_SCHEMES:
            near = _nearest_schemes(scheme)
            hint = f" (did you mean {' or '.join(f'{n}://' for n in near)}?)" if near else ""
            raise ValueError(f"unknown URL scheme {scheme}://{hint}; a file path needs none")
        return url

    @model_validator(mode="after")
    def _backoff_order(self) -> StreamConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= "
                f"reconnect_initial_s ({self.reconnect_initial_s})"
            )
        return self


def _nearest_schemes(scheme: str) -> list[str]:
    """Schemes a typo may have meant: swapped letters first (rtps: rtsp), then look-alikes."""
    swapped = [known for known in URL_SCHEMES if sorted(known) == sorted(scheme)]
    alike = difflib.get_close_matches(scheme, URL_SCHEMES, n=2)
    return list(dict.fromkeys(swapped + alike))[:2]


class KeyframeConfig(_Section):
    threshold: float = Field(30.0, gt=0, le=100)
    """Picture-structure change (0-100) between consecutive frames that can be a cut."""
    histogram_threshold: float = Field(15.0, gt=0, le=100)
    """Colour-histogram change (0-100) that confirms a cut or a settled transition."""
    adaptive_ratio: float = Field(3.0, ge=1, le=100)
    """Without a colour change, a cut must score this many times the recent average."""
    flash_frames: int = Field(3, ge=0, le=30)
    """A change that reverts within this many frames is a flash; a cut is confirmed this many
    frames after it (a gradual transition `settle_frames` after it ends)."""
    settle_frames: int = Field(6, ge=1, le=300)
    """A gradual transition has ended when the picture's overall look held this many frames."""
    min_gap_s: float = Field(0.5, ge=0, le=3600)
    """No two keyframes closer than this (stream time); a cut held back is taken after it."""
    max_interval_s: float = Field(10.0, gt=0, le=86400)
    """Heartbeat: a keyframe at least this often, so a static camera is still captioned."""
    analysis_width: int = Field(64, ge=48, le=640)
    """Width of the downscaled picture the scores are computed on. Below ~48 pixels a small
    moving object becomes most of the picture's structure and reads as a scene change."""

    @model_validator(mode="after")
    def _gap_below_heartbeat(self) -> KeyframeConfig:
        if self.min_gap_s > self.max_interval_s:
            raise ValueError(
                f"min_gap_s ({self.min_gap_s}) must be <= max_interval_s ({self.max_interval_s})"
            )
        return self


NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")


def check_nats_url(url: str | None) -> str | None:
    """Each comma-separated server is host:port or a nats://, tls://, ws:// or wss:// URL
    (an http:// URL was taken, then retried for ever as an unknown host)."""
    for server in (url or "").split(","):
        scheme = server.strip().split("://", 1)[0].lower() if "://" in server else "nats"
        if scheme not in NATS_SCHEMES:
            schemes = ", ".join(f"{name}://" for name in NATS_SCHEMES)
            raise ValueError(f"{scheme}:// is not a NATS URL: use {schemes} (or host:port)")
    return url


class NatsConfig(_Section):
    url: str | None = None
    """nats://host:port (several, comma-separated, for a cluster); empty starts an embedded
    nats-server on 127.0.0.1."""
    subject_prefix: str = Field("vidcap", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    jetstream: bool = True
    stream_name: str = Field("VIDCAP", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """JetStream stream created (if missing) over '<subject_prefix>.>'."""
    duplicate_window_s: float = Field(120.0, gt=0)
    max_age_s: float = Field(7 * 86400.0, ge=0)
    """JetStream retention when vidcap creates the stream: events older than this are
    removed (0: kept until max_bytes)."""
    max_bytes: int = Field(-1, ge=-1)
    """JetStream retention by size when vidcap creates the stream (-1: no limit)."""
    replicas: int = Field(1, ge=1, le=5)
    """Copies JetStream keeps of what vidcap creates (the events stream, the key-value
    buckets): 3 on a three-node cluster, so losing a server loses nothing."""
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = None
    """A NATS credentials file (JWT + nkey seed), for operator-mode servers."""
    nkeys_seed_file: Path | None = None
    """A file holding an nkey seed (``SU...``), for servers that list users by nkey."""
    tls_ca_file: Path | None = None
    """CA bundle that signed the server's certificate (use with ``tls://`` URLs)."""
    tls_cert_file: Path | None = None
    """Client certificate, for servers that verify clients (``verify: true``)."""
    tls_key_file: Path | None = None
    """The client certificate's private key."""
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    ack_timeout_s: float = Field(5.0, gt=0, le=120)
    outbox_size: int = Field(10_000, ge=1)
    """Events (all streams) waiting for NATS; captioning goes on while NATS is away."""
    outbox_max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Bytes of event JSON (all streams) waiting for NATS; whichever of this and outbox_size
    is reached first makes the outbox full."""
    outbox_full: Literal["block", "drop_oldest"] = "block"
    """block: streams wait (live streams then drop keyframes, reported); drop_oldest: the
    oldest waiting events are replaced by an ``events_dropped`` status event in their place."""
    max_pending_acks: int = Field(1024, ge=1, le=100_000)
    """JetStream publishes sent ahead of their acks (pipelining)."""
    flush_timeout_s: float = Field(30.0, ge=0, le=3600)
    """At shutdown, how long to keep trying to deliver what is in the outbox."""

    @model_validator(mode="after")
    def _window_within_retention(self) -> NatsConfig:
        # JetStream refuses to create a stream whose duplicate window outlasts its messages.
        if self.max_age_s and self.duplicate_window_s > self.max_age_s:
            raise ValueError(
                f"duplicate_window_s ({self.duplicate_window_s:g}) must be <= max_age_s "
                f"({self.max_age_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair_complete(self) -> NatsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    @field_validator("url")
    @classmethod
    def _url_is_nats(cls, url: str | None) -> str | None:
        return check_nats_url(url)


class WorkerConfig(_Section):
    """`vidcap worker`: serve a local engine to `vidcap run`s over NATS."""

    engine: EngineConfig = EngineConfig()
    nats: NatsConfig
    concurrency: int = Field(32, ge=1, le=4096)
    """Requests this worker works on at once (vLLM batches them)."""
    max_image_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    """Requests whose JPEG is larger are refused (`vidcap run` sends under 900 kB, and NATS's
    default max_payload is 1 MiB)."""
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64, le=1 << 28)
    """Requests whose JPEG declares more pixels are refused before it is decoded (a 518 kB
    JPEG can declare 13000x13000); `vidcap run` sends at most engine.image_size a side."""
    max_tokens: int = Field(4096, ge=1, le=1 << 20)
    """A request's token budget is clamped to this (it may ask for more after truncations)."""

    @model_validator(mode="after")
    def _serves_locally(self) -> WorkerConfig:
        if self.engine.kind == "nats":
            raise ValueError("a worker's engine.kind must be vllm or openai, not nats")
        if not self.nats.url:
            raise ValueError("a worker needs nats.url (the NATS its `vidcap run`s use)")
        return self


class PipelineConfig(_Section):
    max_streams: int = Field(64, ge=1, le=4096)
    """Streams at once (configured, added through the API, WHIP); the API refuses more."""
    max_pending_keyframes: int = Field(8, ge=1, le=10000)
    """Keyframes of one stream waiting for the engine; live streams drop the stalest beyond."""
    max_in_flight_per_stream: int = Field(4, ge=1, le=1024)
    """Keyframes of one stream being captioned at once."""
    max_in_flight_total: int | None = Field(None, ge=1, le=65536)
    """Keyframes of all streams at the engine at once, shared fairly between streams;
    default twice engine.max_num_seqs (enough to keep vLLM's batch full)."""
    priority_reserve: int = Field(0, ge=0, le=65535)
    """Engine slots kept free for the streams of the highest priority: lower ones wait while
    no more than this many are free. With a small max_in_flight_total it bounds the batch a
    top stream's keyframes share (on a CPU engine every request slows as the batch grows)."""

    def in_flight_total(self, engine: EngineConfig) -> int:
        return self.max_in_flight_total or 2 * engine.max_num_seqs


class IceServer(_Section):
    urls: list[str] = Field(min_length=1)
    """stun:host:port or turn:host:port?transport=udp|tcp."""
    username: str | None = None
    credential: SecretStr | None = None


class HttpConfig(_Section):
    """The one HTTP server: health, readiness, metrics, the stream API, and WHIP ingest."""

    listen: str | None = Field(default_factory=lambda: _default_http_listen())
    """host:port to serve on; null: no HTTP server (and no WHIP). Default 127.0.0.1:8480,
    or the environment variable VIDCAP_HTTP_LISTEN (empty: off)."""
    token: SecretStr | None = None
    """Bearer token for the routes that change streams (POST, DELETE); unset: the API is
    read-only. 16+ characters."""
    api_files: list[Path] = []
    """Folders (with their subfolders) whose files ``POST /api/streams`` may add; empty: the
    API adds network sources only. A file added is read and a picture of it stored as a
    snapshot, which the open routes serve: list media folders only."""
    max_connections: int = Field(256, ge=1, le=100_000)
    """HTTP connections at once (any state, authenticated or not); more are closed at once."""
    max_connections_per_client: int = Field(32, ge=1, le=100_000)
    """HTTP connections at once from one client address (an IPv6 /64); more are closed at
    once, so one client cannot hold them all. Behind a reverse proxy every client has the
    proxy's address: raise it to ``max_connections`` there and limit at the proxy."""
    request_timeout_s: float = Field(10.0, gt=0, le=300)
    """Request line and headers (and a TLS handshake) must arrive within this of the
    connection (or of the previous request); a body within this of the headers."""
    tls_cert: Path | None = None
    """PEM certificate (chain) file: the server speaks HTTPS. Needs ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key file of ``tls_cert``."""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def host_port(self) -> tuple[str, int]:
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        _, colon, port = listen.rpartition(":")
        if not colon or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ValueError(f"{listen!r}: expected host:port")
        return listen

    @field_validator("token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("the token must have 16+ characters")
        return token

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("http.tls_cert and http.tls_key go together: set both or neither")
        return self


HTTP_LISTEN_ENV = "VIDCAP_HTTP_LISTEN"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8480"


def _default_http_listen() -> str | None:
    return os.environ.get(HTTP_LISTEN_ENV, DEFAULT_HTTP_LISTEN) or None


# WHIP keys that moved to the `http` section when WHIP was mounted on the one HTTP server.
_MOVED_TO_HTTP = ("listen", "max_connections", "request_timeout_s", "tls_cert", "tls_key")


class WhipConfig(_Section):
    """WebRTC ingest: publishers (OBS, browsers, GStreamer) push to POST /whip/<stream> on
    the HTTP server (``http.listen``)."""

    enabled: bool = False
    token: SecretStr | None = None
    """Bearer token every WHIP request must carry (required when enabled)."""
    max_sessions: int = Field(8, ge=1, le=1000)
    """Publishers at once; one more gets 503 with Retry-After."""
    streams: list[StreamId] | None = None
    """Stream ids publishers may use; unset: any valid id not taken by a configured stream."""
    ice_servers: list[IceServer] = Field(default_factory=list)
    """STUN/TURN servers; none by default, so no traffic to public STUN servers."""
    ice_addresses: list[str] = Field(default_factory=list)
    """Only offer these local addresses as ICE host candidates (a server with several
    interfaces, or loopback in tests); empty: every interface but 127.0.0.1."""
    stall_timeout_s: float = Field(5.0, gt=0, le=3600)
    """A publisher that sends no frame this long is reported ``stalled``."""
    ice_timeout_s: float = Field(30.0, gt=0, le=600)
    """An answered offer whose ICE has not connected this long after the 201 is ended
    (``failed``) and its slot freed."""
    idle_timeout_s: float = Field(60.0, gt=0, le=86400)
    """A connected publisher that sends no frame this long is ended (``failed``) and its slot
    freed; longer than ``stall_timeout_s``, so ``stalled`` is reported first."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [key for key in _MOVED_TO_HTTP if key in data]
            if moved:
                keys = ", ".join(f"whip.{key}" for key in moved)
                raise ValueError(
                    f"{keys} moved to the http section (WHIP is served by the one HTTP "
                    "server); set whip.enabled: true and http.listen"
                )
        return data

    @model_validator(mode="after")
    def _token_and_timeouts(self) -> WhipConfig:
        token = self.token.get_secret_value() if self.token else ""
        if self.enabled and len(token) < 16:
            raise ValueError("whip.enabled: whip.token must be set (16+ characters)")
        if self.idle_timeout_s <= self.stall_timeout_s:
            raise ValueError(
                f"whip.idle_timeout_s ({self.idle_timeout_s}) must be longer than "
                f"whip.stall_timeout_s ({self.stall_timeout_s})"
            )
        return self


class WatchedBrand(_Section):
    brand: str = Field(min_length=1, max_length=100)
    aliases: list[str] = Field(default_factory=list)
    """Other names or marks to match ("swoosh"), case-insensitive, as whole words."""


class LogoAlertConfig(_Section):
    mode: Literal["off", "watchlist", "open"] = "off"
    """watchlist: only the brands listed; open: any logo, by a normalised name."""
    watchlist: list[WatchedBrand] = Field(default_factory=list)
    appear_k: int = Field(2, ge=1)
    appear_n: int = Field(3, ge=1)
    """A brand appears when seen in appear_k of the last appear_n captioned keyframes."""
    gone_keyframes: int = Field(3, ge=1)
    gone_s: float = Field(30.0, gt=0)
    priority_boost: int = Field(0, ge=0, le=100)
    """Added to a stream's priority while one of its logo alerts is open (a brand appeared and
    not yet gone): its keyframes go first, so the alert's end is seen soon."""
    """A brand disappears when unseen for gone_keyframes keyframes or gone_s stream seconds."""

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> LogoAlertConfig:
        if self.appear_k > self.appear_n:
            raise ValueError(f"appear_k ({self.appear_k}) must be <= appear_n ({self.appear_n})")
        if self.mode == "watchlist" and not self.watchlist:
            raise ValueError("mode watchlist needs at least one watchlist entry")
        return self


class AlertsConfig(_Section):
    logos: LogoAlertConfig = LogoAlertConfig()


class SpoolConfig(_Section):
    """The local spool of events waiting for JetStream (they survive vidcap's own crash)."""

    enabled: bool | None = None
    """Default: on with a configured JetStream server (``nats.url``); off with the embedded
    server, which keeps nothing across runs itself."""
    path: Path | None = None
    """Default: ``$VIDCAP_SPOOL_DIR``, else ``~/.cache/vidcap/spool``; a folder per NATS
    server and stream name under it."""
    fsync: Literal["always", "interval", "never"] = "interval"
    """always: each event on disk before it counts as produced (survives power loss);
    interval: fsync every fsync_interval_s (a power loss can take that much); never: the
    OS decides (vidcap's own crash loses nothing, a power loss can)."""
    fsync_interval_s: float = Field(1.0, gt=0, le=60)
    max_bytes: int = Field(1 << 30, ge=16 << 20)
    """Disk the spool may take; when full, new events wait (or drop, as nats.outbox_full says)."""
    max_age_s: float = Field(7 * 86400.0, ge=0)
    """Events older than this found at start-up are not delivered (0: no limit)."""


class LeaseConfig(_Section):
    """One writer per stream: leases in the JetStream key-value bucket ``<stream_name>_LEASES``."""

    enabled: bool | None = None
    """Default: on with a configured JetStream server (``nats.url``)."""
    ttl_s: float = Field(10.0, ge=0.5, le=600)
    """A dead owner's streams are taken over this long after its last renewal (renewed every
    third of it); the bucket's TTL, fixed when vidcap creates it."""


class SnapshotsConfig(_Section):
    """Each captioned keyframe's picture, as sent to the model, as a JPEG in the JetStream
    Object Store bucket ``<stream_name>_SNAPSHOTS``; events name it (``snapshot``)."""

    enabled: bool = True
    """On wherever events go to JetStream (off with ``nats.jetstream: false``)."""
    quality: int = Field(80, ge=10, le=95)
    """JPEG quality (about 60-120 kB at 896 px a side on camera footage)."""
    max_age_s: float = Field(86400.0, ge=1)
    """Snapshots older than this are removed by the server (the bucket's TTL, fixed when
    vidcap creates the bucket)."""
    max_bytes: int = Field(1 << 30, ge=16 << 20)
    """The bucket's size; when full, new snapshots are refused (``snapshot_error: full``)
    and events go out without them until old ones age out."""
    wait_s: float = Field(0.25, ge=0, le=10)
    """How long an event may wait, after its caption is done, for its snapshot to be stored
    (it is stored while the model works); past that it goes out with ``snapshot_error: slow``."""


class IndexConfig(_Section):
    """The search index (see docs/search.md) followed inside ``vidcap run``."""

    enabled: bool = False
    """Follow the JetStream events into the index here (one index per deployment; or run
    ``vidcap index`` on its own)."""
    db: Path | None = None
    """Index file; default ``~/.cache/vidcap/search/index.db``. ``/api/search`` reads it."""
    durable: str = Field("vidcap-index", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The JetStream durable consumer the index follows with."""


class Config(_Section):
    streams: list[StreamConfig] = Field(default_factory=list)
    keyframes: KeyframeConfig = KeyframeConfig()
    engine: EngineConfig = EngineConfig()
    nats: NatsConfig = NatsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    http: HttpConfig = Field(default_factory=HttpConfig)
    whip: WhipConfig = WhipConfig()
    alerts: AlertsConfig = AlertsConfig()
    spool: SpoolConfig = SpoolConfig()
    leases: LeaseConfig = LeaseConfig()
    index: IndexConfig = IndexConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()

    @property
    def snapshots_enabled(self) -> bool:
        return self.snapshots.enabled and self.nats.jetstream

    @property
    def spool_enabled(self) -> bool:
        if self.spool.enabled is None:
            return self.nats.url is not None and self.nats.jetstream
        return self.spool.enabled

    @property
    def leases_enabled(self) -> bool:
        if self.leases.enabled is None:
            return self.nats.url is not None and self.nats.jetstream
        return self.leases.enabled

    @property
    def serves_until_stopped(self) -> bool:
        """Streams can come at run time (WHIP, the API): vidcap runs until stopped, not until
        its configured streams end."""
        return self.whip.enabled or self.api_writable

    @property
    def api_writable(self) -> bool:
        return self.http.listen is not None and self.http.token is not None

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        ids = [stream.id for stream in self.streams]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"stream ids must be unique; repeated: {', '.join(duplicates)}")
        if len(ids) > self.pipeline.max_streams:
            raise ValueError(
                f"{len(ids)} streams configured; pipeline.max_streams is "
                f"{self.pipeline.max_streams}"
            )
        if self.whip.enabled and self.http.listen is None:
            raise ValueError("whip.enabled needs http.listen (WHIP is served there)")
        if not ids and not self.serves_until_stopped:
            raise ValueError(
                "nothing to caption: configure streams, enable whip, or set http.token to "
                "add streams through the API"
            )
        total = self.pipeline.in_flight_total(self.engine)
        if self.pipeline.priority_reserve >= total:
            raise ValueError(
                f"pipeline.priority_reserve ({self.pipeline.priority_reserve}) must be below "
                f"the engine slots ({total}: max_in_flight_total, or twice max_num_seqs)"
            )
        if self.index.enabled and not self.nats.jetstream:
            raise ValueError("index.enabled needs nats.jetstream (it follows the stored events)")
        if self.leases.enabled and not self.nats.jetstream:
            raise ValueError("leases.enabled needs nats.jetstream (a key-value bucket)")
        if self.spool.enabled and not self.nats.jetstream:
            raise ValueError("spool.enabled needs nats.jetstream (acks say what to remove)")
        taken = sorted(set(ids) & set(self.whip.streams or []))
        if taken:
            raise ValueError(f"whip.streams repeats configured stream ids: {', '.join(taken)}")
        return self


def load_config(path: Path) -> Config:
    """Read a YAML file, expand ${ENV} references, validate."""
    return parse_section(Config, load_yaml(path), str(path))


def load_yaml(path: Path, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A YAML mapping with ${ENV} references expanded; with ``sections``, only those (a tool
    that reads the nats section needs no other section's variables)."""
    try:
        with path.open(encoding="utf-8") as text:  # a syntax error's place names the file
            raw = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    if sections is not None:
        raw = {name: raw[name] for name in sections if name in raw}
    return _expand_env(raw, "")


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    return parse_section(Config, data, source)


def parse_section(model: type[SectionT], data: dict[str, Any], source: str) -> SectionT:
    """Validate ``data`` as ``model``; a ConfigError names every bad key and value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid setting(s)"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        if _SECRET_KEY.search(key):
            shown = " (value hidden)"  # a bad secret is still a secret
        lines.append(f"  {key}: {error['msg']}{shown}")
    return "\n".join(lines)


def _expand_env(value: Any, key: str) -> Any:
    """Replace ${VAR} in strings so secrets stay in the environment, not in files."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda m: _env_value(m.group(1), key), value)
    return value


def _env_value(name: str, key: str) -> str:
    if name not in os.environ:
        raise ConfigError(f"{key}: environment variable {name} is not set")
    return os.environ[name]
