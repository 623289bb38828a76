//! One direction's cryptographic transform, whichever profile was negotiated: the keyed
//! AES and HMAC objects, built once from the master key and reused for every packet.

use super::cm::{self, AesCmHmacSha1};
use super::gcm::{self, AeadAesGcm};
use super::header::{ESRTCP_WORD_LEN, RTCP_UNENCRYPTED_PREFIX_LEN, SrtcpTrailer};
use super::kdf::MasterKdf;
use super::{SrtpError, SrtpProfile};

/// AES-CM is boxed: its two keyed HMAC states make it some 3.5 KB, against 80 bytes for
/// AES-GCM, whose keys aws-lc keeps on the heap already.
#[derive(Debug)]
pub(super) enum Transform {
    AesCm(Box<AesCmHmacSha1>),
    AesGcm(AeadAesGcm),
}

impl Transform {
    /// The lengths have been checked against `profile`.
    pub(super) fn new(profile: SrtpProfile, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let kdf = MasterKdf::new(master_key, master_salt)?;
        Ok(match profile {
            SrtpProfile::Aes128CmHmacSha1_80 => Self::AesCm(Box::new(AesCmHmacSha1::new(&kdf)?)),
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                Self::AesGcm(AeadAesGcm::new(&kdf, master_key.len())?)
            }
        })
    }

    /// Bytes SRTP adds to an RTP packet.
    pub(super) fn srtp_overhead(&self) -> usize {
        match self {
            Self::AesCm(_) => cm::AUTH_TAG_LEN,
            Self::AesGcm(_) => gcm::TAG_LEN,
        }
    }

    /// Bytes SRTCP adds to an RTCP compound.
    pub(super) fn srtcp_overhead(&self) -> usize {
        match self {
            Self::AesCm(_) => cm::SRTCP_OVERHEAD,
            Self::AesGcm(_) => gcm::SRTCP_OVERHEAD,
        }
    }

    /// Encrypts and authenticates in place. `packet` is exactly the plaintext
    /// (`plaintext_len` bytes, header `header_len`) followed by [`Self::srtp_overhead`]
    /// bytes of room.
    pub(super) fn protect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        plaintext_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        match self {
            Self::AesCm(keys) => keys.protect_rtp(packet, header_len, plaintext_len, ssrc, index),
            Self::AesGcm(keys) => keys.protect_rtp(packet, header_len, plaintext_len, ssrc, index),
        }
    }

    /// Authenticates and decrypts in place; `packet` holds at least the header and the
    /// overhead. Returns the plaintext length.
    pub(super) fn unprotect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match self {
            Self::AesCm(keys) => keys.unprotect_rtp(packet, header_len, ssrc, index),
            Self::AesGcm(keys) => keys.unprotect_rtp(packet, header_len, ssrc, index),
        }
    }

    /// Encrypts and authenticates in place. `packet` is exactly the plaintext compound
    /// (`plaintext_len` bytes) followed by [`Self::srtcp_overhead`] bytes of room.
    pub(super) fn protect_rtcp(
        &self,
        packet: &mut [u8],
        plaintext_len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<(), SrtpError> {
        let trailer = SrtcpTrailer { encrypted: true, index };
        match self {
            Self::AesCm(keys) => keys.protect_rtcp(packet, plaintext_len, ssrc, trailer),
            Self::AesGcm(keys) => keys.protect_rtcp(packet, plaintext_len, ssrc, trailer),
        }
    }

    /// Reads the (not yet authenticated) E flag and index of a received SRTCP packet.
    pub(super) fn read_srtcp_trailer(&self, packet: &[u8]) -> Result<SrtcpTrailer, SrtpError> {
        let overhead = self.srtcp_overhead();
        if packet.len() < RTCP_UNENCRYPTED_PREFIX_LEN + overhead {
            return Err(SrtpError::Malformed);
        }
        let word_at = match self {
            Self::AesCm(_) => packet.len() - overhead,
            Self::AesGcm(_) => packet.len() - ESRTCP_WORD_LEN,
        };
        let mut word = [0; ESRTCP_WORD_LEN];
        word.copy_from_slice(&packet[word_at..word_at + ESRTCP_WORD_LEN]);
        Ok(SrtcpTrailer::from_word(word))
    }

    /// Authenticates and, when the E flag is set, decrypts in place; `trailer` came from
    /// [`Self::read_srtcp_trailer`] on the same packet. Returns the plaintext length.
    pub(super) fn unprotect_rtcp(
        &self,
        packet: &mut [u8],
        ssrc: u32,
        trailer: SrtcpTrailer,
    ) -> Result<usize, SrtpError> {
        match self {
            Self::AesCm(keys) => keys.unprotect_rtcp(packet, ssrc, trailer),
            Self::AesGcm(keys) => keys.unprotect_rtcp(packet, ssrc, trailer),
        }
    }
}
