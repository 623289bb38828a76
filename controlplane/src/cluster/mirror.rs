//! Mirrors of a live room on other nodes: the origin node sends the room's published
//! streams over a node link to the mirror node, which publishes them in a mirror room of
//! the same roomId and invitation code, so an audience may join there (signalling at that
//! node's `serverUrl`, WHEP at its `/whep/{roomId}`) and spread over machines.
//!
//! What it owns:
//! - **Links.** One SRTP-keyed plain transport per pair of nodes, between their first
//!   workers (a UDP 5-tuple carries one SRTP session, so rooms share it); streams on other
//!   workers reach it, and leave it, through the workers' relay as for any subscriber. Each
//!   side makes its own sending key; a handshake (`POST …/link`) tells each the other's.
//!   A link made again (a node restarted) gets a new generation, and everything that used
//!   the old one is set up again.
//! - **Feeders** on the origin: one task per room and mirror node that, every
//!   `FEED_INTERVAL`, keeps a consumer on the link for each stream the room's own
//!   publishers send (a merged room's streams reach the mirror node from their own origin,
//!   see [`super::merge`]) and tells the mirror node the list when it changes; it ends when
//!   the room closes or no longer lists the mirror.
//! - **Held mirrors** on the mirror node: the room in the registry (persisted, with its
//!   origin) and, per stream, a producer on the link published as the origin's publisher.
//!   A held mirror whose origin no longer lists it is closed by [`spawn_sweep`].
//!
//! Rules: hosts publish only at the origin; the mirror node never changes the origin's
//! state, and the origin never writes the mirror node's registry: each asks the other over
//! the internal API, which takes the AppSecret like the public one.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::engine::{LINK_SRTP_PROFILE, LinkKeys};
use uprtcd_dataplane::router::{ConsumerFormat, MediaKind, ProducerSpec, TransportId};

use super::NodeRecord;
use crate::envelope::{Answer, ApiCode, ApiError, ApiJson, ApiPath, ApiResult, Empty, done};
use crate::ids::{PeerId, RoomId, TrackId};
use crate::registry::Protocol;
use crate::sdp::{Codec, HeaderExtensions, PayloadType};
use crate::signalling::hub::{Outgoing, PublishedTrack};
use crate::signalling::protocol::ServerEvent;
use crate::state::AppState;

/// Where the internal API lives on the API listener (not in the OpenAPI description).
pub const INTERNAL_PREFIX: &str = "/uprtc/internal/v1";
/// How often a feeder looks at its room's streams and its mirror node.
const FEED_INTERVAL: Duration = Duration::from_millis(500);
/// How often a node asks the origins of the mirrors it holds whether they still want them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The worker every link of this node lives on.
const LINK_WORKER: usize = 0;

/// A link is made again under fresh keys before this side has sent this many streams on
/// it: an SRTP session keeps every SSRC it carried (forgetting one would let a returning
/// stream reuse its keystream) and takes at most `MAX_STREAMS_PER_SESSION`. The margin is
/// for the streams the far side sends and for RTCP.
const LINK_STREAMS_BEFORE_REKEY: usize = uprtcd_dataplane::srtp::MAX_STREAMS_PER_SESSION * 3 / 4;

/// A node link's transport on [`LINK_WORKER`].
#[derive(Debug, Clone)]
struct Link {
    transport: TransportId,
    /// This side's sending half, kept for the link's life.
    local_key: Vec<u8>,
    /// The far side's sending half.
    remote_key: Vec<u8>,
    generation: u64,
    /// The SSRCs this side has sent on the link under these keys.
    sent: std::collections::HashSet<u32>,
}

/// A mirror this node holds for another node's room.
#[derive(Debug, Default)]
struct Held {
    origin: String,
    /// The link generation its producers live on.
    generation: u64,
    /// The origin's streams published here, by their SSRC on the link.
    tracks: HashMap<u32, (TrackId, PeerId)>,
}

/// The links and held mirrors of this node.
#[derive(Debug, Default)]
pub struct Mirrors {
    /// By the far node's media address.
    links: tokio::sync::Mutex<HashMap<SocketAddr, Link>>,
    held: tokio::sync::Mutex<HashMap<RoomId, Held>>,
    next_generation: std::sync::atomic::AtomicU64,
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::invalid("key: not an even number of hex digits");
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return Err(bad());
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad())).collect()
}

/// Where this node's link worker receives, as other nodes reach it.
pub(crate) fn link_media(state: &AppState) -> Result<SocketAddr, ApiError> {
    let (address, _) = state.worker_endpoint(LINK_WORKER).ok_or_else(|| ApiError::code(ApiCode::NoWorker))?;
    let ip: IpAddr = if address.ip().is_unspecified() { state.settings().announced_ip } else { address.ip() };
    Ok(SocketAddr::new(ip, address.port()))
}

