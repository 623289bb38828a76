//! A load client that offers only the SRTP profiles it is told, so that uprtcd can be measured
//! under AES-CM as well as AES-GCM. The dataplane's own DTLS client (dimpl) always offers
//! AES-256-GCM, AES-128-GCM and AES-CM, and uprtcd picks AES-256-GCM from that; webrtc-rs's
//! sans-IO rtc-dtls lets the offer be chosen, so this module plays the DTLS client with it.
//!
//! What it owns: [`RtcDtlsIdentity`], the certificate rtc-dtls presents, and
//! [`RtcDtlsClient`], one handshake as a [`ClientHandshake`] for
//! [`ClientPeer::with_handshake`]. Only the handshake is rtc-dtls's: the keys it exports go
//! into the dataplane's SRTP, so media costs the client the same under either stack.
//!
//! Rules for callers:
//! - **Announce this certificate.** The fingerprint in the client's SDP must be
//!   [`RtcDtlsIdentity::fingerprint`], not a `DtlsIdentity`'s: the SFU checks the certificate
//!   rtc-dtls presents against it. Make one identity per run and clone it per client.
//! - **No keys from an impostor.** `Connected` comes only after the server's certificate
//!   hashed to the fingerprint from its SDP; a mismatch aborts the handshake with a
//!   `bad_certificate` alert and yields `Failed(FingerprintMismatch)`.
//! - **Errors end it.** rtc-dtls silently drops datagrams it cannot use (RFC 6347 §4.1.2.7)
//!   and reports an error only when the handshake cannot go on (it has stopped its timers by
//!   then), so every error but a datagram that is not whole records ends this client.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use rtc_shared::error::Error as RtcError;
use uprtcd_dataplane::dtls::{
    CertificateFingerprint, DtlsError, DtlsOutput, DtlsRole, SrtpKeyingMaterial, SrtpProfile,
};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::{ClientHandshake, ClientPeer};

use crate::LoadError;

/// The offer that gets AES-CM from uprtcd, which prefers either GCM profile to it.
pub const AES_CM_ONLY: &[SrtpProfile] = &[SrtpProfile::Aes128CmHmacSha1_80];

/// rtc-dtls keys associations by the peer's address and stamps both ends on its transmits;
/// [`ClientPeer`] owns the socket, so these placeholders never reach one.
const LOCAL: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2));

/// The RFC 5764 §4.2 exporter label for SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The load client's certificate for rtc-dtls handshakes (self-signed ECDSA P-256) and the
/// crypto provider it was made with. Cloning shares the key.
#[derive(Clone)]
pub struct RtcDtlsIdentity {
    provider: Arc<dyn RTCCryptoProvider>,
    certificate: Certificate,
    fingerprint: CertificateFingerprint,
}

impl RtcDtlsIdentity {
    pub fn generate() -> Result<Self, LoadError> {
        let setup = |e: &dyn fmt::Display| LoadError::Setup(format!("rtc-dtls certificate: {e}"));
        let provider = rtc_dtls::crypto_provider::default_provider().map_err(|e| setup(&e))?;
        let certificate = Certificate::generate_self_signed(vec!["uprtcd-load".to_owned()], provider.crypto())
            .map_err(|e| setup(&e))?;
        let leaf = certificate.certificate.first().ok_or_else(|| setup(&"no leaf certificate"))?;
        let fingerprint = CertificateFingerprint::of_certificate_der(leaf.as_ref());
        Ok(Self { provider, certificate, fingerprint })
    }

    /// The fingerprint for the client's SDP `a=fingerprint` line.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.fingerprint
    }
}

impl fmt::Debug for RtcDtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtcDtlsIdentity").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// A [`ClientPeer`] whose DTLS client offers only AES-CM: the SFU's SDP gave `server_ice` and
/// `server_fingerprint`, and the client's SDP announced `local_ice` and
/// `identity.fingerprint()`.
pub fn aes_cm_client_peer(
    identity: &RtcDtlsIdentity,
    local_ice: IceCredentials,
    server_ice: IceCredentials,
    server_fingerprint: CertificateFingerprint,
    now: Instant,
) -> Result<ClientPeer, LoadError> {
    let dtls = RtcDtlsClient::new(identity, AES_CM_ONLY, server_fingerprint, now)?;
    Ok(ClientPeer::with_handshake(Box::new(dtls), local_ice, server_ice))
}

