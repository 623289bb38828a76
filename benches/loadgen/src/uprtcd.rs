//! uprtcd as the SFU under test: the real binary started on loopback with a private data
//! directory, rooms and join tokens through REST API v2, members through signalling v1
//! (one WebSocket each, as a browser's SDK holds), and the worker counters of `/metrics`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::LoadError;
use crate::sfu::{Member, RoomKind, Sfu};
use crate::sys;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long uprtcd may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// The `serverAlias` a server on its own is started with, which `POST /live/mirror` names.
const SERVER_ALIAS: &str = "uprtcd-load";

/// How to start uprtcd.
#[derive(Debug, Clone)]
pub struct UprtcdOptions {
    pub binary: PathBuf,
    pub workers: usize,
    /// `uring` or `epoll`.
    pub backend: String,
    /// Where media sockets bind and what the candidates announce.
    pub media_ip: IpAddr,
    /// The cores uprtcd may use; it pins its workers to the highest-numbered of them.
    pub cores: Vec<usize>,
}

/// What makes a server a node of a cluster. Its API and client listeners bind on its
/// `media_ip` too, as if it had a machine of its own (127.0.0.1, 127.0.0.2, ...).
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Its `--server-alias`, unique in the cluster.
    pub alias: String,
    /// The cluster's Redis, `redis://host:port/`.
    pub redis_url: String,
    /// The app secret every node of the cluster shares.
    pub secret: String,
}

/// An app secret nobody else knows, so that no other local user can drive the server while it
/// runs.
pub fn random_secret() -> Result<String, LoadError> {
    Ok(uprtcd_dataplane::ice::IceCredentials::generate()
        .map_err(|e| LoadError::Setup(format!("a random secret: {e}")))?
        .pwd()
        .to_owned())
}

/// One worker's counters from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerMetrics {
    pub packets_out: u64,
    pub packets_in: u64,
    pub longest_turn: Duration,
    pub drops: u64,
}

/// A running uprtcd, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Uprtcd {
    child: Child,
    options: UprtcdOptions,
    /// Its `--server-alias`.
    alias: String,
    data_dir: PathBuf,
    api: String,
    client: String,
    secret: String,
    agent: ureq::Agent,
    worker_tids: Vec<u32>,
}

impl Uprtcd {
    /// Starts it for the benchmarks: every load client comes from one address, as viewers
    /// behind one NAT would, so the cap on transports still connecting per address is lifted
    /// (a join storm has hundreds connecting at once).
    pub fn start(options: UprtcdOptions) -> Result<Self, LoadError> {
        Self::start_benched(options, None)
    }

    /// Starts it as [`Self::start`] does, as node `node` of a cluster.
    pub fn start_node(options: UprtcdOptions, node: ClusterNode) -> Result<Self, LoadError> {
        Self::start_benched(options, Some(node))
    }

    fn start_benched(options: UprtcdOptions, node: Option<ClusterNode>) -> Result<Self, LoadError> {
        let alias = node.as_ref().map_or(SERVER_ALIAS, |node| &node.alias);
        let config = std::env::temp_dir().join(format!("uprtcd-load-{}-{alias}.toml", std::process::id()));
        let mut text = String::from("[client]\nmax_pending_transports_per_ip = 1000000\n");
        if let Some(node) = &node {
            text.push_str(&format!("[cluster]\nredis_url = \"{}\"\n", node.redis_url));
        }
        std::fs::write(&config, text).map_err(LoadError::io(format!("write {}", config.display())))?;
        let started = Self::launch(options, Some(&config), node);
        let _ = std::fs::remove_file(&config);
        started
    }

    /// Starts it with `config_file` (uprtcd's TOML) under the flags [`Self::start`] passes.
    pub fn start_configured(options: UprtcdOptions, config_file: Option<&Path>) -> Result<Self, LoadError> {
        Self::launch(options, config_file, None)
    }