impl Mirrors {
    /// The link to `remote` keyed with `remote_key` and this side's `local` half: kept when
    /// both halves are those it has (no `local`: this side's own), else made again under a
    /// new generation, with `local` or a fresh half of this side (never the old one).
    async fn ensure_link(
        &self,
        state: &AppState,
        remote: SocketAddr,
        local: Option<Vec<u8>>,
        remote_key: Vec<u8>,
    ) -> Result<Link, ApiError> {
        let mut links = self.links.lock().await;
        let existing = links.get(&remote).cloned();
        if let Some(link) = &existing
            && link.remote_key == remote_key
            && local.as_ref().is_none_or(|local| *local == link.local_key)
        {
            return Ok(link.clone());
        }
        let local_key = match local {
            Some(local) => local,
            None => fresh_half()?,
        };
        if let Some(link) = existing {
            links.remove(&remote);
            let _ = state.request_worker(LINK_WORKER, Command::CloseTransport { transport: link.transport }).await;
        }
        let keys = LinkKeys { profile: LINK_SRTP_PROFILE, local: local_key.clone(), remote: remote_key.clone() };
        let command = Command::CreatePlainTransport { remote, rtcp_remote: None, keys: Some(keys) };
        let transport = match state.request_worker(LINK_WORKER, command).await? {
            Reply::PlainTransportCreated { transport, .. } => transport,
            other => {
                return Err(ApiError::new(ApiCode::RtcFailed, format!("the worker refused a node link: {other:?}")));
            }
        };
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let link = Link { transport, local_key, remote_key, generation, sent: Default::default() };
        links.insert(remote, link.clone());
        tracing::info!(%remote, generation, "node link made");
        Ok(link)
    }

    /// The sending half this node offers `remote` in a handshake, with the link it keeps
    /// when the far side still has it: the link's own half, or a fresh one (no link yet, or
    /// one that has carried its share of streams and is to be made again).
    async fn offered_key(&self, remote: SocketAddr) -> Result<(Vec<u8>, Option<Link>), ApiError> {
        if let Some(link) = self.links.lock().await.get(&remote)
            && link.sent.len() < LINK_STREAMS_BEFORE_REKEY
        {
            return Ok((link.local_key.clone(), Some(link.clone())));
        }
        Ok((fresh_half()?, None))
    }

    /// Notes that this side sends `ssrc` on the link of `generation` to `remote`; false when
    /// that link has carried its share of streams and must be made again first.
    async fn may_send(&self, remote: SocketAddr, generation: u64, ssrc: u32) -> bool {
        let mut links = self.links.lock().await;
        let Some(link) = links.get_mut(&remote).filter(|link| link.generation == generation) else { return false };
        if link.sent.contains(&ssrc) {
            return true;
        }
        if link.sent.len() >= LINK_STREAMS_BEFORE_REKEY {
            return false;
        }
        link.sent.insert(ssrc);
        true
    }
}

/// A published stream as the origin describes it to a mirror node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTrack {
    /// Its SSRC on the link (the origin's subscriber SSRC of the track).
    ssrc: u32,
    publisher: PeerId,
    session: u64,
    video: bool,
    payload_type: u8,
    name: String,
    clock_rate: u32,
    channels: Option<u32>,
    fmtp: String,
    rtcp_fb: Vec<String>,
    /// Header extension ids in the publisher's numbering: mid, abs-send-time, audio level,
    /// rid, repaired rid, transport-cc, video orientation.
    extensions: [Option<u8>; 7],
}

impl WireTrack {
    fn of(track: &PublishedTrack) -> Self {
        let e = &track.extensions;
        Self {
            ssrc: crate::signalling::subscriber_ssrc(track),
            publisher: track.publisher.clone(),
            session: track.session,
            video: track.kind == MediaKind::Video,
            payload_type: track.codec.payload_type.0,
            name: track.codec.name.clone(),
            clock_rate: track.codec.clock_rate,
            channels: track.codec.channels,
            fmtp: track.codec.fmtp.clone(),
            rtcp_fb: track.codec.rtcp_fb.clone(),
            extensions: [
                e.mid,
                e.abs_send_time,
                e.audio_level,
                e.rtp_stream_id,
                e.repaired_rtp_stream_id,
                e.transport_cc,
                e.video_orientation,
            ],
        }
    }

    fn kind(&self) -> MediaKind {
        if self.video { MediaKind::Video } else { MediaKind::Audio }
    }

