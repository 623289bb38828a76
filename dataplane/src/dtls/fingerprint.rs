//! SHA-256 certificate fingerprints as SDP carries them (`a=fingerprint:sha-256 AB:CD:…`,
//! RFC 8122). Parsing accepts any letter case; formatting is uppercase, as browsers write it.

use std::fmt;

use subtle::ConstantTimeEq;

use super::DtlsError;

/// Length of a SHA-256 digest.
const SHA256_LEN: usize = 32;

/// SHA-256 fingerprint of a DER certificate, the only hash function this module speaks:
/// Chromium, Firefox and Safari all sign their DTLS certificates' SDP with `sha-256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint([u8; SHA256_LEN]);

impl CertificateFingerprint {
    /// The SDP hash-function token (`a=fingerprint:<ALGORITHM> <hex>`).
    pub const ALGORITHM: &'static str = "sha-256";

    /// Fingerprint of a DER-encoded certificate.
    pub fn of_certificate_der(der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let bytes = digest.as_ref().try_into().expect("a SHA-256 digest is always 32 bytes");
        Self(bytes)
    }

    /// Wraps raw digest bytes (e.g. from a test vector or a stored identity).
    pub fn from_bytes(bytes: [u8; SHA256_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the value of an SDP `a=fingerprint:` attribute, `sha-256 AB:CD:…`.
    /// The hash token and the hex digits are case-insensitive (RFC 8122 §5).
    pub fn parse_sdp(attribute_value: &str) -> Result<Self, DtlsError> {
        let (algorithm, hex) = attribute_value.trim().split_once(' ').ok_or(DtlsError::InvalidFingerprint)?;
        if !algorithm.eq_ignore_ascii_case(Self::ALGORITHM) {
            return Err(DtlsError::InvalidFingerprint);
        }
        let mut bytes = [0u8; SHA256_LEN];
        let mut pairs = hex.trim().split(':');
        for byte in &mut bytes {
            let pair = pairs.next().ok_or(DtlsError::InvalidFingerprint)?;
            if pair.len() != 2 || !pair.bytes().all(|digit| digit.is_ascii_hexdigit()) {
                return Err(DtlsError::InvalidFingerprint);
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| DtlsError::InvalidFingerprint)?;
        }
        if pairs.next().is_some() {
            return Err(DtlsError::InvalidFingerprint);
        }
        Ok(Self(bytes))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; SHA256_LEN] {
        &self.0
    }

    /// The SDP value: uppercase hex pairs joined by colons, without the algorithm.
    pub fn to_sdp_hex(&self) -> String {
        self.to_string()
    }

    /// The whole `a=fingerprint:` attribute value, `sha-256 AB:CD:…`.
    pub fn to_sdp_attribute_value(&self) -> String {
        format!("{} {self}", Self::ALGORITHM)
    }

    /// Whether a peer's DER certificate hashes to this fingerprint. The comparison runs in
    /// constant time so that an attacker probing certificates learns nothing from timing.
    pub fn matches_certificate_der(&self, der: &[u8]) -> bool {
        let presented = Self::of_certificate_der(der);
        self.0.ct_eq(&presented.0).into()
    }
}

/// Uppercase colon hex, as it goes into SDP.
impl fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateFingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc") from FIPS 180-2, appendix B.1.
    const ABC_SHA256: &str = "sha-256 BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
                              B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";

    #[test]
    fn digest_matches_the_fips_vector_and_formats_as_sdp() {
        let fingerprint = CertificateFingerprint::of_certificate_der(b"abc");
        assert_eq!(fingerprint.to_sdp_attribute_value(), ABC_SHA256);
        assert_eq!(CertificateFingerprint::parse_sdp(ABC_SHA256), Ok(fingerprint));
        assert!(fingerprint.matches_certificate_der(b"abc"));
        assert!(!fingerprint.matches_certificate_der(b"abd"));
    }

    #[test]
    fn parsing_is_case_insensitive_and_strict_about_shape() {
        let upper = CertificateFingerprint::of_certificate_der(b"x").to_sdp_attribute_value();
        let lower = upper.to_ascii_lowercase().replacen("sha-256", "SHA-256", 1);
        assert!(CertificateFingerprint::parse_sdp(&lower).is_ok());

        let hex = CertificateFingerprint::of_certificate_der(b"x").to_sdp_hex();
        for bad in [
            String::new(),
            hex.clone(),
            format!("sha-1 {hex}"),
            format!("sha-256 {hex}:00"),
            format!("sha-256 {}", &hex[3..]),
            format!("sha-256 {}", hex.replacen(':', "", 1)),
            format!("sha-256 {}", hex.replacen(&hex[..2], "G0", 1)),
            format!("sha-256 {}", hex.replacen(&hex[..2], "+1", 1)),
        ] {
            assert_eq!(CertificateFingerprint::parse_sdp(&bad), Err(DtlsError::InvalidFingerprint), "{bad:?}");
        }
    }
}
