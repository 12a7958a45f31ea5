"""Stage 4, events out: typed events and their wire JSON and schemas, per-stream ordering,
logo alerts derived from captions, the ordered JetStream outbox, and the embedded NATS server."""
