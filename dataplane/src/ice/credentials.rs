//! ICE credentials (RFC 8445 §5.3, RFC 8839 §5.4) and the short-term MESSAGE-INTEGRITY key
//! derived from a password.

use std::fmt;

use aws_lc_rs::hmac;

use super::IceError;

/// Length of a generated ufrag: 8 ice-chars carry 48 random bits, well above the 24 that
/// RFC 8839 §5.4 asks for, so ufrags of one worker's transports do not collide in practice.
const GENERATED_UFRAG_LEN: usize = 8;
/// Length of a generated password: 24 ice-chars carry 144 random bits (RFC 8839 §5.4 asks
/// for at least 128).
const GENERATED_PWD_LEN: usize = 24;

/// The 64 ice-chars (RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/"). Being exactly 64, a random
/// byte's low six bits pick one without bias.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// One side's ICE username fragment and password, as carried in SDP `a=ice-ufrag` and
/// `a=ice-pwd`. Both are checked against the RFC 8839 grammar on construction, so the
/// USERNAME `ufrag:ufrag` split is unambiguous and the password is its own short-term key.
///
/// `Debug` shows the ufrag (it travels in clear in every check) but never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    ufrag: String,
    pwd: String,
}

impl IceCredentials {
    /// Credentials received from signalling. A ufrag is 4 to 256 ice-chars, a password 22
    /// to 256 (RFC 8839 §5.4); anything else is [`IceError::InvalidCredentials`].
    pub fn new(ufrag: impl Into<String>, pwd: impl Into<String>) -> Result<Self, IceError> {
        let (ufrag, pwd) = (ufrag.into(), pwd.into());
        if !is_ice_chars(&ufrag, 4..=256) || !is_ice_chars(&pwd, 22..=256) {
            return Err(IceError::InvalidCredentials);
        }
        Ok(Self { ufrag, pwd })
    }

    /// Fresh local credentials from the system CSPRNG: an 8-char ufrag and a 24-char
    /// password.
    pub fn generate() -> Result<Self, IceError> {
        let mut random = [0u8; GENERATED_UFRAG_LEN + GENERATED_PWD_LEN];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| IceError::RandomUnavailable)?;
        let (ufrag, pwd) = random.split_at(GENERATED_UFRAG_LEN);
        Ok(Self { ufrag: to_ice_chars(ufrag), pwd: to_ice_chars(pwd) })
    }

    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    pub fn pwd(&self) -> &str {
        &self.pwd
    }
}

impl fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCredentials").field("ufrag", &self.ufrag).field("pwd", &"<redacted>").finish()
    }
}

fn is_ice_chars(value: &str, allowed_len: std::ops::RangeInclusive<usize>) -> bool {
    allowed_len.contains(&value.len()) && value.bytes().all(|byte| ICE_CHARS.contains(&byte))
}

fn to_ice_chars(random: &[u8]) -> String {
    random.iter().map(|byte| char::from(ICE_CHARS[usize::from(byte & 0x3F)])).collect()
}

/// The MESSAGE-INTEGRITY key of one password, in the two forms this module needs: an
/// aws-lc key to verify received messages, a stun-rs key to sign the ones it encodes.
/// RFC 8489 §9.1.1 makes the short-term key OpaqueString(password), which for ice-chars is
/// the password's bytes, so both forms hold the same key.
pub(super) struct ShortTermKey {
    verifying: hmac::Key,
    signing: stun_rs::HMACKey,
}

impl ShortTermKey {
    pub(super) fn new(credentials: &IceCredentials) -> Self {
        let signing = stun_rs::HMACKey::new_short_term(&credentials.pwd)
            .expect("OpaqueString accepts every non-empty ice-char string, and IceCredentials holds only those");
        Self { verifying: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, credentials.pwd.as_bytes()), signing }
    }

    pub(super) fn verifying(&self) -> &hmac::Key {
        &self.verifying
    }

    pub(super) fn signing(&self) -> &stun_rs::HMACKey {
        &self.signing
    }
}

/// Deliberately shows nothing of the key: stun-rs's own `Debug` would print its bytes.
impl fmt::Debug for ShortTermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShortTermKey(<redacted>)")
    }
}
