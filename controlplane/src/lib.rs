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
    Ok(AppState::new(settings, registry, store, loads, workers))
}

/// The client listener's router: signalling at `/{invitationCode}`, WHIP and WHEP, client
/// uploads of recordings at `/record`, a health check for load balancers, the JavaScript SDK
/// and the demo page. Static paths win over the
/// `/{code}` capture, so none of them can be taken for an invitation code.
pub fn client_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/uprtc.js", get(demo::sdk))
        .route("/favicon.ico", get(demo::favicon))
        .route("/demo", get(demo::page))
        .route("/demo/join", post(demo::join))
        .route("/record", get(files::client_upload::connect))
        .route("/{code}", get(signalling::connect))
        .merge(signalling::whip::routes())
        .with_state(state)
}
