//! Interop with an independent DTLS stack: webrtc-rs's sans-IO `rtc-dtls` 0.21 (aws-lc-rs
//! provider) handshakes with our transport in memory, in virtual time, and both sides must
//! export the same SRTP keying material. rtc-dtls lets the test choose which SRTP profiles
//! the client offers, so the server's profile preference is checked here too.
//!
//! rtc-dtls's `Endpoint` is keyed by peer address; the addresses below are placeholders that
//! never reach a socket.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;

use super::*;

const RTC_ADDR: &str = "127.0.0.1:5000";
const OUR_ADDR: &str = "127.0.0.1:6000";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("the placeholder addresses are valid literals")
}

/// The profiles Chromium offers by default, in its order.
const CHROMIUM_OFFER: [SrtpProtectionProfile; 3] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
];

/// An rtc-dtls peer: its endpoint, certificate fingerprint and what it has reported.
struct RtcPeer {
    endpoint: Endpoint,
    fingerprint: CertificateFingerprint,
    config: Arc<rtc_dtls::config::HandshakeConfig>,
    handshake_complete: bool,
    errors: usize,
}

impl RtcPeer {
    /// `expected_peer` is the fingerprint rtc-dtls checks our certificate against, the
    /// WebRTC way (no CA chain).
    fn new(is_client: bool, offered_profiles: &[SrtpProtectionProfile], expected_peer: CertificateFingerprint) -> Self {
        let provider = rtc_dtls::crypto_provider::default_provider()
            .expect("the crypto-aws-lc-rs feature provides a default provider");
        let certificate = Certificate::generate_self_signed(vec!["rtc-dtls".to_owned()], provider.crypto())
            .expect("rcgen makes a self-signed certificate");
        let fingerprint = CertificateFingerprint::of_certificate_der(
            certificate.certificate.first().expect("a generated certificate has a leaf").as_ref(),
        );
        let verify: VerifyPeerCertificateFn = Arc::new(move |chain: &[Vec<u8>], _| match chain.first() {
            Some(der) if expected_peer.matches_certificate_der(der) => Ok(()),
            _ => Err(rtc_shared::error::Error::Other("fingerprint mismatch".to_owned())),
        });
        let mut builder = ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![certificate])
            .with_srtp_protection_profiles(offered_profiles.to_vec())
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify));
        if !is_client {
            builder = builder.with_client_auth(rtc_dtls::config::ClientAuthType::RequireAnyClientCert);
        }
        let config = Arc::new(builder.build(is_client, None).expect("the rtc-dtls configuration is valid"));
        let server_config = (!is_client).then(|| Arc::clone(&config));
        Self {
            endpoint: Endpoint::new(addr(RTC_ADDR), TransportProtocol::UDP, server_config),
            fingerprint,
            config,
            handshake_complete: false,
            errors: 0,
        }
    }

    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        match self.endpoint.read(now, addr(OUR_ADDR), None, BytesMut::from(datagram)) {
            Ok(events) => {
                for event in events {
                    if let EndpointEvent::HandshakeComplete = event {
                        self.handshake_complete = true;
                    }
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    /// The RFC 5764 exporter output and the profile rtc-dtls settled on.
    fn exported_srtp(&self, len: usize) -> (SrtpProtectionProfile, Vec<u8>) {
        let state = self.endpoint.get_connection_state(addr(OUR_ADDR)).expect("a completed association has state");
        let exported = state
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], len)
            .expect("a completed handshake exports keying material");
        (state.srtp_protection_profile(), exported.as_ref().to_vec())
    }
}

/// Our transport and an rtc-dtls peer wired back to back.
struct Interop {
    now: Instant,
    ours: DtlsTransport,
    rtc: RtcPeer,
    our_connected: Vec<SrtpKeyingMaterial>,
    our_failed: Vec<DtlsError>,
}

impl Interop {
    fn with_rtc_client(offered_profiles: &[SrtpProtectionProfile]) -> Self {
        Self::with_rtc_client_expecting(offered_profiles, None)
    }

