//! The Janus driver: a Janus 1.x process of the load generator's own, with the VideoRoom
//! plugin driven through the Janus HTTP API.
//!
//! [`Janus`] owns the child process and its private config folder (both gone when it drops),
//! one Janus session and the one thread that long-polls that session's events. Every member
//! attaches its own plugin handles to that same session: a Janus session is only a container
//! of handles (each handle owns its PeerConnection), so sharing it changes nothing on the
//! media path, while a session per member would cost the load generator a polling thread and
//! a held HTTP connection each — hundreds of them beside the SFU being measured.
//!
//! Rules for callers: a member publishes at most once and subscribes at most once (VideoRoom
//! wants a handle per role, and the driver does not renegotiate); a subscriber sees only
//! publishers whose PeerConnection is up (VideoRoom lists a participant as a publisher from
//! `webrtcup` on), so connect a publisher's transport before others subscribe to it. Members
//! may outlive the [`Janus`] they came from; their calls then fail. Start Janus from a thread
//! that outlives it (see [`Janus::start`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::LoadError;
use crate::sfu::{Member, RoomKind, Sfu};
use crate::sys;

/// The binary, found on `PATH`.
const JANUS_BINARY: &str = "janus";
/// Where distributions install Janus's plugins, transports and the rest, as
/// `<dir>/plugins/libjanus_videoroom.so` and so on.
const LIBRARY_DIRS: [&str; 3] = ["/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus"];
const VIDEOROOM: &str = "janus.plugin.videoroom";
/// How long Janus may take to answer `/janus/info` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a subscriber waits for the room's publishers to be up.
const PUBLISHERS_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Janus may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// For one request, and for the event that answers an asynchronous one. Generous: hundreds of
/// members may be joining at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Janus answers an idle long poll with a keepalive after 30 s; this only catches a hung one.
const POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// Events a long poll may bring back at once.
const POLL_MAX_EVENTS: u32 = 10;
/// A long poll that fails this many times in a row means Janus is gone.
const POLL_FAILURES: u32 = 5;
/// Janus drops a session that nobody polls or keeps alive for this long. The poller keeps ours
/// alive; the margin only covers a poller stalled behind a busy Janus.
const SESSION_TIMEOUT_S: u32 = 300;
const DEBUG_LEVEL: u8 = 3;

/// How to run Janus.
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// The address Janus puts in its SDP (its end of the veth pair).
    pub media_ip: IpAddr,
    /// The address load clients bind to (the other end of the pair).
    pub client_ip: IpAddr,
    /// The only interface Janus gathers ICE candidates on; loopback it never uses.
    pub interface: String,
    /// The HTTP API's port on 127.0.0.1.
    pub http_port: u16,
    /// Janus's shared event loops, each a thread that runs the ICE, DTLS and media of the
    /// handles Janus gives it. Janus's default (0 here) is a loop and a thread per handle:
    /// with hundreds of members that measures the kernel scheduler as much as Janus, and it
    /// is not how Janus is run for scale. A fixed pool the size of `cores` is, and it compares
    /// with uprtcd's workers, one per core.
    pub event_loops: u32,
    /// The cores Janus's process and all its threads are pinned to; empty: not pinned.
    pub cores: Vec<usize>,
}

/// A running Janus with a session of the driver's own.
#[derive(Debug)]
pub struct Janus {
    process: Process,
    version: String,
    event_loops: u32,
    client_ip: IpAddr,
    session: Arc<Session>,
    /// The driver's own VideoRoom handle, for room management; nothing waits on its events.
    driver: u64,
    poller: Option<JoinHandle<()>>,
}

