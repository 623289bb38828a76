//! Session keys from a master key and salt: the AES-CM PRF of RFC 3711 §4.3 with a key
//! derivation rate of 0 (RFC 5764 §4.1.2), which RFC 7714 §11 keeps for AES-GCM, keyed
//! with AES-256 when the master key is 32 bytes (RFC 6188 §3). Runs once per direction.

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;

use super::SrtpError;

/// The PRF input is 112 bits (the AES-CM master salt); the 96-bit AEAD salt is padded with
/// zeros on the right, as libsrtp and rtc-srtp do.
const PRF_SALT_LEN: usize = 14;
/// Where the label sits in the PRF input: the first of the seven low bytes `label ‖ r`.
const LABEL_OFFSET: usize = 7;

/// What a derived key is for (RFC 3711 §4.3.1, §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KdfLabel {
    SrtpEncryption = 0x00,
    SrtpAuthentication = 0x01,
    SrtpSalt = 0x02,
    SrtcpEncryption = 0x03,
    SrtcpAuthentication = 0x04,
    SrtcpSalt = 0x05,
}

/// The PRF keyed with one master key.
pub(super) struct MasterKdf {
    prf: EncryptingKey,
    salt: [u8; PRF_SALT_LEN],
}

impl MasterKdf {
    /// The caller has checked the lengths against the profile; other lengths fail here too.
    pub(super) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let algorithm = match master_key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(SrtpError::WrongKeyLength),
        };
        let mut salt = [0; PRF_SALT_LEN];
        salt.get_mut(..master_salt.len()).ok_or(SrtpError::WrongKeyLength)?.copy_from_slice(master_salt);
        let key = UnboundCipherKey::new(algorithm, master_key).map_err(|_| SrtpError::WrongKeyLength)?;
        let prf = EncryptingKey::ctr(key).map_err(|_| SrtpError::CryptoFailure)?;
        Ok(Self { prf, salt })
    }

    /// Fills `out` with the key for `label`: the AES-CM keystream from the IV
    /// `(label ‖ 0^48 XOR salt) · 2^16`.
    pub(super) fn derive(&self, label: KdfLabel, out: &mut [u8]) -> Result<(), SrtpError> {
        let mut iv = [0; 16];
        iv[..PRF_SALT_LEN].copy_from_slice(&self.salt);
        iv[LABEL_OFFSET] ^= label as u8;
        out.fill(0);
        self.prf
            .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| SrtpError::CryptoFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc_3711_b3_key_derivation() {
        let kdf = MasterKdf::new(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"), &hex("0EC675AD498AFEEBB6960B3AABE6"))
            .expect("AES-128 master key");

        let mut cipher_key = [0; 16];
        kdf.derive(KdfLabel::SrtpEncryption, &mut cipher_key).expect("derive");
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

        let mut cipher_salt = [0; 14];
        kdf.derive(KdfLabel::SrtpSalt, &mut cipher_salt).expect("derive");
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));

        // The RFC prints 94 octets of authentication key; HMAC-SHA1 uses the first 20.
        let mut auth_key = [0; 94];
        kdf.derive(KdfLabel::SrtpAuthentication, &mut auth_key).expect("derive");
        assert_eq!(
            auth_key.to_vec(),
            hex(concat!(
                "CEBE321F6FF7716B6FD4AB49AF256A15",
                "6D38BAA48F0A0ACF3C34E2359E6CDBCE",
                "E049646C43D9327AD175578EF7227098",
                "6371C10C9A369AC2F94A8C5FBCDDDC25",
                "6D6E919A48B610EF17C2041E47403576",
                "6B68642C59BBFC2F34DB60DBDFB2",
            ))
        );
    }

    #[test]
    fn master_keys_of_other_lengths_are_refused() {
        let salt = [0; 14];
        assert_eq!(MasterKdf::new(&[0; 24], &salt).err(), Some(SrtpError::WrongKeyLength));
        assert_eq!(MasterKdf::new(&[0; 16], &[0; 15]).err(), Some(SrtpError::WrongKeyLength));
        assert!(MasterKdf::new(&[0; 32], &[0; 12]).is_ok());
    }
}
