//! DTLS-SRTP for one ICE transport (RFC 5763, RFC 5764): the handshake, the check of the
//! peer's certificate against its SDP fingerprint, and the SRTP master keys that result.
//! A sans-IO wrapper around dimpl: it owns no socket, thread or clock, and time is an argument.
//!
//! What it owns: a [`DtlsIdentity`] (self-signed ECDSA P-256 certificate, its SHA-256
//! fingerprint and the engine configuration; made once per process or worker and shared by
//! `Arc`), and one [`DtlsTransport`] per ICE transport. The SFU answers `a=setup:passive` and
//! runs the server role; the client role exists for our test client and load generator.
//!
//! Rules for callers:
//! - **No media before [`DtlsOutput::Connected`].** The SRTP keys come only with that event,
//!   and it is yielded only after the peer's certificate hashed to the fingerprint given at
//!   construction (compared in constant time). A mismatch yields
//!   `Failed(FingerprintMismatch)`, sends nothing further and never exposes keying material.
//! - **Only ICE-validated 5-tuples.** The server skips the HelloVerifyRequest cookie round
//!   trip: ICE connectivity checks (STUN with the ufrag/password from SDP) have already
//!   proven that the peer owns its address. Feed this module only datagrams whose first byte
//!   is 20..=63 (RFC 7983) from a 5-tuple ICE has validated.
//! - **Time is an argument.** Pass the loop's `now` to [`DtlsTransport::handle_packet`] and
//!   call [`DtlsTransport::handle_timeout`] once [`DtlsTransport::poll_timeout`] is due.
//! - **Drain after every call.** After constructing the transport and after every
//!   `handle_*` or `close` call, call [`DtlsTransport::poll_output`] until it returns
//!   `None`, then read `poll_timeout` again. Output buffers are at least
//!   [`MIN_OUTPUT_BUFFER_LEN`] bytes.
//! - **Bounded work.** `handle_packet` does the work of that one datagram (at most one ECDHE
//!   and one signature per flight); nothing here loops over unbounded input. The worker caps
//!   how many handshake datagrams it feeds per loop turn, so a join storm cannot stall
//!   forwarding.
//! - **Ends are final.** After `Failed` or `Closed` the transport is inert: drop it. A
//!   malformed datagram ([`DtlsError::MalformedDatagram`]) is not an end; it is dropped and
//!   the handshake goes on.
//!
//! Peer certificates: the server asks for one and accepts ECDSA (P-256, P-384) keys and, in
//! DTLS 1.2, RSA keys of 2048 to 8192 bits signing with PKCS#1 v1.5: browsers present
//! ECDSA, OpenSSL-based peers such as GStreamer's webrtcbin RSA-2048. RSA comes from the
//! patched dimpl in `third_party/dimpl` (its `UPRTCD-PATCH.md` says what changed). A peer
//! with any other key (Ed25519, RSA-PSS) finds no certificate type or signature algorithm
//! it may use and the handshake fails. Our own identity is always ECDSA P-256.
//!
//! DTLS 1.2 is what browsers speak to an ICE-lite SFU today and is the default
//! ([`DtlsVersionPolicy::Dtls12Only`]); [`DtlsVersionPolicy::Dtls12Or13`] lets the first
//! ClientHello pick 1.3 when offered (dimpl's auto-sense) and is tested here, but stays
//! opt-in until it has been run against browsers. The server prefers SRTP profiles in the
//! order AEAD_AES_256_GCM, AEAD_AES_128_GCM, AES128_CM_HMAC_SHA1_80 (dimpl's fixed order):
//! Chromium offers all three by default and gets AES-256-GCM; a peer offering only AES-CM
//! gets AES-CM.
#![forbid(unsafe_code)]

mod fingerprint;
mod framing;
mod keying;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

pub use fingerprint::CertificateFingerprint;
pub use keying::{InlineSecret, SrtpKeyingMaterial, SrtpMasterKey, SrtpMasterSalt, SrtpProfile};

/// Smallest buffer [`DtlsTransport::poll_output`] accepts: a datagram of the engine's MTU
/// (1150 bytes) or a peer certificate must fit. Browser certificates are well under 1 KiB.
pub const MIN_OUTPUT_BUFFER_LEN: usize = 2048;

/// Which end of the handshake this transport plays (RFC 5763 `a=setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// `a=setup:passive`: waits for the ClientHello. The SFU's role.
    Server,
    /// `a=setup:active`: sends the ClientHello. Our test client and load generator.
    Client,
}