/// One rtc-dtls client handshake (`a=setup:active`, DTLS 1.2).
pub struct RtcDtlsClient {
    endpoint: Endpoint,
    server_fingerprint: CertificateFingerprint,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Handshaking,
    /// rtc-dtls completed and the keys are out; `Connected` is yet to be yielded.
    Keyed(SrtpKeyingMaterial),
    Connected,
    /// The handshake has ended but the caller has not been told yet.
    Ending(End),
    /// `Failed` or `Closed` has been yielded; nothing more comes out.
    Ended,
}

#[derive(Debug, Clone, Copy)]
enum End {
    Failed(DtlsError),
    Closed,
}

impl RtcDtlsClient {
    /// A client offering exactly `offer` (in that order of preference) to a server whose SDP
    /// fingerprint is `server_fingerprint`. Its ClientHello is ready on the first
    /// `poll_output`.
    pub fn new(
        identity: &RtcDtlsIdentity,
        offer: &[SrtpProfile],
        server_fingerprint: CertificateFingerprint,
        now: Instant,
    ) -> Result<Self, LoadError> {
        let setup = |e: RtcError| LoadError::Setup(format!("rtc-dtls client: {e}"));
        // WebRTC checks the fingerprint from SDP instead of a CA chain; failing here, before
        // our last flight, stops the handshake with an alert the server sees.
        let verify: VerifyPeerCertificateFn = Arc::new(move |chain: &[Vec<u8>], _| match chain.first() {
            Some(der) if server_fingerprint.matches_certificate_der(der) => Ok(()),
            _ => Err(RtcError::ErrFingerprintMismatch),
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&identity.provider))
            .with_certificates(vec![identity.certificate.clone()])
            .with_srtp_protection_profiles(offer.iter().map(|&profile| to_rtc(profile)).collect())
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .build(true, None)
            .map_err(setup)?;
        let mut endpoint = Endpoint::new(LOCAL, TransportProtocol::UDP, None);
        endpoint.connect(now, SERVER, Arc::new(config), None).map_err(setup)?;
        Ok(Self { endpoint, server_fingerprint, phase: Phase::Handshaking })
    }

    fn accepts_input(&self) -> bool {
        matches!(self.phase, Phase::Handshaking | Phase::Keyed(_) | Phase::Connected)
    }

    fn on_handshake_complete(&mut self) {
        if let Phase::Handshaking = self.phase {
            self.phase = match self.exported_keys() {
                Ok(keys) => Phase::Keyed(keys),
                Err(error) => Phase::Ending(End::Failed(error)),
            };
        }
    }

    /// The SRTP keys of the completed handshake, once more checking the certificate the keys
    /// are bound to: the verify callback is rtc-dtls's to call, this gate is ours.
    fn exported_keys(&self) -> Result<SrtpKeyingMaterial, DtlsError> {
        let state = self.endpoint.get_connection_state(SERVER).ok_or(DtlsError::Internal)?;
        let certificate = state.peer_certificates.first().ok_or(DtlsError::PeerCertificateMissing)?;
        if !self.server_fingerprint.matches_certificate_der(certificate) {
            return Err(DtlsError::FingerprintMismatch);
        }
        let profile = from_rtc(state.srtp_protection_profile()).ok_or(DtlsError::NoSrtpProfile)?;
        let exported = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.exported_len())
            .map_err(|_| DtlsError::KeyExport)?;
        SrtpKeyingMaterial::from_exported(profile, DtlsRole::Client, exported.as_ref())
    }

    /// Records the first end only; later ones are consequences of it.
    fn end(&mut self, end: End) {
        if !matches!(self.phase, Phase::Ending(_) | Phase::Ended) {
            self.phase = Phase::Ending(end);
        }
    }
}

