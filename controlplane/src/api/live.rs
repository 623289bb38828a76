//! Live-room endpoints: creation, co-hosts, merge groups, merged-track pause/resume and
//! mirrors across this server's workers.
#![forbid(unsafe_code)]

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rooms::{CommonRoomFields, CreatedRoom, open_room};
use crate::envelope::{Answer, ApiCode, ApiError, ApiJson, ApiPath, ApiResult, Empty, Envelope, done};
use crate::ids::{PeerId, RoomId, TrackId};
use crate::registry::{CohostKind, LiveMember, NewRoomKind, Protocol};
use crate::signalling;
use crate::state::AppState;

const DEFAULT_CO_HOST_BITRATE: u64 = 3_000_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateLive {
    master_id: PeerId,
    /// A roomId to reuse (see the roomId rules); an id this server did not make gets a new one.
    room_id: Option<RoomId>,
    /// 0 UDP, 1 TCP, 2 both preferring UDP, 3 both preferring TCP.
    #[schema(value_type = Option<u8>, minimum = 0, maximum = 3)]
    protocol: Option<Protocol>,
    /// Bits per second; default 600000.
    min_bitrate: Option<u64>,
    /// Bits per second; default 3000000.
    max_bitrate: Option<u64>,
}

/// Create a live room: the master broadcasts, everyone else watches until made a co-host.
#[utoipa::path(post, path = "/room/live", tag = "live", request_body = CreateLive,
    responses((status = 200, body = Envelope<CreatedRoom>)))]
pub(super) async fn create_live(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateLive>,
) -> ApiResult<CreatedRoom> {
    let common = CommonRoomFields {
        room_id: body.room_id,
        protocol: body.protocol,
        min_bitrate: body.min_bitrate,
        max_bitrate: body.max_bitrate,
    };
    let new = common.into_new_room(body.master_id, NewRoomKind::Live)?;
    open_room(state, new).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewMirror {
    /// The server to hold the mirror; this node knows only itself.
    server_alias: String,
    /// A `workPid` of `/server/cpu/load`; default: the least loaded worker.
    pid: Option<i64>,
}

/// Mirror a live room's audience onto another worker.
#[utoipa::path(post, path = "/room/{roomId}/live/mirror", tag = "live", request_body = NewMirror,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn add_mirror(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<NewMirror>,
) -> ApiResult<Empty> {
    if body.server_alias != state.settings().alias {
        return add_remote_mirror(&state, id, body).await;
    }
    let worker = state.worker_of_pid(body.pid)?;
    let cpu = state.loads().cpu();
    state.write(move |reg| reg.add_mirror(&id, worker, &cpu)).await?;
    done()
}

