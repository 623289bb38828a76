//! Two transports of this module talking through an in-memory network in virtual time: the
//! clock is a base `Instant` the test advances itself, never the wall clock.

use std::time::Duration;

use super::*;

/// Every `poll_output` result one side has produced so far.
struct Side {
    transport: DtlsTransport,
    connected: Vec<SrtpKeyingMaterial>,
    failed: Vec<DtlsError>,
    closed: usize,
    transmits_after_end: usize,
}

impl Side {
    fn new(transport: DtlsTransport) -> Self {
        Self { transport, connected: Vec::new(), failed: Vec::new(), closed: 0, transmits_after_end: 0 }
    }

    fn has_ended(&self) -> bool {
        !self.failed.is_empty() || self.closed > 0
    }

    fn is_done(&self) -> bool {
        !self.connected.is_empty() || self.has_ended()
    }

    /// Polls until `None`, returning the datagrams and recording the events.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
        let mut datagrams = Vec::new();
        for _ in 0..1000 {
            let Some(output) = self.transport.poll_output(&mut buf) else {
                return datagrams;
            };
            match output {
                DtlsOutput::Transmit(datagram) => {
                    if self.has_ended() {
                        self.transmits_after_end += 1;
                    }
                    datagrams.push(datagram.to_vec());
                }
                DtlsOutput::Connected { profile, keys } => {
                    assert_eq!(profile, keys.profile);
                    self.connected.push(keys);
                }
                DtlsOutput::Failed(error) => self.failed.push(error),
                DtlsOutput::Closed => self.closed += 1,
            }
        }
        panic!("poll_output did not run dry within 1000 outputs");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

/// A datagram in flight: which way, and the how-many-th non-empty drain of its sender
/// produced it (0 = the sender's first flight).
#[derive(Debug, Clone, Copy)]
struct Flight {
    direction: Direction,
    drain_index: usize,
}

struct Network {
    start: Instant,
    now: Instant,
    server: Side,
    client: Side,
    server_drains: usize,
    client_drains: usize,
}

fn identity(versions: DtlsVersionPolicy) -> DtlsIdentity {
    DtlsIdentity::generate(versions).expect("generating a P-256 identity does not fail")
}

/// A test client's identity with an RSA-2048 certificate, as OpenSSL-based peers have.
fn rsa_identity() -> DtlsIdentity {
    DtlsIdentity::generate_rsa2048().expect("generating an RSA-2048 identity does not fail")
}

/// The DER of the rsaEncryption OID (1.2.840.113549.1.1.1), which only an RSA key's
/// SubjectPublicKeyInfo carries.
const RSA_ENCRYPTION_OID_DER: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// A fingerprint no generated certificate has.
fn wrong_fingerprint() -> CertificateFingerprint {
    CertificateFingerprint::from_bytes([0x5A; 32])
}

impl Network {
    fn new(
        server_identity: &DtlsIdentity,
        client_fingerprint_at_server: CertificateFingerprint,
        client_identity: &DtlsIdentity,
        server_fingerprint_at_client: CertificateFingerprint,
    ) -> Self {
        let start = Instant::now();
        let server = DtlsTransport::new_server(server_identity, client_fingerprint_at_server, start);
        let client = DtlsTransport::new_client(client_identity, server_fingerprint_at_client, start);
        Self {
            start,
            now: start,
            server: Side::new(server),
            client: Side::new(client),
            server_drains: 0,
            client_drains: 0,
        }
    }

    fn honest(server_identity: &DtlsIdentity, client_identity: &DtlsIdentity) -> Self {
        Self::new(server_identity, client_identity.fingerprint(), client_identity, server_identity.fingerprint())
    }

