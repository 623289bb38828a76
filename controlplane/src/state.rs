//! The control plane's shared state: settings, the registry behind one lock, the store it
//! commits to, and the worker loads.
//!
//! Rule: every mutation goes through [`AppState::write`], which runs on the blocking pool,
//! applies the change, commits it durably and only then lets the handler answer. A commit
//! that fails reloads the registry from the store and answers 10000, so what clients were
//! told always matches what is on disk.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::worker::{WorkerHandle, Workers};

use crate::cluster::{Cluster, ClusterSettings};
use crate::demo::guard::{DemoGuard, DemoLimits};
use crate::envelope::{ApiCode, ApiError, BodyLimit};
use crate::events::Lifecycle;
use crate::files::FileStats;
use crate::load::WorkerLoads;
use crate::playback::Playbacks;
use crate::recording::{RecordingSettings, Recordings};
use crate::registry::Registry;
use crate::signalling::hub::Hub;
use crate::store::{Store, StoreHealth};

/// How long a REST call or signalling step waits for a worker's reply.
const WORKER_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the control plane announces and enforces; fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `serverAlias`.
    pub alias: String,
    /// `serverAddress`: where business servers reach the API.
    pub api_address: String,
    /// `serverUrl`: where clients connect (`ws://ip:port/`, `wss://` when the client listener
    /// has TLS, a DNS name for the address with `client.public_host`); they append the
    /// invitation code.
    pub client_url: String,
    /// `serverUrl6`, or empty when no IPv6 address is announced.
    pub client_url6: String,
    /// The address put into ICE candidates.
    pub announced_ip: std::net::IpAddr,
    pub app_secret: String,
    pub max_body_bytes: usize,
    pub max_upload_bytes: u64,
    /// A live room's audience opens a mirror on another worker when every worker serving it
    /// is at least this busy (CPU %); 0 never opens one by itself.
    pub mirror_load_percent: f64,
    /// A live room's audience beyond this many on its origin node is sent to mirrors on
    /// other nodes (`rooms.max_audience_per_node`); 0: no cap.
    pub max_audience_per_node: usize,
    /// Where uploaded and recorded files are kept.
    pub recordings_dir: PathBuf,
    /// How server-side recordings are made.
    pub recording: RecordingSettings,
    /// Playback rooms open at once at most (`recording.max_playbacks`).
    pub max_playbacks: usize,
    /// Demo mode and its limits, or `None` when it is off: `/demo` and `/demo/join` let
    /// anyone create demo rooms and join them (see [`crate::demo`]).
    pub demo: Option<DemoLimits>,
    /// A signalling client that answers no ping (nor sends anything) for this long is gone:
    /// its session ends and it leaves the room.
    pub ping_timeout: Duration,
    /// A write to a signalling client that takes longer (the client stopped reading) ends
    /// its session.
    pub write_timeout: Duration,
    /// Transports one client address may have opened and not yet connected.
    pub max_pending_transports_per_ip: usize,
    /// Finished records (status 6 or 7) older than this are removed with their files;
    /// `None`: kept for good (`recording.retention_days`).
    pub retention: Option<Duration>,
    /// The cluster this node joins (`[cluster]`), or `None` for a single node.
    pub cluster: Option<ClusterSettings>,
    /// How long a client upload URL is accepted (`recording.client_upload_ttl_ms`).
    pub client_upload_ttl: Duration,
    /// A client upload connection that sends nothing this long is closed
    /// (`recording.client_upload_idle_timeout_ms`).
    pub client_upload_idle_timeout: Duration,
}

impl Settings {
    /// How often a signalling session pings its client: three pings per timeout, so that
    /// one lost pong is no reason to drop a client.
    pub fn ping_interval(&self) -> Duration {
        self.ping_timeout / 3
    }

    /// How long a new connection of a peer waits for the peer's existing session to show
    /// it is alive before replacing it.
    pub fn probe_timeout(&self) -> Duration {
        PROBE_TIMEOUT.min(self.ping_timeout)
    }
}

/// Long enough for a pong over a poor mobile link; short enough for a reconnecting phone.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Shared {
    settings: Settings,
    registry: Mutex<Registry>,
    store: Store,
    loads: Arc<WorkerLoads>,
    hub: Hub,
    playbacks: Playbacks,
    lifecycle: Lifecycle,
    demo_guard: DemoGuard,
    recordings: Recordings,
    files: FileStats,
    workers: Arc<Workers>,
    cluster: Option<Cluster>,
}

