//! Interop with OpenSSL, the library family browsers' DTLS (BoringSSL) descends from:
//! `openssl s_client -dtls1_2 -use_srtp …` handshakes over real UDP on 127.0.0.1 with our
//! server transport, and the keying material it exports must equal our keys. This is the
//! one test here on a real socket and the wall clock; it skips itself when the `openssl`
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

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("openssl prints hex")).collect()
}

/// Runs `s_client` offering `srtp_profiles` against our server and returns our keys and
/// the bytes OpenSSL exported with the DTLS-SRTP label.
fn handshake_with_s_client(srtp_profiles: &str, export_len: usize) -> (SrtpKeyingMaterial, Vec<u8>) {
    let dir = ScratchDir::new();
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=openssl-client",
            "-days",
            "1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    openssl(&dir.0, &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"]);
    let client_der = std::fs::read(dir.0.join("cert.der")).expect("openssl wrote cert.der");

    let identity =
        DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("generating a P-256 identity does not fail");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("loopback UDP is available");
    socket.set_read_timeout(Some(Duration::from_millis(20))).expect("a non-zero read timeout is valid");
    let port = socket.local_addr().expect("a bound socket has an address").port();
    let mut server =
        DtlsTransport::new_server(&identity, CertificateFingerprint::of_certificate_der(&client_der), Instant::now());

    let export_len_arg = export_len.to_string();
    let connect = format!("127.0.0.1:{port}");
    let child = Command::new("openssl")
        .args([
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
        ])
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl was found before");
    let mut child = ChildGuard(child);

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut keys = None;
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
                DtlsOutput::Connected { keys: connected, .. } => keys = Some(connected),
                DtlsOutput::Failed(error) => panic!("handshake with openssl failed: {error}"),
                DtlsOutput::Closed => {}
            }
        }
        if keys.is_some() && child.0.try_wait().expect("waiting on our own child works").is_some() {
            break;
        }
    }
    let keys = keys.expect("the handshake with openssl completed");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().expect("stdout was piped"), &mut stdout)
        .expect("s_client's output is text");
    let exported = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Keying material: "))
        .map(hex_decode)
        .unwrap_or_else(|| panic!("s_client printed no keying material:\n{stdout}"));
    (keys, exported)
}

#[test]
fn our_server_and_openssl_s_client_export_identical_keys() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl command on this machine");
        return;
    }
    for (offer, expected) in [
        ("SRTP_AEAD_AES_128_GCM", SrtpProfile::AeadAes128Gcm),
        ("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_256_GCM", SrtpProfile::AeadAes256Gcm),
        ("SRTP_AES128_CM_SHA1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let (keys, exported) = handshake_with_s_client(offer, expected.exported_len());
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
