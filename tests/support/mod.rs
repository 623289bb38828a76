//! Shared harness for the integration tests: starts the real `uprtcd` binary on ports the OS
//! picks, talks to its REST API over HTTP, and checks the `{code, data, msg}` envelope.
//!
//! Rules this harness keeps for every test:
//! - a `Server` owns exactly one child process; `Drop` kills and reaps it, so a failing test
//!   never leaves a server behind;
//! - the child's stderr is drained by a thread for the whole life of the process, so the child
//!   never blocks on a full pipe, and every line is kept for failure messages;
//! - everything binds to 127.0.0.1 (or ::1) with port 0.
#![allow(dead_code)]

pub mod client;
pub mod redis;
pub mod tls;
pub mod tmpfs;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use serde_json::{Value, json};

pub const PREFIX: &str = "/uprtc/api/v2";
pub const BIN: &str = env!("CARGO_BIN_EXE_uprtcd");
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// small utilities

/// A random u64 (std's per-instance random hasher keys; good enough for test data).
pub fn rand_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// `n` random bytes (xorshift64* seeded from `rand_u64`).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = rand_u64() | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A small media file made by ffmpeg from its test sources: `seconds` of `kind` ("webm": VP8
/// 160x120 and Opus; "ogg": Opus audio only).
pub fn media_file(kind: &str, seconds: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join(format!("media.{kind}"));
    let t = seconds.to_string();
    let sources: &[&str] = match kind {
        "webm" => &["testsrc=size=160x120:rate=10", "sine"],
        "ogg" => &["sine"],
        other => panic!("no recipe for {other}"),
    };
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y"]);
    for source in sources {
        command.args(["-f", "lavfi", "-i", source]);
    }
    let codecs: &[&str] = if kind == "webm" { &["-c:v", "libvpx", "-c:a", "libopus"] } else { &["-c:a", "libopus"] };
    let status =
        command.args(["-t", &t]).args(codecs).arg(&out).status().expect("ffmpeg runs (the test suite installs it)");
    assert!(status.success(), "ffmpeg for {kind}: {status}");
    std::fs::read(&out).expect("ffmpeg's output")
}

pub fn unique_secret() -> String {
    format!("test-secret-{:016x}{:016x}", rand_u64(), rand_u64())
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A generated roomId: 10 characters of `[0-9A-Za-z]` (docs/rest-api.md, "Room ids").
pub fn assert_generated_id(id: &str) {
    assert!(
        id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "a generated roomId is 10 characters from [0-9A-Za-z], got {id:?}"
    );
}

/// The same id with its last (check) character replaced by another one. The check character
/// is a function of the other nine, so the result is certainly not a valid id of any server
/// that made the original.
pub fn with_wrong_check_char(id: &str) -> String {
    let mut chars: Vec<char> = id.chars().collect();
    let last = chars.pop().expect("non-empty id");
    let repl = if last == 'A' { 'B' } else { 'A' };
    chars.push(repl);
    chars.into_iter().collect()
}

pub fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("expected an array of strings, got {v}")).to_string())
        .collect();
    out.sort();
    out
}

