//! SRTP and SRTCP (RFC 3711, RFC 7714) for one DTLS-SRTP association: protect and unprotect
//! in place, in the caller's buffer, with no allocation per packet. Sans-IO: no socket,
//! thread or clock.
//!
//! What it owns: one [`SrtpSession`] per transport, built from the
//! [`SrtpKeyingMaterial`] that DTLS yields with `Connected`. The session holds the keyed AES
//! and HMAC objects of both directions (made once), and per SSRC the rollover counter of
//! each outbound stream, the replay window of each inbound stream, and the SRTCP index of
//! each direction. Profiles: `AES_CM_128_HMAC_SHA1_80`, `AEAD_AES_128_GCM`,
//! `AEAD_AES_256_GCM`; session keys come from the RFC 3711 §4.3 KDF with rate 0, no MKI.
//!
//! Rules for callers:
//! - **Demultiplex first.** Pass RTP to the `_rtp` calls and RTCP to the `_rtcp` calls (RFC
//!   5761 §4: second byte 192..=223 is RTCP); only the RTP version, CSRC count and extension
//!   length are checked here.
//! - **Room to grow.** `protect_*` takes the plaintext in `buf[..len]` and writes the
//!   protected packet over it, returning its length; `buf` must have
//!   [`MAX_SRTP_OVERHEAD`] / [`MAX_SRTCP_OVERHEAD`] bytes past `len`, else
//!   [`SrtpError::BufferTooSmall`]. `unprotect_*` takes exactly the received datagram and
//!   returns the plaintext length, the plaintext at the front of `buf`.
//! - **An error means drop.** After any error the buffer is unspecified, but it never holds
//!   unauthenticated plaintext (AES-CM authenticates before decrypting; aws-lc zeroes a
//!   failed GCM open), and the session's state is as if the packet never came. Count the
//!   drop by the error: `AuthFailed`, `Replayed` and `TooOld` are the peer's; the rest are
//!   malformed input, limits, or (`BufferTooSmall`) a caller bug.
//! - **A resent packet is the same packet.** Protecting a second packet with the same SSRC
//!   and sequence number (a retransmission without RTX) reuses the keystream, and under
//!   AES-GCM a second, different plaintext for one nonce exposes the authentication key:
//!   resend the original bytes, or use RTX. Rewrite sequence numbers per consumer without
//!   gaps of 2^15 or more, so the rollover counter can follow them (RFC 3711 Appendix A).
//! - **Streams start at ROC 0.** Each SSRC's first packet in either direction starts its
//!   rollover counter at 0, which holds for DTLS-SRTP: keys are new per association.
//! - **Keys wear out.** [`SrtpError::KeyLifetimeExhausted`] after 2^48 SRTP or 2^31 SRTCP
//!   packets of one SSRC: only a new DTLS handshake helps (RFC 3711 §9.2).
//! - **Bounded state.** Each of the four per-SSRC tables holds at most
//!   [`MAX_STREAMS_PER_SESSION`] SSRCs; inbound state is created only by a packet that
//!   authenticated. Call [`SrtpSession::forget_ssrc`] when a stream ends, and never send
//!   a forgotten SSRC again under the same keys: its indices would restart and repeat.
#![forbid(unsafe_code)]

mod cm;
mod gcm;
mod header;
mod kdf;
mod replay;
mod streams;
mod transform;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::dtls::{SrtpKeyingMaterial, SrtpProfile};

pub use replay::REPLAY_WINDOW_LEN;
pub use streams::MAX_STREAMS_PER_SESSION;

use replay::{ReplayWindow, estimate_srtp_index};
use streams::StreamTable;
use transform::Transform;

/// Most bytes [`SrtpSession::protect_rtp`] appends: the AES-GCM tag (AES-CM appends 10).
pub const MAX_SRTP_OVERHEAD: usize = gcm::TAG_LEN;
/// Most bytes [`SrtpSession::protect_rtcp`] appends: the AES-GCM tag and the ESRTCP word
/// (AES-CM appends 14).
pub const MAX_SRTCP_OVERHEAD: usize = gcm::SRTCP_OVERHEAD;

/// The largest SRTCP index; the next packet needs new keys.
const MAX_SRTCP_INDEX: u32 = (1 << 31) - 1;

