//! uprtcd's configuration: the embedded defaults, a TOML file over them, and command-line
//! flags over both. Every error names the key it is about (`api.listen`, or the flag that
//! set it) in one line, so an operator sees at once what to fix.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use uprtcd_controlplane::cluster::ClusterSettings;
use uprtcd_controlplane::demo::guard::DemoLimits;
use uprtcd_controlplane::listener::Limits;
use uprtcd_controlplane::tls::{Certificate, CertificateFile, CertificateFiles};
use uprtcd_dataplane::engine::DEFAULT_CONNECT_TIMEOUT;
use uprtcd_dataplane::io::{BackendChoice, TcpConfig};

/// Command-line flags; each overrides the key of the configuration file named in its help.
#[derive(Debug, Parser)]
#[command(name = "uprtcd", version, about = "WebRTC SFU appliance")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (file, addresses, ports, data dir) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// REST API listener for business servers [api.listen; default 127.0.0.1:6017].
    #[arg(long, value_name = "ADDR:PORT")]
    pub api_listen: Option<String>,
    /// Client signalling, WHIP/WHEP and demo listener [client.listen; default 127.0.0.1:6016].
    #[arg(long, value_name = "ADDR:PORT")]
    pub client_listen: Option<String>,
    /// Address put into ICE candidates and URLs [server.announced_ip; default 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub announced_ip: Option<String>,
    /// IPv6 address announced besides it; fills serverUrl6 [server.announced_ip6].
    #[arg(long, value_name = "IP")]
    pub announced_ip6: Option<String>,
    /// API secret [server.app_secret; default: generated once and kept in the data dir].
    #[arg(long, value_name = "SECRET")]
    pub app_secret: Option<String>,
    /// Data directory [server.data_dir; default ./uprtcd-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dataplane worker threads, each pinned to a core [dataplane.workers; default cores - 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// serverAlias in API answers [server.alias; default rtc-1:cluster-1].
    #[arg(long, value_name = "NAME")]
    pub server_alias: Option<String>,
    /// Socket backend: uring, epoll or auto [dataplane.io_backend; default auto].
    #[arg(long, value_name = "BACKEND")]
    pub io_backend: Option<String>,
    /// Media socket of worker 0; worker i takes port + i (port 0: ephemeral ports)
    /// [dataplane.udp_listen; default 127.0.0.1:0].
    #[arg(long, value_name = "ADDR:PORT")]
    pub udp_listen: Option<String>,
    /// Serve the demo page, which lets anyone create demo rooms and join them: true or false
    /// [client.demo; default true on a loopback client listener, false on any other].
    #[arg(long, value_name = "true|false")]
    pub demo: Option<String>,
    /// Clients connected at once over every room, the licensed maximum (50018 beyond it);
    /// 0 for no cap [rooms.max_connections; default 0].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
}

