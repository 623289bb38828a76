//! TLS for the integration tests: a throwaway certificate authority made by the test, server
//! certificates it signs (for 127.0.0.1 and localhost unless told otherwise), their PEM files
//! where a server's configuration points, and HTTPS, raw TLS and wss clients that trust that
//! CA and nothing else. Everything connects to 127.0.0.1.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::WebSocket;

use super::*;

/// A TLS stream to the server, as the clients here hold it.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// How long a client waits for the server in these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

/// A server certificate and its key, in PEM, and the certificate's DER (what a client sees).
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("uprtcd test CA {:016x}", rand_u64()));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { der: cert.der().clone(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A certificate for `names` (DNS names or IP addresses) whose subject is `subject`, with a
    /// random serial, and a fresh key.
    pub fn issue_for(&self, names: &[&str], subject: &str) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, subject);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_u64().to_be_bytes()));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A certificate for 127.0.0.1 and localhost.
    pub fn issue(&self, subject: &str) -> Issued {
        self.issue_for(&["127.0.0.1", "localhost"], subject)
    }

    /// A client configuration that trusts this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("the CA certificate");
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// An HTTP client (HTTP/1.1) that trusts this CA only; any status is an answer.
    pub fn agent(&self) -> ureq::Agent {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&[Certificate::from_der(self.der.as_ref()).to_owned()]))
            .unversioned_rustls_crypto_provider(provider())
            .build();
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(IO_TIMEOUT))
            .max_idle_connections(0)
            .tls_config(tls)
            .build()
            .new_agent()
    }

    /// A finished TLS handshake with `addr` (`127.0.0.1:PORT`), HTTP/1.1 offered in ALPN.
    pub fn connect(&self, addr: &str) -> Result<TlsStream, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        let name = ServerName::try_from("127.0.0.1").expect("an IP address");
        let session = ClientConnection::new(self.client_config(&[b"http/1.1"]), name).expect("a client session");
        let mut stream = StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        Ok(stream)
    }

    /// The certificate a new connection to `addr` is served.
    pub fn served(&self, addr: &str) -> CertificateDer<'static> {
        leaf(&self.connect(addr).unwrap_or_else(|e| panic!("{e}")))
    }

    /// A signalling client joined over wss (`wss://addr/code`); returns it with its first event.
    pub fn wss_connect(&self, addr: &str, code: u64, peer: &str, token: &str) -> (WebSocket<TlsStream>, Value) {
        let url = format!("wss://{addr}/{code}?peer={}&token={token}", enc(peer));
        let stream = self.connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let (mut socket, _) = tungstenite::client(url.as_str(), stream).unwrap_or_else(|e| panic!("{url}: {e}"));
        let first = client::next_event(&mut socket).expect("a first event");
        (socket, first)
    }
}

/// The leaf certificate the server presented on `stream`.
pub fn leaf(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server's certificate")
        .clone()
        .into_owned()
}

/// Where a listener's certificate and key are kept, as a renewal would keep them.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `cert.pem` and `key.pem` in `dir`, holding `issued`.
    pub fn new(dir: &Path, prefix: &str, issued: &Issued) -> Self {
        let files =
            TlsFiles { cert: dir.join(format!("{prefix}-cert.pem")), key: dir.join(format!("{prefix}-key.pem")) };
        files.replace(issued);
        files
    }

    /// Puts `issued` in place as certbot does: each file written aside, then renamed over
    /// the old one.
    pub fn replace(&self, issued: &Issued) {
        replace_file(&self.cert, &issued.cert_pem);
        replace_file(&self.key, &issued.key_pem);
    }

    /// The configuration lines of a listener using these files.
    pub fn toml(&self) -> String {
        format!("tls_cert = {:?}\ntls_key = {:?}\n", self.cert.display().to_string(), self.key.display().to_string())
    }
}

/// Writes `text` next to `path`, then renames it over `path`.
pub fn replace_file(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).expect("write the new file");
    std::fs::rename(&aside, path).expect("rename it into place");
}

/// A counter of `/metrics` read over HTTPS (an API listener with TLS).
pub fn metric_over_https(agent: &ureq::Agent, api: &str, line_start: &str) -> u64 {
    let text = agent
        .get(format!("https://{api}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET /metrics over https: {e}"))
        .body_mut()
        .read_to_string()
        .expect("the metrics text");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{line_start} missing from:\n{text}")) as u64
}
