//! Server endpoints: load, room count, recycling and blocked users.
#![forbid(unsafe_code)]

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::envelope::{Answer, ApiCode, ApiError, ApiPath, ApiResult, Empty, Envelope, done};
use crate::ids::PeerId;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ServerInfo {
    name: String,
    server_alias: String,
    server_address: String,
    server_url: String,
}

/// The least loaded server: in a cluster, the SERVING node with the least worker CPU and
/// clients (a node just chosen counts as busier for two seconds); a single node answers
/// itself.
#[utoipa::path(get, path = "/server/miniLoad", tag = "server",
    responses((status = 200, body = Envelope<ServerInfo>, description = "50015 when no node takes rooms")))]
pub(super) async fn mini_load(State(state): State<AppState>) -> ApiResult<ServerInfo> {
    if let Some(cluster) = state.cluster()
        && let Some(node) = cluster.choose(|_| true).await
    {
        return Ok(Answer(ServerInfo {
            name: String::new(),
            server_alias: node.alias,
            server_address: node.api_address,
            server_url: node.client_url,
        }));
    }
    if state.read(|reg| reg.recycling()) {
        return Err(ApiError::new(ApiCode::NoWorker, "this server is being recycled and no other node takes rooms"));
    }
    let s = state.settings();
    Ok(Answer(ServerInfo {
        name: String::new(),
        server_alias: s.alias.clone(),
        server_address: s.api_address.clone(),
        server_url: s.client_url.clone(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RoomNum {
    num: usize,
}

/// Open rooms on this server.
#[utoipa::path(get, path = "/server/room/num", tag = "server", responses((status = 200, body = Envelope<RoomNum>)))]
pub(super) async fn room_num(State(state): State<AppState>) -> ApiResult<RoomNum> {
    Ok(Answer(RoomNum { num: state.read(|reg| reg.room_count()) }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct WorkerCpu {
    /// Kernel thread id of the dataplane worker.
    work_pid: i32,
    /// CPU % over the last second (100 = one core), from the kernel's accounting.
    cpu: u32,
}

/// CPU load of every dataplane worker thread.
#[utoipa::path(get, path = "/server/cpu/load", tag = "server", responses((status = 200, body = Envelope<Vec<WorkerCpu>>)))]
pub(super) async fn cpu_load(State(state): State<AppState>) -> ApiResult<Vec<WorkerCpu>> {
    let loads = state.loads();
    let rows = loads
        .workers()
        .iter()
        .zip(loads.cpu())
        // Rounded to a whole percent, as the spec shows; the value is clamped to 0..=100.
        .map(|(worker, cpu)| WorkerCpu { work_pid: worker.thread_id, cpu: cpu.round() as u32 })
        .collect();
    Ok(Answer(rows))
}

/// Stop taking new rooms; open rooms go on. In a cluster the node is DRAINING for every
/// node at once: `miniLoad` and mirrors leave it out. `/metrics` (`uprtcd_drained`) and the
/// client listener's `/healthz` say when its last room has closed and a stop is safe.
#[utoipa::path(post, path = "/server/recycle", tag = "server", responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn recycle(State(state): State<AppState>) -> ApiResult<Empty> {
    state
        .write(|reg| {
            reg.recycle();
            Ok(())
        })
        .await?;
    crate::cluster::announce(&state).await;
    done()
}

/// Block a user for good: no longer counted, no longer allowed in.
#[utoipa::path(delete, path = "/server/block/peer/{peerId}", tag = "server", params(("peerId" = String, Path)),
    responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn block_peer(State(state): State<AppState>, ApiPath(peer): ApiPath<PeerId>) -> ApiResult<Empty> {
    state
        .write(move |reg| {
            reg.block(peer);
            Ok(())
        })
        .await?;
    done()
}