impl Janus {
    /// Writes a config folder, starts Janus on it and waits until its HTTP API answers; then
    /// opens the driver's session and attaches to VideoRoom.
    ///
    /// Janus gets SIGTERM when the thread that calls this exits (`PR_SET_PDEATHSIG`), so call
    /// it from a thread that outlives the returned [`Janus`], such as `main`.
    pub fn start(opts: JanusOptions) -> Result<Janus, LoadError> {
        let folder = std::env::temp_dir().join(format!("uprtcd-janus-{}-{}", std::process::id(), opts.http_port));
        // A folder of this name can only be left over from an earlier process with our pid:
        // the port is ours while we run.
        if folder.exists() {
            fs::remove_dir_all(&folder).map_err(LoadError::io(format!("removing {}", folder.display())))?;
        }
        fs::create_dir(&folder).map_err(LoadError::io(format!("creating {}", folder.display())))?;
        let log = folder.join("janus.log");
        let mut process = Process { child: None, pid: 0, folder, log };
        let library = library_dir()?;
        let config = write_configs(&process.folder, &library, &opts)?;
        let log = File::create(&process.log).map_err(LoadError::io("creating Janus's log"))?;
        let log_err = log.try_clone().map_err(LoadError::io("creating Janus's log"))?;
        let mut command = Command::new(JANUS_BINARY);
        command.arg("-F").arg(&process.folder).arg("-C").arg(&config).stdin(Stdio::null()).stdout(log).stderr(log_err);
        sys::prepare_child(&mut command, &opts.cores)?;
        let child = command.spawn().map_err(LoadError::io(format!("spawning {JANUS_BINARY}")))?;
        process.pid = child.id();
        process.child = Some(child);

        let info_api = Api::new(opts.http_port, Duration::from_secs(1));
        let info = process.wait_for_info(&info_api)?;
        let version = info["version_string"].as_str().unwrap_or("?").to_owned();
        let session =
            Session::create(Api::new(opts.http_port, REQUEST_TIMEOUT), Api::new(opts.http_port, POLL_TIMEOUT))?;
        let driver = session.attach()?;
        let poller = {
            let session = Arc::clone(&session);
            std::thread::Builder::new()
                .name("janus-poll".into())
                .spawn(move || session.poll())
                .map_err(LoadError::io("spawning the Janus event poller"))?
        };
        Ok(Janus {
            process,
            version,
            event_loops: opts.event_loops,
            client_ip: opts.client_ip,
            session,
            driver,
            poller: Some(poller),
        })
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        // Handles dropped from now on need not detach: Janus goes down with all of them.
        self.session.closed.store(true, Ordering::Release);
        self.process.stop();
        // The poller's long poll failed when Janus's HTTP server went away.
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

impl Sfu for Janus {
    fn label(&self) -> String {
        match self.event_loops {
            0 => format!("Janus {} VideoRoom", self.version),
            loops => format!("Janus {} VideoRoom ×{loops}", self.version),
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid
    }

    fn media_threads(&self) -> Vec<u32> {
        Vec::new()
    }

    fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    fn create_room(&self, kind: RoomKind, host: &str, _invited: &[String]) -> Result<String, LoadError> {
        let publishers = match kind {
            RoomKind::Live => 1,
            RoomKind::Conversation { max_members } => max_members.max(1),
        };
        let created = self.session.query(
            self.driver,
            json!({
                "request": "create",
                "description": format!("{host}'s room"),
                "publishers": publishers,
                // No bandwidth cap (REMB), no periodic keyframe requests, no talk detection and
                // no join notices: the load is media forwarding, not Janus's extras.
                "bitrate": 0,
                "fir_freq": 0,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "notify_joining": false,
                "audiolevel_event": false,
                "record": false,
                "permanent": false,
            }),
            "create room",
        )?;
        let room = created["room"].as_u64().ok_or_else(|| unexpected("create room", &created))?;
        Ok(room.to_string())
    }

    fn join(&self, room: &str, peer: &str) -> Result<Box<dyn Member>, LoadError> {
        let room: u64 =
            room.parse().map_err(|_| LoadError::Signalling(format!("{room:?} is not a VideoRoom room id")))?;
        // Handles are attached when a member first publishes or subscribes: without shared
        // event loops each handle is a Janus thread, so an audience member should not pay for
        // a publisher handle it never uses. Checking the room here still fails a bad join at
        // once.
        let exists = self.session.query(self.driver, json!({"request": "exists", "room": room}), "join")?;
        if exists["exists"] != true {
            return Err(LoadError::Refused { what: "join".into(), detail: format!("no room {room}") });
        }
        Ok(Box::new(JanusMember {
            session: Arc::clone(&self.session),
            room,
            peer: peer.to_owned(),
            feed: None,
            publisher: None,
            subscriber: None,
        }))
    }
}

/// The Janus child and its folder.
#[derive(Debug)]
struct Process {
    /// Taken when Janus is stopped.
    child: Option<Child>,
    pid: u32,
    folder: PathBuf,
    log: PathBuf,
}

impl Process {
    /// Polls `/janus/info` until it answers; fails early when Janus exits.
    fn wait_for_info(&mut self, api: &Api) -> Result<Value, LoadError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(LoadError::Setup(format!("Janus exited at start ({status}):\n{}", self.log_tail())));
            }
            match api.get("/info", "Janus info") {
                Ok(info) => return Ok(info),
                Err(e) if Instant::now() >= deadline => {
                    return Err(LoadError::Setup(format!(
                        "Janus did not answer within {START_TIMEOUT:?} ({e}):\n{}",
                        self.log_tail()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if Janus has not exited within [`STOP_TIMEOUT`].
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sys::stop(&mut child, STOP_TIMEOUT);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.folder);
    }
}

/// The folder holding Janus's `plugins/`, `transports/`, `events/` and `loggers/`.
fn library_dir() -> Result<PathBuf, LoadError> {
    let multiarch = format!("/usr/lib/{}-linux-gnu/janus", std::env::consts::ARCH);
    std::iter::once(multiarch.as_str())
        .chain(LIBRARY_DIRS)
        .map(PathBuf::from)
        .find(|dir| dir.join("plugins/libjanus_videoroom.so").exists())
        .ok_or_else(|| LoadError::Setup("no Janus VideoRoom plugin installed (libjanus_videoroom.so)".into()))
}

/// Every module in `dir` but `keep`, as Janus's `disable` lists them: Janus loads every
/// `*.so` it finds, and a stock install has a dozen plugins that would each start threads and
/// read their own configs.
fn all_but(dir: &Path, keep: &str) -> String {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".so") && name != keep)
        .collect();
    names.sort();
    names.join(",")
}

/// Writes janus.jcfg and the configs of the HTTP transport and VideoRoom; returns the path
/// of janus.jcfg.
fn write_configs(folder: &Path, library: &Path, opts: &JanusOptions) -> Result<PathBuf, LoadError> {
    let event_loops = match opts.event_loops {
        0 => String::new(),
        loops => format!("\tevent_loops = {loops}\n"),
    };
    let janus = format!(
        "general: {{\n\
         \tconfigs_folder = \"{folder}\"\n\
         \tplugins_folder = \"{library}/plugins\"\n\
         \ttransports_folder = \"{library}/transports\"\n\
         \tevents_folder = \"{library}/events\"\n\
         \tloggers_folder = \"{library}/loggers\"\n\
         \tlog_to_stdout = true\n\
         \tdebug_level = {DEBUG_LEVEL}\n\
         \tdebug_timestamps = true\n\
         \tdebug_colors = false\n\
         \tinterface = \"{media_ip}\"\n\
         \tsession_timeout = {SESSION_TIMEOUT_S}\n\
         {event_loops}\
         }}\n\
         media: {{\n\
         \trtp_port_range = \"20000-40000\"\n\
         }}\n\
         nat: {{\n\
         \tnice_debug = false\n\
         \tice_lite = true\n\
         \tice_enforce_list = \"{interface}\"\n\
         }}\n\
         plugins: {{\n\tdisable = \"{plugins}\"\n}}\n\
         transports: {{\n\tdisable = \"{transports}\"\n}}\n\
         loggers: {{\n\tdisable = \"{loggers}\"\n}}\n\
         events: {{\n\tbroadcast = false\n}}\n",
        folder = folder.display(),
        library = library.display(),
        media_ip = opts.media_ip,
        interface = opts.interface,
        plugins = all_but(&library.join("plugins"), "libjanus_videoroom.so"),
        transports = all_but(&library.join("transports"), "libjanus_http.so"),
        loggers = all_but(&library.join("loggers"), ""),
    );
    let http = format!(
        "general: {{\n\
         \tjson = \"plain\"\n\
         \tbase_path = \"/janus\"\n\
         \thttp = true\n\
         \tport = {port}\n\
         \tip = \"127.0.0.1\"\n\
         \thttps = false\n\
         }}\n\
         admin: {{\n\
         \tadmin_http = false\n\
         \tadmin_https = false\n\
         }}\n",
        port = opts.http_port,
    );
    // No rooms: the driver creates each one it uses.
    let videoroom = "general: {\n}\n";
    let janus_path = folder.join("janus.jcfg");
    for (path, text) in [
        (janus_path.clone(), janus),
        (folder.join("janus.transport.http.jcfg"), http),
        (folder.join("janus.plugin.videoroom.jcfg"), videoroom.to_owned()),
    ] {
        fs::write(&path, text).map_err(LoadError::io(format!("writing {}", path.display())))?;
    }
    Ok(janus_path)
}

/// Janus's HTTP API at `http://127.0.0.1:<port>/janus`.
#[derive(Debug)]
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl Api {
    fn new(port: u16, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // The API is on loopback: a proxy from the environment must not see it.
            .proxy(None)
            .build()
            .new_agent();
        Self { agent, base: format!("http://127.0.0.1:{port}/janus") }
    }

    fn post(&self, path: &str, body: &Value, what: &str) -> Result<Value, LoadError> {
        Self::read(self.agent.post(format!("{}{path}", self.base)).send_json(body), what)
    }

    fn get(&self, path: &str, what: &str) -> Result<Value, LoadError> {
        Self::read(self.agent.get(format!("{}{path}", self.base)).call(), what)
    }

    /// The reply's JSON; an HTTP failure or a Janus `error` reply as an error.
    fn read(reply: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Result<Value, LoadError> {
        let http = |detail: String| LoadError::Http { what: what.to_owned(), detail };
        let mut reply = reply.map_err(|e| http(e.to_string()))?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.body_mut().read_to_string().unwrap_or_default();
            return Err(http(format!("{status}: {body}")));
        }
        let value: Value = reply.body_mut().read_json().map_err(|e| http(e.to_string()))?;
        if value["janus"] == "error" {
            let error = &value["error"];
            return Err(refused(what, "Janus", &error["code"], &error["reason"]));
        }
        Ok(value)
    }
}

fn refused(what: &str, by: &str, code: &Value, reason: &Value) -> LoadError {
    let reason = reason.as_str().unwrap_or("no reason given");
    LoadError::Refused { what: what.to_owned(), detail: format!("{by} error {code}: {reason}") }
}

fn unexpected(what: &str, reply: &Value) -> LoadError {
    LoadError::Signalling(format!("{what}: unexpected reply from Janus: {reply}"))
}

/// What a VideoRoom reply or event carries: the plugin's data (its errors as errors) and the
/// session description, if any.
#[derive(Debug)]
struct PluginReply {
    data: Value,
    jsep: Value,
}

impl PluginReply {
    fn parse(mut reply: Value, what: &str) -> Result<Self, LoadError> {
        let data = reply["plugindata"]["data"].take();
        if data.is_null() {
            return Err(unexpected(what, &reply));
        }
        if !data["error_code"].is_null() {
            return Err(refused(what, "VideoRoom", &data["error_code"], &data["error"]));
        }
        Ok(Self { data, jsep: reply["jsep"].take() })
    }

    /// The SDP of the description of `kind` (`offer` or `answer`).
    fn sdp(&self, kind: &str, what: &str) -> Result<String, LoadError> {
        match (self.jsep["type"].as_str(), self.jsep["sdp"].as_str()) {
            (Some(k), Some(sdp)) if k == kind => Ok(sdp.to_owned()),
            _ => Err(LoadError::Signalling(format!("{what}: Janus sent no {kind}: {}", self.data))),
        }
    }
}

/// One Janus session, its handles' event routes and the state its poller shares.
#[derive(Debug)]
struct Session {
    api: Api,
    /// Its own agent, whose timeout outlasts Janus's 30 s hold of an idle long poll.
    poll_api: Api,
    path: String,
    transactions: AtomicU64,
    /// Where the poller delivers each handle's events, by handle id.
    routes: Mutex<HashMap<u64, Sender<Value>>>,
    /// Set when Janus is going down or the poller gave up.
    closed: AtomicBool,
}

impl Session {
    fn create(api: Api, poll_api: Api) -> Result<Arc<Self>, LoadError> {
        let reply = api.post("", &json!({"janus": "create", "transaction": "session"}), "create session")?;
        let id = reply["data"]["id"].as_u64().ok_or_else(|| unexpected("create session", &reply))?;
        Ok(Arc::new(Self {
            api,
            poll_api,
            path: format!("/{id}"),
            transactions: AtomicU64::new(0),
            routes: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }))
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<u64, Sender<Value>>> {
        // Every critical section is one map operation, so a panic elsewhere leaves it whole.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn transaction(&self) -> String {
        format!("t{}", self.transactions.fetch_add(1, Ordering::Relaxed))
    }

    /// Attaches a new VideoRoom handle; returns its id.
    fn attach(&self) -> Result<u64, LoadError> {
        let body = json!({"janus": "attach", "plugin": VIDEOROOM, "transaction": self.transaction()});
        let reply = self.api.post(&self.path, &body, "attach")?;
        reply["data"]["id"].as_u64().ok_or_else(|| unexpected("attach", &reply))
    }

    /// Attaches a handle whose events are routed to it.
    fn attach_routed(self: &Arc<Self>) -> Result<Handle, LoadError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LoadError::Signalling("the Janus session's event poll has ended".into()));
        }
        let id = self.attach()?;
        let (sender, events) = mpsc::channel();
        // Before any message is sent on the handle, so none of its events can be missed.
        self.routes().insert(id, sender);
        Ok(Handle { session: Arc::clone(self), path: format!("{}/{id}", self.path), id, events })
    }

    /// Sends a VideoRoom message on `handle`; returns its transaction and Janus's reply.
    fn message(&self, handle: u64, body: Value, jsep: Option<Value>, what: &str) -> Result<(String, Value), LoadError> {
        let transaction = self.transaction();
        let mut message = json!({"janus": "message", "transaction": transaction, "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let reply = self.api.post(&format!("{}/{handle}", self.path), &message, what)?;
        Ok((transaction, reply))
    }

    /// A request VideoRoom answers at once (create, exists, listparticipants): its data.
    fn query(&self, handle: u64, body: Value, what: &str) -> Result<Value, LoadError> {
        let (_, reply) = self.message(handle, body, None, what)?;
        Ok(PluginReply::parse(reply, what)?.data)
    }

    /// The poller: long-polls the session, which also keeps it alive, and hands each event to
    /// the handle it came from. Events of handles nobody routes (the driver's) are dropped.
    fn poll(self: Arc<Self>) {
        let path = format!("{}?maxev={POLL_MAX_EVENTS}", self.path);
        let mut failures = 0;
        while !self.closed.load(Ordering::Acquire) && failures < POLL_FAILURES {
            match self.poll_api.get(&path, "long poll") {
                Ok(Value::Array(events)) => {
                    failures = 0;
                    let routes = self.routes();
                    for event in events {
                        if let Some(route) = event["sender"].as_u64().and_then(|sender| routes.get(&sender)) {
                            // A member that is gone has nobody to tell.
                            let _ = route.send(event);
                        }
                    }
                }
                Ok(other) => {
                    failures += 1;
                    eprintln!("janus: unexpected long poll reply: {other}");
                }
                Err(_) => {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        self.closed.store(true, Ordering::Release);
        // Dropping the senders wakes every waiting member with an error instead of a timeout.
        self.routes().clear();
    }
}

/// A VideoRoom handle of one member, with the events Janus sent it.
#[derive(Debug)]
struct Handle {
    session: Arc<Session>,
    id: u64,
    path: String,
    events: Receiver<Value>,
}

impl Handle {
    /// A request VideoRoom answers at once.
    fn query(&self, body: Value, what: &str) -> Result<Value, LoadError> {
        self.session.query(self.id, body, what)
    }

    /// A request VideoRoom acknowledges and answers later with an event of the same
    /// transaction: waits for that event. Other events on the handle (`webrtcup`, `media`,
    /// other publishers coming and going) are notices nobody waits for.
    fn request(&self, body: Value, jsep: Option<Value>, what: &str) -> Result<PluginReply, LoadError> {
        let (transaction, reply) = self.session.message(self.id, body, jsep, what)?;
        if reply["janus"] != "ack" {
            // Answered at once: only a refusal comes this way.
            PluginReply::parse(reply.clone(), what)?;
            return Err(unexpected(what, &reply));
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(event) if event["transaction"].as_str() == Some(transaction.as_str()) => {
                    return PluginReply::parse(event, what);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(LoadError::Signalling(format!("{what}: no answer from Janus in {REQUEST_TIMEOUT:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LoadError::Signalling(format!("{what}: the Janus session ended")));
                }
            }
        }
    }

    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.session.routes().remove(&self.id);
        if !self.session.closed.load(Ordering::Acquire) {
            // Detaching hangs up the handle's PeerConnection and leaves the room, as closing
            // a browser tab does. A failure leaves the handle to Janus's own cleanup.
            let body = json!({"janus": "detach", "transaction": self.session.transaction()});
            let _ = self.session.api.post(&self.path, &body, "detach");
        }
    }
}

/// A member: a publisher handle once it publishes, a subscriber handle once it subscribes.
#[derive(Debug)]
struct JanusMember {
    session: Arc<Session>,
    room: u64,
    peer: String,
    /// This member's own feed once it publishes, which it does not watch.
    feed: Option<u64>,
    publisher: Option<Handle>,
    subscriber: Option<Handle>,
}

impl Member for JanusMember {
    fn publish(&mut self, offer: &str) -> Result<String, LoadError> {
        if self.publisher.is_some() {
            return Err(LoadError::Setup("a Janus member publishes once".into()));
        }
        let handle = self.session.attach_routed()?;
        // Janus 1.x publishes every m-line of the offer; its `audio`/`video` switches are
        // deprecated, so none are sent.
        let joined = handle.request(
            json!({"request": "joinandconfigure", "ptype": "publisher", "room": self.room, "display": self.peer}),
            Some(json!({"type": "offer", "sdp": offer})),
            "publish",
        )?;
        let answer = joined.sdp("answer", "publish")?;
        self.feed = joined.data["id"].as_u64();
        self.publisher = Some(handle);
        Ok(answer)
    }

    fn subscribe(&mut self, answer: &mut dyn FnMut(&str) -> Result<String, LoadError>) -> Result<String, LoadError> {
        if self.subscriber.is_some() {
            return Err(LoadError::Setup("a Janus member subscribes once".into()));
        }
        let handle = self.session.attach_routed()?;
        // VideoRoom lists a participant as a publisher from its `webrtcup` on, a moment after
        // our side of the handshake ended: wait until every other participant publishes.
        let deadline = Instant::now() + PUBLISHERS_UP_TIMEOUT;
        let feeds: Vec<Value> = loop {
            let listed =
                handle.query(json!({"request": "listparticipants", "room": self.room}), "list participants")?;
            let others: Vec<&Value> = listed["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["id"].as_u64() != self.feed)
                .collect();
            if !others.is_empty() && others.iter().all(|p| p["publisher"] == true) {
                break others.iter().map(|p| json!({"feed": p["id"]})).collect();
            }
            if Instant::now() >= deadline {
                return Err(LoadError::Refused {
                    what: "subscribe".into(),
                    detail: format!("room {} has no connected publisher to watch", self.room),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // One subscription to every feed (Janus 1.x multistream): one PeerConnection, as
        // uprtcd's subscriber has.
        let attached = handle.request(
            json!({"request": "join", "ptype": "subscriber", "room": self.room, "streams": feeds}),
            None,
            "subscribe",
        )?;
        let offer = attached.sdp("offer", "subscribe")?;
        let sdp = answer(&offer)?;
        let started = handle.request(
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": sdp})),
            "start subscription",
        )?;
        if started.data["started"] != "ok" {
            return Err(unexpected("start subscription", &started.data));
        }
        self.subscriber = Some(handle);
        Ok(offer)
    }

    fn tick(&mut self) {
        self.publisher.iter().chain(&self.subscriber).for_each(Handle::drain);
    }
}
