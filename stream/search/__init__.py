"""Search over the caption log: an SQLite (FTS5) index that follows the JetStream events stream.

JetStream stays the system of record. ``follower.Indexer`` reads the events stream with a
durable consumer and writes each batch, with the stream sequence it reached, in one SQLite
transaction (``store.IndexStore``); ``queries`` answers full-text searches with filters, and
``reports`` the on-screen time of logos (airtime) and the shots (segments) of a time window.
"""