/// Which DTLS versions a transport will negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DtlsVersionPolicy {
    /// DTLS 1.2 only.
    #[default]
    Dtls12Only,
    /// DTLS 1.3 when the peer offers it, else 1.2 (the server decides on the first
    /// ClientHello; the client sends a hello both versions understand).
    Dtls12Or13,
}

/// The DTLS version a handshake settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsVersion {
    /// DTLS 1.2 (RFC 6347).
    Dtls12,
    /// DTLS 1.3 (RFC 9147).
    Dtls13,
}

/// Everything that can go wrong, as one cheap `Copy` value to count by variant.
///
/// Errors from [`DtlsTransport::handle_packet`] are either about that datagram only
/// (see [`DtlsError::is_fatal`]) or end the transport, in which case `poll_output` also
/// yields `Failed` with the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DtlsError {
    // Malformed input: the datagram is dropped, the transport goes on.
    /// The datagram is not a sequence of whole DTLS records.
    #[error("datagram is not a sequence of whole DTLS records")]
    MalformedDatagram,
    /// A datagram arrived after the transport failed or closed.
    #[error("datagram for a transport that has already ended")]
    TransportEnded,

    // Setup: returned by constructors and parsers, never by a transport.
    /// An SDP `a=fingerprint` value is not `sha-256` followed by 32 colon-separated hex pairs.
    #[error("SDP fingerprint is not `sha-256` and 32 colon-separated hex bytes")]
    InvalidFingerprint,
    /// The self-signed certificate or the engine configuration could not be made.
    #[error("could not generate the DTLS certificate or configuration")]
    IdentitySetup,

    // The peer misbehaves or is not who SDP says.
    /// The peer's certificate does not hash to the fingerprint from its SDP.
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    /// The handshake finished without the peer presenting a certificate.
    #[error("peer presented no certificate")]
    PeerCertificateMissing,
    /// The engine could not parse or use the peer's certificate.
    #[error("peer certificate is unusable")]
    PeerCertificateRejected,
    /// The peer's certificate is larger than the output buffer ([`MIN_OUTPUT_BUFFER_LEN`]).
    #[error("peer certificate does not fit the output buffer")]
    PeerCertificateTooLarge,
    /// A handshake signature or key exchange did not verify.
    #[error("handshake cryptography failed")]
    CryptoFailure,
    /// The peer broke the handshake protocol (unexpected message, renegotiation, …).
    #[error("peer violated the DTLS protocol")]
    ProtocolViolation,
    /// The peer sent a fatal alert.
    #[error("peer sent a fatal alert")]
    PeerAlert,
    /// The peer sent more handshake records than the engine buffers.
    #[error("handshake receive or transmit queue is full")]
    QueueFull,

    // The peer is incompatible.
    /// No common version, cipher suite, group, or extended master secret.
    #[error("peer offers no compatible version, cipher suite or extension")]
    IncompatiblePeer,
    /// The handshake completed without `use_srtp` agreeing on a profile.
    #[error("no SRTP protection profile was negotiated")]
    NoSrtpProfile,
    /// The handshake did not finish within the engine's deadline (40 s) or retries.
    #[error("handshake timed out")]
    HandshakeTimeout,

    // API misuse or a broken engine contract.
    /// `poll_output` was given a buffer shorter than [`MIN_OUTPUT_BUFFER_LEN`].
    #[error("output buffer shorter than MIN_OUTPUT_BUFFER_LEN")]
    OutputBufferTooSmall,
    /// The exported keying material does not have the profile's length.
    #[error("exported SRTP keying material has the wrong length")]
    KeyExport,
    /// The engine reported a state or output it documents as impossible.
    #[error("DTLS engine internal error")]
    Internal,
}

impl DtlsError {
    /// Every error, in the order of [`DtlsError::name`]'s metrics label values.
    pub const ALL: [DtlsError; 18] = [
        Self::MalformedDatagram,
        Self::TransportEnded,
        Self::InvalidFingerprint,
        Self::IdentitySetup,
        Self::FingerprintMismatch,
        Self::PeerCertificateMissing,
        Self::PeerCertificateRejected,
        Self::PeerCertificateTooLarge,
        Self::CryptoFailure,
        Self::ProtocolViolation,
        Self::PeerAlert,
        Self::QueueFull,
        Self::IncompatiblePeer,
        Self::NoSrtpProfile,
        Self::HandshakeTimeout,
        Self::OutputBufferTooSmall,
        Self::KeyExport,
        Self::Internal,
    ];

