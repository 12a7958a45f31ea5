"""Operating vidcap as a service: the one HTTP server (its connection limits, health,
readiness and metrics, the stream API and its OpenAPI document), per-stream statistics, and
the key-value record that lets streams changed at run time survive a restart."""