/// A configuration error: the key and what is wrong with it.
#[derive(Debug)]
pub struct ConfigError {
    key: String,
    problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self { key: key.into(), problem: problem.to_string() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}: {}", self.key, self.problem)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    client: ClientSection,
    #[serde(default)]
    dataplane: DataplaneSection,
    #[serde(default)]
    rooms: RoomsSection,
    #[serde(default)]
    recording: RecordingSection,
    #[serde(default)]
    cluster: ClusterSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    alias: Option<String>,
    data_dir: Option<PathBuf>,
    app_secret: Option<String>,
    announced_ip: Option<IpAddr>,
    announced_ip6: Option<Ipv6Addr>,
    tls_watch_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: Option<SocketAddr>,
    max_body_bytes: Option<usize>,
    max_upload_bytes: Option<u64>,
    max_http_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_handshake_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSection {
    listen: Option<SocketAddr>,
    public_host: Option<String>,
    demo: Option<bool>,
    demo_max_rooms: Option<u32>,
    demo_room_idle_ms: Option<u64>,
    demo_room_max_age_ms: Option<u64>,
    demo_joins_per_minute: Option<u32>,
    ping_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    max_pending_transports_per_ip: Option<u32>,
    max_http_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_handshake_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataplaneSection {
    workers: Option<usize>,
    io_backend: Option<String>,
    udp_listen: Option<SocketAddr>,
    connect_timeout_ms: Option<u64>,
    tcp_auth_timeout_ms: Option<u64>,
    tcp_max_connections: Option<usize>,
    tcp_max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsSection {
    default_max_members: Option<u32>,
    max_connections: Option<u32>,
    mirror_load_percent: Option<f64>,
    max_audience_per_node: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingSection {
    dir: Option<PathBuf>,
    ffmpeg: Option<PathBuf>,
    jobs: Option<u32>,
    min_free_mb: Option<u64>,
    retention_days: Option<f64>,
    client_upload_ttl_ms: Option<u64>,
    client_upload_idle_timeout_ms: Option<u64>,
    max_playbacks: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    redis_url: Option<String>,
    node_ttl_ms: Option<u64>,
    call_timeout_ms: Option<u64>,
}

/// Demo mode on a client listener that others can reach: the start-up log says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoNotice {
    /// `client.demo` is set in neither file nor flag and the client listener is not
    /// loopback, so demo mode is off.
    OffBeyondLoopback,
    /// `client.demo` is set to true on a client listener that is not loopback.
    OnBeyondLoopback,
}

impl DemoNotice {
    /// The start-up log's line (a WARN for [`Self::OnBeyondLoopback`]).
    pub fn message(self) -> &'static str {
        match self {
            Self::OffBeyondLoopback => {
                "demo mode is off: the client listener is not loopback and client.demo is not set \
                 (set it to true to let anyone who reaches the listener create demo rooms)"
            }
            Self::OnBeyondLoopback => {
                "demo mode is on (client.demo = true) on a client listener that is not loopback: \
                 anyone who reaches it can create demo rooms, join them and use their media"
            }
        }
    }
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub alias: String,
    pub data_dir: PathBuf,
    /// Given by the operator; otherwise the data dir's (see [`crate::secret`]).
    pub app_secret: Option<String>,
    pub announced_ip: IpAddr,
    pub announced_ip6: Option<Ipv6Addr>,
    pub api_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_upload_bytes: u64,
    /// Connections and timeouts of the API listener.
    pub api_http: Limits,
    /// The API listener's certificate and key; `None`: plain HTTP.
    pub api_tls: Option<CertificateFiles>,
    pub client_listen: SocketAddr,
    /// Connections and timeouts of the client listener.
    pub client_http: Limits,
    /// The client listener's certificate and key; `None`: plain HTTP, `ws://` URLs.
    pub client_tls: Option<CertificateFiles>,
    /// The DNS name put into client URLs instead of the announced address.
    pub public_host: Option<String>,
    /// How often the TLS listeners' files are checked for changes; `None`: on SIGHUP only.
    pub tls_watch_interval: Option<Duration>,
    /// Serve `/demo` and `/demo/join` on the client listener, within these limits; `None`:
    /// demo mode is off.
    pub demo: Option<DemoLimits>,
    /// What the start-up log must say of demo mode, if anything.
    pub demo_notice: Option<DemoNotice>,
    /// A signalling client silent (no pong, no message) this long is dropped.
    pub ping_timeout: Duration,
    /// A write to a signalling client that takes longer ends its session.
    pub write_timeout: Duration,
    /// Media transports one client address may have opened and not yet connected.
    pub max_pending_transports_per_ip: usize,
    pub workers: usize,
    /// A media transport not connected (ICE and DTLS) this long after it was opened is freed.
    pub connect_timeout: Duration,
    /// Each worker's ICE-TCP caps, and how long a connection may go unauthenticated.
    pub tcp: TcpConfig,
    pub io_backend: BackendChoice,
    pub udp_listen: SocketAddr,
    pub default_max_members: u32,
    /// Clients connected at once over every room (the licensed maximum); 0 = no cap.
    pub max_connections: u32,
    /// CPU % of the workers serving a live room at which its audience opens a mirror; 0 = never.
    pub mirror_load_percent: f64,
    /// A live room's audience beyond this many on its origin node goes to mirrors on other
    /// nodes of the cluster; 0 = no cap.
    pub max_audience_per_node: usize,
    /// The cluster this node joins; `None`: a single node, no Redis.
    pub cluster: Option<ClusterSettings>,
    /// Where recordings and uploads are kept: `<data_dir>/recordings` unless set (another
    /// disk, say).
    pub recordings_dir: Option<PathBuf>,
    /// ffmpeg for server-side recordings: a path or a name on PATH.
    pub ffmpeg: PathBuf,
    /// Recordings composed at once.
    pub recording_jobs: usize,
    /// Free space the recordings folder needs for a recording to start.
    pub recording_min_free_bytes: u64,
    /// Finished records older than this are removed with their files; `None`: never.
    pub retention: Option<Duration>,
    /// How long a client upload URL is accepted.
    pub client_upload_ttl: Duration,
    /// A client upload connection silent this long is closed.
    pub client_upload_idle_timeout: Duration,
    /// Playback rooms (an ffmpeg each) open at once; 0 = none.
    pub max_playbacks: usize,
}

const DEFAULT_API_LISTEN: &str = "127.0.0.1:6017";
const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:6016";
const DEFAULT_UDP_LISTEN: &str = "127.0.0.1:0";
const DEFAULT_ALIAS: &str = "rtc-1:cluster-1";
const DEFAULT_DATA_DIR: &str = "./uprtcd-data";
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
const DEFAULT_MAX_UPLOAD_BYTES: u64 = 4 << 30;
const DEFAULT_MAX_MEMBERS: u32 = 16;
/// A worker this busy leaves headroom for the longest loop turns to stay short.
const DEFAULT_MIRROR_LOAD_PERCENT: f64 = 70.0;
// Demo mode's limits (`client.demo_*`): a demo for a few people at a time.
const DEFAULT_DEMO_MAX_ROOMS: u32 = 100;
const DEFAULT_DEMO_ROOM_IDLE_MS: u64 = 600_000;
const DEFAULT_DEMO_ROOM_MAX_AGE_MS: u64 = 7_200_000;
const DEFAULT_DEMO_JOINS_PER_MINUTE: u32 = 10;
/// One composition at a time leaves the other spare cores to the control plane.
const DEFAULT_RECORDING_JOBS: u32 = 1;
/// More compositions at once than this is a typo: each is an ffmpeg using several cores.
const MAX_RECORDING_JOBS: u32 = 64;
/// About an hour of a 720p recording with its capture.
const DEFAULT_RECORDING_MIN_FREE_MB: u64 = 2048;
/// A client upload URL is for a recording about to be sent, not for later.
const DEFAULT_CLIENT_UPLOAD_TTL_MS: u64 = 600_000;
/// A client with a connection sends a chunk every few seconds (MediaRecorder's timeslice).
const DEFAULT_CLIENT_UPLOAD_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Longer than a century is a typo.
const MAX_RETENTION_DAYS: f64 = 36_500.0;
/// Each playback is an ffmpeg transcoding to VP8 in real time, about a core's share.
const DEFAULT_MAX_PLAYBACKS: usize = 4;
/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;
const DEFAULT_PING_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Each client has at most two transports connecting (publish and subscribe), for a few
/// seconds: this leaves room for a busy NAT's worth of them, and bounds what one address's
/// offers that never do ICE can hold (each lives `dataplane.connect_timeout_ms`).
const DEFAULT_MAX_PENDING_TRANSPORTS_PER_IP: u32 = 64;
/// Timeouts shorter than this would drop healthy clients on any hiccup.
const MIN_TIMEOUT_MS: u64 = 300;
/// Longer than a day is a typo; such a timeout would hold resources for good.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// More ICE-TCP connections per worker than the systemd unit's descriptor limit is a typo.
const MAX_TCP_CONNECTIONS: usize = 1 << 20;

/// The `dataplane.tcp_*` keys: the caps must allow a connection, and one address no more
/// than the whole worker.
fn tcp_config(section: &DataplaneSection) -> Result<TcpConfig, ConfigError> {
    let defaults = TcpConfig::default();
    let max_connections = section.tcp_max_connections.unwrap_or(defaults.max_connections);
    if !(1..=MAX_TCP_CONNECTIONS).contains(&max_connections) {
        return Err(ConfigError::new(
            "dataplane.tcp_max_connections",
            format!("{max_connections} is outside 1..={MAX_TCP_CONNECTIONS}"),
        ));
    }
    let max_connections_per_ip =
        section.tcp_max_connections_per_ip.unwrap_or(defaults.max_connections_per_ip).min(max_connections);
    if max_connections_per_ip == 0 {
        return Err(ConfigError::new("dataplane.tcp_max_connections_per_ip", "must be at least 1"));
    }
    let auth_timeout = timeout(
        "dataplane.tcp_auth_timeout_ms",
        section.tcp_auth_timeout_ms,
        defaults.auth_timeout.as_millis() as u64,
    )?;
    Ok(TcpConfig { max_connections, max_connections_per_ip, auth_timeout })
}

/// `recording.retention_days`: 0 (the default) keeps recordings for good; fractions of a day
/// are allowed.
fn retention(days: Option<f64>) -> Result<Option<Duration>, ConfigError> {
    match days.unwrap_or(0.0) {
        0.0 => Ok(None),
        d if d > 0.0 && d <= MAX_RETENTION_DAYS => Ok(Some(Duration::from_secs_f64(d * 86_400.0))),
        d => Err(ConfigError::new("recording.retention_days", format!("{d} is outside 0..={MAX_RETENTION_DAYS}"))),
    }
}

/// A timeout key of the file, in milliseconds, checked against the sane range.
fn timeout(file_key: &str, value: Option<u64>, default_ms: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default_ms) {
        ms if (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        ms => Err(ConfigError::new(file_key, format!("{ms} ms is outside {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}"))),
    }
}
/// Five heartbeats per lease: a node is out of placement within five seconds of its last.
const DEFAULT_NODE_TTL_MS: u64 = 5_000;
/// A forwarded REST call is one REST call on another node: seconds, not minutes.
const DEFAULT_CALL_TIMEOUT_MS: u64 = 10_000;

/// `[cluster]`: absent `redis_url` is a single node. Nodes reach each other's API over plain
/// HTTP on their private network, so an API listener with TLS cannot join one yet.
fn cluster(section: ClusterSection, api_tls: bool) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(redis_url) = section.redis_url else {
        if section.node_ttl_ms.is_some() || section.call_timeout_ms.is_some() {
            return Err(ConfigError::new(
                "cluster.redis_url",
                "must be set for the other [cluster] keys to mean anything",
            ));
        }
        return Ok(None);
    };
    uprtcd_controlplane::cluster::check_redis_url(&redis_url)
        .map_err(|e| ConfigError::new("cluster.redis_url", format!("{redis_url:?}: {e}")))?;
    if api_tls {
        return Err(ConfigError::new(
            "cluster.redis_url",
            "cluster nodes call each other's API over plain HTTP; api.tls_cert cannot be combined with a cluster yet",
        ));
    }
    let node_ttl = timeout("cluster.node_ttl_ms", section.node_ttl_ms, DEFAULT_NODE_TTL_MS)?;
    if node_ttl < Duration::from_millis(500) {
        return Err(ConfigError::new("cluster.node_ttl_ms", "must be at least 500 ms (five heartbeats fit in it)"));
    }
    let call_timeout = timeout("cluster.call_timeout_ms", section.call_timeout_ms, DEFAULT_CALL_TIMEOUT_MS)?;
    Ok(Some(ClusterSettings { redis_url, node_ttl, call_timeout }))
}

/// Business servers keep a few pooled connections each; hundreds is already a crowd.
const DEFAULT_API_HTTP_CONNECTIONS: usize = 256;
/// Every client in a room holds a WebSocket, and a worker carries thousands of subscribers
/// (benches/README.md): the cap bounds memory, not the audience.
const DEFAULT_CLIENT_HTTP_CONNECTIONS: usize = 16_384;
const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Longer than the idle timeouts of common HTTP client pools, so that the server rarely
/// closes a connection a client is about to reuse.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// A longer HTTP timeout than an hour is a typo.
const MAX_HTTP_TIMEOUT_MS: u64 = 3_600_000;
/// A TLS handshake is two round trips and a signature: ten seconds covers the worst mobile
/// link, as the header-read timeout does.
const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// A renewal is served within two checks of its last write; a check reads two files'
/// metadata.
const DEFAULT_TLS_WATCH_INTERVAL_MS: u64 = 2_000;

/// The certificate and key of a listener's `section`: both or neither.
fn tls_files(
    section: &str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<CertificateFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertificateFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            format!("{section}.tls_key"),
            format!("must be set with {section}.tls_cert (both or neither)"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            format!("{section}.tls_cert"),
            format!("must be set with {section}.tls_key (both or neither)"),
        )),
    }
}