    /// `wrong_fingerprint_at_server`: give our server a fingerprint that is not the
    /// rtc-dtls client's.
    fn with_rtc_client_expecting(
        offered_profiles: &[SrtpProtectionProfile],
        wrong_fingerprint_at_server: Option<CertificateFingerprint>,
    ) -> Self {
        let now = Instant::now();
        let identity =
            DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("generating a P-256 identity does not fail");
        let mut rtc = RtcPeer::new(true, offered_profiles, identity.fingerprint());
        let client_fingerprint = wrong_fingerprint_at_server.unwrap_or(rtc.fingerprint);
        let ours = DtlsTransport::new_server(&identity, client_fingerprint, now);
        let config = Arc::clone(&rtc.config);
        rtc.endpoint.connect(now, addr(OUR_ADDR), config, None).expect("rtc-dtls starts its handshake");
        Self { now, ours, rtc, our_connected: Vec::new(), our_failed: Vec::new() }
    }

    fn with_rtc_server(offered_profiles: &[SrtpProtectionProfile]) -> Self {
        let now = Instant::now();
        let identity =
            DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("generating a P-256 identity does not fail");
        let rtc = RtcPeer::new(false, offered_profiles, identity.fingerprint());
        let ours = DtlsTransport::new_client(&identity, rtc.fingerprint, now);
        Self { now, ours, rtc, our_connected: Vec::new(), our_failed: Vec::new() }
    }

    /// Exchanges datagrams and fires timers until both sides are done or `limit` of virtual
    /// time has passed.
    fn run(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
        for _ in 0..10_000 {
            let mut in_flight = false;
            while let Some(transmit) = self.rtc.endpoint.poll_transmit() {
                in_flight = true;
                let _ = self.ours.handle_packet(self.now, &transmit.message);
            }
            while let Some(output) = self.ours.poll_output(&mut buf) {
                match output {
                    DtlsOutput::Transmit(datagram) => {
                        in_flight = true;
                        self.rtc.receive(self.now, datagram);
                    }
                    DtlsOutput::Connected { keys, .. } => self.our_connected.push(keys),
                    DtlsOutput::Failed(error) => self.our_failed.push(error),
                    DtlsOutput::Closed => {}
                }
            }
            if in_flight {
                continue;
            }
            let we_are_done = !self.our_connected.is_empty() || !self.our_failed.is_empty();
            if we_are_done && self.rtc.handshake_complete {
                return;
            }
            let rtc_timer = self.rtc.endpoint.poll_timeout(&addr(OUR_ADDR));
            let next_timer = [rtc_timer, self.ours.poll_timeout()].into_iter().flatten().min();
            match next_timer {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    if rtc_timer.is_some_and(|due| due <= self.now)
                        && self.rtc.endpoint.handle_timeout(addr(OUR_ADDR), self.now).is_err()
                    {
                        self.rtc.errors += 1;
                    }
                    if self.ours.poll_timeout().is_some_and(|due| due <= self.now) {
                        self.ours.handle_timeout(self.now);
                    }
                }
                _ => return,
            }
        }
        panic!("interop run did not settle within 10 000 steps");
    }

    /// Both sides finished, and the bytes rtc-dtls exported are exactly what our transport
    /// split into keys: client write key, server write key, client salt, server salt.
    fn assert_identical_keying_material(&self) -> SrtpProfile {
        assert!(self.our_failed.is_empty(), "we failed: {:?}", self.our_failed);
        assert_eq!(self.our_connected.len(), 1);
        assert!(self.rtc.handshake_complete, "rtc-dtls did not complete");
        let keys = self.our_connected[0];
        let profile = keys.profile;
        let (rtc_profile, exported) = self.rtc.exported_srtp(profile.exported_len());
        assert_eq!(rtc_profile as u16, profile.protection_profile_id());

        let (key_len, salt_len) = (profile.master_key_len(), profile.master_salt_len());
        let (client_key, rest) = exported.split_at(key_len);
        let (server_key, rest) = rest.split_at(key_len);
        let (client_salt, server_salt) = rest.split_at(salt_len);
        let (our_send, our_receive) = match self.ours.role() {
            DtlsRole::Server => ((server_key, server_salt), (client_key, client_salt)),
            DtlsRole::Client => ((client_key, client_salt), (server_key, server_salt)),
        };
        assert_eq!(keys.local_key.as_bytes(), our_send.0);
        assert_eq!(keys.local_salt.as_bytes(), our_send.1);
        assert_eq!(keys.remote_key.as_bytes(), our_receive.0);
        assert_eq!(keys.remote_salt.as_bytes(), our_receive.1);
        profile
    }
}