    /// A short name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedDatagram => "malformed_datagram",
            Self::TransportEnded => "transport_ended",
            Self::InvalidFingerprint => "invalid_fingerprint",
            Self::IdentitySetup => "identity_setup",
            Self::FingerprintMismatch => "fingerprint_mismatch",
            Self::PeerCertificateMissing => "no_certificate",
            Self::PeerCertificateRejected => "certificate_rejected",
            Self::PeerCertificateTooLarge => "certificate_too_large",
            Self::CryptoFailure => "crypto_failure",
            Self::ProtocolViolation => "protocol_violation",
            Self::PeerAlert => "peer_alert",
            Self::QueueFull => "queue_full",
            Self::IncompatiblePeer => "incompatible_peer",
            Self::NoSrtpProfile => "no_srtp_profile",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::OutputBufferTooSmall => "output_buffer_too_small",
            Self::KeyExport => "key_export",
            Self::Internal => "internal",
        }
    }

    /// For errors returned by [`DtlsTransport::handle_packet`]: whether the transport has
    /// ended. `false` means only that datagram was dropped.
    pub fn is_fatal(self) -> bool {
        !matches!(self, Self::MalformedDatagram | Self::TransportEnded)
    }

    /// Maps an engine error. Every dimpl error is fatal to its connection.
    fn from_engine(error: &dimpl::Error) -> Self {
        use dimpl::Error as E;
        match error {
            E::Timeout(_) => Self::HandshakeTimeout,
            E::SecurityError(dimpl::SecurityError::FatalAlert { .. }) => Self::PeerAlert,
            E::SecurityError(_) | E::PskError(_) => Self::IncompatiblePeer,
            E::CertificateError(
                dimpl::CertificateError::NoClientCertificateReceived
                | dimpl::CertificateError::NoServerCertificateReceived,
            ) => Self::PeerCertificateMissing,
            E::CertificateError(_) => Self::PeerCertificateRejected,
            E::CryptoError(_) => Self::CryptoFailure,
            E::ReceiveQueueFull | E::TransmitQueueFull | E::TransmitHistoryFull => Self::QueueFull,
            E::UnexpectedMessage(_)
            | E::IncompleteServerHello
            | E::RenegotiationAttempt
            | E::TooManyClientHelloFragments => Self::ProtocolViolation,
            _ => Self::Internal,
        }
    }
}

/// This side's certificate, its fingerprint and the engine configuration, shared by every
/// transport of a worker (or process). Cloning is an `Arc` increment.
#[derive(Clone)]
pub struct DtlsIdentity {
    shared: Arc<SharedIdentity>,
}

struct SharedIdentity {
    certificate: dimpl::DtlsCertificate,
    fingerprint: CertificateFingerprint,
    config: Arc<dimpl::Config>,
    versions: DtlsVersionPolicy,
}

impl DtlsIdentity {
    /// Generates a fresh self-signed ECDSA P-256 certificate (random 128-bit serial, one year
    /// of validity read from the wall clock: WebRTC peers check the fingerprint, not dates).
    ///
    /// dimpl's rcgen helper does this on aws-lc-rs, the backend dimpl already links, so no
    /// second crypto library enters the build.
    pub fn generate(versions: DtlsVersionPolicy) -> Result<Self, DtlsError> {
        let certificate =
            dimpl::certificate::generate_self_signed_certificate().map_err(|_| DtlsError::IdentitySetup)?;
        Self::with_certificate(certificate, versions)
    }

