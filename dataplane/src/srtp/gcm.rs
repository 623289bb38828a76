//! `AEAD_AES_128_GCM` and `AEAD_AES_256_GCM` (RFC 7714): AES-GCM with a 16-byte tag and the
//! 12-byte IV `salt XOR (0^16 ‖ SSRC ‖ index)`, where the index is ROC ‖ SEQ for SRTP and
//! `0^17 ‖ SRTCP index` for SRTCP (§8.1, §9.1). The RTP header, or the first RTCP header
//! word and SSRC with the ESRTCP word, is the associated data (§8.2, §9.2).
//!
//! On a failed open aws-lc zeroes the output, so no unauthenticated plaintext is left in
//! the caller's buffer.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::SrtpError;
use super::header::{ESRTCP_WORD_LEN, RTCP_UNENCRYPTED_PREFIX_LEN, SrtcpTrailer};
use super::kdf::{KdfLabel, MasterKdf};

pub(super) const TAG_LEN: usize = 16;
/// SRTCP appends the tag, then the ESRTCP word (RFC 7714 §9, figure 3).
pub(super) const SRTCP_OVERHEAD: usize = TAG_LEN + ESRTCP_WORD_LEN;
const SESSION_SALT_LEN: usize = 12;
const MAX_SESSION_KEY_LEN: usize = 32;

/// The session keys of one direction, for SRTP and for SRTCP.
pub(super) struct AeadAesGcm {
    srtp: SessionKeys,
    srtcp: SessionKeys,
}

struct SessionKeys {
    aead: LessSafeKey,
    salt: [u8; SESSION_SALT_LEN],
}

impl fmt::Debug for AeadAesGcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeadAesGcm({:?}, keys redacted)", self.srtp.aead.algorithm())
    }
}

impl SessionKeys {
    fn derive(kdf: &MasterKdf, key_len: usize, encryption: KdfLabel, salting: KdfLabel) -> Result<Self, SrtpError> {
        let algorithm = match key_len {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(SrtpError::WrongKeyLength),
        };
        let mut key_buffer = [0; MAX_SESSION_KEY_LEN];
        let key = &mut key_buffer[..key_len];
        kdf.derive(encryption, key)?;
        let mut salt = [0; SESSION_SALT_LEN];
        kdf.derive(salting, &mut salt)?;
        let aead = UnboundKey::new(algorithm, key).map_err(|_| SrtpError::CryptoFailure)?;
        super::wipe(key);
        Ok(Self { aead: LessSafeKey::new(aead), salt })
    }