    fn launch(
        options: UprtcdOptions,
        config_file: Option<&Path>,
        node: Option<ClusterNode>,
    ) -> Result<Self, LoadError> {
        let alias = node.as_ref().map_or(SERVER_ALIAS, |node| &node.alias).to_owned();
        let data_dir =
            std::env::temp_dir().join(format!("uprtcd-load-{}-{alias}-{}", std::process::id(), options.backend));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).map_err(LoadError::io(format!("create {}", data_dir.display())))?;
        let secret = match &node {
            Some(node) => node.secret.clone(),
            None => random_secret()?,
        };
        // A cluster node listens on its own address; a server on its own on loopback.
        let listen = if node.is_some() { options.media_ip } else { IpAddr::from([127, 0, 0, 1]) };
        let mut command = Command::new(&options.binary);
        // uprtcd pins its own threads to the cores it may use: give it the whole machine
        // rather than the load generator's own affinity, which it would inherit.
        sys::prepare_child(&mut command, &options.cores)?;
        if let Some(file) = config_file {
            command.arg("--config").arg(file);
        }
        let mut child = command
            .args(["--api-listen", &format!("{listen}:0"), "--client-listen", &format!("{listen}:0")])
            .args(["--announced-ip", &options.media_ip.to_string()])
            .args(["--udp-listen", &format!("{}:0", options.media_ip)])
            .args(["--app-secret", &secret, "--server-alias", &alias])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--workers", &options.workers.to_string(), "--io-backend", &options.backend])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(LoadError::io(format!("start {}", options.binary.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| LoadError::Setup("uprtcd's stderr".into()))?;
        let (api, client) = match await_ready(stderr) {
            Ok(listeners) => listeners,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut server = Self { child, options, alias, data_dir, api, client, secret, agent, worker_tids: Vec::new() };
        let loads = server.call("GET", "/server/cpu/load", Value::Null)?;
        server.worker_tids = loads
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["workPid"].as_u64()).map(|t| t as u32).collect())
            .unwrap_or_default();
        Ok(server)
    }

    /// One REST call: the envelope's `data` when `code` is 0.
    pub fn call(&self, method: &str, path: &str, body: Value) -> Result<Value, LoadError> {
        let uri = format!("http://{}/uprtc/api/v2{path}", self.api);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", format!("key={}", self.secret))
            .header("content-type", "application/json");
        let request = request
            .body(if body.is_null() { Vec::new() } else { body.to_string().into_bytes() })
            .map_err(|e| LoadError::Http { what: uri.clone(), detail: e.to_string() })?;
        let mut response =
            self.agent.run(request).map_err(|e| LoadError::Http { what: uri.clone(), detail: e.to_string() })?;
        let envelope: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| LoadError::Http { what: uri.clone(), detail: e.to_string() })?;
        if envelope["code"] != 0 {
            return Err(LoadError::Refused { what: format!("{method} {path}"), detail: envelope.to_string() });
        }
        Ok(envelope["data"].clone())
    }

    /// `/metrics` as it reads now.
    fn metrics_text(&self) -> Result<String, LoadError> {
        let uri = format!("http://{}/metrics", self.api);
        self.agent
            .get(&uri)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| LoadError::Http { what: uri, detail: e.to_string() })
    }

    /// The series `series` of `/metrics` now, or the family of that name summed over its
    /// labels; 0 when it has neither.
    pub fn metric(&self, series: &str) -> Result<f64, LoadError> {
        Ok(metric(&parse_metrics(&self.metrics_text()?), series).unwrap_or_default())
    }

    /// Each worker's counters, in worker order.
    pub fn metrics(&self) -> Result<Vec<WorkerMetrics>, LoadError> {
        let text = self.metrics_text()?;
        let mut workers = vec![WorkerMetrics::default(); self.worker_tids.len().max(1)];
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let Some(index) = label(name, "worker").and_then(|w| w.parse::<usize>().ok()) else { continue };
            let Some(worker) = workers.get_mut(index) else { continue };
            if name.starts_with("uprtcd_worker_packets_out_total") {
                worker.packets_out = value as u64;
            } else if name.starts_with("uprtcd_worker_packets_in_total") {
                worker.packets_in = value as u64;
            } else if name.starts_with("uprtcd_worker_longest_turn_seconds") {
                worker.longest_turn = Duration::from_secs_f64(value);
            } else if name.starts_with("uprtcd_worker_drops_total") {
                worker.drops += value as u64;
            }
        }
        Ok(workers)
    }

    /// The REST API's and the client listener's `address:port`.
    pub fn api_address(&self) -> &str {
        &self.api
    }

    pub fn client_address(&self) -> &str {
        &self.client
    }

    /// Its private data directory (the store), removed when it stops.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Joins `room` as `peer` with a token from the REST API: the member's signalling session.
    pub fn connect(&self, room: &str, peer: &str) -> Result<Signalling, LoadError> {
        let token = self.call("POST", &format!("/room/{room}/token"), json!({ "peerId": peer }))?;
        let token = token["token"].as_str().unwrap_or_default().to_owned();
        let code = self.invitation_code(room)?;
        self.connect_with_token(code, peer, &token)
    }

    /// Joins the room of invitation code `code` as `peer` with `token`, however it was got.
    pub fn connect_with_token(&self, code: u64, peer: &str, token: &str) -> Result<Signalling, LoadError> {
        let url = format!("ws://{}/{code}?peer={peer}&token={token}", self.client);
        let (socket, _) =
            tungstenite::connect(url.as_str()).map_err(|e| LoadError::Signalling(format!("connect {url}: {e}")))?;
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(EVENT_TIMEOUT)).map_err(LoadError::io("signalling read timeout"))?;
            stream.set_nodelay(true).map_err(LoadError::io("signalling nodelay"))?;
        }
        let mut member = Signalling { socket };
        let joined = member.next_event()?;
        if joined["type"] != "joined" {
            return Err(LoadError::Refused { what: format!("{peer} joining code {code}"), detail: joined.to_string() });
        }
        Ok(member)
    }

    /// The socket backend it was started with.
    pub fn backend(&self) -> &str {
        &self.options.backend
    }

    /// Mirrors live room `room` onto the worker with kernel thread id `worker_tid`.
    pub fn mirror(&self, room: &str, worker_tid: u32) -> Result<(), LoadError> {
        let body = json!({ "serverAlias": self.alias(), "pid": worker_tid });
        self.call("POST", &format!("/room/{room}/live/mirror"), body).map(drop)
    }

    /// Mirrors live room `room` onto the cluster node `alias`, which its audience may then
    /// join.
    pub fn mirror_on_node(&self, room: &str, alias: &str) -> Result<(), LoadError> {
        self.call("POST", &format!("/room/{room}/live/mirror"), json!({ "serverAlias": alias })).map(drop)
    }

    /// Its `--server-alias`.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    fn invitation_code(&self, room: &str) -> Result<u64, LoadError> {
        let data = self.call("GET", &format!("/room/{room}"), Value::Null)?;
        data["invitationCode"]
            .as_u64()
            .ok_or_else(|| LoadError::Refused { what: format!("GET /room/{room}"), detail: data.to_string() })
    }
}

