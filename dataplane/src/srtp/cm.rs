//! `AES_CM_128_HMAC_SHA1_80` (RFC 3711 §4.1.1, §4.2.1; RFC 5764 §4.1.2): AES-128 in
//! counter mode with the IV `(k_s · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16)`, then an
//! HMAC-SHA1 tag truncated to 80 bits over the whole packet (plus the ROC for SRTP).
//! Authentication runs before decryption, so a forged packet is never decrypted.

use std::fmt;

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use subtle::ConstantTimeEq;

use super::SrtpError;
use super::header::{ESRTCP_WORD_LEN, RTCP_UNENCRYPTED_PREFIX_LEN, SrtcpTrailer};
use super::kdf::{KdfLabel, MasterKdf};

/// The truncated HMAC-SHA1 tag: 80 bits for SRTP and SRTCP alike.
pub(super) const AUTH_TAG_LEN: usize = 10;
/// SRTCP appends the ESRTCP word, then the tag over everything before it.
pub(super) const SRTCP_OVERHEAD: usize = ESRTCP_WORD_LEN + AUTH_TAG_LEN;
const SESSION_KEY_LEN: usize = 16;
const SESSION_SALT_LEN: usize = 14;
const AUTH_KEY_LEN: usize = 20;

/// The session keys of one direction, for SRTP and for SRTCP.
pub(super) struct AesCmHmacSha1 {
    srtp: SessionKeys,
    srtcp: SessionKeys,
}

struct SessionKeys {
    keystream: EncryptingKey,
    salt: [u8; SESSION_SALT_LEN],
    auth: hmac::Key,
}

impl fmt::Debug for AesCmHmacSha1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesCmHmacSha1(keys redacted)")
    }
}

impl SessionKeys {
    fn derive(kdf: &MasterKdf, labels: [KdfLabel; 3]) -> Result<Self, SrtpError> {
        let [encryption, authentication, salting] = labels;
        let mut key = [0; SESSION_KEY_LEN];
        kdf.derive(encryption, &mut key)?;
        let mut salt = [0; SESSION_SALT_LEN];
        kdf.derive(salting, &mut salt)?;
        let mut auth_key = [0; AUTH_KEY_LEN];
        kdf.derive(authentication, &mut auth_key)?;

        let keystream =
            UnboundCipherKey::new(&AES_128, &key).and_then(EncryptingKey::ctr).map_err(|_| SrtpError::CryptoFailure)?;
        let auth = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key);
        super::wipe(&mut key);
        super::wipe(&mut auth_key);
        Ok(Self { keystream, salt, auth })
    }

    /// XORs the AES-CM keystream for the packet with `index` on `ssrc` into `data`;
    /// encryption and decryption alike. SRTCP puts its 31-bit index where SRTP puts its
    /// 48-bit one.
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) -> Result<(), SrtpError> {
        let mut iv = [0; 16];
        iv[..SESSION_SALT_LEN].copy_from_slice(&self.salt);
        for (iv_byte, ssrc_byte) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *iv_byte ^= ssrc_byte;
        }
        for (iv_byte, index_byte) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *iv_byte ^= index_byte;
        }
        self.keystream
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| SrtpError::CryptoFailure)
    }

    /// HMAC-SHA1 over `authenticated` followed by `suffix`, truncated.
    fn tag(&self, authenticated: &[u8], suffix: &[u8]) -> [u8; AUTH_TAG_LEN] {
        let mut context = hmac::Context::with_key(&self.auth);
        context.update(authenticated);
        context.update(suffix);
        let mut tag = [0; AUTH_TAG_LEN];
        tag.copy_from_slice(&context.sign().as_ref()[..AUTH_TAG_LEN]);
        tag
    }

    fn verify(&self, authenticated: &[u8], suffix: &[u8], received_tag: &[u8]) -> Result<(), SrtpError> {
        let expected = self.tag(authenticated, suffix);
        if bool::from(expected.ct_eq(received_tag)) { Ok(()) } else { Err(SrtpError::AuthFailed) }
    }
}

