"""Engine metrics. vidcap passes one registry to these and to the pipeline's and the
outbox's metrics, and serves it.

Names follow Prometheus conventions; histograms use buckets from 10 ms to 2 min.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.in_flight = Gauge(
            "vidcap_engine_requests_in_flight", "Keyframes at the engine", registry=r
        )
        self.first_token = Histogram(
            "vidcap_engine_time_to_first_token_seconds",
            "Submission to first output token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_latency = Histogram(
            "vidcap_engine_latency_seconds",
            "One keyframe at the engine, all tries",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "vidcap_engine_tokens", "Tokens by direction", ["direction"], registry=r
        )
        self.retries = Counter(
            "vidcap_engine_retries",
            "Tries after the first, by why the last one was refused",
            ["reason"],
            registry=r,
        )
        self.captions = Counter(
            "vidcap_captions",
            "Keyframes by outcome (ok, or the failure reason)",
            ["outcome"],
            registry=r,
        )