impl Drop for Uprtcd {
    fn drop(&mut self) {
        sys::stop(&mut self.child, STOP_TIMEOUT);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Reads stderr until `uprtcd: ready`; returns the API and client listeners it printed. The
/// rest of stderr is drained by a thread so that the server never blocks on it.
fn await_ready(stderr: std::process::ChildStderr) -> Result<(String, String), LoadError> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.clone()).is_err() {
                // Nobody listens any more: keep draining, print what the server reports.
                eprintln!("{line}");
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let (mut api, mut client, mut log) = (None, None, Vec::new());
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| LoadError::Setup(format!("uprtcd did not become ready:\n{}", log.join("\n"))))?;
        if let Some(a) = line.strip_prefix("uprtcd: api listening on ") {
            api = Some(a.trim().to_owned());
        } else if let Some(a) = line.strip_prefix("uprtcd: client listening on ") {
            client = Some(a.trim().to_owned());
        } else if line.trim() == "uprtcd: ready" {
            break;
        }
        log.push(line);
    }
    match (api, client) {
        (Some(api), Some(client)) => Ok((api, client)),
        _ => Err(LoadError::Setup(format!("uprtcd printed no listeners:\n{}", log.join("\n")))),
    }
}

/// Every `name{labels} value` line of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect()
}

/// `series` exactly, or the family of that name summed over its labels.
pub fn metric(metrics: &BTreeMap<String, f64>, series: &str) -> Option<f64> {
    if let Some(value) = metrics.get(series) {
        return Some(*value);
    }
    let labelled = format!("{series}{{");
    let mut family = metrics.iter().filter(|(name, _)| name.starts_with(&labelled)).peekable();
    family.peek()?;
    Some(family.map(|(_, v)| v).sum())
}

/// The value of `key="..."` in a Prometheus sample name.
fn label<'a>(name: &'a str, key: &str) -> Option<&'a str> {
    let start = name.find(&format!("{key}=\""))? + key.len() + 2;
    let len = name[start..].find('"')?;
    Some(&name[start..start + len])
}