/// `client.public_host`: a DNS name, since that is what certificates name and browsers check.
fn public_host(host: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(host) = host else { return Ok(None) };
    if host.parse::<IpAddr>().is_ok() {
        return Err(ConfigError::new(
            "client.public_host",
            format!("{host:?} is an IP address: set server.announced_ip instead, or give a DNS name"),
        ));
    }
    if !uprtcd_controlplane::tls::is_dns_name(&host) {
        return Err(ConfigError::new("client.public_host", format!("{host:?} is not a DNS name")));
    }
    Ok(Some(host))
}

/// The certificates of the TLS listeners, loaded and checked at start.
#[derive(Debug, Default)]
pub struct Certificates {
    pub api: Option<(CertificateFiles, Certificate)>,
    pub client: Option<(CertificateFiles, Certificate)>,
}

/// A count of the file that must be at least 1.
fn at_least_one(file_key: &str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::new(file_key, "must be at least 1")),
        n => Ok(n),
    }
}

/// The names of a setting: its key in the file and its flag.
fn key(file_key: &str, flag: Option<&str>) -> String {
    match flag {
        Some(flag) => format!("{file_key} ({flag})"),
        None => file_key.to_owned(),
    }
}

fn parse_flag<T: std::str::FromStr>(value: &str, file_key: &str, flag: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e| ConfigError::new(key(file_key, Some(flag)), format!("{value:?}: {e}")))
}

