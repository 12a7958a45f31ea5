"""A real RTSP server (GStreamer's gst-rtsp-server) serving one H.264 MP4 file, for tests.

Runs under Debian's /usr/bin/python3 (the `gi` bindings are not in the venv). Binds 127.0.0.1
on a free port and prints "PORT <n>" once it is listening. Each client gets the file from its
first frame, paced in real time, like a camera that just came up; at the file's end the
session ends, which a reader sees as a disconnect.

usage: rtsp_server.py FILE [--path /stream]
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--path", default="/stream")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")  # any free port
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{args.file}" ! qtdemux ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit("could not attach the RTSP server")
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