    /// Exchanges datagrams (those `keep` lets through) and fires due timers until both
    /// sides are connected or ended and nothing is in flight, or `limit` of virtual time
    /// has passed.
    fn run(&mut self, limit: Duration, mut keep: impl FnMut(Flight) -> bool) {
        let deadline = self.start + limit;
        for _ in 0..10_000 {
            let from_client = self.client.drain();
            let from_server = self.server.drain();
            let in_flight = !from_client.is_empty() || !from_server.is_empty();
            if !from_client.is_empty() {
                let flight = Flight { direction: Direction::ClientToServer, drain_index: self.client_drains };
                self.client_drains += 1;
                if keep(flight) {
                    for datagram in &from_client {
                        let _ = self.server.transport.handle_packet(self.now, datagram);
                    }
                }
            }
            if !from_server.is_empty() {
                let flight = Flight { direction: Direction::ServerToClient, drain_index: self.server_drains };
                self.server_drains += 1;
                if keep(flight) {
                    for datagram in &from_server {
                        let _ = self.client.transport.handle_packet(self.now, datagram);
                    }
                }
            }
            if in_flight {
                continue;
            }
            if self.server.is_done() && self.client.is_done() {
                return;
            }
            let next_timer = [self.server.transport.poll_timeout(), self.client.transport.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next_timer {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    for side in [&mut self.server, &mut self.client] {
                        if side.transport.poll_timeout().is_some_and(|due| due <= self.now) {
                            side.transport.handle_timeout(self.now);
                        }
                    }
                }
                _ => return,
            }
        }
        panic!("network did not settle within 10 000 steps");
    }

