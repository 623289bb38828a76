//! TLS on the HTTP listeners: a certificate chain and its private key read from PEM files,
//! served through rustls (aws-lc-rs, the provider the DTLS code links), and reloaded while
//! the server runs so that a renewal (certbot) needs no restart.
//!
//! It owns each TLS listener's current certificate ([`ServerCertificate`], rustls's
//! certificate resolver) and the watch that reloads it: on SIGHUP (the binary calls
//! [`ServerCertificate::reload`]) and when either file changes on disk ([`spawn_watch`], a
//! poll of their metadata every `server.tls_watch_interval_ms`).
//!
//! Rules it keeps:
//! - a certificate is taken only whole: both files read, the chain and the key parsed, and
//!   the key proven to belong to the chain's first certificate. A reload that fails any of
//!   this keeps the certificate in use, logs why and is counted (`result="failed"`);
//! - rustls asks the resolver once per handshake, so a new certificate serves the next
//!   handshake and connections already open keep the one they began with;
//! - a change on disk is reloaded once the files have stood still for one poll, so a renewal
//!   that writes the chain and the key one after the other is not caught half done. Files are
//!   reloaded once per version, by whichever comes first (a poll or SIGHUP): a failed reload
//!   is not retried until the files change again (or SIGHUP).
#![forbid(unsafe_code)]

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::listener::ListenerStats;

/// What each listener offers in ALPN, preferred first. WebSocket upgrades need HTTP/1.1
/// (HTTP/2's extended CONNECT is not enabled), which browsers know: they open a WebSocket
/// on a connection of its own.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider of every TLS listener.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Which of the two files a problem is in, so that the configuration can name its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFile {
    Cert,
    Key,
}

/// Why a certificate and key could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {}: {source}", path.display())]
    Read { file: CertificateFile, path: PathBuf, source: std::io::Error },
    #[error("{} holds no PEM {}", path.display(), match file { CertificateFile::Cert => "CERTIFICATE", CertificateFile::Key => "PRIVATE KEY" })]
    Missing { file: CertificateFile, path: PathBuf },
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem { file: CertificateFile, path: PathBuf, detail: String },
    #[error("{} holds a certificate that cannot be parsed: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{} holds a key that cannot be used: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertificateError {
    /// The file the operator must fix; a key that does not match its certificate is the key's.
    pub fn file(&self) -> CertificateFile {
        match self {
            Self::Read { file, .. } | Self::Missing { file, .. } | Self::Pem { file, .. } => *file,
            Self::BadCertificate { .. } => CertificateFile::Cert,
            Self::BadKey { .. } | Self::Mismatch { .. } => CertificateFile::Key,
        }
    }
}

/// The PEM files of one listener: the certificate chain (leaf first, as certbot's
/// `fullchain.pem`) and its private key (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    /// Reads and checks both files (see the module's rules).
    pub fn load(&self) -> Result<Certificate, CertificateError> {
        // Taken first: a change while the files are read shows as one more change.
        let stamps = self.stamps();
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let leaf = chain
            .first()
            .ok_or_else(|| CertificateError::Missing { file: CertificateFile::Cert, path: self.cert.clone() })?;
        ParsedCertificate::try_from(leaf)
            .map_err(|e| CertificateError::BadCertificate { path: self.cert.clone(), detail: e.to_string() })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertificateError::BadKey { path: self.key.clone(), detail: e.to_string() })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => Ok(Certificate { key: Arc::new(certified), stamps }),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertificateError::Mismatch { cert: self.cert.clone(), key: self.key.clone() })
            }
            Err(e) => Err(CertificateError::BadKey { path: self.key.clone(), detail: e.to_string() }),
        }
    }

    /// What identifies each file's current contents on disk, or `None` for one that cannot
    /// be read. Paths are followed through symbolic links, so certbot's `live/` links,
    /// turned to the next `archive/` files at renewal, count as changed.
    fn stamps(&self) -> Stamps {
        [Stamp::of(&self.cert), Stamp::of(&self.key)]
    }
}

