"""Stage 2, which frames matter: per-frame features (compiled kernels), the keyframe selector
(cuts, gradual transitions, heartbeat) and whole-file scans for `vidcap scenes`."""
