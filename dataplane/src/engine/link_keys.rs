//! The SRTP keys of a node link: a plain transport whose far end is another uprtcd node's
//! worker, keyed by the control plane instead of by DTLS (the two workers share no
//! handshake; the control planes, which already trust each other, carry the keys).
//!
//! Rules for the control plane: each side's sending half is drawn fresh with
//! [`LinkKeys::random_half`] for every link, never reused, and given to the other side as
//! its `remote`; both sides use the same profile, [`LINK_SRTP_PROFILE`]. A half is the
//! profile's master key followed by its master salt (RFC 3711 §8.2 / RFC 7714 §12 sizes);
//! the engine refuses other lengths when the transport is made. Keys are never printed
//! (`Debug` names only their lengths) and are overwritten when dropped.
#![forbid(unsafe_code)]

use std::fmt;

use super::EngineError;
use crate::dtls::SrtpProfile;
use crate::srtp::{MasterKeySalt, SrtpSession, wipe};

/// The profile the control plane keys node links with: AEAD AES-128-GCM (RFC 7714), the
/// cheapest protection per packet this dataplane has (benches/README.md) and authenticated
/// encryption both ways; 128-bit keys drawn fresh per link need no more.
pub const LINK_SRTP_PROFILE: SrtpProfile = SrtpProfile::AeadAes128Gcm;

/// SRTP master keys of one node link: `local` protects what this side sends, `remote`
/// unprotects what it receives; each is key ‖ salt of `profile`.
#[derive(Clone)]
pub struct LinkKeys {
    pub profile: SrtpProfile,
    pub local: Vec<u8>,
    pub remote: Vec<u8>,
}

impl LinkKeys {
    /// A fresh sending half for `profile` (its master key ‖ master salt) from the system's
    /// CSPRNG: this side's `local`, the peer's `remote`.
    pub fn random_half(profile: SrtpProfile) -> Result<Vec<u8>, EngineError> {
        let mut half = vec![0; half_len(profile)];
        aws_lc_rs::rand::fill(&mut half).map_err(|_| EngineError::RandomUnavailable)?;
        Ok(half)
    }

    /// The SRTP session of the link's transport; refused when a half is not key ‖ salt of
    /// the profile.
    pub(super) fn session(&self) -> Result<SrtpSession, EngineError> {
        let (Some(local), Some(remote)) = (split(self.profile, &self.local), split(self.profile, &self.remote)) else {
            return Err(EngineError::LinkKeys(crate::srtp::SrtpError::WrongKeyLength));
        };
        SrtpSession::from_master_keys(self.profile, local, remote).map_err(EngineError::LinkKeys)
    }
}

fn half_len(profile: SrtpProfile) -> usize {
    profile.master_key_len() + profile.master_salt_len()
}

/// `half` as the key and salt of `profile`, if it is exactly that long (checked here, not
/// only by the session: a short half must not be split somewhere inside the key).
fn split(profile: SrtpProfile, half: &[u8]) -> Option<MasterKeySalt<'_>> {
    let (key, salt) = half.split_at_checked(profile.master_key_len())?;
    (half.len() == half_len(profile)).then_some(MasterKeySalt { key, salt })
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LinkKeys({:?}, local {} bytes, remote {} bytes, redacted)",
            self.profile,
            self.local.len(),
            self.remote.len()
        )
    }
}

impl Drop for LinkKeys {
    fn drop(&mut self) {
        wipe(&mut self.local);
        wipe(&mut self.remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::SrtpError;

    fn keys(local: Vec<u8>, remote: Vec<u8>) -> LinkKeys {
        LinkKeys { profile: LINK_SRTP_PROFILE, local, remote }
    }

    #[test]
    fn a_random_half_is_key_and_salt_of_its_profile_and_fresh() {
        for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm] {
            let (a, b) = (LinkKeys::random_half(profile).unwrap(), LinkKeys::random_half(profile).unwrap());
            assert_eq!(a.len(), profile.master_key_len() + profile.master_salt_len());
            assert_ne!(a, b);
            assert!(LinkKeys { profile, local: a, remote: b }.session().is_ok());
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let good = || LinkKeys::random_half(LINK_SRTP_PROFILE).unwrap();
        let refused = Err(EngineError::LinkKeys(SrtpError::WrongKeyLength));
        let mut long = good();
        long.push(0);
        let short = good()[..16].to_vec();
        for keys in [keys(long, good()), keys(good(), short), keys(Vec::new(), good())] {
            assert_eq!(keys.session().map(|_| ()), refused);
        }
        // An AES-256 half is too long for AES-128-GCM, whatever its salt.
        let wide = LinkKeys::random_half(SrtpProfile::AeadAes256Gcm).unwrap();
        assert_eq!(keys(wide, good()).session().map(|_| ()), refused);
    }

    #[test]
    fn debug_never_shows_the_keys() {
        let keys = keys(vec![0xAB; 28], vec![0xCD; 28]);
        assert_eq!(format!("{keys:?}"), "LinkKeys(AeadAes128Gcm, local 28 bytes, remote 28 bytes, redacted)");
    }
}
