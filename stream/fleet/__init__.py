"""Many vidcaps, one set of streams: who is alive (presence), who writes what (leases)."""
