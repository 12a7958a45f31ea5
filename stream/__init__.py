"""Live streams in, ordered events out. The folders follow one stream's flow:

``sources/`` (frames in) -> ``keyframes/`` (which frames matter) -> the engine (the ``engine``
package: keyframe -> guarded caption) -> ``delivery/`` (typed events, order, alerts, NATS).

At the top are the app's parts: ``config`` (the validated configuration), ``pipeline`` (one
stream through every stage), ``runner`` (`vidcap run`: the engine, NATS and all pipelines),
``cli`` and the other commands (``worker``, ``tail``, ``demo``), and ``bench/``."""
