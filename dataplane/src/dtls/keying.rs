//! SRTP protection profiles and the master keys and salts that DTLS-SRTP exports for them
//! (RFC 5764 §4.2, RFC 7714 §12). Everything here is fixed-size and `Copy`: no heap per key.

use std::fmt;

use super::{DtlsError, DtlsRole};

/// An SRTP protection profile negotiated through the `use_srtp` extension.
///
/// This module's own enum: the `srtp` module keeps its own until a later merge unifies
/// them; map between the two by [`SrtpProfile::protection_profile_id`], the IANA number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001, RFC 5764): 16-byte key, 14-byte salt.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007, RFC 7714): 16-byte key, 12-byte salt.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (0x0008, RFC 7714): 32-byte key, 12-byte salt.
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// The IANA DTLS-SRTP protection profile number.
    pub fn protection_profile_id(self) -> u16 {
        match self {
            Self::Aes128CmHmacSha1_80 => 0x0001,
            Self::AeadAes128Gcm => 0x0007,
            Self::AeadAes256Gcm => 0x0008,
        }
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 | Self::AeadAes128Gcm => 16,
            Self::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes.
    pub fn master_salt_len(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 => 14,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 12,
        }
    }

    /// Bytes the RFC 5705 exporter yields for this profile: both keys, then both salts.
    pub fn exported_len(self) -> usize {
        2 * (self.master_key_len() + self.master_salt_len())
    }

    pub(super) fn from_dimpl(profile: dimpl::SrtpProfile) -> Option<Self> {
        match profile {
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(Self::Aes128CmHmacSha1_80),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(Self::AeadAes128Gcm),
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(Self::AeadAes256Gcm),
            _ => None,
        }
    }
}

/// Secret bytes held inline: `len` meaningful bytes of a `CAPACITY` array. Debug never
/// prints the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineSecret<const CAPACITY: usize> {
    bytes: [u8; CAPACITY],
    len: u8,
}

/// An SRTP master key (16 or 32 bytes).
pub type SrtpMasterKey = InlineSecret<32>;
/// An SRTP master salt (12 or 14 bytes).
pub type SrtpMasterSalt = InlineSecret<14>;

impl<const CAPACITY: usize> InlineSecret<CAPACITY> {
    fn copy_from(source: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; CAPACITY];
        bytes.get_mut(..source.len())?.copy_from_slice(source);
        Some(Self { bytes, len: u8::try_from(source.len()).ok()? })
    }

    /// The key or salt.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl<const CAPACITY: usize> fmt::Debug for InlineSecret<CAPACITY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineSecret({} bytes, redacted)", self.len)
    }
}

/// The SRTP master keys and salts of one DTLS association, already assigned to directions:
/// `local_*` protects what this side sends, `remote_*` unprotects what it receives. The
/// peer's `local_*` equals this side's `remote_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeyingMaterial {
    /// The profile the keys are for.
    pub profile: SrtpProfile,
    /// Master key for SRTP/SRTCP this side sends.
    pub local_key: SrtpMasterKey,
    /// Master salt for SRTP/SRTCP this side sends.
    pub local_salt: SrtpMasterSalt,
    /// Master key for SRTP/SRTCP this side receives.
    pub remote_key: SrtpMasterKey,
    /// Master salt for SRTP/SRTCP this side receives.
    pub remote_salt: SrtpMasterSalt,
}

impl SrtpKeyingMaterial {
    /// Splits the exporter output (label `EXTRACTOR-dtls_srtp`, RFC 5764 §4.2), laid out as
    /// `client_write_key | server_write_key | client_write_salt | server_write_salt`; the
    /// client's write key is the one the client sends with. Public for DTLS stacks other
    /// than ours (the load generator's rtc-dtls client), whose keys go into our SRTP.
    pub fn from_exported(profile: SrtpProfile, role: DtlsRole, exported: &[u8]) -> Result<Self, DtlsError> {
        if exported.len() != profile.exported_len() {
            return Err(DtlsError::KeyExport);
        }
        let (keys, salts) = exported.split_at(2 * profile.master_key_len());
        let (client_key, server_key) = keys.split_at(profile.master_key_len());
        let (client_salt, server_salt) = salts.split_at(profile.master_salt_len());
        let (local_key, local_salt, remote_key, remote_salt) = match role {
            DtlsRole::Client => (client_key, client_salt, server_key, server_salt),
            DtlsRole::Server => (server_key, server_salt, client_key, client_salt),
        };
        Ok(Self {
            profile,
            local_key: InlineSecret::copy_from(local_key).ok_or(DtlsError::KeyExport)?,
            local_salt: InlineSecret::copy_from(local_salt).ok_or(DtlsError::KeyExport)?,
            remote_key: InlineSecret::copy_from(remote_key).ok_or(DtlsError::KeyExport)?,
            remote_salt: InlineSecret::copy_from(remote_salt).ok_or(DtlsError::KeyExport)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILES: [SrtpProfile; 3] =
        [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm];

    /// Exporter output whose every byte names its position, so a misplaced split shows.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len).map(|index| index as u8).collect()
    }

    #[test]
    fn split_follows_rfc_5764_layout_for_each_role() {
        for profile in PROFILES {
            let (key_len, salt_len) = (profile.master_key_len(), profile.master_salt_len());
            let exported = numbered(profile.exported_len());
            let client = SrtpKeyingMaterial::from_exported(profile, DtlsRole::Client, &exported)
                .expect("the exported length matches the profile");
            let server = SrtpKeyingMaterial::from_exported(profile, DtlsRole::Server, &exported)
                .expect("the exported length matches the profile");

            assert_eq!(client.local_key.as_bytes(), &exported[..key_len]);
            assert_eq!(client.remote_key.as_bytes(), &exported[key_len..2 * key_len]);
            let salts = &exported[2 * key_len..];
            assert_eq!(client.local_salt.as_bytes(), &salts[..salt_len]);
            assert_eq!(client.remote_salt.as_bytes(), &salts[salt_len..]);

            assert_eq!(server.local_key, client.remote_key);
            assert_eq!(server.local_salt, client.remote_salt);
            assert_eq!(server.remote_key, client.local_key);
            assert_eq!(server.remote_salt, client.local_salt);
        }
    }

    #[test]
    fn wrong_export_length_is_an_error() {
        for profile in PROFILES {
            for len in [0, profile.exported_len() - 1, profile.exported_len() + 1] {
                assert_eq!(
                    SrtpKeyingMaterial::from_exported(profile, DtlsRole::Server, &numbered(len)),
                    Err(DtlsError::KeyExport)
                );
            }
        }
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let exported = [0xAB; 88];
        let keys = SrtpKeyingMaterial::from_exported(SrtpProfile::AeadAes256Gcm, DtlsRole::Client, &exported)
            .expect("88 bytes is the AES-256-GCM export length");
        let printed = format!("{keys:?}");
        assert!(!printed.contains("171") && !printed.to_ascii_lowercase().contains("ab, "));
    }
}