/// Cheap to clone; one per router.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(
        settings: Settings,
        registry: Registry,
        store: Store,
        loads: Arc<WorkerLoads>,
        workers: Arc<Workers>,
        cluster: Option<Cluster>,
    ) -> Self {
        let recordings = Recordings::new(settings.recording.clone(), settings.recordings_dir.clone());
        Self(Arc::new(Shared {
            settings,
            registry: Mutex::new(registry),
            store,
            loads,
            hub: Hub::default(),
            playbacks: Playbacks::default(),
            lifecycle: Lifecycle::default(),
            demo_guard: DemoGuard::default(),
            recordings,
            files: FileStats::default(),
            workers,
            cluster,
        }))
    }

    /// Where worker `index` receives media and the fingerprint its transports present.
    pub fn worker_endpoint(&self, index: usize) -> Option<(std::net::SocketAddr, CertificateFingerprint)> {
        let worker = self.0.workers.handles().get(index)?;
        Some((worker.udp_address()?, worker.fingerprint()))
    }

    /// Sends a command to worker `index` and awaits its reply, which comes on the request's
    /// own channel within one loop turn of a healthy worker; a full queue (10000) or a
    /// worker that does not answer in time fails this caller only.
    pub async fn request_worker(&self, index: usize, command: Command) -> Result<Reply, ApiError> {
        let worker = self.0.workers.handles().get(index).ok_or_else(|| ApiError::code(ApiCode::NoWorker))?;
        let failed = |e: uprtcd_dataplane::Error| ApiError::system(format!("worker {index}: {e}"));
        let pending = worker.send(command).map_err(failed)?;
        match tokio::time::timeout(WORKER_REPLY_TIMEOUT, pending.recv()).await {
            Ok(reply) => reply.map_err(failed),
            Err(_) => Err(failed(uprtcd_dataplane::Error::ReplyTimeout)),
        }
    }

    /// The worker a `workPid` of `/server/cpu/load` names (10002 for any other number);
    /// `None` for none given.
    pub fn worker_of_pid(&self, pid: Option<i64>) -> Result<Option<usize>, ApiError> {
        pid.map(|pid| {
            self.loads()
                .index_of(pid)
                .ok_or_else(|| ApiError::invalid(format!("pid {pid} is no worker of this server")))
        })
        .transpose()
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn loads(&self) -> &WorkerLoads {
        &self.0.loads
    }

    pub fn store_health(&self) -> StoreHealth {
        self.0.store.health()
    }

    /// The connected clients' signalling sessions.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// The playback rooms whose ffmpeg runs or waits for its start.
    pub fn playbacks(&self) -> &Playbacks {
        &self.0.playbacks
    }

    /// How transports and sessions ended.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.0.lifecycle
    }

    /// Demo mode's join buckets and counters.
    pub fn demo_guard(&self) -> &DemoGuard {
        &self.0.demo_guard
    }

    /// Server-side recordings: those capturing, and the processing queue.
    pub fn recordings(&self) -> &Recordings {
        &self.0.recordings
    }

    /// The recording files' counters and the client uploads in progress.
    pub fn files(&self) -> &FileStats {
        &self.0.files
    }

    /// The node's cluster side, when it is configured for one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.0.cluster.as_ref()
    }

    pub fn worker_handles(&self) -> &[WorkerHandle] {
        self.0.workers.handles()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave half-applied state behind that the
        // store does not also have: the next write commits or reloads. So poison is ignored.
        self.0.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh identity for a server that has made no room or recording yet (its tag turned
    /// out to be another node's): stored, then taken by the registry. Its tag, or `None` when
    /// the server has data (its ids must keep their tag) or the store refuses.
    pub fn fresh_identity(&self) -> Option<String> {
        let mut registry = self.lock();
        if !registry.is_empty() {
            return None;
        }
        let identity = crate::ids::ServerIdentity::generate();
        if let Err(e) = self.0.store.replace_identity(&identity) {
            tracing::error!(error = %e, "cannot store a fresh identity");
            return None;
        }
        let tag = identity.tag().to_owned();
        registry.replace_identity(identity);
        Some(tag)
    }

    /// Reads the registry.
    pub fn read<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        f(&self.lock())
    }

    /// Applies `op` and commits what it changed before returning.
    pub async fn write<R, F>(&self, op: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Registry) -> Result<R, ApiError> + Send + 'static,
    {
        let state = self.clone();
        tokio::task::spawn_blocking(move || state.write_now(op))
            .await
            .map_err(|e| ApiError::system(format!("registry task failed: {e}")))?
    }

    fn write_now<R>(&self, op: impl FnOnce(&mut Registry) -> Result<R, ApiError>) -> Result<R, ApiError> {
        let mut registry = self.lock();
        let result = op(&mut registry);
        let changes = registry.take_changes();
        if changes.is_empty() {
            return result;
        }
        if let Err(e) = self.0.store.commit(&registry, &changes) {
            tracing::error!(error = %e, "cannot commit to the store; reloading the registry from it");
            match self.0.store.load() {
                Ok(contents) => registry.reload(contents),
                Err(e) => tracing::error!(error = %e, "cannot reload the registry from the store"),
            }
            return Err(ApiError::system(format!("the change was not stored: {e}")));
        }
        result
    }
}

impl BodyLimit for AppState {
    fn max_body_bytes(&self) -> usize {
        self.0.settings.max_body_bytes
    }
}