#[test]
fn our_server_and_rtc_dtls_client_export_identical_keys() {
    let mut interop = Interop::with_rtc_client(&CHROMIUM_OFFER);
    interop.run(Duration::from_secs(60));
    let profile = interop.assert_identical_keying_material();
    assert_eq!(profile, SrtpProfile::AeadAes256Gcm, "GCM-256 is preferred");
    assert_eq!(interop.rtc.errors, 0);
}

#[test]
fn server_prefers_gcm_and_falls_back_to_aes_cm() {
    use SrtpProtectionProfile::{
        Srtp_Aead_Aes_128_Gcm as Gcm128, Srtp_Aead_Aes_256_Gcm as Gcm256, Srtp_Aes128_Cm_Hmac_Sha1_80 as AesCm,
    };
    for (offer, expected) in [
        (&[AesCm][..], SrtpProfile::Aes128CmHmacSha1_80),
        (&[AesCm, Gcm128][..], SrtpProfile::AeadAes128Gcm),
        (&[Gcm128, AesCm][..], SrtpProfile::AeadAes128Gcm),
        (&[AesCm, Gcm128, Gcm256][..], SrtpProfile::AeadAes256Gcm),
        (&[Gcm256][..], SrtpProfile::AeadAes256Gcm),
    ] {
        let mut interop = Interop::with_rtc_client(offer);
        interop.run(Duration::from_secs(60));
        assert_eq!(interop.assert_identical_keying_material(), expected, "{offer:?}");
    }
}

#[test]
fn client_offering_no_supported_profile_never_gets_keys() {
    // The only profile offered is one we do not implement: our ServerHello carries no
    // use_srtp, and rtc-dtls aborts with an alert.
    let mut interop = Interop::with_rtc_client(&[SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32]);
    interop.run(Duration::from_secs(60));
    assert!(interop.our_connected.is_empty());
    assert!(!interop.rtc.handshake_complete);
    assert_eq!(interop.our_failed, [DtlsError::PeerAlert]);
}

#[test]
fn client_without_use_srtp_completes_dtls_but_gets_no_media_keys() {
    // No use_srtp at all: rtc-dtls is content with plain DTLS, but there is nothing to
    // key SRTP with, so our server reports the handshake as failed.
    let mut interop = Interop::with_rtc_client(&[]);
    interop.run(Duration::from_secs(60));
    assert!(interop.our_connected.is_empty());
    assert_eq!(interop.our_failed, [DtlsError::NoSrtpProfile]);
}

#[test]
fn wrong_fingerprint_for_rtc_dtls_client_fails_without_keys() {
    let wrong = CertificateFingerprint::from_bytes([0xA5; 32]);
    let mut interop = Interop::with_rtc_client_expecting(&CHROMIUM_OFFER, Some(wrong));
    interop.run(Duration::from_secs(60));
    assert_eq!(interop.our_failed, [DtlsError::FingerprintMismatch]);
    assert!(interop.our_connected.is_empty());
    assert!(!interop.rtc.handshake_complete);
}

#[test]
fn our_client_and_rtc_dtls_server_export_identical_keys() {
    let mut interop = Interop::with_rtc_server(&CHROMIUM_OFFER);
    interop.run(Duration::from_secs(60));
    interop.assert_identical_keying_material();
    assert_eq!(interop.rtc.errors, 0);
}
