//! Wire formats of the forwarding path: the first-byte demux of a received datagram
//! (RFC 7983), and checked, zero-allocation views over RTP (RFC 3550, RFC 8285), RTCP
//! (RFC 3550, RFC 4585, RFC 5104, REMB, transport-wide congestion control feedback) and the
//! STUN header (RFC 5389), with writers for the packets the SFU itself originates; the values
//! of the RTP header extensions the SFU reads (RFC 6464 audio level); and the RFC 4571
//! framing that carries those packets over ICE-TCP streams.
//!
//! What it owns: byte layouts only. No clock, no socket; nothing here allocates, except the
//! stream framing's two buffers, once, when a connection's reader and writer are made.
//! STUN attributes are the ICE module's (stun-rs); SRTP is the `srtp` module's.
//!
//! Rules for callers:
//! - **Parse once, then never panic.** Every view is made by `new_checked`, which validates
//!   all that its accessors and iterators will read; after that no accessor can panic or
//!   read out of bounds. The check covers the buffer as `new_checked` saw it: the view's
//!   `T` must keep returning the same bytes from `as_ref` (slices, arrays and `Vec` do).
//! - **Views borrow.** An RTP or STUN view wraps the caller's buffer (`&[u8]`, `&mut [u8]`,
//!   a pooled buffer) and its iterators borrow the view; RTCP, which is only read, borrows a
//!   slice and its packet views live as long as that slice. Setters rewrite fields in place
//!   and never change the packet's length.
//! - **Errors are counted, not formatted.** [`WireError`] is a small `Copy` enum; the hot
//!   path maps it to a drop reason. `Display` exists for logs and tests.
//! - **Writers fill a caller's buffer** and return the length written, or
//!   [`WireError::BufferTooSmall`] (nothing meaningful written) or
//!   [`WireError::Unrepresentable`] (a value the format cannot carry).
//! - **Media is plaintext here.** Hand these views SRTP/SRTCP packets only after unprotect:
//!   before it an RTCP body is ciphertext and an RTP header extension may be encrypted.
#![forbid(unsafe_code)]

pub mod audio_level;
mod be;
mod demux;
pub mod framing;
pub mod rtcp;
pub mod rtp;
pub mod stun;
pub mod video;

#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod test_vectors;

use std::slice::ChunksExact;

pub use demux::{Datagram, classify};

/// Why bytes were refused as a packet, or why a writer could not write one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Shorter than its fixed header, or than a length field says it is.
    #[error("packet truncated")]
    Truncated,
    /// RTP/RTCP version other than 2.
    #[error("unsupported RTP/RTCP version")]
    BadVersion,
    /// A length or count field disagrees with the bytes around it.
    #[error("length or count field disagrees with the packet")]
    BadLength,
    /// Padding bit set with a pad count of zero, larger than the packet, or (RTCP) not on the
    /// last packet of a compound.
    #[error("bad padding")]
    BadPadding,
    /// An RFC 8285 header extension element runs past its extension block.
    #[error("malformed RTP header extension")]
    BadExtension,
    /// A field holds a value its format reserves (a transport-wide feedback status symbol 3).
    #[error("reserved value in a packet field")]
    ReservedValue,
    /// STUN message type whose two leading bits are not zero.
    #[error("STUN message type with leading bits set")]
    BadMessageType,
    /// STUN header without the RFC 5389 magic cookie.
    #[error("STUN magic cookie missing")]
    BadMagicCookie,
    /// An RFC 4571 length prefix of zero, or larger than the receiver accepts.
    #[error("stream frame length out of range")]
    BadFrameLength,
    /// The output buffer cannot hold the packet.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A writer was given a value the wire format cannot carry (too many report blocks, an
    /// extension id out of range, an empty list where one entry is required).
    #[error("value not representable on the wire")]
    Unrepresentable,
}

/// Iterator over a list of 32-bit identifiers (CSRCs, BYE and REMB SSRCs) inside a checked
/// packet.
#[derive(Debug, Clone)]
pub struct Ssrcs<'a>(ChunksExact<'a, u8>);

impl<'a> Ssrcs<'a> {
    /// The identifiers in `bytes`, whose length the caller has checked is a multiple of 4.
    fn new(bytes: &'a [u8]) -> Self {
        Self(bytes.chunks_exact(4))
    }
}

impl Iterator for Ssrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.0.next().map(|word| be::read_u32(word, 0))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Ssrcs<'_> {}