impl ClientHandshake for RtcDtlsClient {
    fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        if !self.accepts_input() {
            return Err(DtlsError::TransportEnded);
        }
        let events = match self.endpoint.read(now, SERVER, None, BytesMut::from(datagram)) {
            Ok(events) => events,
            Err(error) => {
                let error = from_rtc_error(&error);
                if error.is_fatal() {
                    self.end(End::Failed(error));
                }
                return Err(error);
            }
        };
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => self.on_handshake_complete(),
                EndpointEvent::PeerClosed => self.end(End::Closed),
                // Application data (data channels) has no consumer in the load client.
                _ => {}
            }
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        // rtc-dtls fails a timeout only when its flight has been retransmitted too often.
        if self.accepts_input() && self.endpoint.handle_timeout(SERVER, now).is_err() {
            self.end(End::Failed(DtlsError::HandshakeTimeout));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.accepts_input() { self.endpoint.poll_timeout(&SERVER) } else { None }
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Option<DtlsOutput<'b>> {
        if let Phase::Ended = self.phase {
            return None;
        }
        // What rtc-dtls queued goes out before the event it led to: the alert before
        // `Failed`, the answering close_notify before `Closed`.
        if let Some(transmit) = self.endpoint.poll_transmit() {
            match buf.get_mut(..transmit.message.len()) {
                Some(out) => {
                    out.copy_from_slice(&transmit.message);
                    return Some(DtlsOutput::Transmit(out));
                }
                None => self.end(End::Failed(DtlsError::OutputBufferTooSmall)),
            }
        }
        match self.phase {
            Phase::Keyed(keys) => {
                self.phase = Phase::Connected;
                Some(DtlsOutput::Connected { profile: keys.profile, keys })
            }
            Phase::Ending(end) => {
                self.phase = Phase::Ended;
                Some(match end {
                    End::Failed(error) => DtlsOutput::Failed(error),
                    End::Closed => DtlsOutput::Closed,
                })
            }
            Phase::Handshaking | Phase::Connected | Phase::Ended => None,
        }
    }
}

impl fmt::Debug for RtcDtlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtcDtlsClient")
            .field("server_fingerprint", &self.server_fingerprint)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

fn to_rtc(profile: SrtpProfile) -> SrtpProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmHmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        SrtpProfile::AeadAes256Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
    }
}

/// `None` for a profile our SRTP does not implement, which a server could only have picked
/// from an offer we did not make.
fn from_rtc(profile: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match profile {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Some(SrtpProfile::Aes128CmHmacSha1_80),
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => Some(SrtpProfile::AeadAes256Gcm),
        _ => None,
    }
}

/// Maps an rtc-dtls error from `read`. Only a datagram that is not whole records leaves the
/// handshake going (see the module's rules).
fn from_rtc_error(error: &RtcError) -> DtlsError {
    match error {
        RtcError::ErrInvalidPacketLength => DtlsError::MalformedDatagram,
        RtcError::ErrFingerprintMismatch => DtlsError::FingerprintMismatch,
        RtcError::ErrAlertFatalOrClose => DtlsError::PeerAlert,
        RtcError::ErrClientNoMatchingSrtpProfile => DtlsError::NoSrtpProfile,
        RtcError::ErrCipherSuiteNoIntersection | RtcError::ErrClientRequiredButNoServerEms => {
            DtlsError::IncompatiblePeer
        }
        _ => DtlsError::ProtocolViolation,
    }
}

#[cfg(test)]
mod tests {
    //! Against the dataplane's own DTLS server in memory, in virtual time: what the client
    //! offers is what the server must pick from, and both sides end with the same keys.

    use std::time::Duration;