    fn run_clean(&mut self) {
        self.run(Duration::from_secs(60), |_| true);
    }
}

fn assert_mirror_keys(server: &SrtpKeyingMaterial, client: &SrtpKeyingMaterial) {
    assert_eq!(server.profile, client.profile);
    assert_eq!(server.local_key, client.remote_key);
    assert_eq!(server.local_salt, client.remote_salt);
    assert_eq!(server.remote_key, client.local_key);
    assert_eq!(server.remote_salt, client.local_salt);
    assert_ne!(server.local_key, server.remote_key, "directions must differ");
    assert_eq!(server.local_key.as_bytes().len(), server.profile.master_key_len());
    assert_eq!(server.local_salt.as_bytes().len(), server.profile.master_salt_len());
}

fn assert_connected_once(network: &Network) {
    for side in [&network.server, &network.client] {
        assert_eq!(side.connected.len(), 1, "Connected exactly once");
        assert!(side.failed.is_empty(), "unexpected failure {:?}", side.failed);
        assert!(side.transport.is_connected());
    }
    assert_mirror_keys(&network.server.connected[0], &network.client.connected[0]);
}

#[test]
fn identity_fingerprint_is_the_certificate_hash_in_sdp_form() {
    let identity = identity(DtlsVersionPolicy::Dtls12Only);
    let fingerprint = identity.fingerprint();
    assert!(fingerprint.matches_certificate_der(&identity.shared.certificate.certificate));
    assert_eq!(CertificateFingerprint::ALGORITHM, "sha-256");
    let hex = fingerprint.to_sdp_hex();
    assert_eq!(hex.len(), 32 * 3 - 1);
    assert_eq!(hex, hex.to_ascii_uppercase());
    assert_eq!(CertificateFingerprint::parse_sdp(&fingerprint.to_sdp_attribute_value()), Ok(fingerprint));
    let clone = identity.clone();
    assert!(Arc::ptr_eq(&clone.shared, &identity.shared), "clones share one identity");
    assert_ne!(self::identity(DtlsVersionPolicy::Dtls12Only).fingerprint(), fingerprint);
}

#[test]
fn dtls12_handshake_derives_mirror_image_keys() {
    let (server_identity, client_identity) =
        (identity(DtlsVersionPolicy::Dtls12Only), identity(DtlsVersionPolicy::Dtls12Only));
    let mut network = Network::honest(&server_identity, &client_identity);
    network.run_clean();
    assert_connected_once(&network);
    assert_eq!(network.server.transport.version(), Some(DtlsVersion::Dtls12));
    assert_eq!(network.server.transport.role(), DtlsRole::Server);
    assert_eq!(network.client.transport.role(), DtlsRole::Client);
    // dimpl's client offers all three profiles, like Chromium; the server picks AES-256-GCM.
    assert_eq!(network.server.connected[0].profile, SrtpProfile::AeadAes256Gcm);
    // No cookie round trip: ClientHello, server flight, client flight, server Finished.
    assert_eq!((network.client_drains, network.server_drains), (2, 2));
    assert_eq!(network.now, network.start, "a lossless handshake needs no timer");
}

#[test]
fn version_negotiation_matrix() {
    use DtlsVersionPolicy::{Dtls12Only, Dtls12Or13};
    for (server_versions, client_versions, expected) in [
        (Dtls12Or13, Dtls12Or13, DtlsVersion::Dtls13),
        (Dtls12Or13, Dtls12Only, DtlsVersion::Dtls12),
        (Dtls12Only, Dtls12Or13, DtlsVersion::Dtls12),
    ] {
        let mut network = Network::honest(&identity(server_versions), &identity(client_versions));
        network.run_clean();
        assert_connected_once(&network);
        assert_eq!(network.server.transport.version(), Some(expected));
        assert_eq!(network.client.transport.version(), Some(expected));
    }
}

/// Runs a handshake where one side was given the wrong fingerprint and checks that the
/// deceived side fails, emits no keys and sends nothing more. The other side never gets
/// the Finished it waits for and times out — except a DTLS 1.3 client facing a deceived
/// server: in 1.3 the client's handshake ends when it sends its own Finished, before the
/// server checks the client certificate, so that client connects to a server that has
/// no keys and will never accept its media.
fn check_fingerprint_mismatch(versions: DtlsVersionPolicy, server_is_deceived: bool) {
    check_fingerprint_mismatch_between(&identity(versions), &identity(versions), server_is_deceived);
}

fn check_fingerprint_mismatch_between(
    server_identity: &DtlsIdentity,
    client_identity: &DtlsIdentity,
    server_is_deceived: bool,
) {
    let versions = (server_identity.version_policy(), client_identity.version_policy());
    let (fingerprint_at_server, fingerprint_at_client) = if server_is_deceived {
        (wrong_fingerprint(), server_identity.fingerprint())
    } else {
        (client_identity.fingerprint(), wrong_fingerprint())
    };
    let mut network = Network::new(server_identity, fingerprint_at_server, client_identity, fingerprint_at_client);
    network.run(Duration::from_secs(120), |_| true);

    let (deceived, other) =
        if server_is_deceived { (&network.server, &network.client) } else { (&network.client, &network.server) };
    let context = format!("{versions:?}, server deceived: {server_is_deceived}");
    assert_eq!(deceived.failed, [DtlsError::FingerprintMismatch], "{context}");
    assert!(deceived.connected.is_empty(), "no keys after a mismatch: {context}");
    assert_eq!(deceived.transmits_after_end, 0, "{context}");
    assert!(!deceived.transport.is_connected());
    assert_eq!(deceived.transport.poll_timeout(), None);
    let dtls13_client_finishes_first =
        server_is_deceived && network.client.transport.version() == Some(DtlsVersion::Dtls13);
    if dtls13_client_finishes_first {
        assert_eq!(other.connected.len(), 1, "{context}");
    } else {
        assert!(other.connected.is_empty(), "{context}");
        assert_eq!(other.failed, [DtlsError::HandshakeTimeout], "{context}");
    }
}

#[test]
fn fingerprint_mismatch_at_the_server_fails_without_keys() {
    check_fingerprint_mismatch(DtlsVersionPolicy::Dtls12Only, true);
    check_fingerprint_mismatch(DtlsVersionPolicy::Dtls12Or13, true);
}

#[test]
fn fingerprint_mismatch_at_the_client_fails_without_keys() {
    check_fingerprint_mismatch(DtlsVersionPolicy::Dtls12Only, false);
    check_fingerprint_mismatch(DtlsVersionPolicy::Dtls12Or13, false);
}

/// OpenSSL-based peers (GStreamer's webrtcbin) present RSA-2048 certificates: our server
/// must ask for them, verify the RSA CertificateVerify and check the fingerprint.
#[test]
fn client_with_an_rsa_certificate_connects_to_our_server() {
    let client_identity = rsa_identity();
    let der = &client_identity.shared.certificate.certificate;
    let is_rsa = |der: &[u8]| der.windows(RSA_ENCRYPTION_OID_DER.len()).any(|window| window == RSA_ENCRYPTION_OID_DER);
    assert!(is_rsa(der));
    assert!(!is_rsa(&identity(DtlsVersionPolicy::Dtls12Only).shared.certificate.certificate));
    assert_eq!(client_identity.fingerprint(), CertificateFingerprint::of_certificate_der(der));
    assert_eq!(client_identity.version_policy(), DtlsVersionPolicy::Dtls12Only);
    for server_versions in [DtlsVersionPolicy::Dtls12Only, DtlsVersionPolicy::Dtls12Or13] {
        let server_identity = identity(server_versions);
        let mut network = Network::honest(&server_identity, &client_identity);
        network.run_clean();
        assert_connected_once(&network);
        assert_eq!(network.server.transport.version(), Some(DtlsVersion::Dtls12), "{server_versions:?}");
        assert_eq!(network.server.connected[0].profile, SrtpProfile::AeadAes256Gcm);
        assert_eq!((network.client_drains, network.server_drains), (2, 2), "{server_versions:?}");
    }
}

#[test]
fn fingerprint_mismatch_with_an_rsa_client_fails_without_keys() {
    let client_identity = rsa_identity();
    for server_versions in [DtlsVersionPolicy::Dtls12Only, DtlsVersionPolicy::Dtls12Or13] {
        check_fingerprint_mismatch_between(&identity(server_versions), &client_identity, true);
        check_fingerprint_mismatch_between(&identity(server_versions), &client_identity, false);
    }
}

#[test]
fn handshake_survives_a_dropped_server_flight() {
    for versions in [DtlsVersionPolicy::Dtls12Only, DtlsVersionPolicy::Dtls12Or13] {
        let mut network = Network::honest(&identity(versions), &identity(versions));
        let mut dropped = 0;
        network.run(Duration::from_secs(60), |flight| {
            let drop = flight.direction == Direction::ServerToClient && flight.drain_index == 0;
            dropped += usize::from(drop);
            !drop
        });
        assert_eq!(dropped, 1, "{versions:?}");
        assert_connected_once(&network);
        // Recovery needed a retransmission timer: at least the first RTO (1 s, -25% jitter).
        assert!(network.now - network.start >= Duration::from_millis(750), "{versions:?}");
    }
}

#[test]
fn handshake_survives_a_dropped_client_flight() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let mut network = Network::honest(&identity(versions), &identity(versions));
    network.run(Duration::from_secs(60), |flight| {
        !(flight.direction == Direction::ClientToServer && flight.drain_index == 1)
    });
    assert_connected_once(&network);
}