/// A mirror on another node of the cluster: opened there (the node must be SERVING), then
/// recorded here and fed for as long as the room lives.
async fn add_remote_mirror(state: &AppState, id: RoomId, body: NewMirror) -> ApiResult<Empty> {
    let alias = body.server_alias;
    let unknown = || {
        ApiError::new(
            ApiCode::NoWorker,
            format!("no server {alias:?} takes mirrors: it is not a live, SERVING node of the cluster"),
        )
    };
    let cluster = state.cluster().ok_or_else(unknown)?;
    let node = cluster.node(&alias).filter(|node| !node.draining).ok_or_else(unknown)?;
    crate::cluster::mirror::mirror_on(state, &id, &node, body.pid, false).await?;
    done()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MirrorInfo {
    name: String,
    server_url: String,
    server_url6: String,
    server_address: String,
    server_alias: String,
    /// The worker thread that holds the mirror.
    work_pid: i32,
}

/// The mirrors of a live room.
#[utoipa::path(get, path = "/room/{roomId}/live/mirrors", tag = "live", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Vec<MirrorInfo>>)))]
pub(super) async fn list_mirrors(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
) -> ApiResult<Vec<MirrorInfo>> {
    let (mirrors, remote) =
        state.read(|reg| reg.live_room(&id).map(|room| (room.mirrors.clone(), room.remote_mirrors.clone())))?;
    let s = state.settings();
    let workers = state.loads().workers();
    let here = mirrors.into_iter().filter_map(|index| workers.get(index).map(|w| (index, w.thread_id))).map(
        |(index, work_pid)| MirrorInfo {
            name: format!("worker-{index}"),
            server_url: s.client_url.clone(),
            server_url6: s.client_url6.clone(),
            server_address: s.api_address.clone(),
            server_alias: s.alias.clone(),
            work_pid,
        },
    );
    // A mirror node that is gone for now is listed still: its mirror comes back with it.
    let elsewhere = remote.into_iter().filter(|mirror| !mirror.feed).map(|mirror| {
        let node = state.cluster().and_then(|cluster| cluster.node(&mirror.alias));
        MirrorInfo {
            name: mirror.alias.clone(),
            server_url: node.as_ref().map(|n| n.client_url.clone()).unwrap_or_default(),
            server_url6: node.as_ref().map(|n| n.client_url6.clone()).unwrap_or_default(),
            server_address: node.as_ref().map(|n| n.api_address.clone()).unwrap_or_default(),
            server_alias: mirror.alias,
            work_pid: mirror.work_pid,
        }
    });
    Ok(Answer(here.chain(elsewhere).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewLiveMember {
    peer_id: PeerId,
    /// `audio` (default) or `video` (video implies audio).
    #[schema(value_type = Option<String>)]
    kind: Option<CohostKind>,
    /// Bits per second; default 3000000.
    max_bitrate: Option<u64>,
}

/// Make an audience member a co-host who may publish.
#[utoipa::path(post, path = "/room/{roomId}/live/member", tag = "live", request_body = NewLiveMember,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn add_live_member(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<NewLiveMember>,
) -> ApiResult<Empty> {
    let max_bitrate = body.max_bitrate.unwrap_or(DEFAULT_CO_HOST_BITRATE);
    if max_bitrate == 0 {
        return Err(ApiError::invalid("maxBitrate must be positive"));
    }
    let member = LiveMember { peer: body.peer_id, kind: body.kind.unwrap_or(CohostKind::Audio), max_bitrate };
    state.write(move |reg| reg.add_live_member(&id, member)).await?;
    done()
}

/// The co-hosts of a live room, in the order they were added.
#[utoipa::path(get, path = "/room/{roomId}/live/members", tag = "live", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Vec<String>>)))]
pub(super) async fn list_live_members(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
) -> ApiResult<Vec<PeerId>> {
    Ok(Answer(state.read(|reg| reg.live_members(&id))?))
}

/// Take a co-host back to the audience.
#[utoipa::path(delete, path = "/room/{roomId}/live/member/{peerId}", tag = "live",
    params(("roomId" = String, Path), ("peerId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn remove_live_member(
    State(state): State<AppState>,
    ApiPath((id, peer)): ApiPath<(RoomId, PeerId)>,
) -> ApiResult<Empty> {
    let (room, member) = (id.clone(), peer.clone());
    state.write(move |reg| reg.remove_live_member(&room, &member)).await?;
    state.hub().send(&id, |p| p == &peer, &signalling::unpublished_event());
    done()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct OtherRoom {
    /// The other live room.
    room_id: RoomId,
}

/// Link another live room with this one: every audience of the group sees every host.
#[utoipa::path(post, path = "/room/{roomId}/live/merge", tag = "live", request_body = OtherRoom,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn merge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<OtherRoom>,
) -> ApiResult<Empty> {
    if crate::cluster::merge::in_cluster(&state) {
        crate::cluster::merge::merge(&state, &id, &body.room_id).await?;
        return done();
    }
    let affected = state.read(|reg| [reg.visible_rooms(&id), reg.visible_rooms(&body.room_id)].concat());
    let room = id.clone();
    state.write(move |reg| reg.merge(&room, &body.room_id)).await?;
    signalling::announce_merge_change(&state, &affected);
    done()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MergedRoom {
    room_id: RoomId,
    server_alias: String,
    server_address: String,
}

/// The other rooms of this room's merge group.
#[utoipa::path(get, path = "/room/{roomId}/live/merge", tag = "live", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Vec<MergedRoom>>)))]
pub(super) async fn list_merged(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
) -> ApiResult<Vec<MergedRoom>> {
    let merged = state.read(|reg| reg.live_room(&id).and_then(|_| reg.merged_with(&id)))?;
    Ok(Answer(
        merged
            .into_iter()
            .map(|room_id| {
                let (server_alias, server_address) = crate::cluster::merge::location(&state, &room_id);
                MergedRoom { room_id, server_alias, server_address }
            })
            .collect(),
    ))
}

/// The host takes its room out of the merge group.
#[utoipa::path(post, path = "/room/{roomId}/live/master/{peerId}/separate", tag = "live",
    params(("roomId" = String, Path), ("peerId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn separate_by_host(
    State(state): State<AppState>,
    ApiPath((id, host)): ApiPath<(RoomId, PeerId)>,
) -> ApiResult<Empty> {
    if crate::cluster::merge::in_cluster(&state) {
        crate::cluster::merge::separate(&state, &id, &id, Some(&host)).await?;
        return done();
    }
    let affected = state.read(|reg| reg.visible_rooms(&id));
    state.write(move |reg| reg.separate_by_host(&id, &host)).await?;
    signalling::announce_merge_change(&state, &affected);
    done()
}

/// Take another room out of this room's merge group.
#[utoipa::path(post, path = "/room/{roomId}/live/separate", tag = "live", request_body = OtherRoom,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn separate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<OtherRoom>,
) -> ApiResult<Empty> {
    if crate::cluster::merge::in_cluster(&state) {
        crate::cluster::merge::separate(&state, &id, &body.room_id, None).await?;
        return done();
    }
    let affected = state.read(|reg| reg.visible_rooms(&id));
    state.write(move |reg| reg.separate(&id, &body.room_id)).await?;
    signalling::announce_merge_change(&state, &affected);
    done()
}

/// Pause or resume one merged host's track for this room's audience.
#[utoipa::path(post, path = "/room/{roomId}/live/{action}/mergeTrack/{trackId}", tag = "live",
    params(("roomId" = String, Path), ("action" = String, Path, description = "pause or resume"), ("trackId" = String, Path)),
    responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn merge_track(
    State(state): State<AppState>,
    ApiPath((id, action, track)): ApiPath<(RoomId, String, TrackId)>,
) -> ApiResult<Empty> {
    if action != "pause" && action != "resume" {
        return Err(ApiError::invalid(format!("action must be pause or resume, not {action:?}")));
    }
    let merged = state.read(|reg| reg.merged_rooms(&id))?;
    if !state.hub().publishes(&merged, &track) {
        return Err(ApiError::new(ApiCode::NoMedia, format!("no room merged with {id} publishes track {track}")));
    }
    let paused = action == "pause";
    signalling::pause_for_audience(&state, &id, &track, paused).await;
    crate::cluster::mirror::pause_at_mirrors(&state, &id, &track, paused).await?;
    done()
}