fn read(path: &Path, file: CertificateFile) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read { file, path: path.to_owned(), source })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let pem = read(path, CertificateFile::Cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        CertificateError::Pem { file: CertificateFile::Cert, path: path.to_owned(), detail: e.to_string() }
    })?;
    if chain.is_empty() {
        return Err(CertificateError::Missing { file: CertificateFile::Cert, path: path.to_owned() });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertificateError> {
    let pem = read(path, CertificateFile::Key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            CertificateError::Missing { file: CertificateFile::Key, path: path.to_owned() }
        }
        // The detail of a key's PEM is not logged: it might quote a line of the key.
        _ => CertificateError::Pem { file: CertificateFile::Key, path: path.to_owned(), detail: "malformed".into() },
    })
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone)]
pub struct Certificate {
    key: Arc<CertifiedKey>,
    /// The files' versions it was read from.
    stamps: Stamps,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("chain_len", &self.key.cert.len()).finish_non_exhaustive()
    }
}

impl Certificate {
    /// Whether a client connecting to `host` (a DNS name or an IP address) would accept the
    /// certificate's name: browsers check it against the host of the URL.
    pub fn covers(&self, host: &str) -> bool {
        let (Ok(name), Some(leaf)) = (ServerName::try_from(host), self.key.cert.first()) else {
            return false;
        };
        ParsedCertificate::try_from(leaf).is_ok_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
    }
}

/// Whether `host` is a DNS name a certificate can name (not an IP address).
pub fn is_dns_name(host: &str) -> bool {
    matches!(ServerName::try_from(host), Ok(ServerName::DnsName(_)))
}

/// The versions of the certificate file and the key file; `None` for one that cannot be read.
type Stamps = [Option<Stamp>; 2];

/// A file's identity and version: device, inode, size, modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self { dev: m.dev(), ino: m.ino(), len: m.len(), mtime: (m.mtime(), m.mtime_nsec()) })
    }
}

/// One TLS listener's certificate in force: rustls's resolver, and what reloads it.
pub struct ServerCertificate {
    /// The listener's name in logs (`api`, `client`).
    listener: &'static str,
    files: CertificateFiles,
    /// Hosts clients reach the listener by; a certificate that covers none of them is
    /// logged, as browsers will refuse it.
    hosts: Vec<String>,
    current: RwLock<Certificate>,
    /// The files' versions last read, whether that reload succeeded or not.
    tried: Mutex<Stamps>,
    stats: Arc<ListenerStats>,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl ServerCertificate {
    /// Serves `certificate`, loaded from `files` at start.
    pub fn new(
        listener: &'static str,
        files: CertificateFiles,
        certificate: Certificate,
        hosts: Vec<String>,
        stats: Arc<ListenerStats>,
    ) -> Arc<Self> {
        let tried = Mutex::new(certificate.stamps);
        let this = Self { listener, files, hosts, current: RwLock::new(certificate), tried, stats };
        this.check_hosts(&this.current());
        Arc::new(this)
    }

    fn current(&self) -> Certificate {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads both files again and serves what they hold from the next handshake on; on any
    /// problem keeps the certificate in use. Logs and counts either way.
    pub fn reload(&self) -> Result<(), CertificateError> {
        *self.tried.lock().unwrap_or_else(PoisonError::into_inner) = self.files.stamps();
        match self.files.load() {
            Ok(certificate) => {
                self.check_hosts(&certificate);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = certificate;
                self.stats.count_reload(true);
                tracing::info!(listener = self.listener, cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                self.stats.count_reload(false);
                tracing::error!(listener = self.listener, error = %e, "TLS certificate not reloaded; the one in use stays");
                Err(e)
            }
        }
    }

    fn check_hosts(&self, certificate: &Certificate) {
        let uncovered: Vec<&str> = self.hosts.iter().map(String::as_str).filter(|h| !certificate.covers(h)).collect();
        if !uncovered.is_empty() {
            tracing::warn!(
                listener = self.listener,
                cert = %self.files.cert.display(),
                hosts = ?uncovered,
                "the TLS certificate does not name these hosts of the listener's URLs; browsers will refuse it there"
            );
        }
    }

    /// The rustls configuration of a listener serving this certificate: TLS 1.2 and 1.3,
    /// ALPN h2 and http/1.1, stateless TLS 1.3 session tickets so that returning clients
    /// resume without a full handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(ticketer) => config.ticketer = ticketer,
            Err(e) => tracing::warn!(listener = self.listener, error = %e, "no TLS session tickets"),
        }
        Arc::new(config)
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current().key))
    }
}

