//! Room endpoints shared by conversation and live rooms, and room creation's common part.
#![forbid(unsafe_code)]

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::envelope::{Answer, ApiError, ApiJson, ApiPath, ApiResult, Empty, Envelope, done};
use crate::ids::{PeerId, RoomId};
use crate::registry::{NewRoom, NewRoomKind, Protocol, Room, RoomKind};
use crate::signalling;
use crate::state::AppState;

const DEFAULT_MIN_BITRATE: u64 = 600_000;
const DEFAULT_MAX_BITRATE: u64 = 3_000_000;

/// The creation fields both room kinds share, as each request body carries them.
#[derive(Debug)]
pub(super) struct CommonRoomFields {
    pub(super) room_id: Option<RoomId>,
    pub(super) protocol: Option<Protocol>,
    pub(super) min_bitrate: Option<u64>,
    pub(super) max_bitrate: Option<u64>,
}

impl CommonRoomFields {
    pub(super) fn into_new_room(self, master: PeerId, kind: NewRoomKind) -> Result<NewRoom, ApiError> {
        let max_bitrate = self.max_bitrate.unwrap_or(DEFAULT_MAX_BITRATE);
        if max_bitrate == 0 {
            return Err(ApiError::invalid("maxBitrate must be positive"));
        }
        Ok(NewRoom {
            master,
            requested_id: self.room_id,
            protocol: self.protocol.unwrap_or(Protocol::Udp),
            min_bitrate: self.min_bitrate.unwrap_or(DEFAULT_MIN_BITRATE),
            max_bitrate,
            kind,
            demo: false,
        })
    }
}

/// Fields are listed in each body rather than flattened in: serde's `flatten` buffers the
/// body and would lose the name of a field that fails to decode.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateConvo {
    master_id: PeerId,
    member_ids: Vec<PeerId>,
    /// 0 = unlimited; default from the server's configuration.
    max_member_num: Option<u32>,
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

/// Where the new room is and how clients reach it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreatedRoom {
    room_id: RoomId,
    /// Clients connect to `serverUrl + invitationCode`.
    server_url: String,
    server_url6: String,
    server_address: String,
    server_alias: String,
    invitation_code: u32,
}

impl CreatedRoom {
    pub(super) fn of(state: &AppState, room: &Room) -> Self {
        let s = state.settings();
        Self {
            room_id: room.id.clone(),
            server_url: s.client_url.clone(),
            server_url6: s.client_url6.clone(),
            server_address: s.api_address.clone(),
            server_alias: s.alias.clone(),
            invitation_code: room.invitation_code,
        }
    }
}

/// Opens a room and answers where it is.
pub(super) async fn open_room(state: AppState, new: NewRoom) -> ApiResult<CreatedRoom> {
    let room = state.write(move |reg| reg.create(new).cloned()).await?;
    Ok(Answer(CreatedRoom::of(&state, &room)))
}

/// Create a conversation room: only invited users may join.
#[utoipa::path(post, path = "/room/convo", tag = "rooms", request_body = CreateConvo,
    responses((status = 200, body = Envelope<CreatedRoom>, description = "50002 when this master's room with that id is open; 50015 while recycling; 10003 for a blocked master")))]
pub(super) async fn create_convo(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateConvo>,
) -> ApiResult<CreatedRoom> {
    let kind = NewRoomKind::Convo { members: body.member_ids, max_members: body.max_member_num };
    let common = CommonRoomFields {
        room_id: body.room_id,
        protocol: body.protocol,
        min_bitrate: body.min_bitrate,
        max_bitrate: body.max_bitrate,
    };
    let new = common.into_new_room(body.master_id, kind)?;
    open_room(state, new).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MemberIds {
    member_ids: Vec<PeerId>,
}

/// Invite more users to a conversation room.
#[utoipa::path(post, path = "/room/{roomId}/convo/members", tag = "rooms", request_body = MemberIds,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn add_convo_members(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<MemberIds>,
) -> ApiResult<Empty> {
    state.write(move |reg| reg.add_convo_members(&id, body.member_ids)).await?;
    done()
}

