//! The few RTP and RTCP header fields SRTP needs: where the RTP header ends (it is
//! authenticated but not encrypted), the sequence number, and the SSRC; and the SRTCP
//! trailer word every transform writes and reads. Only the checks that
//! keep the slicing in bounds are made here; full validation belongs to the wire module.

use super::SrtpError;

const RTP_VERSION: u8 = 2;
const RTP_FIXED_HEADER_LEN: usize = 12;
const CSRC_LEN: usize = 4;
const EXTENSION_HEADER_LEN: usize = 4;
/// The SRTCP-protected part of RTCP starts after the first header word and the sender SSRC.
pub(super) const RTCP_UNENCRYPTED_PREFIX_LEN: usize = 8;

/// The E flag and the 31-bit SRTCP index, one big-endian word (RFC 3711 §3.4).
pub(super) const ESRTCP_WORD_LEN: usize = 4;
const ENCRYPTED_FLAG: u32 = 1 << 31;

/// The E flag and index an SRTCP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SrtcpTrailer {
    pub(super) encrypted: bool,
    pub(super) index: u32,
}

impl SrtcpTrailer {
    pub(super) fn to_word(self) -> [u8; ESRTCP_WORD_LEN] {
        let flag = if self.encrypted { ENCRYPTED_FLAG } else { 0 };
        (flag | self.index).to_be_bytes()
    }

    pub(super) fn from_word(word: [u8; ESRTCP_WORD_LEN]) -> Self {
        let word = u32::from_be_bytes(word);
        Self { encrypted: word & ENCRYPTED_FLAG != 0, index: word & !ENCRYPTED_FLAG }
    }
}

/// What SRTP reads from an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtpHeader {
    /// Fixed header, CSRCs and the header extension: the part left in the clear.
    pub(super) len: usize,
    pub(super) sequence_number: u16,
    pub(super) ssrc: u32,
}

/// Reads the RTP header at the start of `packet`, which must hold all of it.
pub(super) fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, SrtpError> {
    let fixed = packet.get(..RTP_FIXED_HEADER_LEN).ok_or(SrtpError::Malformed)?;
    if fixed[0] >> 6 != RTP_VERSION {
        return Err(SrtpError::Malformed);
    }
    let csrc_count = usize::from(fixed[0] & 0x0F);
    let has_extension = fixed[0] & 0x10 != 0;
    let mut len = RTP_FIXED_HEADER_LEN + csrc_count * CSRC_LEN;
    if has_extension {
        let extension = packet.get(len..len + EXTENSION_HEADER_LEN).ok_or(SrtpError::Malformed)?;
        let words = usize::from(u16::from_be_bytes([extension[2], extension[3]]));
        len += EXTENSION_HEADER_LEN + words * 4;
    }
    if len > packet.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(RtpHeader {
        len,
        sequence_number: u16::from_be_bytes([fixed[2], fixed[3]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
    })
}

/// Reads the sender SSRC of the first RTCP packet of a compound, the SSRC that SRTCP keys
/// its index and IV by.
pub(super) fn parse_rtcp_ssrc(packet: &[u8]) -> Result<u32, SrtpError> {
    let prefix = packet.get(..RTCP_UNENCRYPTED_PREFIX_LEN).ok_or(SrtpError::Malformed)?;
    if prefix[0] >> 6 != RTP_VERSION {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_counts_csrcs_and_extension() {
        let mut packet = vec![0x80, 0x60, 0x12, 0x34, 0, 0, 0, 0, 0xCA, 0xFE, 0xBA, 0xBE];
        assert_eq!(parse_rtp(&packet), Ok(RtpHeader { len: 12, sequence_number: 0x1234, ssrc: 0xCAFE_BABE }));

        packet[0] = 0x92; // X=1, CC=2
        packet.extend_from_slice(&[0; 8]); // two CSRCs
        packet.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0x00, 0x00]);
        assert_eq!(parse_rtp(&packet).map(|header| header.len), Ok(12 + 8 + 4 + 4));
    }

    #[test]
    fn truncated_or_foreign_headers_are_malformed() {
        let full = [0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0, 0];
        for len in 0..full.len() {
            assert_eq!(parse_rtp(&full[..len]), Err(SrtpError::Malformed), "length {len}");
        }
        let mut version_one = [0u8; 12];
        version_one[0] = 0x40;
        assert_eq!(parse_rtp(&version_one), Err(SrtpError::Malformed));
        let too_many_csrcs = [0x8F, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(parse_rtp(&too_many_csrcs), Err(SrtpError::Malformed));

        assert_eq!(parse_rtcp_ssrc(&[0x80, 0xC8, 0, 6, 1, 2, 3]), Err(SrtpError::Malformed));
        assert_eq!(parse_rtcp_ssrc(&[0x40, 0xC8, 0, 6, 1, 2, 3, 4]), Err(SrtpError::Malformed));
        assert_eq!(parse_rtcp_ssrc(&[0x80, 0xC8, 0, 6, 1, 2, 3, 4]), Ok(0x0102_0304));
    }
}