/// Polls `certificate`'s files every `interval` and reloads it once they changed and stood
/// still for a poll (see the module's rules). Runs as long as the runtime.
pub fn spawn_watch(certificate: Arc<ServerCertificate>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stamps = || {
            let files = certificate.files.clone();
            tokio::task::spawn_blocking(move || files.stamps())
        };
        let Ok(mut seen) = stamps().await else { return };
        loop {
            tick.tick().await;
            let Ok(now) = stamps().await else { return };
            let tried = *certificate.tried.lock().unwrap_or_else(PoisonError::into_inner);
            if now != seen {
                seen = now;
            } else if now != tried {
                let certificate = Arc::clone(&certificate);
                // A failure is logged and counted there; the next change tries again.
                let _ = tokio::task::spawn_blocking(move || certificate.reload()).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
        files: CertificateFiles,
    }

    fn issue(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn files(cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = CertificateFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        Files { dir, files }
    }

    #[test]
    fn a_matching_pair_loads_and_covers_its_names() {
        let (cert, key) = issue(&["localhost", "127.0.0.1"]);
        let f = files(&cert, &key);
        let certificate = f.files.load().unwrap();
        assert!(certificate.covers("localhost"));
        assert!(certificate.covers("127.0.0.1"));
        assert!(!certificate.covers("example.com"));
        assert!(!certificate.covers("::1"));
        drop(f.dir);
    }

    #[test]
    fn each_problem_names_its_file() {
        let (cert, key) = issue(&["localhost"]);
        let (_, other_key) = issue(&["localhost"]);
        let cases: [(&str, &str, CertificateFile, &str); 6] = [
            (&key, &key, CertificateFile::Cert, "no PEM CERTIFICATE"),
            ("-----BEGIN CERTIFICATE-----\nnot base64!\n", &key, CertificateFile::Cert, "not valid PEM"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &key,
                CertificateFile::Cert,
                "cannot be parsed",
            ),
            (&cert, &cert, CertificateFile::Key, "no PEM PRIVATE KEY"),
            (
                &cert,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                CertificateFile::Key,
                "cannot be used",
            ),
            (&cert, &other_key, CertificateFile::Key, "does not belong"),
        ];
        for (cert, key, file, says) in cases {
            let f = files(cert, key);
            let e = f.files.load().unwrap_err();
            assert_eq!(e.file(), file, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let f = files(&cert, &key);
        std::fs::remove_file(&f.files.key).unwrap();
        let e = f.files.load().unwrap_err();
        assert!(matches!(e, CertificateError::Read { file: CertificateFile::Key, .. }), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_and_counts() {
        let (cert, key) = issue(&["localhost"]);
        let f = files(&cert, &key);
        let stats = Arc::new(ListenerStats::default());
        let first = f.files.load().unwrap();
        let server = ServerCertificate::new("client", f.files.clone(), first, vec![], Arc::clone(&stats));
        let before = server.current().key.cert[0].clone();

        std::fs::write(&f.files.cert, "garbage").unwrap();
        assert!(server.reload().is_err());
        assert_eq!(server.current().key.cert[0], before, "the old certificate stays");

        let (cert, key) = issue(&["localhost"]);
        std::fs::write(&f.files.cert, &cert).unwrap();
        std::fs::write(&f.files.key, &key).unwrap();
        server.reload().unwrap();
        assert_ne!(server.current().key.cert[0], before, "the new certificate serves");
        assert_eq!((stats.tls_reloads(true), stats.tls_reloads(false)), (1, 1));
    }
}