pub fn set_of(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Runs the binary to completion (killing it after `timeout`), returning exit status and stderr.
/// Panics with the stderr if it does not exit in time.
pub fn run_to_exit(args: &[String], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn uprtcd");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let err = reader.join().unwrap_or_default();
                panic!("uprtcd {args:?} did not exit within {timeout:?}; stderr:\n{err}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let err = reader.join().unwrap_or_default();
    (status, err)
}

/// The failure rule for bad configuration: non-zero exit, exactly one non-empty stderr line that
/// names one of `keys`, no panic, no backtrace. Returns what is wrong, if anything.
pub fn one_line_error_problem(status: &ExitStatus, stderr: &str, keys: &[&str], what: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if status.success() {
        return Some(format!("{what}: expected a non-zero exit, got {status:?}; stderr:\n{stderr}"));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") || stderr.contains("stack backtrace") {
        return Some(format!("{what}: must not panic or print a backtrace; stderr:\n{stderr}"));
    }
    if lines.len() != 1 {
        return Some(format!("{what}: expected exactly one stderr line, got {}; stderr:\n{stderr}", lines.len()));
    }
    if !keys.iter().any(|k| lines[0].contains(k)) {
        return Some(format!("{what}: the line must name {keys:?}; stderr:\n{stderr}"));
    }
    None
}

#[track_caller]
pub fn assert_one_line_error(status: &ExitStatus, stderr: &str, keys: &[&str], what: &str) {
    if let Some(p) = one_line_error_problem(status, stderr, keys, what) {
        panic!("{p}");
    }
}

/// Collects failures of a table of checks so that one run reports every row that is wrong.
#[derive(Debug, Default)]
pub struct Soft(pub Vec<String>);

impl Soft {
    pub fn new() -> Self {
        Soft(Vec::new())
    }
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
    pub fn add(&mut self, problem: Option<String>) {
        self.0.extend(problem);
    }
    #[track_caller]
    pub fn done(self) {
        if !self.0.is_empty() {
            panic!("{} check(s) failed:\n  - {}", self.0.len(), self.0.join("\n  - "));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// responses and envelopes

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Every response header, names in lower case (empty from `raw_exchange`).
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as a JSON envelope; panics (showing the body) when it is not one.
    pub fn envelope(&self, ctx: &str) -> Value {
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{ctx}: HTTP {} body is not JSON ({e}): {:?}", self.status, self.text()));
        check_envelope_shape(&v, ctx);
        v
    }
}

/// `{"code": N, "data": ..., "msg": "..."}`; `msg` non-empty on failure, and empty on success
/// except where it explains the data: why a recording's status is 7.
pub fn envelope_problem(v: &Value, ctx: &str) -> Option<String> {
    let code = v.get("code").and_then(Value::as_u64);
    let msg = v.get("msg").and_then(Value::as_str);
    if code.is_none() || msg.is_none() || v.get("data").is_none() {
        return Some(format!("{ctx}: not an envelope {{code, data, msg}}: {v}"));
    }
    let explained = v["data"]["status"] == 7;
    if code == Some(0) && msg != Some("") && !explained {
        return Some(format!("{ctx}: msg must be empty on success: {v}"));
    }
    if code != Some(0) && msg.unwrap_or("").is_empty() {
        return Some(format!("{ctx}: msg must say what was wrong: {v}"));
    }
    None
}

#[track_caller]
pub fn check_envelope_shape(v: &Value, ctx: &str) {
    if let Some(p) = envelope_problem(v, ctx) {
        panic!("{p}");
    }
}

/// Asserts HTTP 200 and `code == code`, printing the whole envelope on failure; returns `data`.
#[track_caller]
pub fn expect_code(r: &(u16, Value), code: u64, ctx: &str) -> Value {
    expect_status_code(r, 200, code, ctx)
}

#[track_caller]
pub fn expect_status_code(r: &(u16, Value), status: u16, code: u64, ctx: &str) -> Value {
    let (st, env) = r;
    assert_eq!(
        env.get("code").and_then(Value::as_u64),
        Some(code),
        "{ctx}: expected code {code}, got HTTP {st} envelope {env}"
    );
    assert_eq!(*st, status, "{ctx}: expected HTTP {status}, got HTTP {st} envelope {env}");
    env.get("data").cloned().unwrap_or(Value::Null)
}

#[track_caller]
pub fn expect_ok(r: &(u16, Value), ctx: &str) -> Value {
    expect_code(r, 0, ctx)
}

/// Asserts the value is the given JSON type (for shape checks).
#[track_caller]
pub fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or_else(|| panic!("field {field:?} must be a string in {v}"))
}

#[track_caller]
pub fn u64_field(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {field:?} must be a non-negative integer in {v}"))
}

#[track_caller]
pub fn bool_field(v: &Value, field: &str) -> bool {
    v.get(field).and_then(Value::as_bool).unwrap_or_else(|| panic!("field {field:?} must be a boolean in {v}"))
}

#[track_caller]
pub fn arr_field<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    v.get(field).and_then(Value::as_array).unwrap_or_else(|| panic!("field {field:?} must be an array in {v}"))
}

// ---------------------------------------------------------------------------------------------
// request bodies and auth variants

#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

impl From<Value> for Body {
    fn from(v: Value) -> Self {
        Body::Json(v)
    }
}
impl From<Option<Value>> for Body {
    fn from(v: Option<Value>) -> Self {
        v.map_or(Body::None, Body::Json)
    }
}
impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::None
    }
}

