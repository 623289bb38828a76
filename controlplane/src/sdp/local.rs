//! What the SFU says about its own side of a transport: ICE-lite credentials and host
//! candidates, the DTLS certificate's fingerprint, the session's origin and its bitrate caps.

use std::net::SocketAddr;

use uprtcd_dataplane::dtls::CertificateFingerprint;

use super::error::SdpError;

/// The SFU's side of one transport, written into every answer and offer made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParameters {
    /// The `o=` line's session id: the same for every description of this transport.
    pub session_id: u64,
    /// The `o=` line's version: the caller raises it for every new description it sends on
    /// this transport (RFC 3264 §8).
    pub session_version: u64,
    /// 4 to 256 ice-chars (RFC 8839 §5.4).
    pub ice_ufrag: String,
    /// 22 to 256 ice-chars.
    pub ice_pwd: String,
    pub fingerprint: CertificateFingerprint,
    /// At least one; the first UDP candidate (else the first) is the default destination
    /// written into the m-lines and `c=` lines.
    pub candidates: Vec<Candidate>,
    pub bitrate: BitrateCaps,
}

impl LocalParameters {
    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        if !(4..=256).contains(&self.ice_ufrag.len()) || !self.ice_ufrag.bytes().all(is_ice_char) {
            return Err(SdpError::InvalidLocalParameters("ice-ufrag must be 4 to 256 ice-chars"));
        }
        if !(22..=256).contains(&self.ice_pwd.len()) || !self.ice_pwd.bytes().all(is_ice_char) {
            return Err(SdpError::InvalidLocalParameters("ice-pwd must be 22 to 256 ice-chars"));
        }
        if self.candidates.is_empty() {
            return Err(SdpError::InvalidLocalParameters("an ICE-lite agent needs at least one candidate"));
        }
        if let (Some(min), Some(max)) = (self.bitrate.min_bps, self.bitrate.max_bps)
            && min > max
        {
            return Err(SdpError::InvalidLocalParameters("minimum bitrate above the maximum"));
        }
        Ok(())
    }

    /// The candidate whose address goes into the m-lines and `c=` lines (RFC 8839).
    pub(crate) fn default_candidate(&self) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.transport == CandidateTransport::Udp).or(self.candidates.first())
    }
}

/// ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839 §5.1).
fn is_ice_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/'
}

/// One host candidate of the SFU. An ICE-lite agent only has host candidates, and over TCP it
/// only accepts connections (RFC 6544 `tcptype passive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub transport: CandidateTransport,
    pub address: SocketAddr,
    /// RFC 8445 §5.1.2 priority, computed by the caller.
    pub priority: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateTransport {
    Udp,
    TcpPassive,
}

/// Caps the SFU puts on what a publisher sends, in bits per second; `None` for no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BitrateCaps {
    /// Written for video as libwebrtc's `x-google-min-bitrate` format parameter, which its
    /// sender honours from the remote description; other senders ignore unknown parameters.
    pub min_bps: Option<u32>,
    /// Written for video as `b=AS` (kbps) and `b=TIAS` (bps).
    pub max_bps: Option<u32>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FINGERPRINT: &str =
        "3C:4A:AA:6F:5B:1E:87:02:D5:62:0B:77:41:69:DC:1A:2F:EE:90:3B:7D:0C:58:A6:14:F3:82:C9:65:0E:D1:B8";

    /// The parameters the end-to-end tests answer and offer with.
    pub(crate) fn local() -> LocalParameters {
        LocalParameters {
            session_id: 4_294_967_296,
            session_version: 2,
            ice_ufrag: "uprtcdUfrag1".into(),
            ice_pwd: "uprtcdPasswordOf24chars+".into(),
            fingerprint: CertificateFingerprint::parse_sdp(&format!("sha-256 {FINGERPRINT}"))
                .expect("the test fingerprint is well formed"),
            candidates: vec![
                Candidate {
                    transport: CandidateTransport::Udp,
                    address: "192.0.2.10:40000".parse().expect("literal socket address"),
                    priority: 2_130_706_431,
                },
                Candidate {
                    transport: CandidateTransport::TcpPassive,
                    address: "192.0.2.10:40443".parse().expect("literal socket address"),
                    priority: 1_694_498_815,
                },
                Candidate {
                    transport: CandidateTransport::Udp,
                    address: "[2001:db8::10]:40000".parse().expect("literal socket address"),
                    priority: 2_130_706_175,
                },
            ],
            bitrate: BitrateCaps { min_bps: Some(300_000), max_bps: Some(2_500_000) },
        }
    }

    #[test]
    fn fingerprints_read_either_case_and_print_upper_case() {
        let fingerprint =
            CertificateFingerprint::parse_sdp(&format!("sha-256 {}", FINGERPRINT.to_lowercase())).expect("well formed");
        assert_eq!(fingerprint.to_string(), FINGERPRINT);
        assert_eq!(fingerprint.as_bytes()[0], 0x3c);
        for malformed in
            ["", "3C:4A", &format!("{FINGERPRINT}:00"), &FINGERPRINT.replace("3C", "3G"), &FINGERPRINT.replace(':', "")]
        {
            assert!(
                CertificateFingerprint::parse_sdp(&format!("sha-256 {malformed}")).is_err(),
                "{malformed:?} accepted"
            );
        }
    }

    #[test]
    fn local_parameters_no_peer_could_use_are_refused() {
        assert_eq!(local().validate(), Ok(()));
        type Breaks = fn(&mut LocalParameters);
        let broken: [(&str, Breaks); 5] = [
            ("short ufrag", |l| l.ice_ufrag = "abc".into()),
            ("ufrag with a space", |l| l.ice_ufrag = "ab cd".into()),
            ("short pwd", |l| l.ice_pwd = "tooShort".into()),
            ("no candidates", |l| l.candidates.clear()),
            ("min above max", |l| l.bitrate = BitrateCaps { min_bps: Some(2), max_bps: Some(1) }),
        ];
        for (what, breaks) in broken {
            let mut parameters = local();
            breaks(&mut parameters);
            assert!(matches!(parameters.validate(), Err(SdpError::InvalidLocalParameters(_))), "{what} accepted");
        }
    }

    #[test]
    fn the_default_candidate_prefers_udp() {
        let mut parameters = local();
        parameters.candidates.swap(0, 1);
        let default = parameters.default_candidate().expect("has candidates");
        assert_eq!(default.transport, CandidateTransport::Udp);
        parameters.candidates.retain(|c| c.transport == CandidateTransport::TcpPassive);
        assert_eq!(parameters.default_candidate().map(|c| c.transport), Some(CandidateTransport::TcpPassive));
    }
}
