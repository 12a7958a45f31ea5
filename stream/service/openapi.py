"""The OpenAPI 3.1 document of every route the HTTP server has, served at /openapi.json.
A test compares its paths and methods with the server's routes."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Final

from stream.config import StreamConfig


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_CHANGES = {
    "401": _error("missing or wrong token"),
    "403": _error("http.token is not set"),
    "409": _error("the id is taken, being removed, or a WHIP stream's"),
    "503": _error("vidcap is starting (the engine loads) or stopping; Retry-After"),
}
_PAUSE_DOC = "Stream snapshot; a `{}` status event is published (once) in the stream's events"


def _pause_route(verb: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _BEARER,
            "parameters": [_ID],
            "responses": {
                "200": _json("Stream", _PAUSE_DOC.format(verb)),
                "404": _error("no such stream"),
                **_CHANGES,
            },
        }
    }


def _query(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string", "maxLength": 200, **schema},
    }


_WINDOW = [
    _query(
        "since",
        "window start: ISO time, UTC if no zone, or 90s / 10m / 2h / 1d ago",
        required=True,
    ),
    _query("until", "window end (default now), as since"),
    _query("stream", "only this stream id"),
]
_SEARCH_ERRORS = {
    "400": _error("a parameter is unknown, repeated, too long or malformed; the message says"),
    "503": _error("no search index, the run's index stopped, or the query ran too long"),
}


def _report(summary: str, schema: str, limit: int | None = None) -> dict[str, Any]:
    limit_param = (
        [_query("limit", f"at most this many (1-{limit})", type="integer", maximum=limit)]
        if limit
        else []
    )
    return {
        "get": {
            "summary": summary,
            "parameters": [*_WINDOW, *limit_param],
            "responses": {"200": _json(schema, "the report"), **_SEARCH_ERRORS},
        }
    }


_SEARCH_PARAMETERS = [
    _query("q", 'words (all must match), "phrases", word*, OR, -word', maxLength=500),
    _query("since", "captured at or after: ISO time, or 90s / 10m / 2h / 1d ago"),
    _query("until", "captured before, as since"),
    _query("stream", "only this stream id"),
    _query("logo", "words in one of the caption's logos"),
    _query("object", "words in one of the caption's objects"),
    _query("content_type", "text content_type contains"),
    _query("quality", "text production_quality contains"),
    _query("limit", "at most this many results (1-1000, default 20)", type="integer", maximum=1000),
]

_WHIP_OFFER = {"content": {"application/sdp": {"schema": {"type": "string"}}}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _page(summary: str, content_type: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": summary, "content": {content_type: {}}}},
        }
    }


_DASHBOARD: Final[dict[str, Any]] = {
    "/": _page("The live dashboard (docs/dashboard.md)", "text/html"),
    "/static/{name}": {
        "get": {
            "summary": "The dashboard's script and style sheet (app.js, style.css)",
            "parameters": [_path("name", "app.js or style.css")],
            "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
        }
    },
    "/api/feed": _page(
        "Server-sent events: every event under the subject prefix as it is published, after "
        "the board (each stream's latest); 503 when 32 browsers are on",
        "text/event-stream",
    ),
    "/api/streams/{id}/events": {
        "get": {
            "summary": "A page of a stream's events stored in JetStream, read back from before",
            "parameters": [
                _ID,
                _query("before", "a JetStream stream sequence (default: the newest)"),
                _query("kind", "caption, status or logo (default: all)"),
                _query("limit", "1-100 (default 50)", type="integer", maximum=100),
            ],
            "responses": {
                "200": _json("StoredEvents", "events oldest first; before: the next page's"),
                "400": _error("a parameter or the stream id is invalid"),
                "404": _error("nats.jetstream is false: nothing is stored"),
                "503": _error("JetStream did not answer"),
            },
        }
    },
    "/api/snapshots/{stream}/{session}/{number}": {
        "get": {
            "summary": "A snapshot JPEG from <nats.stream_name>_SNAPSHOTS",
            "parameters": [
                _path("stream", "stream id"),
                _path("session", "hex session id"),
                _path("number", "the keyframe's request number"),
            ],
            "responses": {
                "200": {"description": "the JPEG", "content": {"image/jpeg": {}}},
                "404": _error("no such snapshot, or not a JPEG of at most 4 MiB"),
                "503": _error("the store did not answer"),
            },
        }
    },
}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "vidcap", "version": version("vidcap")},
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "responses": {"200": _json("Health", "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: engine loaded, NATS connected, JetStream stream present, "
                "outbox below its high-water mark",
                "responses": {
                    "200": _json("Health", "ready"),
                    "503": _json("Health", "not ready; `reasons` says why"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (vidcap_*, and vllm:* with the in-process engine)",
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/api/streams": {
            "get": {
                "summary": "Every stream with its state and statistics",
                "responses": {"200": _json("StreamList", "streams")},
            },
            "post": {
                "summary": "Add a stream (validated as a config file's streams[] entry); it "
                "survives restarts",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/StreamSettings"}
                        }
                    },
                },
                "responses": {
                    "201": _json("Stream", "added; Location names it"),
                    "400": _error("not a JSON object"),
                    "408": _error("the body did not arrive within http.request_timeout_s"),
                    "413": _error("the body is over 64 KiB"),
                    "415": _error("not application/json"),
                    "422": _error("invalid settings; the message names each"),
                    **_CHANGES,
                },
            },
        },
        "/api/streams/{id}": {
            "get": {
                "summary": "One stream",
                "parameters": [_ID],
                "responses": {
                    "200": _json("Stream", "the stream"),
                    "404": _error("no such stream"),
                },
            },
            "delete": {
                "summary": "Remove a stream: captions in flight are published, then `stopped`",
                "security": _BEARER,
                "parameters": [_ID],
                "responses": {
                    "200": _json("Removed", "removed (after draining)"),
                    "404": _error("no such stream"),
                    **_CHANGES,
                },
            },
        },
        "/api/streams/{id}/pause": _pause_route(
            "paused", "Captioning off; ingest and health go on"
        ),
        "/api/streams/{id}/resume": _pause_route("unpaused", "Captioning on again"),
        "/api/search": {
            "get": {
                "summary": "Search the indexed captions, newest first",
                "parameters": _SEARCH_PARAMETERS,
                "responses": {"200": _json("SearchResults", "matching captions"), **_SEARCH_ERRORS},
            }
        },
        "/api/airtime": _report("On-screen time per brand per stream in a window", "Airtime"),
        "/api/segments": _report("Shots (segments) in a window, oldest first", "Segments", 5000),
        **_DASHBOARD,
        "/whip/{stream}": {
            "post": {
                "summary": "WHIP (RFC 9725): publish WebRTC video to a stream (whip.enabled)",
                "security": _BEARER,
                "parameters": [
                    {"name": "stream", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, **_WHIP_OFFER},
                "responses": {
                    "201": {"description": "SDP answer; Location is the session", **_WHIP_OFFER}
                },
            },
            "options": {
                "summary": "CORS preflight",
                "responses": {"204": {"description": "allowed"}},
            },
        },
        "/whip/{stream}/{session}": {
            "delete": {
                "summary": "End a WHIP session",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "stream",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "session",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": {"description": "ended"}},
            },
            "patch": {
                "summary": "Trickle ICE: not supported",
                "responses": {"405": {"description": "not supported"}},
            },
            "options": {
                "summary": "CORS preflight",
                "responses": {"204": {"description": "allowed"}},
            },
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "StreamSettings": StreamConfig.model_json_schema(),
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string"},
                    "reasons": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Stream": {
                "type": "object",
                "required": [
                    "id",
                    "state",
                    "paused",
                    "source_fps",
                    "keyframes",
                    "captions",
                    "latency_s",
                    "reconnects",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "url": {"type": "string", "description": "credentials masked"},
                    "state": {"type": "string", "description": "the latest status event's state"},
                    "detail": {"type": "string"},
                    "paused": {"type": "boolean"},
                    "source_fps": {"type": "number"},
                    "keyframes": {"type": "integer"},
                    "keyframes_dropped": {"type": "integer"},
                    "keyframes_skipped_paused": {"type": "integer"},
                    "captions": {
                        "type": "object",
                        "properties": {"ok": {"type": "integer"}, "failed": {"type": "integer"}},
                    },
                    "last_caption": {"type": ["object", "null"]},
                    "latency_s": {
                        "type": "object",
                        "description": "keyframe captured to its event published",
                        "properties": {
                            "p50": {"type": ["number", "null"]},
                            "p95": {"type": ["number", "null"]},
                            "samples": {"type": "integer"},
                        },
                    },
                    "reconnects": {"type": "integer"},
                    "events": {"type": "integer"},
                },
            },
            "StreamList": {
                "type": "object",
                "properties": {
                    "streams": {"type": "array", "items": {"$ref": "#/components/schemas/Stream"}}
                },
            },
            "SearchResults": {
                "type": "object",
                "properties": {"results": {"type": "array", "items": {"type": "object"}}},
            },
            "Airtime": {
                "type": "object",
                "properties": {
                    "since": {"type": "string"},
                    "until": {"type": "string"},
                    "airtime": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "stream": {"type": "string"},
                                "brand": {"type": "string"},
                                "seconds": {"type": "number"},
                                "appearances": {"type": "integer"},
                                "open": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "Segments": {
                "type": "object",
                "properties": {
                    "since": {"type": "string"},
                    "until": {"type": "string"},
                    "segments": {"type": "array", "items": {"type": "object"}},
                },
            },
            "StoredEvents": {
                "type": "object",
                "properties": {
                    "stream": {"type": "string"},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "js_seq": {"type": "integer"},
                                "event": {"type": "object"},
                            },
                        },
                    },
                    "before": {"type": ["integer", "null"]},
                },
            },
            "Removed": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "removed": {"type": "boolean"},
                    "ended_cleanly": {"type": "boolean"},
                },
            },
        },
    },
}