/// Why a packet was not protected or unprotected, or a session not made. Cheap to copy and
/// to count; the packet is dropped in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SrtpError {
    // The peer's packets.
    /// The authentication tag did not verify: forged, corrupted, or under other keys.
    #[error("SRTP authentication tag did not verify")]
    AuthFailed,
    /// A packet with this index was already accepted.
    #[error("SRTP packet replayed")]
    Replayed,
    /// The index is further behind the highest accepted one than the replay window reaches.
    #[error("SRTP packet older than the replay window")]
    TooOld,

    // Malformed input.
    /// Not RTP/RTCP version 2, or shorter than its header, CSRCs, extension or SRTP trailer.
    #[error("packet too short or not RTP/RTCP version 2")]
    Malformed,

    // Limits.
    /// The stream has used up its index space (2^48 SRTP or 2^31 SRTCP packets).
    #[error("SRTP key lifetime exhausted; a new DTLS handshake is needed")]
    KeyLifetimeExhausted,
    /// A new SSRC would pass [`MAX_STREAMS_PER_SESSION`].
    #[error("too many SSRCs in one SRTP session")]
    TooManyStreams,

    // API misuse and setup.
    /// `buf` is shorter than `len`, or has no room for the tag.
    #[error("buffer too small for the SRTP packet and its tag")]
    BufferTooSmall,
    /// A master key or salt does not have the length its profile requires.
    #[error("SRTP master key or salt has the wrong length for its profile")]
    WrongKeyLength,
    /// The crypto library refused an operation on valid input; not expected to happen.
    #[error("SRTP cryptographic operation failed")]
    CryptoFailure,
}

/// A master key and salt for one direction, borrowed.
#[derive(Clone, Copy)]
pub struct MasterKeySalt<'a> {
    /// 16 bytes, or 32 for `AEAD_AES_256_GCM`.
    pub key: &'a [u8],
    /// 14 bytes for AES-CM, 12 for the AEAD profiles.
    pub salt: &'a [u8],
}

impl fmt::Debug for MasterKeySalt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKeySalt({} + {} bytes, redacted)", self.key.len(), self.salt.len())
    }
}

/// SRTP and SRTCP for both directions of one transport. See the module documentation for
/// the rules of use.
pub struct SrtpSession {
    profile: SrtpProfile,
    outbound: Transform,
    inbound: Transform,
    /// Highest SRTP index protected per SSRC: the ROC and the reference for the next estimate.
    sent_rtp: StreamTable<u64>,
    received_rtp: StreamTable<ReplayWindow>,
    /// Last SRTCP index protected per SSRC.
    sent_rtcp: StreamTable<u32>,
    received_rtcp: StreamTable<ReplayWindow>,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .field("sent_rtp_streams", &self.sent_rtp.len())
            .field("received_rtp_streams", &self.received_rtp.len())
            .field("sent_rtcp_streams", &self.sent_rtcp.len())
            .field("received_rtcp_streams", &self.received_rtcp.len())
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// The session for the keys DTLS exported: `local_*` protects, `remote_*` unprotects.
    pub fn new(keys: &SrtpKeyingMaterial) -> Result<Self, SrtpError> {
        Self::from_master_keys(
            keys.profile,
            MasterKeySalt { key: keys.local_key.as_bytes(), salt: keys.local_salt.as_bytes() },
            MasterKeySalt { key: keys.remote_key.as_bytes(), salt: keys.remote_salt.as_bytes() },
        )
    }

    /// The session for keys from elsewhere (tests, load generators): `local` protects what
    /// this side sends, `remote` unprotects what it receives.
    pub fn from_master_keys(
        profile: SrtpProfile,
        local: MasterKeySalt<'_>,
        remote: MasterKeySalt<'_>,
    ) -> Result<Self, SrtpError> {
        for keys in [local, remote] {
            if keys.key.len() != profile.master_key_len() || keys.salt.len() != profile.master_salt_len() {
                return Err(SrtpError::WrongKeyLength);
            }
        }
        Ok(Self {
            profile,
            outbound: Transform::new(profile, local.key, local.salt)?,
            inbound: Transform::new(profile, remote.key, remote.salt)?,
            sent_rtp: StreamTable::new(),
            received_rtp: StreamTable::new(),
            sent_rtcp: StreamTable::new(),
            received_rtcp: StreamTable::new(),
        })
    }

    /// The negotiated protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protects the RTP packet in `buf[..len]` in place and returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let header = header::parse_rtp(buf.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let protected_len = len + self.outbound.srtp_overhead();
        let packet = buf.get_mut(..protected_len).ok_or(SrtpError::BufferTooSmall)?;

