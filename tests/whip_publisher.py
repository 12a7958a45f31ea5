"""A WHIP publisher built on aiortc, for tests: sends the synthetic shot clip live."""

from __future__ import annotations

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from stream.sample_clip import ClipSpec, shot_frame


class ShotsTrack(VideoStreamTrack):
    """The sample clip's shots, paced in real time by aiortc's clock, then the last frame."""

    def __init__(self, spec: ClipSpec) -> None:
        super().__init__()
        self.spec = spec
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        index = min(self.sent, self.spec.frames - 1)
        shot, offset = divmod(index, self.spec.shot_frames)
        frame = av.VideoFrame.from_ndarray(shot_frame(self.spec, shot, offset), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


class WhipPublisher:
    def __init__(self, endpoint: str, token: str | None) -> None:
        self.endpoint = endpoint  # http://host:port/whip/<stream>
        self.token = token
        self.peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def publish(self, track: VideoStreamTrack) -> None:
        self.peer.addTransceiver(track, direction="sendonly")
        await self.peer.setLocalDescription(await self.peer.createOffer())
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                self.endpoint,
                data=self.peer.localDescription.sdp,
                headers={**self.headers(), "Content-Type": "application/sdp"},
            )
            body = await response.text()
            if response.status != 201:
                raise RuntimeError(f"WHIP POST: {response.status} {body}")
            self.location = response.headers["Location"]
        await self.peer.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def stop(self) -> int:
        """DELETE the session (as a publisher does when it stops); returns the status."""
        base = self.endpoint.split("/whip/")[0]
        async with aiohttp.ClientSession() as http:
            response = await http.delete(base + self.location, headers=self.headers())
        await self.peer.close()
        return response.status
