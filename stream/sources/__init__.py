"""Stage 1, frames in: PyAV sources (RTSP, files, HLS) and WHIP publishers, their health
(stalls, reconnects), and the ingest thread that hands keyframes and status changes to the
event loop through a bounded queue with a named policy."""