impl Sfu for Uprtcd {
    fn label(&self) -> String {
        format!("uprtcd {} ×{}", self.options.backend, self.options.workers)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn media_threads(&self) -> Vec<u32> {
        self.worker_tids.clone()
    }

    fn client_ip(&self) -> IpAddr {
        self.options.media_ip
    }

    fn create_room(&self, kind: RoomKind, host: &str, invited: &[String]) -> Result<String, LoadError> {
        let data = match kind {
            RoomKind::Live => self.call("POST", "/room/live", json!({ "masterId": host }))?,
            RoomKind::Conversation { max_members } => self.call(
                "POST",
                "/room/convo",
                json!({ "masterId": host, "memberIds": invited, "maxMemberNum": max_members }),
            )?,
        };
        data["roomId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LoadError::Refused { what: "a room".into(), detail: data.to_string() })
    }

    fn join(&self, room: &str, peer: &str) -> Result<Box<dyn Member>, LoadError> {
        Ok(Box::new(self.connect(room, peer)?))
    }
}

/// A member's signalling connection. Dropped, its socket closes without a goodbye, as a
/// killed client's does.
#[derive(Debug)]
pub struct Signalling {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Signalling {
    fn send(&mut self, event: Value) -> Result<(), LoadError> {
        self.socket.send(Message::Text(event.to_string().into())).map_err(|e| LoadError::Signalling(e.to_string()))
    }

    fn next_event(&mut self) -> Result<Value, LoadError> {
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text).map_err(|e| LoadError::Signalling(e.to_string()));
                }
                Ok(Message::Close(_)) => return Err(LoadError::Signalling("the server closed the session".into())),
                Ok(_) => continue,
                Err(e) => return Err(LoadError::Signalling(e.to_string())),
            }
        }
    }

    /// Answers the server's latest `offer`.
    pub fn answer(&mut self, sdp: &str) -> Result<(), LoadError> {
        self.send(json!({ "type": "answer", "sdp": sdp }))
    }

    /// Reads without waiting what came meanwhile, each text frame to `each`; the server's
    /// pings are answered on the way. Returns false once the session has ended.
    pub fn drain(&mut self, mut each: impl FnMut(&str)) -> bool {
        let MaybeTlsStream::Plain(stream) = self.socket.get_ref() else { return true };
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let open = loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => each(&text),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        if let MaybeTlsStream::Plain(stream) = self.socket.get_ref() {
            let _ = stream.set_nonblocking(false);
        }
        open
    }

    /// Ends the session politely: `leave`, then the WebSocket's closing handshake.
    pub fn leave(mut self) -> Result<(), LoadError> {
        self.send(json!({ "type": "leave" }))?;
        self.close()
    }

    /// Closes the WebSocket (its closing handshake) without a `leave`.
    pub fn close(mut self) -> Result<(), LoadError> {
        self.socket.close(None).map_err(|e| LoadError::Signalling(e.to_string()))?;
        // Until the server's close frame (or its end of the stream) answers ours.
        while self.socket.read().is_ok() {}
        Ok(())
    }

    /// The next event of `wanted` type; presence and track announcements on the way are
    /// skipped, an `error` event is the SFU's refusal.
    pub fn expect(&mut self, wanted: &str) -> Result<Value, LoadError> {
        loop {
            let event = self.next_event()?;
            match event["type"].as_str() {
                Some(t) if t == wanted => return Ok(event),
                Some("error") => return Err(LoadError::Refused { what: wanted.into(), detail: event.to_string() }),
                _ => continue,
            }
        }
    }
}

impl Member for Signalling {
    fn publish(&mut self, offer: &str) -> Result<String, LoadError> {
        self.send(json!({ "type": "publish", "sdp": offer }))?;
        let answer = self.expect("answer")?;
        Ok(answer["sdp"].as_str().unwrap_or_default().to_owned())
    }

    fn subscribe(&mut self, answer: &mut dyn FnMut(&str) -> Result<String, LoadError>) -> Result<String, LoadError> {
        self.send(json!({ "type": "subscribe" }))?;
        let offer = self.expect("offer")?;
        let offer = offer["sdp"].as_str().unwrap_or_default().to_owned();
        let answer = answer(&offer)?;
        self.answer(&answer)?;
        self.expect("subscribed")?;
        Ok(offer)
    }

    fn tick(&mut self) {
        // Events that came meanwhile (presence, offers for tracks a scenario does not add) are
        // read so the server's writes never back up.
        self.drain(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_series_and_by_family() {
        let text = "# HELP x\nuprtcd_rooms 3\nuprtcd_worker_transports{worker=\"0\",tid=\"1\"} 2\n\
                    uprtcd_worker_transports{worker=\"1\",tid=\"2\"} 5\n\
                    uprtcd_http_connections{listener=\"api\"} 1\n";
        let metrics = parse_metrics(text);
        assert_eq!(metric(&metrics, "uprtcd_rooms"), Some(3.0));
        assert_eq!(metric(&metrics, "uprtcd_worker_transports"), Some(7.0));
        assert_eq!(metric(&metrics, "uprtcd_http_connections{listener=\"api\"}"), Some(1.0));
        assert_eq!(metric(&metrics, "uprtcd_demo_rooms"), None);
    }
}
