"""A WHIP publisher on aiortc, an RTP stack independent of Chromium's: publishes a generated
video stream and a tone over plain HTTP (RFC 9725) to the uprtcd client listener, stays on air
for the time asked, then ends its session with DELETE.

Prints one JSON line per step on stdout ({"step": "answered" | "connected" | "ended", ...}) so
the test that runs it can follow; exits non-zero when a step fails.

aioice leaves 127.0.0.1 out of its host candidates; the tests run in a namespace with
loopback only, so the publisher hands aioice that address itself.
"""

import asyncio
import fractions
import math
import sys
import time
import urllib.parse

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from whip_client import http, publisher_arguments, say

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000


class MovingBars(MediaStreamTrack):
    """320x240 frames at 15 fps whose pattern moves, so every frame differs."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.count = 0
        self.start = time.monotonic()

    async def recv(self):
        self.count += 1
        await asyncio.sleep(max(0.0, self.start + self.count / 15 - time.monotonic()))
        frame = av.VideoFrame(320, 240, "yuv420p")
        luma = bytes((x + self.count * 4) % 256 for x in range(320)) * 240
        frame.planes[0].update(luma)
        frame.planes[1].update(bytes([128]) * (160 * 120))
        frame.planes[2].update(bytes([128]) * (160 * 120))
        frame.pts = self.count * VIDEO_CLOCK // 15
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = 0
        self.start = time.monotonic()

    async def recv(self):
        per_frame = AUDIO_RATE // 50
        await asyncio.sleep(max(0.0, self.start + self.samples / AUDIO_RATE - time.monotonic()))
        pcm = b"".join(
            int(8000 * math.sin(2 * math.pi * 440 * (self.samples + i) / AUDIO_RATE)).to_bytes(2, "little", signed=True)
            for i in range(per_frame)
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=per_frame)
        frame.planes[0].update(pcm)
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.samples += per_frame
        return frame




async def publish(url, token, seconds):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            connected.set()

    pc.addTransceiver(MovingBars(), direction="sendonly")
    pc.addTransceiver(Tone(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, answer = await asyncio.to_thread(http, "POST", url, token, pc.localDescription.sdp)
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    if status != 201 or not location:
        say("refused", status=status, body=answer[:300])
        await pc.close()
        return 1
    say("answered", location=location)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        await asyncio.wait_for(connected.wait(), 15)
    except asyncio.TimeoutError:
        say("not-connected", state=pc.connectionState)
        await pc.close()
        return 1
    say("connected")
    await asyncio.sleep(seconds)
    status, _, _ = await asyncio.to_thread(http, "DELETE", urllib.parse.urljoin(url, location))
    await pc.close()
    say("ended", status=status)
    return 0 if status == 200 else 1


def main():
    args = publisher_arguments(__doc__.splitlines()[0])
    sys.exit(asyncio.run(publish(args.url, args.token, args.seconds)))


if __name__ == "__main__":
    main()