/// SRTP authenticates the rollover counter too, appended to the packet (RFC 3711 §4.2).
fn rollover_counter(index: u64) -> [u8; 4] {
    ((index >> 16) as u32).to_be_bytes()
}

impl AesCmHmacSha1 {
    pub(super) fn new(kdf: &MasterKdf) -> Result<Self, SrtpError> {
        Ok(Self {
            srtp: SessionKeys::derive(
                kdf,
                [KdfLabel::SrtpEncryption, KdfLabel::SrtpAuthentication, KdfLabel::SrtpSalt],
            )?,
            srtcp: SessionKeys::derive(
                kdf,
                [KdfLabel::SrtcpEncryption, KdfLabel::SrtcpAuthentication, KdfLabel::SrtcpSalt],
            )?,
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
        let (body, tag) = packet.split_at_mut(plaintext_len);
        self.srtp.apply_keystream(ssrc, index, &mut body[header_len..])?;
        tag.copy_from_slice(&self.srtp.tag(body, &rollover_counter(index)));
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
        let (body, tag) = packet.split_at_mut(packet.len() - AUTH_TAG_LEN);
        self.srtp.verify(body, &rollover_counter(index), tag)?;
        self.srtp.apply_keystream(ssrc, index, &mut body[header_len..])?;
        Ok(body.len())
    }

    /// `packet` is the plaintext compound (`plaintext_len` bytes) and room for the
    /// ESRTCP word and the tag.
    pub(super) fn protect_rtcp(
        &self,
        packet: &mut [u8],
        plaintext_len: usize,
        ssrc: u32,
        trailer: SrtcpTrailer,
    ) -> Result<(), SrtpError> {
        let (body, tag) = packet.split_at_mut(plaintext_len + ESRTCP_WORD_LEN);
        let (plaintext, word) = body.split_at_mut(plaintext_len);
        self.srtcp.apply_keystream(ssrc, u64::from(trailer.index), &mut plaintext[RTCP_UNENCRYPTED_PREFIX_LEN..])?;
        word.copy_from_slice(&trailer.to_word());
        tag.copy_from_slice(&self.srtcp.tag(body, &[]));
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
        let (body, tag) = packet.split_at_mut(packet.len() - AUTH_TAG_LEN);
        self.srtcp.verify(body, &[], tag)?;
        let plaintext_len = body.len() - ESRTCP_WORD_LEN;
        if trailer.encrypted {
            let encrypted = &mut body[RTCP_UNENCRYPTED_PREFIX_LEN..plaintext_len];
            self.srtcp.apply_keystream(ssrc, u64::from(trailer.index), encrypted)?;
        }
        Ok(plaintext_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    /// RFC 3711 Appendix B.2: the keystream for session key 2B7E…, SSRC 0 and index 0 is
    /// AES-CTR from the (already shifted) salt F0F1…FCFD0000, over 65282 blocks.
    #[test]
    fn rfc_3711_b2_aes_cm_keystream() {
        let keystream = EncryptingKey::ctr(
            UnboundCipherKey::new(&AES_128, &hex("2B7E151628AED2A6ABF7158809CF4F3C")).expect("16-byte key"),
        )
        .expect("CTR key");
        let keys = SessionKeys {
            keystream,
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().expect("14-byte salt"),
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[0; AUTH_KEY_LEN]),
        };
        let mut segment = vec![0; 1_044_512];
        keys.apply_keystream(0, 0, &mut segment).expect("keystream");

        assert_eq!(
            segment[..48].to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB41E95B3BB0A2E8DD477901E4FCA894C0")
        );
        assert_eq!(
            segment[segment.len() - 48..].to_vec(),
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4362B7C3C6773516318A077D7FC5073AE6A2CC3787889374FBEB4C81B17BA6C44")
        );
    }
}