    fn nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0; SESSION_SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
        for (iv_byte, salt_byte) in iv.iter_mut().zip(self.salt) {
            *iv_byte ^= salt_byte;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

/// SRTCP's associated data when encrypting: the first header word and the SSRC, then the
/// ESRTCP word.
fn srtcp_aad(packet: &[u8], word: [u8; ESRTCP_WORD_LEN]) -> [u8; RTCP_UNENCRYPTED_PREFIX_LEN + ESRTCP_WORD_LEN] {
    let mut aad = [0; RTCP_UNENCRYPTED_PREFIX_LEN + ESRTCP_WORD_LEN];
    aad[..RTCP_UNENCRYPTED_PREFIX_LEN].copy_from_slice(&packet[..RTCP_UNENCRYPTED_PREFIX_LEN]);
    aad[RTCP_UNENCRYPTED_PREFIX_LEN..].copy_from_slice(&word);
    aad
}

impl AeadAesGcm {
    /// `key_len` is the master key length, which the session keys share (RFC 7714 §11).
    pub(super) fn new(kdf: &MasterKdf, key_len: usize) -> Result<Self, SrtpError> {
        Ok(Self {
            srtp: SessionKeys::derive(kdf, key_len, KdfLabel::SrtpEncryption, KdfLabel::SrtpSalt)?,
            srtcp: SessionKeys::derive(kdf, key_len, KdfLabel::SrtcpEncryption, KdfLabel::SrtcpSalt)?,
        })
    }

    /// `packet` is the plaintext (`plaintext_len` bytes) and room for the tag.
    pub(super) fn protect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        plaintext_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        let (body, tag_space) = packet.split_at_mut(plaintext_len);
        let (header, payload) = body.split_at_mut(header_len);
        let tag = self
            .srtp
            .aead
            .seal_in_place_separate_tag(self.srtp.nonce(ssrc, index), Aad::from(&*header), payload)
            .map_err(|_| SrtpError::CryptoFailure)?;
        tag_space.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// `packet` is the received SRTP packet, at least header and tag long. Returns the
    /// plaintext length.
    pub(super) fn unprotect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let (header, sealed) = packet.split_at_mut(header_len);
        let payload = self
            .srtp
            .aead
            .open_in_place(self.srtp.nonce(ssrc, index), Aad::from(&*header), sealed)
            .map_err(|_| SrtpError::AuthFailed)?;
        Ok(header_len + payload.len())
    }

    /// `packet` is the plaintext compound (`plaintext_len` bytes) and room for the tag and
    /// the ESRTCP word.
    pub(super) fn protect_rtcp(
        &self,
        packet: &mut [u8],
        plaintext_len: usize,
        ssrc: u32,
        trailer: SrtcpTrailer,
    ) -> Result<(), SrtpError> {
        let word = trailer.to_word();
        let aad = srtcp_aad(packet, word);
        let (body, trailer_space) = packet.split_at_mut(plaintext_len);
        let tag = self
            .srtcp
            .aead
            .seal_in_place_separate_tag(
                self.srtcp.nonce(ssrc, u64::from(trailer.index)),
                Aad::from(aad),
                &mut body[RTCP_UNENCRYPTED_PREFIX_LEN..],
            )
            .map_err(|_| SrtpError::CryptoFailure)?;
        let (tag_space, word_space) = trailer_space.split_at_mut(TAG_LEN);
        tag_space.copy_from_slice(tag.as_ref());
        word_space.copy_from_slice(&word);
        Ok(())
    }

    /// `packet` is the received SRTCP packet whose trailer the caller read. Returns the
    /// plaintext length.
    pub(super) fn unprotect_rtcp(
        &self,
        packet: &mut [u8],
        ssrc: u32,
        trailer: SrtcpTrailer,
    ) -> Result<usize, SrtpError> {
        let nonce = self.srtcp.nonce(ssrc, u64::from(trailer.index));
        let word = trailer.to_word();
        let word_at = packet.len() - ESRTCP_WORD_LEN;
        let tag_at = word_at - TAG_LEN;
        if trailer.encrypted {
            let aad = srtcp_aad(packet, word);
            self.srtcp
                .aead
                .open_in_place(nonce, Aad::from(aad), &mut packet[RTCP_UNENCRYPTED_PREFIX_LEN..word_at])
                .map_err(|_| SrtpError::AuthFailed)?;
        } else {
            // Unencrypted SRTCP (E = 0, RFC 7714 §9.2): the whole compound and the ESRTCP
            // word are associated data and the plaintext is empty. Moving the word in front
            // of the tag makes that associated data one slice.
            packet.copy_within(tag_at..word_at, tag_at + ESRTCP_WORD_LEN);
            packet[tag_at..tag_at + ESRTCP_WORD_LEN].copy_from_slice(&word);
            let (aad, tag) = packet.split_at_mut(tag_at + ESRTCP_WORD_LEN);
            self.srtcp.aead.open_in_place(nonce, Aad::from(&*aad), tag).map_err(|_| SrtpError::AuthFailed)?;
        }
        Ok(tag_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    // RFC 7714 §16 and §17 state their vectors with session keys, not master keys: the
    // 128- or 256-bit key 00 01 02 … and the salt "Quid pro quo", for SRTP and SRTCP alike.
    const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SALT: &str = "517569642070726f2071756f";

    /// RFC 7714 §16: a 12-byte header (SSRC 5501a0b2, sequence number f17b, ROC 0) and
    /// the payload "Gallia est omnis divisa in partes tres".
    const RTP: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573",
    );
    const RTP_SSRC: u32 = 0x5501_a0b2;
    const RTP_INDEX: u64 = 0xf17b;

    /// RFC 7714 §16.1.1 (AEAD_AES_128_GCM): ciphertext, then the tag.
    const SRTP_128: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833",
        "899d7f27beb16a9152cf765ee4390cce",
    );

    /// RFC 7714 §16.2.1 (AEAD_AES_256_GCM).
    const SRTP_256: &str = concat!(
        "8040f17b8041f8d35501a0b2",
        "32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b",
        "7aa3db36dfffd6b0f9bb7878d7a76c13",
    );

    /// The RTCP compound RFC 7714 §17.1 to §17.3 protect: a sender report from SSRC
    /// 4d617273 ("Mars"), SRTCP index 5d4. (The preamble of §17 prints a slightly
    /// different packet than its subsections use; the subsections agree with each other.)
    const RTCP: &str = concat!(
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
    );
    const RTCP_SSRC: u32 = 0x4d61_7273;
    const RTCP_INDEX: u32 = 0x5d4;

    /// RFC 7714 §17.1 (AEAD_AES_128_GCM): ciphertext, tag, ESRTCP word.
    const SRTCP_128: &str = concat!(
        "81c8000d4d617273",
        "63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275b",
        "c84aa45896cf4d2fc5abf87245d9eade",
        "800005d4",
    );

    /// RFC 7714 §17.2 (AEAD_AES_256_GCM).
    const SRTCP_256: &str = concat!(
        "81c8000d4d617273",
        "d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad",
        "1d1eb30c4446839f57ff6f6cb26ac3be",
        "800005d4",
    );

    /// RFC 7714 §17.3 (AEAD_AES_128_GCM, E flag clear): the compound in the clear, the tag
    /// over it and the ESRTCP word, then the word.
    const SRTCP_128_UNENCRYPTED: &str = concat!(
        "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
        "841dd9683dd78ec92ae58790125f62b3",
        "000005d4",
    );

    fn session_keys(key: &str) -> AeadAesGcm {
        let keys = || {
            let key = hex(key);
            let algorithm = if key.len() == 16 { &aead::AES_128_GCM } else { &aead::AES_256_GCM };
            SessionKeys {
                aead: LessSafeKey::new(UnboundKey::new(algorithm, &key).expect("16 or 32 bytes")),
                salt: hex(SALT).try_into().expect("12-byte salt"),
            }
        };
        AeadAesGcm { srtp: keys(), srtcp: keys() }
    }

    fn check_srtp(key: &str, expected: &str) {
        let keys = session_keys(key);
        let plaintext = hex(RTP);
        let mut packet = plaintext.clone();
        packet.resize(plaintext.len() + TAG_LEN, 0);
        keys.protect_rtp(&mut packet, 12, plaintext.len(), RTP_SSRC, RTP_INDEX).expect("protect");
        assert_eq!(packet, hex(expected));

        let len = keys.unprotect_rtp(&mut packet, 12, RTP_SSRC, RTP_INDEX).expect("the vector verifies");
        assert_eq!(&packet[..len], &plaintext[..]);
    }

    fn check_srtcp(key: &str, expected: &str) {
        let keys = session_keys(key);
        let plaintext = hex(RTCP);
        let mut packet = plaintext.clone();
        packet.resize(plaintext.len() + SRTCP_OVERHEAD, 0);
        keys.protect_rtcp(&mut packet, plaintext.len(), RTCP_SSRC, SrtcpTrailer { encrypted: true, index: RTCP_INDEX })
            .expect("protect");
        assert_eq!(packet, hex(expected));

        let trailer = SrtcpTrailer { encrypted: true, index: RTCP_INDEX };
        let len = keys.unprotect_rtcp(&mut packet, RTCP_SSRC, trailer).expect("the vector verifies");
        assert_eq!(&packet[..len], &plaintext[..]);
    }

    #[test]
    fn rfc_7714_16_1_srtp_aead_aes_128_gcm() {
        check_srtp(KEY_128, SRTP_128);
    }

    #[test]
    fn rfc_7714_16_2_srtp_aead_aes_256_gcm() {
        check_srtp(KEY_256, SRTP_256);
    }

    #[test]
    fn rfc_7714_17_1_srtcp_aead_aes_128_gcm() {
        check_srtcp(KEY_128, SRTCP_128);
    }

    #[test]
    fn rfc_7714_17_2_srtcp_aead_aes_256_gcm() {
        check_srtcp(KEY_256, SRTCP_256);
    }

    #[test]
    fn rfc_7714_17_3_unencrypted_srtcp_is_authenticated() {
        let keys = session_keys(KEY_128);
        let trailer = SrtcpTrailer { encrypted: false, index: RTCP_INDEX };
        let mut packet = hex(SRTCP_128_UNENCRYPTED);
        let len = keys.unprotect_rtcp(&mut packet, RTCP_SSRC, trailer).expect("the vector verifies");
        assert_eq!(&packet[..len], &hex(RTCP)[..]);

        let mut forged = hex(SRTCP_128_UNENCRYPTED);
        forged[20] ^= 0x01;
        assert_eq!(keys.unprotect_rtcp(&mut forged, RTCP_SSRC, trailer), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn the_vectors_fail_under_another_index() {
        let keys = session_keys(KEY_128);
        let mut packet = hex(SRTP_128);
        assert_eq!(keys.unprotect_rtp(&mut packet, 12, RTP_SSRC, RTP_INDEX + (1 << 16)), Err(SrtpError::AuthFailed));
        // aws-lc zeroes what it decrypted, so no unauthenticated plaintext is left.
        assert!(packet[12..packet.len() - TAG_LEN].iter().all(|&byte| byte == 0));

        let mut packet = hex(SRTCP_128);
        let trailer = SrtcpTrailer { encrypted: true, index: RTCP_INDEX + 1 };
        assert_eq!(keys.unprotect_rtcp(&mut packet, RTCP_SSRC, trailer), Err(SrtpError::AuthFailed));
    }
}
