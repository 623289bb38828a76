//! The one error type of the SDP module. Variants fall in three groups, as rustls separates
//! them: input that is not SDP at all, a peer whose description we cannot work with, and a
//! caller that handed us parameters no peer could accept.

use super::MAX_SDP_BYTES;
use super::ids::Mid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    // Not SDP.
    #[error("SDP of {size} bytes is over the {MAX_SDP_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("not SDP: {0}")]
    NotSdp(String),
    /// The parser skips an m-line it cannot read and would hang that section's attributes on
    /// the section before; we refuse the whole description instead.
    #[error("unsupported media line: {0}")]
    UnsupportedMediaLine(String),

    // A peer we cannot work with.
    #[error("no media section to negotiate")]
    NoMedia,
    #[error("media section {index} has no a=mid")]
    MissingMid { index: usize },
    #[error("mid {0} names more than one media section")]
    DuplicateMid(Mid),
    #[error("no a=group:BUNDLE: all media must share one transport")]
    NoBundle,
    #[error("media section {mid} is not in the BUNDLE group")]
    NotBundled { mid: Mid },
    #[error("media section {mid} has no ICE credentials (a=ice-ufrag and a=ice-pwd)")]
    MissingIceCredentials { mid: Mid },
    #[error("no a=fingerprint")]
    MissingFingerprint,
    #[error("fingerprint hash {0} is not supported: sha-256 only")]
    UnsupportedFingerprint(String),
    #[error("a=setup:{0} leaves no DTLS client: the SFU is always the passive side")]
    UnusableSetup(&'static str),
    #[error("media section {mid} lacks a=rtcp-mux")]
    RtcpMuxMissing { mid: Mid },
    #[error("media section {mid} has {reason}")]
    InvalidPayloadTypes { mid: Mid, reason: &'static str },

    // A caller's mistake.
    #[error("invalid local parameters: {0}")]
    InvalidLocalParameters(&'static str),
    #[error("track {mid}: {reason}")]
    InvalidTrack { mid: Mid, reason: &'static str },
    #[error("the session carries more formats than there are dynamic payload types")]
    PayloadTypesExhausted,
}
