"""A `vidcap worker` as a NATS micro service: `nats micro ls` lists every worker, `nats micro
info vidcap-worker` its endpoint, model and concurrency, `nats micro stats vidcap-worker` its
requests, errors and processing time.

nats.micro runs an endpoint's handler one request at a time (a subscription's callbacks are
sequential) and unsubscribes it on stop, dropping the requests already buffered for this
worker. A worker needs many requests in flight (vLLM batches them) and a drain that answers
what it has taken, so it serves its one endpoint itself and uses micro for the discovery
protocol (``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``: for all services, by name, and by name
and instance id), whose answers describe that endpoint and its counters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Final

from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    Service,
    ServiceConfig,
    ServiceInfo,
    ServiceStats,
)

SERVICE_NAME: Final = "vidcap-worker"
ENDPOINT_NAME: Final = "caption"
DESCRIPTION: Final = "vidcap caption engine: one JPEG keyframe in, one raw completion out"
# micro's error codes follow HTTP's. UNAVAILABLE: this worker's engine died, another worker
# can serve the request (the requester sends it again at once).
REFUSED_CODE: Final = "400"
FAILED_CODE: Final = "500"
UNAVAILABLE_CODE: Final = "503"


def error_headers(why: str, code: str) -> dict[str, str]:
    """An error reply's headers: vidcap's own, which `vidcap run` reads, and micro's."""
    return {"Vidcap-Error": why, ERROR_HEADER: why, ERROR_CODE_HEADER: code}


@dataclass(slots=True)
class EndpointCounters:
    """What STATS reports for the endpoint; times in nanoseconds, as micro counts them, from
    the worker taking a request (waits for a free slot included) to its reply."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    processing_ns: int = 0
    last_error: str = ""

    def start(self) -> int:
        self.requests += 1
        self.in_flight += 1
        return time.perf_counter_ns()

    def finish(self, started_ns: int, error: str | None = None) -> None:
        self.in_flight -= 1
        self.processing_ns += time.perf_counter_ns() - started_ns
        if error is not None:
            self.errors += 1
            self.last_error = error

    def as_stats(self, endpoint: EndpointInfo) -> EndpointStats:
        finished = self.requests - self.in_flight
        return EndpointStats(
            name=endpoint.name,
            subject=endpoint.subject,
            queue_group=endpoint.queue_group,
            num_requests=self.requests,
            num_errors=self.errors,
            processing_time=self.processing_ns,
            average_processing_time=self.processing_ns // finished if finished else 0,
            last_error=self.last_error,
            data={"in_flight": self.in_flight},
        )


class WorkerService(Service):
    """micro's discovery for an endpoint the worker serves itself (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        endpoint: EndpointInfo,
        counters: EndpointCounters,
        metadata: dict[str, str],
    ) -> None:
        config = ServiceConfig(
            name=SERVICE_NAME,
            version=version("vidcap"),
            description=DESCRIPTION,
            metadata=metadata,
        )
        super().__init__(client, config)
        self._endpoint = endpoint
        self._counters = counters

    def info(self) -> ServiceInfo:
        info = super().info()
        info.endpoints = [self._endpoint]
        return info

    def stats(self) -> ServiceStats:
        stats = super().stats()
        stats.endpoints = [self._counters.as_stats(self._endpoint)]
        return stats
