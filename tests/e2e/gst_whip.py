#!/usr/bin/env python3
"""A GStreamer webrtcbin WHIP publisher (Debian's GStreamer 1.22, libnice, OpenSSL with an
RSA certificate): a moving test pattern in VP8 and a tone in Opus, under payload types of its
own (VP8 98, Opus 100), offered once ICE gathering completed (WHIP without trickle).

Prints one JSON object per line: {"step": "answered"|"connected"|"ended"|"refused"|
"not-connected", ...}. On air for --seconds, then DELETE."""

import sys
import threading
import urllib.parse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

from whip_client import http, publisher_arguments, say  # noqa: E402

PIPELINE = (
    "webrtcbin name=send bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
    "! videoconvert ! vp8enc deadline=1 target-bitrate=300000 keyframe-max-dist=30 "
    "! rtpvp8pay pt=98 ! application/x-rtp,media=video,encoding-name=VP8,payload=98,clock-rate=90000 ! send. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc "
    "! rtpopuspay pt=100 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100,clock-rate=48000 ! send."
)




class Publisher:
    def __init__(self, url, token, seconds):
        self.url, self.token, self.seconds = url, token, seconds
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(PIPELINE)
        self.webrtc = self.pipeline.get_by_name("send")
        self.location = None
        self.status = 1
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection)

    def run(self):
        self.pipeline.set_state(Gst.State.PLAYING)
        for transceiver in self.transceivers():
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        # Not connected in 20 s, or on air for its time: either way the run ends.
        GLib.timeout_add_seconds(20, self.check_connected)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        return self.status

    def transceivers(self):
        found, index = [], 0
        while (transceiver := self.webrtc.emit("get-transceiver", index)) is not None:
            found.append(transceiver)
            index += 1
        return found

    def on_negotiation_needed(self, element):
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        element.emit("create-offer", None, promise)

    def on_offer(self, promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            say("refused", reason=f"no offer: {reply.to_string() if reply is not None else 'no reply'}")
            GLib.idle_add(self.loop.quit)
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, element, _):
        if element.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        offer = element.get_property("local-description").sdp.as_text()
        # The HTTP exchange leaves GStreamer's streaming thread.
        threading.Thread(target=self.post, args=(offer,), daemon=True).start()

    def post(self, offer):
        status, headers, answer = http("POST", self.url, self.token, offer)
        self.location = {k.lower(): v for k, v in headers.items()}.get("location")
        if status != 201 or not self.location:
            say("refused", status=status, body=answer[:300])
            GLib.idle_add(self.loop.quit)
            return
        say("answered", location=self.location)
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        GLib.idle_add(lambda: self.webrtc.emit("set-remote-description", description, Gst.Promise.new()) and False)

    def on_connection(self, element, _):
        if element.get_property("connection-state") == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            say("connected")
            GLib.timeout_add(int(self.seconds * 1000), self.end)

    def check_connected(self):
        if self.webrtc.get_property("connection-state") != GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            say("not-connected", state=str(self.webrtc.get_property("connection-state")))
            self.loop.quit()
        return False

    def end(self):
        status, _, _ = http("DELETE", urllib.parse.urljoin(self.url, self.location))
        say("ended", status=status)
        self.status = 0 if status == 200 else 1
        self.loop.quit()
        return False


def main():
    args = publisher_arguments(__doc__.splitlines()[0])
    Gst.init(None)
    sys.exit(Publisher(args.url, args.token, args.seconds).run())


if __name__ == "__main__":
    main()