#[test]
fn unanswered_client_times_out() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let mut network = Network::honest(&identity(versions), &identity(versions));
    network.run(Duration::from_secs(120), |flight| flight.direction == Direction::ServerToClient);
    assert_eq!(network.client.failed, [DtlsError::HandshakeTimeout]);
    assert!(network.client.connected.is_empty());
    assert_eq!(network.client.transport.poll_timeout(), None);
    assert!(network.now - network.start <= Duration::from_secs(41));
}

#[test]
fn garbage_and_truncated_datagrams_are_errors_and_the_handshake_goes_on() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let mut network = Network::honest(&identity(versions), &identity(versions));
    let client_hello = network.client.drain();
    assert_eq!(client_hello.len(), 1);
    let client_hello = &client_hello[0];
    let now = network.now;
    let server = &mut network.server.transport;

    for garbage in [&[][..], &[0xFF; 64], &[22], &[0x17, 0xFE, 0xFD], &[64; 100]] {
        let error = server.handle_packet(now, garbage).expect_err("garbage is rejected");
        assert_eq!(error, DtlsError::MalformedDatagram);
        assert!(!error.is_fatal());
    }
    for cut in 0..client_hello.len() {
        assert_eq!(
            server.handle_packet(now, &client_hello[..cut]),
            Err(DtlsError::MalformedDatagram),
            "ClientHello cut at {cut}"
        );
    }
    server.handle_packet(now, client_hello).expect("the whole ClientHello is accepted");
    network.run_clean();
    assert_connected_once(&network);

    let error = network
        .server
        .transport
        .handle_packet(network.now, &[0xFF; 20])
        .expect_err("garbage after the handshake is rejected too");
    assert_eq!(error, DtlsError::MalformedDatagram);
    assert!(network.server.transport.is_connected());
}

