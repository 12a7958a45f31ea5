#!/usr/bin/env bash
# Debian packages the tests need: GStreamer's RTSP server (a real RTSP peer) and its Python
# bindings for Debian's /usr/bin/python3, Chromium (an independent WebRTC publisher) and
# iproute2 (the network namespace Chromium runs in), Prometheus (a real scraper of /metrics).
# Not needed to run vidcap itself.
set -euo pipefail
packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
          gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
          gstreamer1.0-libav chromium iproute2 prometheus)
if /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1 \
    && dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
