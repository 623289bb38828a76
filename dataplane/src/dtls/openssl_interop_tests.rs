//! Interop with OpenSSL, the library family browsers' DTLS (BoringSSL) descends from and
//! the one GStreamer's webrtcbin uses: `openssl s_client -dtls1_2 -use_srtp …` handshakes
//! over real UDP on 127.0.0.1 with our server transport, presenting an ECDSA P-256 or an
//! RSA-2048 certificate (webrtcbin's kind), and the keying material it exports must equal
//! our keys; a certificate of a key type we cannot verify is refused. These are the tests
//! here on a real socket and the wall clock; they skip themselves when the `openssl`
//! command is missing.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// Kills and reaps the `s_client` process if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed when the test ends.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "uprtcd-dtls-openssl-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&path).expect("the temp dir is writable");
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl was found before");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Starts `openssl` with `args` in `dir`; it is killed when the guard drops.
fn spawn_openssl(dir: &Path, args: &[&str], stdin: Stdio, stdout: Stdio) -> ChildGuard {
    let child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl was found before");
    ChildGuard(child)
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("openssl prints hex")).collect()
}

fn openssl_is_missing() -> bool {
    if Command::new("openssl").arg("version").output().is_ok() {
        return false;
    }
    eprintln!("skipped: no openssl command on this machine");
    true
}

/// The key of the self-signed certificate OpenSSL presents.
#[derive(Debug, Clone, Copy)]
enum PeerKey {
    EcdsaP256,
    /// What GStreamer's webrtcbin generates.
    Rsa2048,
    /// Signs with ed25519 (RFC 8422), which our server does not list.
    Ed25519,
    /// An RSA-PSS-only key (id-RSASSA-PSS): signs with rsa_pss_pss_*, which our server does
    /// not list.
    RsaPss2048,
}

impl PeerKey {
    fn newkey_args(self) -> &'static [&'static str] {
        match self {
            Self::EcdsaP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Self::Rsa2048 => &["-newkey", "rsa:2048"],
            Self::Ed25519 => &["-newkey", "ed25519"],
            Self::RsaPss2048 => &["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"],
        }
    }
}