    /// Generates an identity with a self-signed RSA-2048 certificate (signatures RSA PKCS#1
    /// v1.5 with SHA-256), the kind OpenSSL-based peers such as GStreamer's webrtcbin
    /// present, for test clients and the load generator to play such peers. The SFU's own
    /// identity stays [`DtlsIdentity::generate`]'s ECDSA P-256.
    ///
    /// DTLS 1.2 only: the engine's DTLS 1.3 signs CertificateVerify with ECDSA keys only.
    /// Generating the key takes tens of milliseconds; make one per test or client pool.
    #[cfg(feature = "test-support")]
    pub fn generate_rsa2048() -> Result<Self, DtlsError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|_| DtlsError::IdentitySetup)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|_| DtlsError::IdentitySetup)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "uprtcd test client");
        // A random serial, as browsers make them: Firefox refuses two certificates with one
        // issuer and serial.
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| DtlsError::IdentitySetup)?;
        params.serial_number = Some(serial.to_vec().into());
        let certificate = params.self_signed(&key_pair).map_err(|_| DtlsError::IdentitySetup)?;
        let certificate =
            dimpl::DtlsCertificate { certificate: certificate.der().to_vec(), private_key: key_pair.serialize_der() };
        Self::with_certificate(certificate, DtlsVersionPolicy::Dtls12Only)
    }

    fn with_certificate(certificate: dimpl::DtlsCertificate, versions: DtlsVersionPolicy) -> Result<Self, DtlsError> {
        let config = dimpl::Config::builder().use_server_cookie(false).build().map_err(|_| DtlsError::IdentitySetup)?;
        Ok(Self {
            shared: Arc::new(SharedIdentity {
                fingerprint: CertificateFingerprint::of_certificate_der(&certificate.certificate),
                certificate,
                config: Arc::new(config),
                versions,
            }),
        })
    }

    /// The fingerprint to put in our SDP `a=fingerprint` line.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.shared.fingerprint
    }

    /// The DTLS versions transports made from this identity negotiate.
    pub fn version_policy(&self) -> DtlsVersionPolicy {
        self.shared.versions
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.shared.fingerprint)
            .field("versions", &self.shared.versions)
            .finish_non_exhaustive()
    }
}

/// What [`DtlsTransport::poll_output`] hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsOutput<'a> {
    /// One datagram to send to the peer, borrowed from the caller's buffer.
    Transmit(&'a [u8]),
    /// The handshake finished and the peer is who its SDP fingerprint says. Yielded exactly
    /// once; media may flow from here on.
    Connected {
        /// The negotiated SRTP profile.
        profile: SrtpProfile,
        /// Master keys and salts, already split into send and receive directions.
        keys: SrtpKeyingMaterial,
    },
    /// The transport failed; nothing more will come out of it.
    Failed(DtlsError),
    /// The peer sent `close_notify`, or [`DtlsTransport::close`] finished; nothing more will
    /// come out of it.
    Closed,
}

/// One DTLS association over one ICE transport.
pub struct DtlsTransport {
    engine: dimpl::Dtls,
    role: DtlsRole,
    remote_fingerprint: CertificateFingerprint,
    phase: Phase,
    next_timeout: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Handshaking(HandshakeProgress),
    Connected,
    /// `close_notify` was sent ([`DtlsTransport::close`]) or received: send what the
    /// engine still has queued (our close_notify or the answer to the peer's), then report
    /// Closed.
    Closing,
    /// The transport has ended but the caller has not been told yet.
    Ending(End),
    /// `Failed` or `Closed` has been yielded; the transport is inert.
    Ended,
}

/// The three things a handshake needs before keys may leave this module.
#[derive(Debug, Clone, Copy, Default)]
struct HandshakeProgress {
    peer_certificate_verified: bool,
    engine_connected: bool,
    keys: Option<SrtpKeyingMaterial>,
}

#[derive(Debug, Clone, Copy)]
enum End {
    Failed(DtlsError),
    Closed,
}

/// What one engine output asks `poll_output` to do next.
enum Step {
    Transmit(Range<usize>),
    Wait,
    Continue,
}

impl DtlsTransport {
    /// A server-role transport (`a=setup:passive`), the SFU's side. `remote_fingerprint` is
    /// the peer's SDP `a=fingerprint`.
    pub fn new_server(identity: &DtlsIdentity, remote_fingerprint: CertificateFingerprint, now: Instant) -> Self {
        Self::new(identity, DtlsRole::Server, remote_fingerprint, now)
    }

    /// A client-role transport (`a=setup:active`) for our test client and load generator.
    /// Its ClientHello is ready on the first `poll_output`.
    pub fn new_client(identity: &DtlsIdentity, remote_fingerprint: CertificateFingerprint, now: Instant) -> Self {
        let mut transport = Self::new(identity, DtlsRole::Client, remote_fingerprint, now);
        transport.handle_timeout(now);
        transport
    }