/// A short printable form of a body for failure messages.
pub fn body_text(b: &Body) -> String {
    let t = match b {
        Body::None => String::new(),
        Body::Json(v) => v.to_string(),
        Body::Raw(r) => String::from_utf8_lossy(r).into_owned(),
    };
    if t.chars().count() > 200 {
        format!("{}…({} chars)", t.chars().take(200).collect::<String>(), t.chars().count())
    } else {
        t
    }
}

/// Bytes sent as the body verbatim (malformed JSON and the like).
pub fn raw(b: impl AsRef<[u8]>) -> Body {
    Body::Raw(b.as_ref().to_vec())
}

#[derive(Debug, Clone)]
pub enum Auth {
    /// `authorization: key=<secret>`
    Key,
    /// no authorization header
    Missing,
    /// `authorization: key=<another secret>`
    Wrong,
    /// this header value verbatim
    Header(String),
}

// ---------------------------------------------------------------------------------------------
// the server handle

#[derive(Debug, Clone)]
enum SecretSource {
    Known(String),
    /// read `<data-dir>/app-secret` once the server is ready
    DataDir,
}

#[derive(Debug)]
pub struct ServerBuilder {
    api_listen: Option<String>,
    client_listen: Option<String>,
    workers: Option<u32>,
    alias: Option<String>,
    pass_data_dir: bool,
    pass_secret: bool,
    secret: SecretSource,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServerBuilder {
    /// An environment variable of the server's process (e.g. a PATH without ffmpeg).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = Some(n);
        self
    }
    pub fn alias(mut self, a: &str) -> Self {
        self.alias = Some(a.to_string());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }
    pub fn args(mut self, a: &[&str]) -> Self {
        self.extra.extend(a.iter().map(|s| s.to_string()));
        self
    }
    /// Use this data dir (owned by the caller) instead of a fresh temporary one.
    pub fn data_dir(mut self, d: &Path) -> Self {
        self.data_dir = Some(d.to_path_buf());
        self
    }
    /// Do not pass `--app-secret`; the client uses the secret stored in `<data-dir>/app-secret`.
    pub fn generated_secret(mut self) -> Self {
        self.pass_secret = false;
        self.secret = SecretSource::DataDir;
        self
    }
    pub fn secret(mut self, s: &str) -> Self {
        self.secret = SecretSource::Known(s.to_string());
        self
    }
    /// `--config FILE` besides the flags the builder passes (which win over the file): for
    /// keys that have no flag.
    pub fn config_text(mut self, dir: &Path, text: &str) -> Self {
        self.config = Some(write_file(dir, "uprtcd.toml", text));
        self
    }
    /// Every listener and the media socket on loopback address `ip` (127.0.0.2, say), which
    /// is also the announced one: a node of a cluster on a machine of its own.
    pub fn host(mut self, ip: &str) -> Self {
        self.api_listen = Some(format!("{ip}:0"));
        self.client_listen = Some(format!("{ip}:0"));
        self.args(&["--udp-listen", &format!("{ip}:0"), "--announced-ip", ip])
    }
    /// `--demo true|false`: the demo page and `POST /demo/join` on the client listener.
    pub fn demo(self, on: bool) -> Self {
        self.args(&["--demo", if on { "true" } else { "false" }])
    }