    /// The stream as published on this node, before the hub numbers it. No RTX: the link
    /// repairs with NACKs answered by the original packets, and subscribers here get their
    /// repairs from this node's cache.
    fn published(
        &self,
        room: &RoomId,
        worker: usize,
        producer: uprtcd_dataplane::router::ProducerId,
    ) -> PublishedTrack {
        let [mid, abs_send_time, audio_level, rtp_stream_id, repaired_rtp_stream_id, transport_cc, video_orientation] =
            self.extensions;
        PublishedTrack {
            track_id: TrackId::numbered(0),
            number: 0,
            room: room.clone(),
            publisher: self.publisher.clone(),
            session: self.session,
            worker,
            producer,
            layers: Vec::new(),
            kind: self.kind(),
            codec: Codec {
                payload_type: PayloadType(self.payload_type),
                name: self.name.clone(),
                clock_rate: self.clock_rate,
                channels: self.channels,
                fmtp: self.fmtp.clone(),
                rtcp_fb: self.rtcp_fb.clone(),
                rtx_payload_type: None,
            },
            extensions: HeaderExtensions {
                mid,
                abs_send_time,
                audio_level,
                rtp_stream_id,
                repaired_rtp_stream_id,
                transport_cc,
                video_orientation,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handshake {
    alias: String,
    media: SocketAddr,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenMirror {
    room_id: RoomId,
    master: PeerId,
    invitation_code: u32,
    protocol: Protocol,
    min_bitrate: u64,
    max_bitrate: u64,
    origin: String,
    /// A `workPid` of the mirror node's workers to hold the audience.
    pid: Option<i64>,
    /// Held only to feed the mirror node's merge groups.
    #[serde(default)]
    feed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Opened {
    work_pid: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StillMirrored {
    mirrored: bool,
}

/// The internal API of the mirror side, under [`INTERNAL_PREFIX`].
pub fn internal_routes() -> Router<AppState> {
    Router::new()
        .route("/link", post(answer_handshake))
        .route("/mirror", post(hold))
        .route("/mirror/{roomId}/tracks", put(set_tracks))
        .route("/mirror/{roomId}/release", post(release))
        .route("/mirror/{roomId}/wanted/{alias}", post(wanted))
        .route("/mirror/{roomId}/pause", post(pause_here))
        .merge(super::merge::internal_routes())
}

/// `POST …/link`: the other node's half and media address; answers ours.
async fn answer_handshake(State(state): State<AppState>, ApiJson(body): ApiJson<Handshake>) -> ApiResult<Handshake> {
    let cluster = state.cluster().ok_or_else(|| ApiError::request("this node is in no cluster"))?;
    let remote_key = from_hex(&body.key)?;
    let link = cluster.mirrors.ensure_link(&state, body.media, None, remote_key).await?;
    Ok(Answer(Handshake { alias: cluster.alias.clone(), media: link_media(&state)?, key: to_hex(&link.local_key) }))
}

/// `POST …/mirror`: hold a mirror of the origin's room here.
async fn hold(State(state): State<AppState>, ApiJson(body): ApiJson<OpenMirror>) -> ApiResult<Opened> {
    let cluster = state.cluster().ok_or_else(|| ApiError::request("this node is in no cluster"))?;
    if body.origin == cluster.alias {
        return Err(ApiError::request("a node does not mirror its own room through the cluster"));
    }
    let worker = state.worker_of_pid(body.pid)?;
    let room = crate::registry::MirrorRoom {
        id: body.room_id.clone(),
        master: body.master,
        invitation_code: body.invitation_code,
        protocol: body.protocol,
        min_bitrate: body.min_bitrate,
        max_bitrate: body.max_bitrate,
        origin: body.origin.clone(),
        feed: body.feed,
    };
    let worker = state.write(move |reg| reg.hold_mirror(room, worker)).await?;
    let mut held = cluster.mirrors.held.lock().await;
    held.entry(body.room_id).or_insert_with(|| Held { origin: body.origin, ..Held::default() });
    let work_pid = state.loads().workers().get(worker).map_or(0, |w| w.thread_id);
    Ok(Answer(Opened { work_pid }))
}

/// `PUT …/mirror/{roomId}/tracks`: the streams the origin sends on the link now.
async fn set_tracks(
    State(state): State<AppState>,
    ApiPath(room): ApiPath<RoomId>,
    ApiJson(tracks): ApiJson<Vec<WireTrack>>,
) -> ApiResult<Empty> {
    apply_tracks(&state, &room, tracks).await?;
    done()
}

/// Publishes the origin's streams in the held mirror `room`, as they are listed now.
async fn apply_tracks(state: &AppState, room: &RoomId, tracks: Vec<WireTrack>) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster() else { return Ok(()) };
    let mut held_all = cluster.mirrors.held.lock().await;
    let held =
        held_all.get_mut(room).ok_or_else(|| ApiError::new(ApiCode::RoomNotFound, format!("no mirror of {room}")))?;
    let origin = cluster.node(&held.origin).ok_or_else(|| ApiError::system("the origin is not in the cluster"))?;
    let link = cluster.mirrors.links.lock().await.get(&origin_media_of(&origin)?).cloned();
    let Some(link) = link else { return Err(ApiError::system("no node link to the origin yet")) };
    let mut gone: Vec<(TrackId, PeerId)> = Vec::new();
    if held.generation != link.generation {
        gone.extend(held.tracks.drain().map(|(_, t)| t));
        held.generation = link.generation;
    }
    let listed: BTreeMap<u32, &WireTrack> = tracks.iter().map(|t| (t.ssrc, t)).collect();
    let stale: Vec<u32> = held.tracks.keys().filter(|ssrc| !listed.contains_key(ssrc)).copied().collect();
    for ssrc in stale {
        gone.extend(held.tracks.remove(&ssrc));
    }
    let room_worker = LINK_WORKER;
    let mut added = Vec::new();
    for (ssrc, wire) in listed.into_iter().filter(|(ssrc, _)| !held.tracks.contains_key(ssrc)) {
        let spec = ProducerSpec { transport: link.transport, ssrc, kind: wire.kind(), clock_rate: wire.clock_rate };
        match state.request_worker(LINK_WORKER, Command::AddProducer { spec }).await? {
            Reply::ProducerAdded(producer) => added.push((ssrc, wire.published(room, room_worker, producer))),
            other => tracing::warn!(%room, ssrc, ?other, "a mirrored stream was refused by the link worker"),
        }
    }
    // The audience of every room merged with this one sees its streams too.
    let audiences = state.read(|reg| reg.visible_rooms(room));
    let tell = |event: ServerEvent| {
        for audience in &audiences {
            state.hub().send(audience, |_| true, &Outgoing::Tracks(event.clone()));
        }
    };
    for (track_id, publisher) in gone {
        state.hub().remove_track(room, &track_id);
        tell(ServerEvent::TrackRemoved { peer: publisher, track_id });
    }
    let (ssrcs, published): (Vec<u32>, Vec<PublishedTrack>) = added.into_iter().unzip();
    for (ssrc, track) in ssrcs.into_iter().zip(state.hub().add_tracks(room, published)) {
        held.tracks.insert(ssrc, (track.track_id.clone(), track.publisher.clone()));
        tell(ServerEvent::TrackAdded(track.info()));
    }
    Ok(())
}

/// A merged stream paused or resumed for a room's audience, named by what every node
/// knows it by: its own node, and its SSRC on the links from there (each node numbers its
/// own streams, so the SSRC alone names one per node).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pause {
    origin: String,
    ssrc: u32,
    paused: bool,
}

/// The own node and link SSRC of the stream of `track` (published here, or held from
/// another node).
async fn stream_key(state: &AppState, rooms: &[RoomId], track: &TrackId) -> Option<(String, u32)> {
    let cluster = state.cluster()?;
    let held = cluster.mirrors.held.lock().await;
    for entry in rooms.iter().filter_map(|room| held.get(room)) {
        if let Some((ssrc, _)) = entry.tracks.iter().find(|(_, (t, _))| t == track) {
            return Some((entry.origin.clone(), *ssrc));
        }
    }
    drop(held);
    let published = rooms.iter().flat_map(|room| state.hub().tracks_of(room)).find(|t| &t.track_id == track)?;
    Some((cluster.alias.clone(), crate::signalling::subscriber_ssrc(&published)))
}

/// After `track` was paused or resumed for `room`'s audience here: the same for its
/// audiences on the nodes that mirror it (a node that is gone is skipped; it learns no
/// pause it missed).
pub async fn pause_at_mirrors(state: &AppState, room: &RoomId, track: &TrackId, paused: bool) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster() else { return Ok(()) };
    let (merged, mirrors) = state.read(|reg| {
        let r = reg.room(room)?;
        let mirrors: Vec<String> = r.remote_mirrors.iter().filter(|m| !m.feed).map(|m| m.alias.clone()).collect();
        Ok::<_, ApiError>((reg.visible_rooms(room), mirrors))
    })?;
    if mirrors.is_empty() {
        return Ok(());
    }
    let Some((origin, ssrc)) = stream_key(state, &merged, track).await else { return Ok(()) };
    let pause = Pause { origin, ssrc, paused };
    for node in mirrors.iter().filter_map(|alias| cluster.node(alias)) {
        let path = format!("/mirror/{room}/pause");
        call::<serde_json::Value>(state, &node, axum::http::Method::POST, &path, &pause).await?;
    }
    Ok(())
}

/// `POST …/mirror/{roomId}/pause` on a mirror node: pause or resume the merged stream of
/// that SSRC for the mirror's audience here.
async fn pause_here(
    State(state): State<AppState>,
    ApiPath(room): ApiPath<RoomId>,
    ApiJson(body): ApiJson<Pause>,
) -> ApiResult<Empty> {
    let merged = state.read(|reg| reg.visible_rooms(&room));
    let cluster = state.cluster().ok_or_else(|| ApiError::request("this node is in no cluster"))?;
    let track = if body.origin == cluster.alias {
        merged
            .iter()
            .flat_map(|r| state.hub().tracks_of(r))
            .find(|t| crate::signalling::subscriber_ssrc(t) == body.ssrc)
            .map(|t| t.track_id)
    } else {
        let held = cluster.mirrors.held.lock().await;
        merged
            .iter()
            .filter_map(|r| held.get(r).filter(|h| h.origin == body.origin))
            .find_map(|h| h.tracks.get(&body.ssrc).map(|(t, _)| t.clone()))
    };
    let track = track.ok_or_else(|| {
        ApiError::new(ApiCode::NoMedia, format!("no stream {:#x} reaches room {room} here", body.ssrc))
    })?;
    crate::signalling::pause_for_audience(&state, &room, &track, body.paused).await;
    done()
}

fn origin_media_of(node: &NodeRecord) -> Result<SocketAddr, ApiError> {
    node.link_media.ok_or_else(|| ApiError::system(format!("node {:?} announces no link address", node.alias)))
}

/// `POST …/mirror/{roomId}/release`: the origin no longer wants this mirror (the room
/// closed, or the mirror was dropped); it closes like a deleted room.
async fn release(State(state): State<AppState>, ApiPath(room): ApiPath<RoomId>) -> ApiResult<Empty> {
    close_held(&state, &room).await?;
    done()
}

/// Closes the held mirror `room`: its audience hears `room-closed`, the audiences of the
/// rooms merged with it that its streams are gone.
async fn close_held(state: &AppState, room: &RoomId) -> Result<(), ApiError> {
    if let Some(cluster) = state.cluster() {
        cluster.mirrors.held.lock().await.remove(room);
    }
    let audiences = state.read(|reg| reg.visible_rooms(room));
    for track in state.hub().tracks_of(room) {
        state.hub().remove_track(room, &track.track_id);
        let removed = Outgoing::Tracks(ServerEvent::TrackRemoved { peer: track.publisher, track_id: track.track_id });
        for audience in audiences.iter().filter(|a| *a != room) {
            state.hub().send(audience, |_| true, &removed);
        }
    }
    crate::signalling::close_room(state, room.clone(), |r| r.origin.is_some()).await?;
    Ok(())
}

/// `POST …/mirror/{roomId}/wanted/{alias}` on the origin: whether the room is open and
/// still mirrored on node `alias`.
async fn wanted(
    State(state): State<AppState>,
    ApiPath((room, alias)): ApiPath<(RoomId, String)>,
) -> ApiResult<StillMirrored> {
    let mirrored = state.read(|reg| reg.room(&room).is_ok_and(|r| r.remote_mirrors.iter().any(|m| m.alias == alias)));
    Ok(Answer(StillMirrored { mirrored }))
}

/// Calls `path` of the internal API of `node` with `body`; the envelope's data, or the
/// envelope's error as it is.
pub(super) async fn call<T: serde::de::DeserializeOwned>(
    state: &AppState,
    node: &NodeRecord,
    method: axum::http::Method,
    path: &str,
    body: &impl Serialize,
) -> Result<T, ApiError> {
    let cluster = state.cluster().ok_or_else(|| ApiError::request("this node is in no cluster"))?;
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::system(e.to_string()))?;
    cluster.forwarder.call(node, method, &format!("{INTERNAL_PREFIX}{path}"), &state.settings().app_secret, bytes).await
}

/// The origin's side of opening (or opening again) a mirror of live room `room` on `node`:
/// the link (made when there is none), then the mirror room there. Returns the link and the
/// mirror's worker thread id there.
async fn open(
    state: &AppState,
    room: &RoomId,
    node: &NodeRecord,
    pid: Option<i64>,
    feed: bool,
) -> Result<(LinkState, i32), ApiError> {
    let link = link_to(state, node).await?;
    let snapshot = state.read(|reg| {
        reg.live_room(room).map(|r| OpenMirror {
            room_id: r.id.clone(),
            master: r.master.clone(),
            invitation_code: r.invitation_code,
            protocol: r.protocol,
            min_bitrate: r.min_bitrate,
            max_bitrate: r.max_bitrate,
            origin: state.settings().alias.clone(),
            pid,
            feed,
        })
    })?;
    let opened: Opened = call(state, node, axum::http::Method::POST, "/mirror", &snapshot).await?;
    Ok((link, opened.work_pid))
}

/// Makes sure this node and `node` share a link keyed by both halves.
///
/// Keys are never reused for a new session: a link made again (in either direction) gets
/// fresh halves on both sides, since streams sent on it start their numbering again and an
/// old key would encrypt them under nonces it has used. When the far side answers an old
/// half with a new one of its own (it restarted), this side asks again with a fresh half.
async fn link_to(state: &AppState, node: &NodeRecord) -> Result<LinkState, ApiError> {
    let cluster = state.cluster().ok_or_else(|| ApiError::request("this node is in no cluster"))?;
    let remote = origin_media_of(node)?;
    let media = link_media(state)?;
    let handshake = |key: &[u8]| {
        let ours = Handshake { alias: cluster.alias.clone(), media, key: to_hex(key) };
        async move {
            let theirs: Handshake = call(state, node, axum::http::Method::POST, "/link", &ours).await?;
            from_hex(&theirs.key)
        }
    };
    let (mut offered, kept) = cluster.mirrors.offered_key(remote).await?;
    let mut answered = handshake(&offered).await?;
    if let Some(kept) = kept
        && kept.remote_key != answered
    {
        offered = fresh_half()?;
        answered = handshake(&offered).await?;
    }
    let link = cluster.mirrors.ensure_link(state, remote, Some(offered), answered).await?;
    Ok(LinkState { generation: link.generation, transport: link.transport })
}

fn fresh_half() -> Result<Vec<u8>, ApiError> {
    LinkKeys::random_half(LINK_SRTP_PROFILE).map_err(|e| ApiError::system(format!("link keys: {e}")))
}

/// Opens a mirror of live room `room` on `node` (by hand, or for an audience the origin
/// sends away), or with `feed` only a feed of the merge groups there: 50013 when that node
/// mirrors it already for an audience; a feed there becomes the mirror, and a feed asked
/// where anything is changes nothing. The mirror is recorded with the room and fed from
/// now on.
pub async fn mirror_on(
    state: &AppState,
    room: &RoomId,
    node: &NodeRecord,
    pid: Option<i64>,
    feed: bool,
) -> Result<(), ApiError> {
    let alias = node.alias.clone();
    let held = state
        .read(|reg| reg.live_room(room).map(|r| r.remote_mirrors.iter().find(|m| m.alias == alias).map(|m| m.feed)))?;
    match held {
        Some(_) if feed => return Ok(()),
        Some(false) => {
            return Err(ApiError::new(ApiCode::MirrorExists, format!("{alias} already mirrors room {room}")));
        }
        Some(true) | None => {}
    }
    let (_, work_pid) = open(state, room, node, pid, feed).await?;
    let mirror = crate::registry::RemoteMirror { alias: alias.clone(), work_pid, feed };
    let id = room.clone();
    state.write(move |reg| reg.add_remote_mirror(&id, mirror)).await?;
    if held.is_none() {
        spawn_feeder(state, room.clone(), alias);
    }
    Ok(())
}

/// Where an audience member of `room` joining this node goes instead, with a fresh token:
/// `None` unless this node is the room's origin in a cluster and is full for it, by
/// `rooms.max_audience_per_node` or by every worker at `rooms.mirror_load_percent`. A
/// mirror node with room is taken, else a mirror opens on the least loaded node.
pub async fn audience_redirect(state: &AppState, room: &RoomId, peer: &PeerId) -> Option<(NodeRecord, String)> {
    let cluster = state.cluster()?;
    let settings = state.settings();
    let (audience, mirrors) = state.read(|reg| {
        let r = reg.live_room(room).ok().filter(|r| r.origin.is_none() && !r.is_member(peer))?;
        let audience = r.connected.iter().filter(|p| !r.is_member(p)).count();
        let mirrors: Vec<String> = r.remote_mirrors.iter().filter(|m| !m.feed).map(|m| m.alias.clone()).collect();
        Some((audience, mirrors))
    })?;
    let threshold = settings.mirror_load_percent;
    let busy = |cpu: f64| threshold > 0.0 && cpu >= threshold;
    let full = settings.max_audience_per_node > 0 && audience >= settings.max_audience_per_node;
    let cpu = state.loads().cpu();
    let loaded = !cpu.is_empty() && cpu.iter().all(|&c| busy(c));
    if !full && !loaded {
        return None;
    }
    let spare = |node: &NodeRecord| !node.draining && !busy(node.cpu) && node.alias != cluster.alias;
    let existing = cluster
        .nodes()
        .into_iter()
        .filter(|node| mirrors.contains(&node.alias) && spare(node))
        .min_by(|a, b| a.cpu.total_cmp(&b.cpu));
    let target = match existing {
        Some(node) => node,
        None => {
            let node = cluster.choose(|node| spare(node) && !mirrors.contains(&node.alias)).await?;
            match mirror_on(state, room, &node, None, false).await {
                Ok(()) => {}
                Err(e) if e.code == ApiCode::MirrorExists => {}
                Err(e) => {
                    tracing::warn!(%room, alias = %node.alias, error = %e.msg, "cannot open a mirror for the audience");
                    return None;
                }
            }
            node
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let token = crate::token::mint(&settings.app_secret, room.clone(), peer.clone(), now, REDIRECT_TOKEN_TTL).ok()?;
    cluster.stats.redirects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some((target, token))
}

/// What a redirected client has to reconnect with its fresh token.
const REDIRECT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// What a feeder knows of the link it sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkState {
    generation: u64,
    transport: TransportId,
}

/// Starts the feeder of `room`'s mirror on node `alias`; it ends when the room closes or
/// no longer lists the mirror, and releases the mirror there.
fn spawn_feeder(state: &AppState, room: RoomId, alias: String) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut fed: Option<(LinkState, u64, BTreeMap<u32, TrackId>)> = None;
        let mut told: Vec<WireTrack> = Vec::new();
        loop {
            tokio::time::sleep(FEED_INTERVAL).await;
            let Some(cluster) = state.cluster() else { return };
            let wanted = state.read(|reg| {
                reg.room(&room).ok().and_then(|r| r.remote_mirrors.iter().find(|m| m.alias == alias).map(|m| m.feed))
            });
            let Some(feed) = wanted else {
                if let Some(node) = cluster.node(&alias) {
                    let _ = call::<serde_json::Value>(
                        &state,
                        &node,
                        axum::http::Method::POST,
                        &format!("/mirror/{room}/release"),
                        &(),
                    )
                    .await;
                }
                take_off_link(&state, &mut fed).await;
                return;
            };
            // A node missing from the directory for a while keeps what it was fed: when it
            // is back, a restart shows in its start time.
            let Some(node) = cluster.node(&alias) else { continue };
            let current = cluster
                .mirrors
                .links
                .lock()
                .await
                .get(&origin_media_of(&node).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))))
                .map(|l| l.generation);
            let stale = match &fed {
                Some((link, started, _)) => *started != node.started_ms || Some(link.generation) != current,
                None => true,
            };
            if stale {
                take_off_link(&state, &mut fed).await;
                match open(&state, &room, &node, None, feed).await {
                    Ok((link, _)) => {
                        fed = Some((link, node.started_ms, BTreeMap::new()));
                        told.clear();
                    }
                    Err(e) => {
                        tracing::warn!(%room, %alias, error = %e.msg, "cannot feed the mirror yet");
                        continue;
                    }
                }
            }
            let Some((link, _, consumers)) = fed.as_mut() else { continue };
            // The room's own streams: each room of a merge group is fed to the nodes that
            // need it by its own origin, so a stream never comes back over a link.
            let tracks = state.hub().tracks_of(&room);
            let wire: Vec<WireTrack> = tracks.iter().map(WireTrack::of).collect();
            let mut rekey = false;
            for track in &tracks {
                let ssrc = crate::signalling::subscriber_ssrc(track);
                if consumers.contains_key(&ssrc) {
                    continue;
                }
                let Ok(remote) = origin_media_of(&node) else { break };
                if !cluster.mirrors.may_send(remote, link.generation, ssrc).await {
                    rekey = true;
                    break;
                }
                match crate::signalling::consume_on(
                    &state,
                    LINK_WORKER,
                    link.transport,
                    track,
                    ssrc,
                    ConsumerFormat::as_published(),
                )
                .await
                {
                    Ok(Some(_)) => {
                        consumers.insert(ssrc, track.track_id.clone());
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%room, %alias, error = %e.msg, "a stream cannot go on the link"),
                }
            }
            if rekey {
                tracing::info!(%alias, "the node link carried its share of streams; making it again under fresh keys");
                if let Err(e) = link_to(&state, &node).await {
                    tracing::warn!(%alias, error = %e.msg, "cannot make the node link again yet");
                }
                // Every feeder on the old link sees the new generation and sets up again.
                take_off_link(&state, &mut fed).await;
                continue;
            }
            let live: std::collections::HashSet<u32> = wire.iter().map(|t| t.ssrc).collect();
            let ended: Vec<u32> = consumers.keys().filter(|s| !live.contains(s)).copied().collect();
            for ssrc in ended {
                consumers.remove(&ssrc);
                let _ = state
                    .request_worker(LINK_WORKER, Command::RemoveConsumer { transport: link.transport, ssrc })
                    .await;
            }
            let sent: Vec<WireTrack> = wire.into_iter().filter(|t| consumers.contains_key(&t.ssrc)).collect();
            if sent != told {
                match call::<serde_json::Value>(
                    &state,
                    &node,
                    axum::http::Method::PUT,
                    &format!("/mirror/{room}/tracks"),
                    &sent,
                )
                .await
                {
                    Ok(_) => told = sent,
                    Err(e) => {
                        tracing::warn!(%room, %alias, error = %e.msg, "the mirror node did not take the streams");
                        take_off_link(&state, &mut fed).await;
                    }
                }
            }
        }
    });
}