impl Config {
    /// The file (if any) over the embedded defaults, with `cli`'s flags over both.
    pub fn resolve(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let api_listen = match &cli.api_listen {
            Some(v) => parse_flag(v, "api.listen", "--api-listen")?,
            None => file.api.listen.unwrap_or_else(|| DEFAULT_API_LISTEN.parse().expect("valid default")),
        };
        let client_listen = match &cli.client_listen {
            Some(v) => parse_flag(v, "client.listen", "--client-listen")?,
            None => file.client.listen.unwrap_or_else(|| DEFAULT_CLIENT_LISTEN.parse().expect("valid default")),
        };
        let udp_listen = match &cli.udp_listen {
            Some(v) => parse_flag(v, "dataplane.udp_listen", "--udp-listen")?,
            None => file.dataplane.udp_listen.unwrap_or_else(|| DEFAULT_UDP_LISTEN.parse().expect("valid default")),
        };
        let announced_ip = match &cli.announced_ip {
            Some(v) => parse_flag(v, "server.announced_ip", "--announced-ip")?,
            None => file.server.announced_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        };
        if announced_ip.is_unspecified() {
            return Err(ConfigError::new(
                "server.announced_ip",
                "must be an address clients can reach, not 0.0.0.0 or ::",
            ));
        }
        let announced_ip6 = match &cli.announced_ip6 {
            Some(v) => Some(parse_flag(v, "server.announced_ip6", "--announced-ip6")?),
            None => file.server.announced_ip6,
        };
        if announced_ip6.is_some_and(|ip| ip.is_unspecified()) {
            return Err(ConfigError::new("server.announced_ip6", "must be an address clients can reach, not ::"));
        }
        let workers = match &cli.workers {
            Some(v) => parse_flag(v, "dataplane.workers", "--workers")?,
            None => file.dataplane.workers.unwrap_or(0),
        };
        if workers > MAX_WORKERS {
            return Err(ConfigError::new("dataplane.workers", format!("{workers} is more than {MAX_WORKERS}")));
        }
        if udp_listen.port() != 0 && usize::from(u16::MAX - udp_listen.port()) < workers.max(1) {
            return Err(ConfigError::new("dataplane.udp_listen", "the port range of the workers passes 65535"));
        }
        let io_backend = match (&cli.io_backend, &file.dataplane.io_backend) {
            (Some(v), _) => parse_flag(v, "dataplane.io_backend", "--io-backend")?,
            (None, Some(v)) => v.parse().map_err(|e| ConfigError::new("dataplane.io_backend", e))?,
            (None, None) => BackendChoice::Auto,
        };
        let alias = cli.server_alias.clone().or(file.server.alias).unwrap_or_else(|| DEFAULT_ALIAS.to_owned());
        if alias.trim().is_empty() {
            return Err(ConfigError::new(
                key("server.alias", cli.server_alias.as_ref().map(|_| "--server-alias")),
                "must not be empty",
            ));
        }
        let app_secret = cli.app_secret.clone().or(file.server.app_secret);
        if let Some(secret) = &app_secret
            && !crate::secret::is_acceptable(secret)
        {
            return Err(ConfigError::new("server.app_secret", crate::secret::RULE));
        }
        let demo_set = match &cli.demo {
            Some(v) => Some(parse_flag(v, "client.demo", "--demo")?),
            None => file.client.demo,
        };
        // On by default only on a loopback client listener (`cargo run`): the demo page works out
        // of the box there and is no open door anywhere else.
        let loopback = client_listen.ip().to_canonical().is_loopback();
        let (demo, demo_notice) = match demo_set {
            Some(true) if !loopback => (true, Some(DemoNotice::OnBeyondLoopback)),
            Some(on) => (on, None),
            None if loopback => (true, None),
            None => (false, Some(DemoNotice::OffBeyondLoopback)),
        };
        let demo_limits = DemoLimits {
            max_rooms: at_least_one("client.demo_max_rooms", file.client.demo_max_rooms, DEFAULT_DEMO_MAX_ROOMS)?,
            room_idle: timeout("client.demo_room_idle_ms", file.client.demo_room_idle_ms, DEFAULT_DEMO_ROOM_IDLE_MS)?,
            room_max_age: timeout(
                "client.demo_room_max_age_ms",
                file.client.demo_room_max_age_ms,
                DEFAULT_DEMO_ROOM_MAX_AGE_MS,
            )?,
            joins_per_minute: at_least_one(
                "client.demo_joins_per_minute",
                file.client.demo_joins_per_minute,
                DEFAULT_DEMO_JOINS_PER_MINUTE,
            )?,
        };
        let max_body_bytes = file.api.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(ConfigError::new("api.max_body_bytes", "must be at least 1024"));
        }
        let api_http = http_limits(
            "api",
            HttpKeys {
                max_connections: file.api.max_http_connections,
                header_read_timeout_ms: file.api.header_read_timeout_ms,
                idle_timeout_ms: file.api.idle_timeout_ms,
                tls_handshake_timeout_ms: file.api.tls_handshake_timeout_ms,
            },
            DEFAULT_API_HTTP_CONNECTIONS,
        )?;
        let client_http = http_limits(
            "client",
            HttpKeys {
                max_connections: file.client.max_http_connections,
                header_read_timeout_ms: file.client.header_read_timeout_ms,
                idle_timeout_ms: file.client.idle_timeout_ms,
                tls_handshake_timeout_ms: file.client.tls_handshake_timeout_ms,
            },
            DEFAULT_CLIENT_HTTP_CONNECTIONS,
        )?;
        let api_tls = tls_files("api", file.api.tls_cert, file.api.tls_key)?;
        let api_tls_set = api_tls.is_some();
        let client_tls = tls_files("client", file.client.tls_cert, file.client.tls_key)?;
        let public_host = public_host(file.client.public_host)?;
        let tls_watch_interval = match file.server.tls_watch_interval_ms {
            Some(0) => None,
            ms => Some(timeout("server.tls_watch_interval_ms", ms, DEFAULT_TLS_WATCH_INTERVAL_MS)?),
        };
        Ok(Self {
            alias,
            data_dir: cli.data_dir.clone().or(file.server.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            app_secret,
            announced_ip,
            announced_ip6,
            api_listen,
            max_body_bytes,
            max_upload_bytes: file.api.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
            api_http,
            api_tls,
            client_listen,
            client_http,
            client_tls,
            public_host,
            tls_watch_interval,
            demo: demo.then_some(demo_limits),
            demo_notice,
            ping_timeout: timeout("client.ping_timeout_ms", file.client.ping_timeout_ms, DEFAULT_PING_TIMEOUT_MS)?,
            write_timeout: timeout("client.write_timeout_ms", file.client.write_timeout_ms, DEFAULT_WRITE_TIMEOUT_MS)?,
            max_pending_transports_per_ip: usize::try_from(at_least_one(
                "client.max_pending_transports_per_ip",
                file.client.max_pending_transports_per_ip,
                DEFAULT_MAX_PENDING_TRANSPORTS_PER_IP,
            )?)
            .unwrap_or(usize::MAX),
            workers,
            connect_timeout: timeout(
                "dataplane.connect_timeout_ms",
                file.dataplane.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            )?,
            tcp: tcp_config(&file.dataplane)?,
            io_backend,
            udp_listen,
            default_max_members: file.rooms.default_max_members.unwrap_or(DEFAULT_MAX_MEMBERS),
            recordings_dir: file.recording.dir,
            ffmpeg: file.recording.ffmpeg.unwrap_or_else(|| PathBuf::from("ffmpeg")),
            recording_jobs: match file.recording.jobs.unwrap_or(DEFAULT_RECORDING_JOBS) {
                jobs @ 1..=MAX_RECORDING_JOBS => jobs as usize,
                jobs => {
                    return Err(ConfigError::new(
                        "recording.jobs",
                        format!("{jobs} is outside 1..={MAX_RECORDING_JOBS}"),
                    ));
                }
            },
            recording_min_free_bytes: file
                .recording
                .min_free_mb
                .unwrap_or(DEFAULT_RECORDING_MIN_FREE_MB)
                .saturating_mul(1_000_000),
            mirror_load_percent: match file.rooms.mirror_load_percent {
                Some(p) if !(0.0..=100.0).contains(&p) => {
                    return Err(ConfigError::new(
                        "rooms.mirror_load_percent",
                        format!("{p} is not a percentage (0 to 100)"),
                    ));
                }
                Some(p) => p,
                None => DEFAULT_MIRROR_LOAD_PERCENT,
            },
            max_audience_per_node: file.rooms.max_audience_per_node.unwrap_or(0),
            max_connections: match &cli.max_connections {
                Some(v) => parse_flag(v, "rooms.max_connections", "--max-connections")?,
                None => file.rooms.max_connections.unwrap_or(0),
            },
            retention: retention(file.recording.retention_days)?,
            client_upload_ttl: timeout(
                "recording.client_upload_ttl_ms",
                file.recording.client_upload_ttl_ms,
                DEFAULT_CLIENT_UPLOAD_TTL_MS,
            )?,
            client_upload_idle_timeout: timeout(
                "recording.client_upload_idle_timeout_ms",
                file.recording.client_upload_idle_timeout_ms,
                DEFAULT_CLIENT_UPLOAD_IDLE_TIMEOUT_MS,
            )?,
            max_playbacks: file.recording.max_playbacks.unwrap_or(DEFAULT_MAX_PLAYBACKS),
            cluster: cluster(file.cluster, api_tls_set)?,
        })
    }