    /// Spawns and waits for `uprtcd: ready`.
    pub fn start(self) -> Server {
        let (data_dir, tmp) = match self.data_dir.clone() {
            Some(d) => (d, None),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut args: Vec<String> = Vec::new();
        if let Some(c) = &self.config {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        if let Some(a) = &self.api_listen {
            args.extend(["--api-listen".into(), a.clone()]);
        }
        if let Some(a) = &self.client_listen {
            args.extend(["--client-listen".into(), a.clone()]);
        }
        if let Some(w) = self.workers {
            args.extend(["--workers".into(), w.to_string()]);
        }
        if self.pass_data_dir {
            args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        }
        if self.pass_secret
            && let SecretSource::Known(s) = &self.secret
        {
            args.extend(["--app-secret".into(), s.clone()]);
        }
        if let Some(a) = &self.alias {
            args.extend(["--server-alias".into(), a.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let mut srv = Server {
            child: None,
            pid: 0,
            api: String::new(),
            client: String::new(),
            secret: String::new(),
            data_dir,
            args,
            env: self.env,
            secret_source: self.secret,
            log: Arc::new(Mutex::new(Vec::new())),
            agent: new_agent(),
            _tmp: tmp,
        };
        srv.spawn();
        srv
    }
}

fn new_agent() -> ureq::Agent {
    // Redirects are answers to check, not to follow (a WHEP 307 to a mirror node).
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .new_agent()
}

#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    /// The API address the binary reported, `127.0.0.1:PORT`.
    pub api: String,
    /// The client address the binary reported, `127.0.0.1:PORT`.
    pub client: String,
    pub secret: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    secret_source: SecretSource,
    log: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// Defaults: `--api-listen 127.0.0.1:0 --client-listen 127.0.0.1:0 --workers 1
    /// --data-dir <fresh tempdir> --app-secret <random>`.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            api_listen: Some("127.0.0.1:0".into()),
            client_listen: Some("127.0.0.1:0".into()),
            workers: Some(1),
            alias: None,
            pass_data_dir: true,
            pass_secret: true,
            secret: SecretSource::Known(unique_secret()),
            data_dir: None,
            config: None,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A server with the defaults and these extra flags.
    pub fn start(extra: &[&str]) -> Server {
        Server::builder().args(extra).start()
    }

    /// A server started with `--config FILE` and nothing else but `extra`; the file must give
    /// the listen addresses, the data dir and `app_secret` (which the client then uses).
    pub fn builder_from_config(config: &Path, secret: &str, data_dir: &Path) -> ServerBuilder {
        ServerBuilder {
            api_listen: None,
            client_listen: None,
            workers: None,
            alias: None,
            pass_data_dir: false,
            pass_secret: false,
            secret: SecretSource::Known(secret.to_string()),
            data_dir: Some(data_dir.to_path_buf()),
            config: Some(config.to_path_buf()),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn api_port(&self) -> u16 {
        self.api.rsplit(':').next().and_then(|p| p.parse().ok()).expect("api port")
    }
    pub fn client_port(&self) -> u16 {
        self.client.rsplit(':').next().and_then(|p| p.parse().ok()).expect("client port")
    }
    /// What every `serverUrl` must start with.
    pub fn url_prefix(&self) -> String {
        format!("ws://{}/", self.client)
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        // The test command runs this suite once more with the epoll backend forced.
        let backend =
            std::env::var("UPRTCD_TEST_IO_BACKEND").ok().filter(|_| !self.args.iter().any(|a| a == "--io-backend"));
        let mut child = Command::new(BIN)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(backend.iter().flat_map(|b| ["--io-backend", b.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN} {:?}: {e}", self.args));
        self.pid = child.id();
        let stderr = child.stderr.take().expect("stderr piped");
        self.child = Some(child);
        let log = Arc::new(Mutex::new(Vec::new()));
        self.log = log.clone();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if let Ok(mut l) = log.lock() {
                            l.push(line.clone());
                        }
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let (mut api, mut client) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("uprtcd: api listening on ") {
                        api = Some(a.trim().to_string());
                    } else if let Some(a) = line.strip_prefix("uprtcd: client listening on ") {
                        client = Some(a.trim().to_string());
                    } else if line.trim() == "uprtcd: ready" {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill9();
                    panic!(
                        "uprtcd {:?} printed no `uprtcd: ready` within {READY_TIMEOUT:?}; stderr so far:\n{}",
                        self.args,
                        self.log()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "uprtcd {:?} closed stderr before `uprtcd: ready` (exit {status:?}); stderr:\n{}",
                        self.args,
                        self.log()
                    );
                }
            }
        }
        let (Some(api), Some(client)) = (api, client) else {
            let log = self.log();
            self.kill9();
            panic!("uprtcd said ready without both listening lines; stderr:\n{log}");
        };
        assert!(
            api.starts_with("127.") && client.starts_with("127."),
            "listening lines must give a loopback 127.x.y.z:PORT; stderr:\n{}",
            self.log()
        );
        self.api = api;
        self.client = client;
        self.secret = match &self.secret_source {
            SecretSource::Known(s) => s.clone(),
            SecretSource::DataDir => {
                let p = self.data_dir.join("app-secret");
                let s = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("read {}: {e}; stderr:\n{}", p.display(), self.log()));
                let s = s.trim().to_string();
                assert!(!s.is_empty(), "{} is empty", p.display());
                s
            }
        };
        self.agent = new_agent();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let st = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().expect("run kill -TERM");
        assert!(st.success(), "kill -TERM {} failed", c.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match c.try_wait().expect("try_wait") {
                Some(st) => return st,
                None if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("uprtcd did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}", self.log());
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Graceful stop (must exit 0) if running, then start again with the same flags and data dir.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let st = self.stop();
            assert!(st.success(), "SIGTERM must end uprtcd with exit 0, got {st:?}; stderr:\n{}", self.log());
        }
        self.spawn();
    }

    // -----------------------------------------------------------------------------------------
    // HTTP

    /// One HTTP request to `path` (absolute, e.g. `/nope` or `/uprtc/api/v2/room/convo`).
    pub fn request(&self, auth: &Auth, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Resp {
        let authorization = match auth {
            Auth::Key => Some(format!("key={}", self.secret)),
            Auth::Wrong => Some(format!("key={}x", self.secret)),
            Auth::Header(h) => Some(h.clone()),
            Auth::Missing => None,
        };
        let mut all: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        all.extend_from_slice(headers);
        let mut resp = self.exchange(method, &format!("http://{}{}", self.api, path), &all, body);
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body failed: {e}"));
        Resp { status, content_type, body, headers }
    }

    /// One HTTP request to `path` on the client listener (no authorization), keeping every
    /// response header.
    pub fn client_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> ClientResp {
        let url = format!("http://{}{}", self.client, path);
        let mut resp = self.exchange(method, &url, headers, body);
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body =
            resp.body_mut().read_to_vec().unwrap_or_else(|e| panic!("{method} {url}: reading the body failed: {e}"));
        ClientResp { status: resp.status().as_u16(), headers, body }
    }

    /// Sends one request; any HTTP status is an answer, a failed exchange panics with the
    /// server's log.
    fn exchange(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> ureq::http::Response<ureq::Body> {
        let mut b = ureq::http::Request::builder()
            .method(ureq::http::Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let result = match body {
            Body::None => self.agent.run(b.body(()).expect("request")),
            Body::Json(v) => self.agent.run(
                b.header("content-type", "application/json")
                    .body(serde_json::to_vec(&v).expect("json"))
                    .expect("request"),
            ),
            Body::Raw(bytes) => self.agent.run(b.body(bytes).expect("request")),
        };
        result.unwrap_or_else(|e| panic!("{method} {url}: HTTP exchange failed: {e}; server stderr:\n{}", self.log()))
    }

    /// `method PREFIX+path` with the right secret; returns (HTTP status, envelope).
    pub fn call(&self, method: &str, path: &str, body: impl Into<Body>) -> (u16, Value) {
        self.call_auth(&Auth::Key, method, path, body)
    }

    pub fn call_auth(&self, auth: &Auth, method: &str, path: &str, body: impl Into<Body>) -> (u16, Value) {
        let full = format!("{PREFIX}{path}");
        let r = self.request(auth, method, &full, &[], body.into());
        let env = r.envelope(&format!("{method} {full}"));
        (r.status, env)
    }

    /// Asserts HTTP 200 / code 0 / msg ""; returns `data`.
    #[track_caller]
    pub fn ok(&self, method: &str, path: &str, body: impl Into<Body>) -> Value {
        let body = body.into();
        let r = self.call(method, path, body.clone());
        expect_ok(&r, &format!("{method} {path} {}", body_text(&body)))
    }

    /// Asserts HTTP 200 and `code`; returns the whole envelope.
    #[track_caller]
    pub fn expect(&self, method: &str, path: &str, body: impl Into<Body>, code: u64) -> Value {
        let body = body.into();
        let r = self.call(method, path, body.clone());
        expect_code(&r, code, &format!("{method} {path} {}", body_text(&body)));
        r.1
    }

    /// Like `expect`, but records a mismatch in `soft` instead of panicking; with `field`, the
    /// error `msg` must also name that field. Returns the envelope.
    pub fn soft_expect(
        &self,
        soft: &mut Soft,
        method: &str,
        path: &str,
        body: impl Into<Body>,
        code: u64,
        field: Option<&str>,
    ) -> Value {
        let body = body.into();
        let full = format!("{PREFIX}{path}");
        let r = self.request(&Auth::Key, method, &full, &[], body.clone());
        let ctx = format!("{method} {path} {}", body_text(&body));
        let env: Value = match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(e) => {
                soft.0.push(format!("{ctx}: HTTP {} body is not JSON ({e}): {:?}", r.status, r.text()));
                return Value::Null;
            }
        };
        let got = env.get("code").and_then(Value::as_u64);
        if got != Some(code) || r.status != 200 {
            soft.0.push(format!("{ctx}: expected HTTP 200 code {code}, got HTTP {} {env}", r.status));
        } else if let Some(p) = envelope_problem(&env, &ctx) {
            soft.0.push(p);
        } else if let Some(f) = field {
            let msg = env.get("msg").and_then(Value::as_str).unwrap_or("");
            soft.check(msg.contains(f), || format!("{ctx}: msg must name {f:?}: {env}"));
        }
        env
    }

    // -----------------------------------------------------------------------------------------
    // shortcuts for common calls

    pub fn create_convo(&self, master: &str, members: &[&str]) -> Value {
        self.ok("POST", "/room/convo", json!({"masterId": master, "memberIds": members}))
    }
    pub fn create_live(&self, master: &str) -> Value {
        self.ok("POST", "/room/live", json!({"masterId": master}))
    }
    pub fn convo_id(&self, master: &str, members: &[&str]) -> String {
        str_field(&self.create_convo(master, members), "roomId").to_string()
    }
    pub fn live_id(&self, master: &str) -> String {
        str_field(&self.create_live(master), "roomId").to_string()
    }
    pub fn room(&self, id: &str) -> Value {
        self.ok("GET", &format!("/room/{}", enc(id)), ())
    }
    /// `[(workPid, cpu)]` from `GET /server/cpu/load`.
    pub fn cpu_load(&self) -> Vec<(u64, u64)> {
        let data = self.ok("GET", "/server/cpu/load", ());
        data.as_array()
            .unwrap_or_else(|| panic!("/server/cpu/load data must be an array: {data}"))
            .iter()
            .map(|row| (u64_field(row, "workPid"), u64_field(row, "cpu")))
            .collect()
    }
    /// Room ids of `GET /room/{id}/live/merge`, sorted, after checking each row's shape.
    pub fn merge_ids(&self, id: &str) -> Vec<String> {
        let data = self.ok("GET", &format!("/room/{}/live/merge", enc(id)), ());
        let rows = data.as_array().unwrap_or_else(|| panic!("live/merge data must be an array: {data}"));
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| {
                assert_eq!(str_field(r, "serverAddress"), self.api, "merge row serverAddress: {r}");
                str_field(r, "serverAlias");
                str_field(r, "roomId").to_string()
            })
            .collect();
        ids.sort();
        ids
    }

    /// `POST /record/upload` with a hand-built multipart/form-data body: one part named `field`.
    pub fn upload(&self, field: &str, filename: &str, bytes: &[u8]) -> (u16, Value) {
        let (ct, body) = multipart(field, filename, bytes);
        let path = format!("{PREFIX}/record/upload");
        let r = self.request(&Auth::Key, "POST", &path, &[("content-type", &ct)], Body::Raw(body));
        let env = r.envelope(&format!("POST {path}"));
        (r.status, env)
    }

    /// Sends one request on a raw TCP connection and reads the answer while the body is still
    /// being written (a server may answer 413 before reading a large body). With
    /// `expect_continue` the body is sent only after `100 Continue`.
    pub fn raw_exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        expect_continue: bool,
    ) -> Result<Resp, String> {
        let mut s = TcpStream::connect(&self.api).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: key={}\r\ncontent-length: {}\r\n",
            self.api,
            self.secret,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if expect_continue {
            head.push_str("expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).map_err(|e| format!("write head: {e}"))?;
        let mut reader = RawReader { s: s.try_clone().map_err(|e| e.to_string())?, buf: Vec::new() };
        let send_body = |s: &TcpStream| {
            let mut w = s.try_clone().expect("clone stream");
            let body = body.to_vec();
            std::thread::spawn(move || {
                // The server may close early; the answer is what counts.
                let _ = w.write_all(&body);
            })
        };
        let result = if expect_continue {
            match reader.read_response() {
                Ok(first) if first.status == 100 => {
                    let _w = send_body(&s);
                    reader.read_response()
                }
                other => other,
            }
        } else {
            let _w = send_body(&s);
            reader.read_response()
        };
        // Ends the writer thread too (shutdown applies to every clone of the socket).
        let _ = s.shutdown(std::net::Shutdown::Both);
        result
    }
}

/// An answer of the client listener, with all its headers.
#[derive(Debug)]
pub struct ClientResp {
    pub status: u16,
    /// Names in lower case, as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResp {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON; panics (showing it) when it is not.
    pub fn json(&self, ctx: &str) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{ctx}: HTTP {} body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

struct RawReader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawReader {
    fn fill(&mut self) -> Result<(), String> {
        let mut tmp = [0u8; 16384];
        match self.s.read(&mut tmp) {
            Ok(0) => Err(format!("connection closed; got so far: {:?}", String::from_utf8_lossy(&self.buf))),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}; got so far: {:?}", String::from_utf8_lossy(&self.buf))),
        }
    }

    fn read_response(&mut self) -> Result<Resp, String> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut len: Option<usize> = None;
        let mut chunked = false;
        let mut content_type = None;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => len = v.parse().ok(),
                    "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                    "content-type" => content_type = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        if status == 100 {
            return Ok(Resp { status, content_type, body: Vec::new(), headers: Vec::new() });
        }
        let body = if chunked {
            let mut out = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    self.fill()?;
                };
                let size_txt = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|e| format!("bad chunk size {size_txt:?}: {e}"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill()?;
                }
                out.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
            out
        } else {
            let n = len.unwrap_or(0);
            while self.buf.len() < n {
                self.fill()?;
            }
            self.buf.drain(..n).collect()
        };
        Ok(Resp { status, content_type, body, headers: Vec::new() })
    }
}

/// `(content-type, body)` of a multipart/form-data body holding one file part.
pub fn multipart(field: &str, filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("----uprtcdTestBoundary{:016x}", rand_u64());
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!("Content-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n").as_bytes(),
    );
    body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// VmRSS of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"));
    kb * 1024
}

/// Whether the server closed `s` before `deadline`, anything it sent first being read away.
pub fn closed_by_server(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Sends `GET /healthz` on `s` (keeping it alive; a plain or a TLS stream) and reads the
/// answer whole.
pub fn healthz(s: &mut (impl Read + Write)) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").expect("write the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is a short head and `ok\n`, with a content-length.
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok\n")) {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("read the answer: {e}; so far {got:?}"));
        assert!(n > 0, "the server closed the connection; so far: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `text` to `<dir>/<name>` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}
