"""A real RTSP server (GStreamer's gst-rtsp-server) for tests and `vidcap bench ingest`.

Runs under Debian's /usr/bin/python3 (the `gi` bindings are not in the venv). Binds 127.0.0.1
(a free port unless --port) and prints "PORT <n>" once it is listening.

- FILE: an H.264 MP4; each client gets it from its first frame, paced in real time, like a
  camera that just came up; at the file's end the session ends (a reader sees a disconnect).
- --pattern WxH: an endless live test picture (moving ball), encoded by x264 as it goes.

usage: rtsp_server.py (FILE | --pattern 320x240) [--path /stream] [--port N] [--fps 25]
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", nargs="?")
    parser.add_argument("--pattern", help="WxH of an endless live test picture")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--path", default="/stream")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    if (args.file is None) == (args.pattern is None):
        parser.error("give a FILE or --pattern, not both")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args))
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit("could not attach the RTSP server")
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


def pipeline(args: argparse.Namespace) -> str:
    if args.file:
        return (
            f'( filesrc location="{args.file}" ! qtdemux ! h264parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 )"
        )
    width, height = args.pattern.split("x")
    return (
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
        "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
    )


if __name__ == "__main__":
    main()