    /// Workers to run on a machine with `cores` usable cores: the configured number, or one
    /// per core but one (left to the control plane), at least one.
    pub fn worker_count(&self, cores: usize) -> usize {
        if self.workers > 0 { self.workers } else { cores.saturating_sub(1).max(1) }
    }

    /// Creates the data dir if needed and proves it writable.
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let problem = |e: std::io::Error| {
            ConfigError::new("server.data_dir", format!("cannot write {}: {e}", self.data_dir.display()))
        };
        std::fs::create_dir_all(&self.data_dir).map_err(problem)?;
        let probe = self.data_dir.join(".uprtcd-write-test");
        std::fs::write(&probe, b"").map_err(problem)?;
        std::fs::remove_file(&probe).map_err(problem)
    }

    /// Reads and checks the TLS listeners' certificates and keys (names the key of the file
    /// that is missing or wrong).
    pub fn load_certificates(&self) -> Result<Certificates, ConfigError> {
        let load = |section: &str, files: &Option<CertificateFiles>| -> Result<_, ConfigError> {
            let Some(files) = files else { return Ok(None) };
            let certificate = files.load().map_err(|e| {
                let name = match e.file() {
                    CertificateFile::Cert => "tls_cert",
                    CertificateFile::Key => "tls_key",
                };
                ConfigError::new(format!("{section}.{name}"), e)
            })?;
            Ok(Some((files.clone(), certificate)))
        };
        Ok(Certificates { api: load("api", &self.api_tls)?, client: load("client", &self.client_tls)? })
    }

    /// The hosts clients put into the client listener's URLs: what its certificate must name.
    pub fn client_hosts(&self) -> Vec<String> {
        match &self.public_host {
            Some(host) => vec![host.clone()],
            None => std::iter::once(self.announced_ip)
                .chain(self.announced_ip6.map(IpAddr::V6))
                .map(|ip| ip.to_string())
                .collect(),
        }
    }

    /// Binds the API and client listeners (names the key of the one that fails).
    pub fn bind_listeners(&self) -> Result<(TcpListener, TcpListener), ConfigError> {
        let bind = |addr: SocketAddr, file_key: &str| {
            TcpListener::bind(addr).map_err(|e| ConfigError::new(file_key, format!("cannot listen on {addr}: {e}")))
        };
        let api = bind(self.api_listen, "api.listen")?;
        let client = bind(self.client_listen, "client.listen")?;
        Ok((api, client))
    }
}

/// A listener's connection keys as the file gives them.
struct HttpKeys {
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    tls_handshake_timeout_ms: Option<u64>,
}