/// Broadcast a message (any JSON) to every client in the room.
#[utoipa::path(post, path = "/room/{roomId}/message", tag = "rooms", request_body = serde_json::Value,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn broadcast_message(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(message): ApiJson<serde_json::Value>,
) -> ApiResult<Empty> {
    state.read(|reg| reg.room(&id).map(|_| ()))?;
    let recipients = state.hub().send(&id, |_| true, &signalling::message_event(&message));
    tracing::debug!(room = %id, recipients, "room message");
    done()
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct PeersMessage {
    /// Any JSON.
    msg: serde_json::Value,
    peers: Vec<PeerId>,
}

/// Send a message (any JSON) to the named peers of the room.
#[utoipa::path(post, path = "/room/{roomId}/peers/message/", tag = "rooms", request_body = PeersMessage,
    params(("roomId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn peers_message(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RoomId>,
    ApiJson(body): ApiJson<PeersMessage>,
) -> ApiResult<Empty> {
    state.read(|reg| reg.room(&id).map(|_| ()))?;
    let recipients = state.hub().send(&id, |peer| body.peers.contains(peer), &signalling::message_event(&body.msg));
    tracing::debug!(room = %id, recipients, "peers message");
    done()
}

/// Close the room and disconnect everyone.
#[utoipa::path(delete, path = "/room/{roomId}", tag = "rooms", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn close_room(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<Empty> {
    signalling::close_room(&state, id, |_| true).await?;
    done()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RoomInfo {
    room_id: RoomId,
    server_url: String,
    server_url6: String,
    server_address: String,
    server_alias: String,
    /// Connected clients, audience included.
    total: usize,
    master_id: PeerId,
    /// Conversation rooms: the master and every invited member.
    invited_user_ids: Vec<PeerId>,
    /// Connected members (not the audience).
    member_ids: Vec<PeerId>,
    /// Conversation rooms: the member cap (0 = unlimited); live rooms: 0.
    max_member_num: u32,
    /// Live rooms: the other rooms of its merge group.
    merge_room_ids: Vec<RoomId>,
    /// Live rooms: the serverAlias of each mirror.
    mirror_servers: Vec<String>,
    /// "convo" or "live".
    #[serde(rename = "type")]
    kind: &'static str,
    invitation_code: u32,
    #[schema(value_type = u8)]
    protocol: Protocol,
    min_bitrate: u64,
    max_bitrate: u64,
    join_enabled: bool,
}

/// Everything about a room.
#[utoipa::path(get, path = "/room/{roomId}", tag = "rooms", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<RoomInfo>)))]
pub(super) async fn get_room(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<RoomInfo> {
    let s = state.settings();
    state.read(|reg| {
        let room = reg.room(&id)?;
        let (kind, invited, max_members) = match &room.kind {
            RoomKind::Convo { invited, max_members } => ("convo", invited.clone(), *max_members),
            RoomKind::Live { .. } => ("live", Vec::new(), 0),
        };
        Ok(Answer(RoomInfo {
            room_id: room.id.clone(),
            server_url: s.client_url.clone(),
            server_url6: s.client_url6.clone(),
            server_address: s.api_address.clone(),
            server_alias: s.alias.clone(),
            total: room.connected.len(),
            master_id: room.master.clone(),
            invited_user_ids: invited,
            member_ids: room.connected_members(),
            max_member_num: max_members,
            merge_room_ids: reg.merged_with(&id)?,
            mirror_servers: room
                .mirrors
                .iter()
                .map(|_| s.alias.clone())
                .chain(room.remote_mirrors.iter().filter(|m| !m.feed).map(|m| m.alias.clone()))
                .collect(),
            kind,
            invitation_code: room.invitation_code,
            protocol: room.protocol,
            min_bitrate: room.min_bitrate,
            max_bitrate: room.max_bitrate,
            join_enabled: room.join_enabled,
        }))
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Exist {
    exist: bool,
}

/// Whether the room is open.
#[utoipa::path(get, path = "/room/{roomId}/exist", tag = "rooms", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Exist>)))]
pub(super) async fn room_exists(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<Exist> {
    Ok(Answer(Exist { exist: state.read(|reg| reg.room(&id).is_ok()) }))
}

/// Allow or refuse joining the room (`enable` is `true` or `false`). The path is the
/// spec's spelling; `/join/enable/{enable}` is accepted too.
#[utoipa::path(post, path = "/room/{roomId}/join/enbale/{enable}", tag = "rooms",
    params(("roomId" = String, Path), ("enable" = bool, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn set_join_enabled(
    State(state): State<AppState>,
    ApiPath((id, enable)): ApiPath<(RoomId, String)>,
) -> ApiResult<Empty> {
    let enabled = match enable.as_str() {
        "true" => true,
        "false" => false,
        other => return Err(ApiError::invalid(format!("enable must be true or false, not {other:?}"))),
    };
    state.write(move |reg| reg.set_join_enabled(&id, enabled)).await?;
    done()
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Joined {
    joined: bool,
}

/// Whether the peer has a connection to the room.
#[utoipa::path(get, path = "/room/{roomId}/peer/{peerId}", tag = "rooms",
    params(("roomId" = String, Path), ("peerId" = String, Path)), responses((status = 200, body = Envelope<Joined>)))]
pub(super) async fn get_peer(
    State(state): State<AppState>,
    ApiPath((id, peer)): ApiPath<(RoomId, PeerId)>,
) -> ApiResult<Joined> {
    Ok(Answer(Joined { joined: state.read(|reg| reg.joined(&id, &peer))? }))
}

/// Disconnect the peer from the room (50011 when it has no connection).
#[utoipa::path(delete, path = "/room/{roomId}/peer/{peerId}", tag = "rooms",
    params(("roomId" = String, Path), ("peerId" = String, Path)), responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn kick_peer(
    State(state): State<AppState>,
    ApiPath((id, peer)): ApiPath<(RoomId, PeerId)>,
) -> ApiResult<Empty> {
    let (room, kicked) = (id.clone(), peer.clone());
    state
        .write(move |reg| {
            reg.connected_peer(&room, &kicked)?;
            reg.depart(&room, &kicked);
            Ok(())
        })
        .await?;
    state.hub().send(&id, |p| p == &peer, &signalling::kicked_event());
    signalling::announce_presence(&state, &id, &peer, &signalling::peer_left_event(&peer));
    done()
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Status {
    /// 0 not recorded · 1 preparing · 2 recording · 3 ended · 4 waiting for processing ·
    /// 5 processing · 6 done · 7 error.
    status: u8,
}

impl Status {
    pub(super) fn of(status: u8) -> Self {
        Self { status }
    }
}

/// The room's server-side recording status.
#[utoipa::path(get, path = "/room/{roomId}/record/status", tag = "rooms", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Status>)))]
pub(super) async fn record_status(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<Status> {
    Ok(Answer(Status::of(state.read(|reg| reg.record_status(&id))?)))
}