/// Makes the key and self-signed certificate OpenSSL presents in `dir` (`key.pem`,
/// `cert.pem`) and returns the certificate's DER.
fn make_certificate(dir: &Path, key: PeerKey) -> Vec<u8> {
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(key.newkey_args());
    args.extend_from_slice(&[
        "-nodes",
        "-subj",
        "/CN=openssl-peer",
        "-days",
        "1",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
    ]);
    openssl(dir, &args);
    openssl(dir, &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    std::fs::read(dir.join("cert.der")).expect("openssl wrote cert.der")
}

fn server_identity() -> DtlsIdentity {
    DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("generating a P-256 identity does not fail")
}

/// Runs `s_client` presenting a `peer_key` certificate and offering `srtp_profiles`
/// against a server transport of `identity`, and returns our keys and the bytes OpenSSL
/// exported with the DTLS-SRTP label, or how our side failed.
fn handshake_with_s_client(
    identity: &DtlsIdentity,
    peer_key: PeerKey,
    srtp_profiles: &str,
    export_len: usize,
) -> Result<(SrtpKeyingMaterial, Vec<u8>), DtlsError> {
    let dir = ScratchDir::new();
    let client_der = make_certificate(&dir.0, peer_key);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("loopback UDP is available");
    socket.set_read_timeout(Some(Duration::from_millis(20))).expect("a non-zero read timeout is valid");
    let port = socket.local_addr().expect("a bound socket has an address").port();
    let mut server =
        DtlsTransport::new_server(identity, CertificateFingerprint::of_certificate_der(&client_der), Instant::now());

    let export_len_arg = export_len.to_string();
    let connect = format!("127.0.0.1:{port}");
    let mut child = spawn_openssl(
        &dir.0,
        &[
            "s_client",
            "-dtls1_2",
            "-connect",
            &connect,
            "-use_srtp",
            srtp_profiles,
            "-cert",
            "cert.pem",
            "-key",
            "key.pem",
            "-keymatexport",
            "EXTRACTOR-dtls_srtp",
            "-keymatexportlen",
            &export_len_arg,
        ],
        Stdio::null(),
        Stdio::piped(),
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut outcome = None;
    let mut peer = None;
    let mut datagram = [0u8; 2048];
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    while Instant::now() < deadline {
        if let Ok((len, from)) = socket.recv_from(&mut datagram) {
            peer = Some(from);
            let _ = server.handle_packet(Instant::now(), &datagram[..len]);
        }
        if server.poll_timeout().is_some_and(|due| due <= Instant::now()) {
            server.handle_timeout(Instant::now());
        }
        while let Some(output) = server.poll_output(&mut buf) {
            match output {
                DtlsOutput::Transmit(bytes) => {
                    let to = peer.expect("the server only answers a client that wrote");
                    socket.send_to(bytes, to).expect("loopback send succeeds");
                }
                DtlsOutput::Connected { keys, .. } => outcome = Some(Ok(keys)),
                DtlsOutput::Failed(error) => outcome = Some(Err(error)),
                DtlsOutput::Closed => {}
            }
        }
        match outcome {
            // Our side has ended: s_client would only retransmit until it gives up.
            Some(Err(_)) => break,
            // s_client prints the exported keys before it exits.
            Some(Ok(_)) if child.0.try_wait().expect("waiting on our own child works").is_some() => break,
            _ => {}
        }
    }
    let keys = outcome.expect("the handshake with openssl ended within 15 s")?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout was piped"), &mut stdout)
        .expect("s_client's output is text");
    let exported = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Keying material: "))
        .map(hex_decode)
        .unwrap_or_else(|| panic!("s_client printed no keying material:\n{stdout}"));
    Ok((keys, exported))
}

/// Handshakes with `s_client` presenting a `peer_key` certificate, once per SRTP offer,
/// and checks that both sides hold the same keys.
fn check_identical_keys_with_s_client(peer_key: PeerKey) {
    let identity = server_identity();
    for (offer, expected) in [
        ("SRTP_AEAD_AES_128_GCM", SrtpProfile::AeadAes128Gcm),
        ("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_256_GCM", SrtpProfile::AeadAes256Gcm),
        ("SRTP_AES128_CM_SHA1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let (keys, exported) = handshake_with_s_client(&identity, peer_key, offer, expected.exported_len())
            .unwrap_or_else(|error| panic!("{peer_key:?}, {offer}: our server failed: {error}"));
        assert_eq!(keys.profile, expected, "{offer}");
        let (key_len, salt_len) = (expected.master_key_len(), expected.master_salt_len());
        let (client_key, rest) = exported.split_at(key_len);
        let (server_key, rest) = rest.split_at(key_len);
        let (client_salt, server_salt) = rest.split_at(salt_len);
        assert_eq!(keys.local_key.as_bytes(), server_key, "{offer}");
        assert_eq!(keys.local_salt.as_bytes(), server_salt, "{offer}");
        assert_eq!(keys.remote_key.as_bytes(), client_key, "{offer}");
        assert_eq!(keys.remote_salt.as_bytes(), client_salt, "{offer}");
    }
}

#[test]
fn our_server_and_openssl_s_client_export_identical_keys() {
    if openssl_is_missing() {
        return;
    }
    check_identical_keys_with_s_client(PeerKey::EcdsaP256);
}

/// GStreamer's webrtcbin (OpenSSL) presents a self-signed RSA-2048 certificate.
#[test]
fn openssl_client_with_an_rsa_certificate_exports_identical_keys() {
    if openssl_is_missing() {
        return;
    }
    check_identical_keys_with_s_client(PeerKey::Rsa2048);
}

/// A client whose key we cannot verify is refused with an error, and the same server
/// identity goes on serving an RSA client afterwards.
#[test]
fn openssl_client_with_an_unsupported_key_type_is_refused() {
    if openssl_is_missing() {
        return;
    }
    let identity = server_identity();
    let offer = "SRTP_AEAD_AES_128_GCM";
    let export_len = SrtpProfile::AeadAes128Gcm.exported_len();
    for peer_key in [PeerKey::Ed25519, PeerKey::RsaPss2048] {
        let outcome = handshake_with_s_client(&identity, peer_key, offer, export_len);
        // OpenSSL finds no certificate type or signature algorithm in our CertificateRequest
        // that its key may use and sends an empty Certificate.
        assert_eq!(outcome.map(|_| ()), Err(DtlsError::PeerCertificateMissing), "{peer_key:?}");
    }
    let (keys, _) =
        handshake_with_s_client(&identity, PeerKey::Rsa2048, offer, export_len).expect("an RSA client still connects");
    assert_eq!(keys.profile, SrtpProfile::AeadAes128Gcm);
}

/// Runs our client transport against `s_server` presenting a `peer_key` certificate and
/// returns our keys or how our side failed.
fn handshake_with_s_server(peer_key: PeerKey) -> Result<SrtpKeyingMaterial, DtlsError> {
    let dir = ScratchDir::new();
    let server_der = make_certificate(&dir.0, peer_key);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("loopback UDP is available");
    socket.set_read_timeout(Some(Duration::from_millis(20))).expect("a non-zero read timeout is valid");
    // A port that was free a moment ago: s_server binds it, we send to it.
    let server_port = UdpSocket::bind("127.0.0.1:0").and_then(|probe| probe.local_addr()).expect("a free port").port();
    let accept = format!("127.0.0.1:{server_port}");
    let _child = spawn_openssl(
        &dir.0,
        &[
            "s_server",
            "-dtls1_2",
            "-accept",
            &accept,
            "-use_srtp",
            "SRTP_AEAD_AES_128_GCM",
            "-cert",
            "cert.pem",
            "-key",
            "key.pem",
            "-verify",
            "1",
        ],
        // s_server stops at the end of its input: keep the pipe open until it is killed.
        Stdio::piped(),
        Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(300));

    let identity = server_identity();
    let mut client =
        DtlsTransport::new_client(&identity, CertificateFingerprint::of_certificate_der(&server_der), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut datagram = [0u8; 2048];
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    while Instant::now() < deadline {
        while let Some(output) = client.poll_output(&mut buf) {
            match output {
                DtlsOutput::Transmit(bytes) => {
                    socket.send_to(bytes, ("127.0.0.1", server_port)).expect("loopback send succeeds");
                }
                DtlsOutput::Connected { keys, .. } => return Ok(keys),
                DtlsOutput::Failed(error) => return Err(error),
                DtlsOutput::Closed => return Err(DtlsError::TransportEnded),
            }
        }
        if let Ok((len, _)) = socket.recv_from(&mut datagram) {
            let _ = client.handle_packet(Instant::now(), &datagram[..len]);
        }
        if client.poll_timeout().is_some_and(|due| due <= Instant::now()) {
            client.handle_timeout(Instant::now());
        }
    }
    panic!("the handshake with s_server did not end within 15 s");
}

/// The reverse direction, our client role against an OpenSSL server: with an ECDSA
/// certificate it connects; with an RSA one it is refused cleanly. dimpl has no ECDHE_RSA
/// cipher suite, so an RSA server finds nothing to choose in our ClientHello and answers
/// with a handshake_failure alert. (dimpl's ServerKeyExchange check would accept an RSA
/// PKCS#1 signature, through the verifier its unit tests cover, but no handshake reaches
/// it.) The SFU is always the server and our test clients meet our ECDSA server, so
/// neither needs more.
#[test]
fn our_client_connects_to_an_ecdsa_openssl_server_and_an_rsa_one_refuses_it() {
    if openssl_is_missing() {
        return;
    }
    let keys = handshake_with_s_server(PeerKey::EcdsaP256).expect("our client connects to an ECDSA s_server");
    assert_eq!(keys.profile, SrtpProfile::AeadAes128Gcm);
    assert_eq!(handshake_with_s_server(PeerKey::Rsa2048).map(|_| ()), Err(DtlsError::PeerAlert));
}