/// A listener's `max_http_connections`, `header_read_timeout_ms`, `idle_timeout_ms` and
/// `tls_handshake_timeout_ms` from the file's `section`, or their defaults.
fn http_limits(section: &str, keys: HttpKeys, default_max_connections: usize) -> Result<Limits, ConfigError> {
    let HttpKeys { max_connections, header_read_timeout_ms, idle_timeout_ms, tls_handshake_timeout_ms } = keys;
    let max_connections = max_connections.unwrap_or(default_max_connections);
    if max_connections == 0 {
        return Err(ConfigError::new(format!("{section}.max_http_connections"), "must be at least 1"));
    }
    let timeout = |name: &str, ms: Option<u64>, default: u64| match ms.unwrap_or(default) {
        ms @ 1..=MAX_HTTP_TIMEOUT_MS => Ok(std::time::Duration::from_millis(ms)),
        ms => Err(ConfigError::new(
            format!("{section}.{name}"),
            format!("{ms} is not between 1 and {MAX_HTTP_TIMEOUT_MS} milliseconds"),
        )),
    };
    Ok(Limits {
        max_connections,
        header_read_timeout: timeout("header_read_timeout_ms", header_read_timeout_ms, DEFAULT_HEADER_READ_TIMEOUT_MS)?,
        idle_timeout: timeout("idle_timeout_ms", idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS)?,
        tls_handshake_timeout: timeout(
            "tls_handshake_timeout_ms",
            tls_handshake_timeout_ms,
            DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
        )?,
    })
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(0)
    };
    let document = toml::Deserializer::parse(&text)
        .map_err(|e| ConfigError::new(format!("{} line {}", path.display(), line_of(e.span())), e.message().trim()))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::new(key, format!("{} (line {})", inner.message().trim(), line_of(inner.span())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("uprtcd").chain(args.iter().copied()))
    }

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::resolve(&cli(&["--config", path.to_str().unwrap()]))
    }

    /// Each `(line, key)`: the line in `[section]` stops the start with an error naming `key`.
    fn each_refused_naming_its_key(section: &str, cases: &[(&str, &str)]) {
        for (line, key) in cases {
            let e = with_file(&format!("[{section}]\n{line}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn embedded_defaults() {
        let config = Config::resolve(&cli(&[])).unwrap();
        assert_eq!(config.api_listen, "127.0.0.1:6017".parse().unwrap());
        assert_eq!(config.client_listen, "127.0.0.1:6016".parse().unwrap());
        assert_eq!(config.alias, "rtc-1:cluster-1");
        assert_eq!(config.data_dir, PathBuf::from("./uprtcd-data"));
        assert_eq!(config.worker_count(2), 1);
        assert_eq!(config.worker_count(1), 1);
        assert_eq!(config.worker_count(8), 7);
        assert_eq!(config.default_max_members, 16);
        let demo = DemoLimits {
            max_rooms: 100,
            room_idle: Duration::from_secs(600),
            room_max_age: Duration::from_secs(7200),
            joins_per_minute: 10,
        };
        assert_eq!(config.demo, Some(demo), "on, on the loopback listener of the defaults");
        assert_eq!(config.demo_notice, None);
    }

    #[test]
    fn max_connections_from_the_file_and_the_flag() {
        assert_eq!(with_file("[rooms]\nmax_connections = 500\n").unwrap().max_connections, 500);
        assert_eq!(Config::resolve(&cli(&["--max-connections", "7"])).unwrap().max_connections, 7);
        assert_eq!(Config::resolve(&cli(&[])).unwrap().max_connections, 0, "no cap by default");
        let e = Config::resolve(&cli(&["--max-connections", "many"])).unwrap_err().to_string();
        assert!(e.contains("rooms.max_connections (--max-connections)"), "{e}");
    }

    #[test]
    fn http_limits_of_each_listener_from_the_file() {
        let config = Config::resolve(&cli(&[])).unwrap();
        let limits = |max, header, idle, handshake| Limits {
            max_connections: max,
            header_read_timeout: std::time::Duration::from_millis(header),
            idle_timeout: std::time::Duration::from_millis(idle),
            tls_handshake_timeout: std::time::Duration::from_millis(handshake),
        };
        assert_eq!(config.api_http, limits(256, 10_000, 60_000, 10_000));
        assert_eq!(config.client_http, limits(16_384, 10_000, 60_000, 10_000));
        let config = with_file(
            "[api]\nmax_http_connections = 2000\nheader_read_timeout_ms = 1000\n\
             [client]\nmax_http_connections = 3\nidle_timeout_ms = 5000\ntls_handshake_timeout_ms = 700\n",
        )
        .unwrap();
        assert_eq!(config.api_http, limits(2000, 1000, 60_000, 10_000));
        assert_eq!(config.client_http, limits(3, 10_000, 5000, 700));
    }

    #[test]
    fn http_limits_out_of_range_are_named() {
        for (text, key) in [
            ("[api]\nmax_http_connections = 0\n", "api.max_http_connections"),
            ("[client]\nmax_http_connections = -1\n", "client.max_http_connections"),
            ("[api]\nheader_read_timeout_ms = 0\n", "api.header_read_timeout_ms"),
            ("[client]\nidle_timeout_ms = 3600001\n", "client.idle_timeout_ms"),
            ("[client]\nheader_read_timeout_ms = 1.5\n", "client.header_read_timeout_ms"),
            ("[api]\ntls_handshake_timeout_ms = 0\n", "api.tls_handshake_timeout_ms"),
        ] {
            let e = with_file(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let config = with_file("").unwrap();
        assert_eq!((config.api_tls, config.client_tls), (None, None), "plain HTTP by default");
        let config = with_file("[client]\ntls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"\n").unwrap();
        let files = CertificateFiles { cert: "/etc/c.pem".into(), key: "/etc/k.pem".into() };
        assert_eq!((config.api_tls, config.client_tls), (None, Some(files)));
        for (text, key) in [
            ("[client]\ntls_cert = \"/etc/c.pem\"\n", "client.tls_key"),
            ("[client]\ntls_key = \"/etc/k.pem\"\n", "client.tls_cert"),
            ("[api]\ntls_cert = \"/etc/c.pem\"\n", "api.tls_key"),
            ("[api]\ntls_key = \"/etc/k.pem\"\n", "api.tls_cert"),
        ] {
            let e = with_file(text).unwrap_err().to_string();
            assert!(e.contains(&format!("{key}: must be set with")), "{text:?}: {e}");
        }
    }

    #[test]
    fn tls_files_are_watched_unless_told_not_to() {
        assert_eq!(with_file("").unwrap().tls_watch_interval, Some(Duration::from_secs(2)));
        assert_eq!(with_file("[server]\ntls_watch_interval_ms = 0\n").unwrap().tls_watch_interval, None);
        let set = with_file("[server]\ntls_watch_interval_ms = 500\n").unwrap();
        assert_eq!(set.tls_watch_interval, Some(Duration::from_millis(500)));
        let e = with_file("[server]\ntls_watch_interval_ms = 10\n").unwrap_err().to_string();
        assert!(e.contains("server.tls_watch_interval_ms"), "{e}");
    }

    #[test]
    fn public_host_is_a_dns_name() {
        assert_eq!(with_file("").unwrap().public_host, None);
        let config = with_file("[client]\npublic_host = \"sfu.example.com\"\n").unwrap();
        assert_eq!(config.public_host.as_deref(), Some("sfu.example.com"));
        assert_eq!(config.client_hosts(), ["sfu.example.com"]);
        let config = Config::resolve(&cli(&["--announced-ip", "192.0.2.1", "--announced-ip6", "2001:db8::1"])).unwrap();
        assert_eq!(config.client_hosts(), ["192.0.2.1", "2001:db8::1"]);
        for host in ["192.0.2.1", "::1", "not a name", "", "a..b"] {
            let e = with_file(&format!("[client]\npublic_host = {host:?}\n")).unwrap_err().to_string();
            assert!(e.contains("client.public_host"), "{host:?}: {e}");
        }
    }

    #[test]
    fn recording_keys_have_defaults_and_bounds() {
        let defaults = Config::resolve(&cli(&[])).unwrap();
        assert_eq!(
            (defaults.ffmpeg.as_path(), defaults.recording_jobs, defaults.recording_min_free_bytes),
            (std::path::Path::new("ffmpeg"), 1, 2_048_000_000)
        );
        let set = with_file("[recording]\nffmpeg = \"/opt/ff/ffmpeg\"\njobs = 3\nmin_free_mb = 10\n").unwrap();
        assert_eq!(
            (set.ffmpeg.to_str(), set.recording_jobs, set.recording_min_free_bytes),
            (Some("/opt/ff/ffmpeg"), 3, 10_000_000)
        );
        for jobs in ["0", "65"] {
            let e = with_file(&format!("[recording]\njobs = {jobs}\n")).unwrap_err().to_string();
            assert!(e.contains("recording.jobs"), "{e}");
        }
        let e = with_file("[recording]\nthreads = 2\n").unwrap_err().to_string();
        assert!(e.contains("threads"), "{e}");
    }

    #[test]
    fn max_playbacks_from_the_file() {
        assert_eq!(Config::resolve(&cli(&[])).unwrap().max_playbacks, DEFAULT_MAX_PLAYBACKS);
        assert_eq!(with_file("[recording]\nmax_playbacks = 0\n").unwrap().max_playbacks, 0);
        let e = with_file("[recording]\nmax_playbacks = -1\n").unwrap_err().to_string();
        assert!(e.contains("max_playbacks"), "{e}");
    }

    #[test]
    fn a_cluster_needs_a_redis_url_and_takes_bounded_timings() {
        assert!(Config::resolve(&cli(&[])).unwrap().cluster.is_none(), "a single node by default");
        let cluster = with_file("[cluster]\nredis_url = \"redis://127.0.0.1:6380/\"\n").unwrap().cluster.unwrap();
        assert_eq!((cluster.node_ttl, cluster.call_timeout), (Duration::from_secs(5), Duration::from_secs(10)));
        assert_eq!(cluster.heartbeat(), Duration::from_secs(1));
        each_refused_naming_its_key(
            "cluster",
            &[
                ("redis_url = \"http://nope\"", "cluster.redis_url"),
                ("node_ttl_ms = 2000", "cluster.redis_url"),
                ("redis_url = \"redis://127.0.0.1/\"\nnode_ttl_ms = 400", "cluster.node_ttl_ms"),
                ("redis_url = \"redis://127.0.0.1/\"\ncall_timeout_ms = 0", "cluster.call_timeout_ms"),
            ],
        );
    }

    #[test]
    fn mirror_load_percent_is_a_percentage() {
        assert_eq!(Config::resolve(&cli(&[])).unwrap().mirror_load_percent, 70.0);
        assert_eq!(with_file("[rooms]\nmirror_load_percent = 0\n").unwrap().mirror_load_percent, 0.0);
        let e = with_file("[rooms]\nmirror_load_percent = 150\n").unwrap_err().to_string();
        assert!(e.contains("rooms.mirror_load_percent"), "{e}");
    }

    #[test]
    fn recording_keys_from_the_file() {
        let defaults = with_file("").unwrap();
        assert_eq!(defaults.retention, None, "recordings are kept for good by default");
        assert_eq!(defaults.client_upload_ttl, Duration::from_secs(600));
        assert_eq!(defaults.client_upload_idle_timeout, Duration::from_secs(30));
        let set = with_file(
            "[recording]\nretention_days = 30\nclient_upload_ttl_ms = 60000\nclient_upload_idle_timeout_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(set.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(set.client_upload_ttl, Duration::from_secs(60));
        assert_eq!(set.client_upload_idle_timeout, Duration::from_secs(1));
        assert_eq!(
            with_file("[recording]\nretention_days = 0.5\n").unwrap().retention,
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(with_file("[recording]\nretention_days = 0\n").unwrap().retention, None);
        each_refused_naming_its_key(
            "recording",
            &[
                ("retention_days = -1", "recording.retention_days"),
                ("retention_days = \"a week\"", "recording.retention_days"),
                ("client_upload_ttl_ms = 10", "recording.client_upload_ttl_ms"),
                ("client_upload_idle_timeout_ms = 0", "recording.client_upload_idle_timeout_ms"),
            ],
        );
    }

    #[test]
    fn timeouts_from_the_file_within_their_range() {
        let defaults = with_file("").unwrap();
        assert_eq!(defaults.ping_timeout, Duration::from_secs(30));
        assert_eq!(defaults.write_timeout, Duration::from_secs(10));
        assert_eq!(defaults.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let set = with_file(
            "[client]\nping_timeout_ms = 3000\nwrite_timeout_ms = 500\n[dataplane]\nconnect_timeout_ms = 2000\n",
        )
        .unwrap();
        assert_eq!(set.ping_timeout, Duration::from_secs(3));
        assert_eq!(set.write_timeout, Duration::from_millis(500));
        assert_eq!(set.connect_timeout, Duration::from_secs(2));
        assert_eq!(defaults.max_pending_transports_per_ip, 64);
        assert_eq!(
            with_file("[client]\nmax_pending_transports_per_ip = 3\n").unwrap().max_pending_transports_per_ip,
            3
        );
        let e = with_file("[client]\nmax_pending_transports_per_ip = 0\n").unwrap_err().to_string();
        assert!(e.contains("client.max_pending_transports_per_ip"), "{e}");
        let e = with_file("[client]\nping_timeout_ms = 10\n").unwrap_err().to_string();
        assert!(e.contains("client.ping_timeout_ms") && e.contains("10 ms"), "{e}");
        let e = with_file("[dataplane]\nconnect_timeout_ms = 100000000\n").unwrap_err().to_string();
        assert!(e.contains("dataplane.connect_timeout_ms"), "{e}");
    }

    #[test]
    fn ice_tcp_caps_and_deadline_from_the_file() {
        let defaults = with_file("").unwrap().tcp;
        assert_eq!(defaults, TcpConfig::default());
        assert_eq!(
            (defaults.max_connections, defaults.max_connections_per_ip, defaults.auth_timeout),
            (4096, 16, Duration::from_secs(5))
        );
        let set = with_file(
            "[dataplane]\ntcp_auth_timeout_ms = 1500\ntcp_max_connections = 100\ntcp_max_connections_per_ip = 4\n",
        )
        .unwrap()
        .tcp;
        assert_eq!(
            set,
            TcpConfig { max_connections: 100, max_connections_per_ip: 4, auth_timeout: Duration::from_millis(1500) }
        );
        let capped = with_file("[dataplane]\ntcp_max_connections = 10\n").unwrap().tcp;
        assert_eq!(capped.max_connections_per_ip, 10, "one address never gets more than the worker");
        each_refused_naming_its_key(
            "dataplane",
            &[
                ("tcp_auth_timeout_ms = 10", "dataplane.tcp_auth_timeout_ms"),
                ("tcp_max_connections = 0", "dataplane.tcp_max_connections"),
                ("tcp_max_connections = 2000000", "dataplane.tcp_max_connections"),
                ("tcp_max_connections_per_ip = 0", "dataplane.tcp_max_connections_per_ip"),
                ("tcp_max_connections_per_ip = -1", "dataplane.tcp_max_connections_per_ip"),
            ],
        );
    }

    #[test]
    fn demo_from_the_file_and_the_flag() {
        assert!(with_file("[client]\ndemo = false\n").unwrap().demo.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[client]\ndemo = false\n").unwrap();
        assert!(Config::resolve(&cli(&["--config", path.to_str().unwrap(), "--demo", "true"])).unwrap().demo.is_some());
        assert!(Config::resolve(&cli(&["--demo", "false"])).unwrap().demo.is_none());
        let e = Config::resolve(&cli(&["--demo", "yes"])).unwrap_err().to_string();
        assert!(e.contains("client.demo (--demo)"), "{e}");
        let e = with_file("[client]\ndemo = 1\n").unwrap_err().to_string();
        assert!(e.contains("client.demo"), "{e}");
    }

    /// (client listener, `--demo` flag, file line) → (demo on, start-up notice).
    #[test]
    fn demo_is_on_by_default_only_on_a_loopback_listener() {
        use DemoNotice::{OffBeyondLoopback, OnBeyondLoopback};
        let cases = [
            ("127.0.0.1:6016", None, "", true, None),
            ("[::1]:6016", None, "", true, None),
            ("[::ffff:127.0.0.1]:6016", None, "", true, None),
            ("0.0.0.0:6016", None, "", false, Some(OffBeyondLoopback)),
            ("192.0.2.10:6016", None, "", false, Some(OffBeyondLoopback)),
            ("[::]:6016", None, "", false, Some(OffBeyondLoopback)),
            ("0.0.0.0:6016", None, "demo = true", true, Some(OnBeyondLoopback)),
            ("0.0.0.0:6016", Some("true"), "", true, Some(OnBeyondLoopback)),
            ("0.0.0.0:6016", None, "demo = false", false, None),
            ("127.0.0.1:6016", Some("false"), "demo = true", false, None),
        ];
        for (listen, flag, line, on, notice) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.toml");
            std::fs::write(&path, format!("[client]\nlisten = \"{listen}\"\n{line}\n")).unwrap();
            let mut args = vec!["--config", path.to_str().unwrap()];
            if let Some(v) = flag {
                args.extend(["--demo", v]);
            }
            let config = Config::resolve(&cli(&args)).unwrap();
            assert_eq!((config.demo.is_some(), config.demo_notice), (on, notice), "{listen} {flag:?} {line:?}");
        }
        assert!(OffBeyondLoopback.message().starts_with("demo mode is off"));
        assert!(OnBeyondLoopback.message().contains("anyone who reaches it"));
    }

    #[test]
    fn demo_limits_from_the_file() {
        let config = with_file(
            "[client]\ndemo_max_rooms = 3\ndemo_room_idle_ms = 1000\ndemo_room_max_age_ms = 5000\n\
             demo_joins_per_minute = 2\n",
        )
        .unwrap();
        let limits = config.demo.unwrap();
        assert_eq!((limits.max_rooms, limits.joins_per_minute), (3, 2));
        assert_eq!((limits.room_idle, limits.room_max_age), (Duration::from_secs(1), Duration::from_secs(5)));
        each_refused_naming_its_key(
            "client",
            &[
                ("demo_max_rooms = 0", "client.demo_max_rooms"),
                ("demo_joins_per_minute = 0", "client.demo_joins_per_minute"),
                ("demo_room_idle_ms = 10", "client.demo_room_idle_ms"),
                ("demo_room_max_age_ms = 100000000", "client.demo_room_max_age_ms"),
                ("demo_max_rooms = -1", "client.demo_max_rooms"),
            ],
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[api]\nlisten = \"127.0.0.1:7000\"\n[server]\nalias = \"a\"\n").unwrap();
        let config =
            Config::resolve(&cli(&["--config", path.to_str().unwrap(), "--api-listen", "127.0.0.1:7001"])).unwrap();
        assert_eq!(config.api_listen.port(), 7001);
        assert_eq!(config.alias, "a");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = with_file("[api]\nlisen = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(e.contains("api.lisen"), "{e}");
        let e = with_file("[apii]\n").unwrap_err().to_string();
        assert!(e.contains("apii"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = with_file("[api]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("api.listen") && e.contains("line 2"), "{e}");
        let e = Config::resolve(&cli(&["--client-listen", "1.2.3"])).unwrap_err().to_string();
        assert!(e.contains("client.listen (--client-listen)"), "{e}");
        let e = Config::resolve(&cli(&["--io-backend", "kqueue"])).unwrap_err().to_string();
        assert!(e.contains("--io-backend"), "{e}");
        let e = with_file("[dataplane]\nworkers = -1\n").unwrap_err().to_string();
        assert!(e.contains("dataplane.workers"), "{e}");
        let e = Config::resolve(&cli(&["--announced-ip", "0.0.0.0"])).unwrap_err().to_string();
        assert!(e.contains("server.announced_ip"), "{e}");
        let e = with_file("[server\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
    }
}
