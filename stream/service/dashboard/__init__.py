"""The live dashboard: a page served from the package, fed by one NATS subscription pushed to
browsers as server-sent events, with routes for stored history and snapshot pictures."""