/// xorshift64: a deterministic byte source for the fuzz-style tests.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[test]
fn mutated_and_random_datagrams_never_panic() {
    let versions = DtlsVersionPolicy::Dtls12Or13;
    let (server_identity, client_identity) = (identity(versions), identity(versions));
    let start = Instant::now();
    let mut client = DtlsTransport::new_client(&client_identity, server_identity.fingerprint(), start);
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    let Some(DtlsOutput::Transmit(client_hello)) = client.poll_output(&mut buf) else {
        panic!("a client's first output is its ClientHello");
    };
    let client_hello = client_hello.to_vec();

    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 3];
    for round in 0..300 {
        let mut server = DtlsTransport::new_server(&server_identity, client_identity.fingerprint(), start);
        for _ in 0..8 {
            let mut datagram = client_hello.clone();
            if round % 3 == 0 {
                let len = noise.below(300);
                datagram = (0..len).map(|_| noise.next() as u8).collect();
                if let Some(first) = datagram.first_mut() {
                    *first = 20 + (*first % 44);
                }
            } else {
                for _ in 0..1 + noise.below(4) {
                    let at = noise.below(datagram.len());
                    datagram[at] ^= 1 << noise.below(8);
                }
                datagram.truncate(datagram.len() - noise.below(3));
            }
            let now = start + Duration::from_millis(noise.below(5000) as u64);
            let outcome = server.handle_packet(now, &datagram);
            outcomes[match outcome {
                Ok(()) => 0,
                Err(error) if error.is_fatal() => 1,
                Err(_) => 2,
            }] += 1;
            server.handle_timeout(now);
            while server.poll_output(&mut buf).is_some() {}
        }
    }
    assert!(outcomes.iter().all(|&count| count > 0), "{outcomes:?}");
}

#[test]
fn short_output_buffer_fails_the_transport() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let (server_identity, client_identity) = (identity(versions), identity(versions));
    let mut client = DtlsTransport::new_client(&client_identity, server_identity.fingerprint(), Instant::now());
    let mut short = [0u8; MIN_OUTPUT_BUFFER_LEN - 1];
    assert_eq!(client.poll_output(&mut short), Some(DtlsOutput::Failed(DtlsError::OutputBufferTooSmall)));
    assert_eq!(client.poll_output(&mut short), None);
    let mut enough = [0u8; MIN_OUTPUT_BUFFER_LEN];
    assert_eq!(client.poll_output(&mut enough), None, "Failed is final");
}

#[test]
fn close_sends_close_notify_and_both_sides_report_closed() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let mut network = Network::honest(&identity(versions), &identity(versions));
    network.run_clean();
    assert_connected_once(&network);

    network.server.transport.close();
    let close_notify = network.server.drain();
    assert_eq!(close_notify.len(), 1);
    assert_eq!(network.server.closed, 1);
    assert_eq!(network.server.transport.handle_packet(network.now, &close_notify[0]), Err(DtlsError::TransportEnded));

    network
        .client
        .transport
        .handle_packet(network.now, &close_notify[0])
        .expect("an authenticated close_notify is accepted");
    let reply = network.client.drain();
    assert_eq!(reply.len(), 1, "the peer answers close_notify with its own");
    assert_eq!(reply[0][0], 21, "an alert record");
    assert_eq!(network.client.closed, 1);
    assert!(network.client.failed.is_empty());
    assert_eq!(network.client.transport.poll_timeout(), None);
}

#[test]
fn close_during_the_handshake_reports_closed_without_sending() {
    let versions = DtlsVersionPolicy::Dtls12Only;
    let mut network = Network::honest(&identity(versions), &identity(versions));
    network.client.transport.close();
    assert!(network.client.drain().is_empty(), "the queued ClientHello is abandoned");
    assert_eq!(network.client.closed, 1);
    assert!(network.client.connected.is_empty());
}