        let stream = self.sent_rtp.find(header.ssrc);
        let index = match stream {
            Ok(position) => estimate_srtp_index(*self.sent_rtp.get(position), header.sequence_number)?,
            Err(_) => {
                self.sent_rtp.ensure_room()?;
                u64::from(header.sequence_number)
            }
        };
        self.outbound.protect_rtp(packet, header.len, len, header.ssrc, index)?;
        match stream {
            Ok(position) => {
                let highest = self.sent_rtp.get_mut(position);
                *highest = (*highest).max(index);
            }
            Err(position) => self.sent_rtp.insert(position, header.ssrc, index),
        }
        Ok(protected_len)
    }

    /// Unprotects the SRTP packet that fills `buf` in place and returns the RTP packet's
    /// length.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let header = header::parse_rtp(buf)?;
        if buf.len() < header.len + self.inbound.srtp_overhead() {
            return Err(SrtpError::Malformed);
        }

        let stream = self.received_rtp.find(header.ssrc);
        let index = match stream {
            Ok(position) => {
                let window = self.received_rtp.get(position);
                let index = estimate_srtp_index(window.highest(), header.sequence_number)?;
                window.check(index)?;
                index
            }
            Err(_) => {
                self.received_rtp.ensure_room()?;
                u64::from(header.sequence_number)
            }
        };
        let plaintext_len = self.inbound.unprotect_rtp(buf, header.len, header.ssrc, index)?;
        match stream {
            Ok(position) => self.received_rtp.get_mut(position).accept(index),
            Err(position) => self.received_rtp.insert(position, header.ssrc, ReplayWindow::starting_at(index)),
        }
        Ok(plaintext_len)
    }

    /// Protects the RTCP compound in `buf[..len]` in place (always encrypted) and returns the
    /// SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let ssrc = header::parse_rtcp_ssrc(buf.get(..len).ok_or(SrtpError::BufferTooSmall)?)?;
        let protected_len = len + self.outbound.srtcp_overhead();
        let packet = buf.get_mut(..protected_len).ok_or(SrtpError::BufferTooSmall)?;

        // The first index is 1, as libsrtp and rtc-srtp send; receivers accept any start.
        let stream = self.sent_rtcp.find(ssrc);
        let index = match stream {
            Ok(position) => {
                let last = *self.sent_rtcp.get(position);
                if last == MAX_SRTCP_INDEX {
                    return Err(SrtpError::KeyLifetimeExhausted);
                }
                last + 1
            }
            Err(_) => {
                self.sent_rtcp.ensure_room()?;
                1
            }
        };
        self.outbound.protect_rtcp(packet, len, ssrc, index)?;
        match stream {
            Ok(position) => *self.sent_rtcp.get_mut(position) = index,
            Err(position) => self.sent_rtcp.insert(position, ssrc, index),
        }
        Ok(protected_len)
    }

    /// Unprotects the SRTCP packet that fills `buf` in place and returns the RTCP compound's
    /// length. Packets sent unencrypted (E flag clear) are authenticated and accepted.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let ssrc = header::parse_rtcp_ssrc(buf)?;
        let trailer = self.inbound.read_srtcp_trailer(buf)?;
        let index = u64::from(trailer.index);

        let stream = self.received_rtcp.find(ssrc);
        match stream {
            Ok(position) => self.received_rtcp.get(position).check(index)?,
            Err(_) => self.received_rtcp.ensure_room()?,
        }
        let plaintext_len = self.inbound.unprotect_rtcp(buf, ssrc, trailer)?;
        match stream {
            Ok(position) => self.received_rtcp.get_mut(position).accept(index),
            Err(position) => self.received_rtcp.insert(position, ssrc, ReplayWindow::starting_at(index)),
        }
        Ok(plaintext_len)
    }

    /// Drops the state of `ssrc` in both directions, for RTP and RTCP, when the stream has
    /// ended. A packet that comes later starts the stream afresh (ROC 0, empty replay
    /// window): drop received ones before routing once the stream is gone, and give a new
    /// outbound stream a new SSRC, since restarted indices would repeat the keystream.
    pub fn forget_ssrc(&mut self, ssrc: u32) {
        self.sent_rtp.remove(ssrc);
        self.received_rtp.remove(ssrc);
        self.sent_rtcp.remove(ssrc);
        self.received_rtcp.remove(ssrc);
    }
}

/// Overwrites a derived key once it has been handed to the crypto library. Best effort:
/// `black_box` keeps the optimizer from dropping the stores as dead.
pub(crate) fn wipe(secret: &mut [u8]) {
    secret.fill(0);
    std::hint::black_box(secret);
}
