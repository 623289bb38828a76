//! SDP for an ICE-lite, DTLS-passive SFU: parsing what peers send, answering publishers, and
//! offering subscribers the tracks they receive. Sans-IO: no sockets, no clock, no randomness;
//! everything that varies (session ids and versions, credentials, candidates, mids, SSRCs)
//! comes from the caller.
//!
//! # What it owns
//! - [`RemoteDescription::parse`]: a peer's offer or answer, checked once into typed form.
//!   Browsers' unified-plan offers (Chromium, Firefox) and WHIP clients (OBS, GStreamer).
//! - [`answer`]: the answer to a publisher's offer, and the [`Negotiated`] record of what it
//!   agreed to, from which the signalling creates producers.
//! - [`offer`]: the SFU's own offer to a subscriber, given the [`OfferLayout`] the last
//!   answered offer left, so that m-lines keep their order across renegotiations, and
//!   [`SessionPayloadTypes`], the numbers its formats keep in that subscriber's session.
//!
//! # Rules for callers
//! - The SFU is always the ICE-lite side and the DTLS server. Every description it writes has
//!   `a=ice-lite`; answers say `a=setup:passive`, offers `a=setup:actpass` (see [`offer`]);
//!   a peer's `passive` or `holdconn` is refused.
//! - One transport per peer connection: BUNDLE and rtcp-mux are required, one set of ICE
//!   credentials and one sha-256 fingerprint serve every section.
//! - Text is refused above [`MAX_SDP_BYTES`] before parsing; any input returns an error
//!   rather than panic.
//! - Raise [`LocalParameters::session_version`] for each description sent on a transport.
//! - Keep the [`OfferLayout`] of the last offer the subscriber answered and pass it to the
//!   next [`offer`]; mids are the caller's, unique for the session's lifetime.
//! - Header extension ids in [`Negotiated`] (publisher side) and [`subscriber_extensions`]
//!   (subscriber side) are what the dataplane reads and writes.
//! - Payload types are each session's own: match formats with [`Codec::same_format`], never
//!   by number, and number what a subscriber's session is offered with [`SessionPayloadTypes`].
//!
//! # The SDP crate
//! Mozilla's `webrtc-sdp` (MPL-2.0, used unmodified as a dependency; its code is not copied
//! here) rather than webrtc-rs' `sdp` 0.17, read side by side:
//! - It is the parser Firefox runs on every remote description, whoever wrote it, with a
//!   fuzz target in its repository: the widest interop and hostile-input exposure available.
//! - It types and checks every attribute this module reads: candidates, fingerprints (octet
//!   count against the hash), rtpmap and fmtp (H.264 profile-level-id, RTX apt, Opus
//!   parameters), rtcp-fb, extmap, ssrc and ssrc-group, msid, rid and simulcast (each
//!   simulcast rid must be declared). `sdp` 0.17 keeps attributes as key/value strings,
//!   which would leave all that tokenising to us, and checks nothing past the line order.
//! - Its typed model renders back through the same grammar, so what we write re-parses.
//!
//! Two of its habits are worked around: it joins fmtp parameters it does not know with `,`
//! (so the module renders remote fmtp itself and hands the crate fmtp text to write as is),
//! and it skips an m-line it cannot read with only a warning (refused here as
//! [`SdpError::UnsupportedMediaLine`]).
#![forbid(unsafe_code)]

mod answer;
mod codec;
mod error;
mod ids;
mod local;
mod offer;
mod payload_types;
mod remote;
mod writer;

#[cfg(test)]
mod tests;

pub use answer::{
    Answer, FORWARDED_FORMATS, Negotiated, NegotiatedSection, RemoteStream, answer, answer_with_tracks, forwardable,
};
pub use codec::{
    ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, Codec, CodecPolicy, HeaderExtensions, MID_URI, REPAIRED_RTP_STREAM_ID_URI,
    RTP_STREAM_ID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI, VideoCodec,
};
pub use error::SdpError;
pub use ids::{Direction, Mid, PayloadType, SectionKind, Ssrc};
pub use local::{BitrateCaps, Candidate, CandidateTransport, LocalParameters};
pub use offer::{
    OfferLayout, OfferedSection, OutgoingTrack, SectionState, SubscriberOffer, offer, subscriber_extensions,
};
pub use payload_types::SessionPayloadTypes;
pub use remote::{Extmap, Msid, RemoteDescription, RemoteMedia, RemoteSetup, RemoteSsrc, Rid, Simulcast, SsrcGroup};
pub use uprtcd_dataplane::dtls::CertificateFingerprint;

/// The largest description accepted: browsers' offers with a dozen tracks stay under 20 KiB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