/// Takes a feeder's streams off its link (a link consumer per SSRC, so they are added again
/// when the feeder sets up anew, never twice).
async fn take_off_link(state: &AppState, fed: &mut Option<(LinkState, u64, BTreeMap<u32, TrackId>)>) {
    if let Some((link, _, consumers)) = fed.take() {
        for ssrc in consumers.into_keys() {
            let _ =
                state.request_worker(LINK_WORKER, Command::RemoveConsumer { transport: link.transport, ssrc }).await;
        }
    }
}

/// Feeds every remote mirror of the rooms this node holds (at start), and closes, every
/// `SWEEP_INTERVAL`, the mirrors it holds whose origin says it no longer wants them.
pub fn spawn_sweep(state: &AppState) {
    let mirrored: Vec<(RoomId, String)> = state.read(|reg| {
        reg.rooms().flat_map(|r| r.remote_mirrors.iter().map(|m| (r.id.clone(), m.alias.clone()))).collect()
    });
    for (room, alias) in mirrored {
        spawn_feeder(state, room, alias);
    }
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_INTERVAL).await;
            let Some(cluster) = state.cluster() else { return };
            let held: Vec<(RoomId, String)> =
                state.read(|reg| reg.rooms().filter_map(|r| r.origin.clone().map(|o| (r.id.clone(), o))).collect());
            for (room, origin) in held {
                let Some(node) = cluster.node(&origin) else { continue };
                let path = format!("/mirror/{room}/wanted/{}", cluster.alias);
                if let Ok(StillMirrored { mirrored: false }) =
                    call(&state, &node, axum::http::Method::POST, &path, &()).await
                {
                    tracing::info!(%room, %origin, "the origin no longer wants this mirror; closing it");
                    let _ = close_held(&state, &room).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_link_that_carried_its_share_of_streams_is_keyed_afresh() {
        let mirrors = Mirrors::default();
        let remote = SocketAddr::from(([127, 0, 0, 2], 5000));
        let link = Link {
            transport: TransportId(1),
            local_key: vec![1; 28],
            remote_key: vec![2; 28],
            generation: 7,
            sent: Default::default(),
        };
        mirrors.links.lock().await.insert(remote, link);
        let (offered, kept) = mirrors.offered_key(remote).await.unwrap();
        assert_eq!((offered, kept.map(|l| l.generation)), (vec![1; 28], Some(7)), "a young link keeps its keys");
        for ssrc in 0..LINK_STREAMS_BEFORE_REKEY as u32 {
            assert!(mirrors.may_send(remote, 7, ssrc).await);
        }
        assert!(mirrors.may_send(remote, 7, 3).await, "a stream sent already goes on");
        assert!(!mirrors.may_send(remote, 7, u32::MAX).await, "one stream more needs fresh keys");
        assert!(!mirrors.may_send(remote, 6, 3).await, "an older generation is gone");
        let (offered, kept) = mirrors.offered_key(remote).await.unwrap();
        assert!(kept.is_none() && offered != vec![1; 28] && offered.len() == 28, "a fresh half is offered");
    }

    #[test]
    fn keys_travel_as_hex_and_bad_hex_is_refused() {
        assert_eq!(from_hex(&to_hex(&[0, 15, 255])).unwrap(), vec![0, 15, 255]);
        for bad in ["abc", "zz", &"0".repeat(130)] {
            assert_eq!(from_hex(bad).unwrap_err().code, ApiCode::InvalidParameter, "{bad}");
        }
    }
}
