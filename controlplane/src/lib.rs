//! The uprtcd control plane: the REST API v2 for business servers, the authoritative room
//! registry and its embedded store, and the worker load it reports. It runs on its own
//! tokio runtime on the cores the dataplane workers leave free, and never touches a packet.
//!
//! Layering: `envelope` (answer format, codes, extractors) ← `registry` (pure rules) ←
//! `store` (redb) ← `state` (lock + commit-before-answer) ← `api` (axum handlers); `listener`
//! serves the routers on the API and client listeners, with their connection bounds, over TLS
//! with the certificates `tls` keeps.
#![forbid(unsafe_code)]

pub mod api;
pub mod cluster;
pub mod demo;
pub mod envelope;
pub mod events;
pub mod files;
pub mod ids;
pub mod listener;
pub mod load;
pub mod metrics;
pub mod playback;
pub mod recording;
pub mod registry;
pub mod sdp;
pub mod signalling;
pub mod state;
pub mod store;
pub mod tls;
pub mod token;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

use crate::load::WorkerLoads;
use crate::registry::Registry;
use crate::state::{AppState, Settings};
use crate::store::{Store, StoreError};

/// Errors of the control plane's start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("cluster.redis_url: {0}")]
    Cluster(String),
}

/// The file name of the store inside the data dir.
pub const STORE_FILE: &str = "uprtcd.redb";
/// The folder of stored recordings inside the data dir.
pub const RECORDINGS_DIR: &str = "recordings";

/// Opens the store under `data_dir`, loads the registry from it and returns the state the
/// routers share.
pub fn open(
    settings: Settings,
    data_dir: &Path,
    loads: Arc<WorkerLoads>,
    workers: Arc<uprtcd_dataplane::worker::Workers>,
    limits: registry::Limits,
) -> Result<AppState, Error> {
    std::fs::create_dir_all(&settings.recordings_dir)
        .map_err(|source| Error::Folder { path: settings.recordings_dir.display().to_string(), source })?;
    let store = Store::open(&data_dir.join(STORE_FILE))?;
    let identity = store.identity()?;
    let registry = Registry::new(identity, workers.handles().len(), limits, store.load()?);
    let cluster = match &settings.cluster {
        Some(cluster) => Some(
            cluster::Cluster::new(cluster.clone(), settings.alias.clone(), registry.identity().tag().to_owned())
                .map_err(Error::Cluster)?,
        ),
        None => None,
    };
    Ok(AppState::new(settings, registry, store, loads, workers, cluster))
}

/// `ok` while the node takes rooms; once recycled, what is still open, then `drained`
/// when a stop loses nothing. Always 200: a draining node still serves its rooms' clients.
async fn health(State(state): State<AppState>) -> String {
    match state.read(|reg| reg.draining()) {
        None => "ok\n".to_owned(),
        Some((0, 0)) => "drained\n".to_owned(),
        Some((rooms, clients)) => format!("draining: {rooms} rooms, {clients} clients\n"),
    }
}

/// The client listener's router: signalling at `/{invitationCode}`, WHIP and WHEP, client
/// uploads of recordings at `/record`, a health check for load balancers, the JavaScript SDK
/// and the demo page. Static paths win over the
/// `/{code}` capture, so none of them can be taken for an invitation code.
pub fn client_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/uprtc.js", get(demo::sdk))
        .route("/favicon.ico", get(demo::favicon))
        .route("/demo", get(demo::page))
        .route("/demo/join", post(demo::join))
        .route("/record", get(files::client_upload::connect))
        .route("/{code}", get(signalling::connect))
        .merge(signalling::whip::routes())
        .with_state(state)
}