    fn new(identity: &DtlsIdentity, role: DtlsRole, remote_fingerprint: CertificateFingerprint, now: Instant) -> Self {
        let shared = &identity.shared;
        let config = Arc::clone(&shared.config);
        let certificate = shared.certificate.clone();
        let mut engine = match shared.versions {
            DtlsVersionPolicy::Dtls12Only => dimpl::Dtls::new_12(config, certificate, now),
            DtlsVersionPolicy::Dtls12Or13 => dimpl::Dtls::new_auto(config, certificate, now),
        };
        engine.set_active(role == DtlsRole::Client);
        Self {
            engine,
            role,
            remote_fingerprint,
            phase: Phase::Handshaking(HandshakeProgress::default()),
            next_timeout: None,
        }
    }

    /// This transport's role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Whether `Connected` has been yielded and no end has come since.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected)
    }

    /// The negotiated DTLS version, once the peer's first hello has settled it.
    pub fn version(&self) -> Option<DtlsVersion> {
        let version = self.engine.protocol_version()?;
        if version == dimpl::ProtocolVersion::DTLS1_3 { Some(DtlsVersion::Dtls13) } else { Some(DtlsVersion::Dtls12) }
    }

    /// Feeds one received datagram. `now` is the loop's current time; the engine's clock is
    /// advanced to it first, as dimpl requires.
    ///
    /// A malformed datagram is dropped with [`DtlsError::MalformedDatagram`] and the
    /// handshake goes on; any other error ends the transport, and `poll_output` yields
    /// `Failed` with it.
    pub fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        if !self.accepts_input() {
            return Err(DtlsError::TransportEnded);
        }
        framing::check_records(datagram)?;
        let result = self.engine.handle_timeout(now).and_then(|()| self.engine.handle_packet(datagram));
        result.map_err(|error| self.end_on_engine_error(&error))
    }

    /// Drives retransmission and the handshake deadline. Call when `poll_timeout` is due
    /// (calling earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.accepts_input() {
            return;
        }
        if let Err(error) = self.engine.handle_timeout(now) {
            self.end_on_engine_error(&error);
        }
    }

    /// When `handle_timeout` is next due. `None` once the transport has ended, or while an
    /// end is waiting in `poll_output`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshaking(_) | Phase::Connected | Phase::Closing => self.next_timeout,
            Phase::Ending(_) | Phase::Ended => None,
        }
    }

    /// Next datagram to send or event, or `None` when there is nothing until more input or
    /// `poll_timeout`. `buf` must hold at least [`MIN_OUTPUT_BUFFER_LEN`] bytes; transmits
    /// borrow it.
    pub fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Option<DtlsOutput<'b>> {
        loop {
            match self.phase {
                Phase::Ending(end) => {
                    self.phase = Phase::Ended;
                    self.next_timeout = None;
                    return Some(match end {
                        End::Failed(error) => DtlsOutput::Failed(error),
                        End::Closed => DtlsOutput::Closed,
                    });
                }
                Phase::Ended => return None,
                Phase::Handshaking(_) | Phase::Connected | Phase::Closing => {}
            }
            if buf.len() < MIN_OUTPUT_BUFFER_LEN {
                self.end(End::Failed(DtlsError::OutputBufferTooSmall));
                continue;
            }
            match self.step_engine(buf) {
                Step::Transmit(range) => {
                    if buf.get(range.clone()).is_none() {
                        self.end(End::Failed(DtlsError::Internal));
                        continue;
                    }
                    let buf: &'b [u8] = buf;
                    return buf.get(range).map(DtlsOutput::Transmit);
                }
                Step::Wait => {
                    if let Phase::Closing = self.phase {
                        self.end(End::Closed);
                    } else {
                        self.check_handshake_stalled();
                        return None;
                    }
                }
                Step::Continue => {
                    if let Phase::Handshaking(progress) = self.phase
                        && let Some(output) = self.try_complete(progress)
                    {
                        return Some(output);
                    }
                }
            }
        }
    }

    /// Ends the association: if connected, the next `poll_output` yields a `close_notify`
    /// datagram and then `Closed`; during the handshake it is abandoned and only `Closed`
    /// follows. SRTP keys already handed out are the caller's to discard.
    pub fn close(&mut self) {
        if !self.accepts_input() {
            return;
        }
        match self.engine.close() {
            Ok(()) => self.phase = Phase::Closing,
            Err(error) => {
                self.end_on_engine_error(&error);
            }
        }
    }

    fn accepts_input(&self) -> bool {
        matches!(self.phase, Phase::Handshaking(_) | Phase::Connected)
    }

    /// Takes one output from the engine and acts on it; a transmit is returned as a range
    /// of `buf` so that the borrow of `buf` can be handed back to the caller.
    fn step_engine(&mut self, buf: &mut [u8]) -> Step {
        let buf_start = buf.as_ptr() as usize;
        match self.engine.poll_output(buf) {
            dimpl::Output::Packet(datagram) => {
                let start = (datagram.as_ptr() as usize).wrapping_sub(buf_start);
                Step::Transmit(start..start.saturating_add(datagram.len()))
            }
            dimpl::Output::Timeout(at) => {
                self.next_timeout = Some(at);
                Step::Wait
            }
            dimpl::Output::PeerCert(der) => {
                self.on_peer_certificate(der);
                Step::Continue
            }
            dimpl::Output::Connected => {
                if let Phase::Handshaking(progress) = &mut self.phase {
                    progress.engine_connected = true;
                }
                Step::Continue
            }
            dimpl::Output::KeyingMaterial(exported, profile) => {
                self.on_keying_material(&exported, profile);
                Step::Continue
            }
            dimpl::Output::CloseNotify => {
                // Send the engine's answering close_notify, if any, before reporting Closed.
                if self.accepts_input() {
                    self.phase = Phase::Closing;
                }
                Step::Continue
            }
            dimpl::Output::BufferTooSmall { .. } => {
                // The buffer holds any datagram of the engine's MTU, so only a peer
                // certificate can be this large.
                self.end(End::Failed(DtlsError::PeerCertificateTooLarge));
                Step::Continue
            }
            // Application data (data channels) has no consumer here, and later dimpl
            // outputs are not requested by this module.
            _ => Step::Continue,
        }
    }

    fn on_peer_certificate(&mut self, der: &[u8]) {
        let Phase::Handshaking(progress) = &mut self.phase else {
            return;
        };
        if self.remote_fingerprint.matches_certificate_der(der) {
            progress.peer_certificate_verified = true;
        } else {
            self.end(End::Failed(DtlsError::FingerprintMismatch));
        }
    }

    fn on_keying_material(&mut self, exported: &[u8], profile: dimpl::SrtpProfile) {
        let Phase::Handshaking(progress) = &mut self.phase else {
            return;
        };
        let keys = SrtpProfile::from_dimpl(profile)
            .ok_or(DtlsError::Internal)
            .and_then(|profile| SrtpKeyingMaterial::from_exported(profile, self.role, exported));
        match keys {
            Ok(keys) => progress.keys = Some(keys),
            Err(error) => self.end(End::Failed(error)),
        }
    }

    /// Yields `Connected` once the engine finished, the keys are in and the certificate
    /// matched — in whatever order the engine reported them.
    fn try_complete(&mut self, progress: HandshakeProgress) -> Option<DtlsOutput<'static>> {
        let HandshakeProgress { peer_certificate_verified: true, engine_connected: true, keys: Some(keys) } = progress
        else {
            return None;
        };
        self.phase = Phase::Connected;
        Some(DtlsOutput::Connected { profile: keys.profile, keys })
    }

    /// Called when the engine has nothing more to say: a finished handshake that still
    /// lacks keys or a verified certificate will never get them.
    fn check_handshake_stalled(&mut self) {
        let Phase::Handshaking(progress) = self.phase else {
            return;
        };
        if !progress.engine_connected {
            return;
        }
        if progress.keys.is_none() {
            self.end(End::Failed(DtlsError::NoSrtpProfile));
        } else if !progress.peer_certificate_verified {
            self.end(End::Failed(DtlsError::PeerCertificateMissing));
        }
    }

    fn end_on_engine_error(&mut self, error: &dimpl::Error) -> DtlsError {
        if let dimpl::Error::ConnectionClosed = error {
            self.end(End::Closed);
            return DtlsError::TransportEnded;
        }
        let error = DtlsError::from_engine(error);
        self.end(End::Failed(error));
        error
    }

    /// Records the first end only; later ones are consequences of it.
    fn end(&mut self, end: End) {
        if matches!(self.phase, Phase::Ending(_) | Phase::Ended) {
            return;
        }
        if let End::Failed(error) = end {
            tracing::debug!(role = ?self.role, %error, "DTLS transport failed");
        }
        self.phase = Phase::Ending(end);
    }
}

impl fmt::Debug for DtlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsTransport")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("remote_fingerprint", &self.remote_fingerprint)
            .field("next_timeout", &self.next_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod openssl_interop_tests;
#[cfg(test)]
mod rtc_dtls_interop_tests;
#[cfg(test)]
mod tests;