    use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsTransport, DtlsVersionPolicy, MIN_OUTPUT_BUFFER_LEN};

    use super::*;

    /// Both ends of one handshake and what each reported.
    struct Pair {
        now: Instant,
        client: RtcDtlsClient,
        server: DtlsTransport,
        client_events: Vec<DtlsOutput<'static>>,
        server_events: Vec<DtlsOutput<'static>>,
    }

    impl Pair {
        /// `server_fingerprint_at_client`: what the client believes the server's
        /// fingerprint is (`None`: the right one).
        fn new(offer: &[SrtpProfile], server_fingerprint_at_client: Option<CertificateFingerprint>) -> Self {
            let now = Instant::now();
            let identity = RtcDtlsIdentity::generate().expect("rcgen makes a certificate");
            let server_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("a P-256 identity");
            let expected = server_fingerprint_at_client.unwrap_or(server_identity.fingerprint());
            let client = RtcDtlsClient::new(&identity, offer, expected, now).expect("the configuration is valid");
            let server = DtlsTransport::new_server(&server_identity, identity.fingerprint(), now);
            Self { now, client, server, client_events: Vec::new(), server_events: Vec::new() }
        }

        /// Moves datagrams and fires timers until neither side has more to say within
        /// `limit` of virtual time.
        fn run(&mut self, limit: Duration) {
            let deadline = self.now + limit;
            let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
            for _ in 0..10_000 {
                let mut in_flight = false;
                while let Some(output) = self.client.poll_output(&mut buf) {
                    match output {
                        DtlsOutput::Transmit(datagram) => {
                            in_flight = true;
                            let _ = self.server.handle_packet(self.now, datagram);
                        }
                        event => self.client_events.push(without_datagram(event)),
                    }
                }
                while let Some(output) = self.server.poll_output(&mut buf) {
                    match output {
                        DtlsOutput::Transmit(datagram) => {
                            in_flight = true;
                            let _ = self.client.handle_packet(self.now, datagram);
                        }
                        event => self.server_events.push(without_datagram(event)),
                    }
                }
                if in_flight {
                    continue;
                }
                let timers = [self.client.poll_timeout(), self.server.poll_timeout()];
                match timers.into_iter().flatten().min() {
                    Some(at) if at <= deadline => {
                        self.now = self.now.max(at);
                        self.client.handle_timeout(self.now);
                        self.server.handle_timeout(self.now);
                    }
                    _ => return,
                }
            }
            panic!("the handshake did not settle within 10 000 steps");
        }
    }

    fn without_datagram(event: DtlsOutput<'_>) -> DtlsOutput<'static> {
        match event {
            DtlsOutput::Connected { profile, keys } => DtlsOutput::Connected { profile, keys },
            DtlsOutput::Failed(error) => DtlsOutput::Failed(error),
            DtlsOutput::Closed => DtlsOutput::Closed,
            DtlsOutput::Transmit(_) => unreachable!("transmits are delivered, not recorded"),
        }
    }

    fn connected_keys(events: &[DtlsOutput<'static>]) -> SrtpKeyingMaterial {
        match events {
            [DtlsOutput::Connected { keys, .. }] => *keys,
            other => panic!("expected exactly Connected, got {other:?}"),
        }
    }

    #[test]
    fn offer_decides_the_profile_and_both_sides_share_the_keys() {
        use SrtpProfile::{AeadAes128Gcm as Gcm128, AeadAes256Gcm as Gcm256, Aes128CmHmacSha1_80 as AesCm};
        for (offer, expected) in [(AES_CM_ONLY, AesCm), (&[Gcm128][..], Gcm128), (&[AesCm, Gcm128, Gcm256][..], Gcm256)]
        {
            let mut pair = Pair::new(offer, None);
            pair.run(Duration::from_secs(60));
            let client = connected_keys(&pair.client_events);
            let server = connected_keys(&pair.server_events);
            assert_eq!(client.profile, expected, "{offer:?}");
            assert_eq!(server.profile, expected, "{offer:?}");
            assert_eq!(client.local_key, server.remote_key);
            assert_eq!(client.local_salt, server.remote_salt);
            assert_eq!(client.remote_key, server.local_key);
            assert_eq!(client.remote_salt, server.local_salt);
        }
    }

    #[test]
    fn server_certificate_not_matching_sdp_yields_no_keys() {
        let wrong = CertificateFingerprint::from_bytes([0xA5; 32]);
        let mut pair = Pair::new(AES_CM_ONLY, Some(wrong));
        pair.run(Duration::from_secs(60));
        assert_eq!(pair.client_events, [DtlsOutput::Failed(DtlsError::FingerprintMismatch)]);
        assert!(
            !pair.server_events.iter().any(|event| matches!(event, DtlsOutput::Connected { .. })),
            "{:?}",
            pair.server_events
        );
        assert_eq!(pair.client.poll_timeout(), None, "an ended client asks for no more time");
    }
}
