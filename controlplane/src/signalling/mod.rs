//! Client signalling over WebSocket on the client listener: a client connects to
//! `serverUrl + invitationCode` with `?peer=<peerId>&token=<join token>`, is admitted under
//! the room's rules, and from then on hears the room's events and the business server's
//! messages. The protocol is versioned JSON, documented in `docs/signalling.md`; its
//! messages are the types of [`protocol`].
//!
//! Rules: admission is decided once, by the registry, before anything is sent; a refused
//! client gets one `error` event with the spec's code, is closed, and changes nothing. A
//! session's presence (registry) and its queue (hub) are added together and removed
//! together, whoever ends the session: the client, a kick, the room's deletion, a stalled
//! queue, a client silent past the ping timeout, a write that does not finish within the
//! write timeout, or a new connection of the same peer that replaces a session which does
//! not answer a probe (a phone that moved from Wi-Fi to LTE). A transport the worker
//! removes (the client vanished) takes what went over it with it: the session's streams
//! leave the room, and the client hears `transport-closed`.
#![forbid(unsafe_code)]

pub mod dynacast;
pub mod hub;
mod player;
pub mod protocol;
mod publish;
mod subscribe;
pub mod whip;

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::engine::{CloseReason, TransportCreated};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::router::{ProducerId, TransportId};

use self::hub::{Outgoing, PublishedTrack};
use self::protocol::{ClientMessage, ServerEvent, TransportRole, UnpublishReason};
use self::subscribe::Subscription;
use crate::envelope::{ApiCode, ApiError};
use crate::events::Lifecycle;
use crate::ids::{PeerId, RoomId, TrackId};
use crate::registry::{Protocol, Room};
use crate::sdp;
use crate::state::AppState;

/// Largest client message accepted; signalling messages are small (SDP stays far below).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What a session's read buffer starts with, and keeps while idle. The WebSocket library's
/// default (128 KiB, zeroed on the first read) made each idle session cost about 138 KB; a
/// larger message grows the buffer as it arrives.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// WebSocket close code of a refused or ended session (4000 + the spec's code is too large
/// for the 4000–4999 private range, so the code travels in the `error` event instead).
const CLOSE_REFUSED: u16 = 4000;

#[derive(Debug, Deserialize)]
pub struct JoinQuery {
    peer: String,
    token: String,
}

/// `GET /{invitationCode}?peer=&token=` with a WebSocket upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Path(code): Path<String>,
    Query(query): Query<JoinQuery>,
    client: ClientAddress,
    upgrade: WebSocketUpgrade,
) -> Response {
    let source = source_ip(client);
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, code, query, source, socket))
}

/// The TCP peer's address of a request on the client listener, which its accept loop adds.
pub(crate) type ClientAddress = Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>;

/// The address a client's transports count against; without one (a router served without
/// the accept loop, in tests), every such client shares the unspecified address.
pub(crate) fn source_ip(client: ClientAddress) -> IpAddr {
    client.map_or(IpAddr::from([0, 0, 0, 0]), |axum::Extension(axum::extract::ConnectInfo(addr))| addr.ip())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `redirect` for an audience member whose genuine token names a live room this node
/// originates and is full for (see [`crate::cluster::mirror::audience_redirect`]).
async fn redirect(state: &AppState, code: &str, query: &JoinQuery) -> Option<ServerEvent> {
    state.cluster()?;
    let code: u32 = code.parse().ok()?;
    let (room, invitation_code) =
        state.read(|reg| reg.room_by_code(code).map(|r| (r.id.clone(), r.invitation_code)))?;
    let claims = crate::token::verify(&state.settings().app_secret, &query.token, unix_now()).ok()?;
    if claims.room != room || claims.peer.as_str() != query.peer {
        return None;
    }
    let (node, token) = crate::cluster::mirror::audience_redirect(state, &room, &claims.peer).await?;
    tracing::info!(%room, peer = %claims.peer, to = %node.alias, "audience member sent to a mirror");
    Some(ServerEvent::Redirect { server_url: node.client_url, server_alias: node.alias, invitation_code, token })
}

/// Checks the token and lets the client into the room it names.
async fn admit(state: &AppState, code: &str, query: JoinQuery) -> Result<(RoomId, PeerId), ApiError> {
    let code: u32 =
        code.parse().map_err(|_| ApiError::new(ApiCode::RoomNotFound, "no room has this invitation code"))?;
    let room = state
        .read(|reg| reg.room_by_code(code).map(|room| room.id.clone()))
        .ok_or_else(|| ApiError::new(ApiCode::RoomNotFound, "no room has this invitation code"))?;
    let peer = admit_with_token(state, &room, &query.token, Some(&query.peer)).await?;
    Ok((room, peer))
}

/// Lets the peer a join token names into `room` under the room's rules: the token must be
/// genuine, unexpired, name this room and, when the client named itself (`claimed_peer`),
/// that peer. Everything is checked before the registry is touched: a refused join changes
/// nothing.
pub(crate) async fn admit_with_token(
    state: &AppState,
    room: &RoomId,
    token: &str,
    claimed_peer: Option<&str>,
) -> Result<PeerId, ApiError> {
    let claims = crate::token::verify(&state.settings().app_secret, token, unix_now())
        .map_err(|e| ApiError::new(ApiCode::IllegalClient, format!("join token refused: {e}")))?;
    if &claims.room != room {
        return Err(ApiError::new(ApiCode::IllegalClient, "the join token names another room"));
    }
    if claimed_peer.is_some_and(|claimed| claimed != claims.peer.as_str()) {
        return Err(ApiError::new(ApiCode::IllegalClient, "the join token names another peer"));
    }
    let admit = || {
        let (room, peer) = (room.clone(), claims.peer.clone());
        state.write(move |reg| reg.admit(&room, &peer))
    };
    match admit().await {
        Err(e) if e.code == ApiCode::AlreadyConnected && replace_silent_session(state, room, &claims.peer).await => {
            admit().await?;
        }
        other => other?,
    }
    Ok(claims.peer)
}

/// `peer` connects again while the registry still counts an earlier session: probe that
/// session (its client must answer a ping within the probe timeout) and, when it does not
/// answer, close it and wait until it has left. True when it has (the caller admits again);
/// false when the earlier session is alive, which keeps 50004 for a second connection.
async fn replace_silent_session(state: &AppState, room: &RoomId, peer: &PeerId) -> bool {
    let settings = state.settings();
    if let Some(queue) = state.hub().queue_of(room, peer) {
        let (alive, mut answered) = tokio::sync::mpsc::channel(1);
        if queue.try_send(Outgoing::Probe { alive }).is_ok()
            && matches!(tokio::time::timeout(settings.probe_timeout(), answered.recv()).await, Ok(Some(())))
        {
            return false;
        }
        tracing::info!(%room, %peer, "a new connection replaces a session that answers no probe");
        // A full queue is a session that does not read: it ends within the write timeout.
        let _ = queue.try_send(Outgoing::Close(ServerEvent::Replaced));
    }
    // Its session ends, leaves the room and says so; a write it is stuck in ends within the
    // write timeout.
    let deadline = tokio::time::Instant::now() + settings.write_timeout + settings.probe_timeout();
    let left = || !state.read(|reg| reg.joined(room, peer).unwrap_or(false));
    while !left() {
        if !state.hub().session_ended(left, deadline).await {
            return false;
        }
    }
    Lifecycle::bump(&state.lifecycle().replaced);
    true
}

async fn session(state: AppState, code: String, query: JoinQuery, source: IpAddr, mut socket: WebSocket) {
    if let Some(redirect) = redirect(&state, &code, &query).await {
        let _ = socket.send(text(&redirect)).await;
        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1000, reason: "redirected".into() }))).await;
        return;
    }
    let (room, peer) = match admit(&state, &code, query).await {
        Ok(admitted) => admitted,
        Err(error) => {
            let _ = socket.send(text(&ServerEvent::error(&error))).await;
            let _ =
                socket.send(Message::Close(Some(CloseFrame { code: CLOSE_REFUSED, reason: "refused".into() }))).await;
            return;
        }
    };
    let (id, mut queue) = enter(&state, &room, &peer);
    let tracks = visible_tracks(&state, &room, &peer).iter().map(PublishedTrack::info).collect();
    let peers = state.read(|reg| reg.room(&room).map(|r| r.peers_visible_to(&peer)).unwrap_or_default());
    let joined = ServerEvent::Joined { room: room.clone(), peer: peer.clone(), peers, tracks };
    let mut context = Session::new(&state, room.clone(), peer.clone(), id, source);
    if send_bounded(&state, &mut socket, text(&joined)).await {
        run(&mut context, &mut socket, &mut queue).await;
    }
    context.end().await;
}

/// Sends `message` unless the client stops reading for longer than the write timeout; false
/// when the session must end (counted when it timed out).
async fn send_bounded(state: &AppState, socket: &mut WebSocket, message: Message) -> bool {
    match tokio::time::timeout(state.settings().write_timeout, socket.send(message)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            Lifecycle::bump(&state.lifecycle().write_timeouts);
            false
        }
    }
}

/// Attaches an admitted client's session to the hub and tells the room; returns the
/// session's id and its queue.
fn enter(state: &AppState, room: &RoomId, peer: &PeerId) -> (u64, tokio::sync::mpsc::Receiver<Outgoing>) {
    let attached = state.hub().attach(room, peer);
    announce_presence(state, room, peer, &Outgoing::Event(ServerEvent::PeerJoined { peer: peer.clone() }));
    attached
}

/// Tells those who hear of `peer`'s presence ([`crate::registry::Room::is_member`]) that it
/// came or went: the whole room for a member, only the members for a live room's audience.
pub fn announce_presence(state: &AppState, room: &RoomId, peer: &PeerId, message: &Outgoing) {
    let audience_of =
        state.read(|reg| reg.room(room).ok().filter(|r| !r.is_member(peer)).map(|r| r.connected_members()));
    match audience_of {
        Some(members) => state.hub().send_to(room, &members, message),
        None => state.hub().send(room, |p| p != peer, message),
    };
}

fn text(event: &ServerEvent) -> Message {
    Message::Text(event.to_json().into())
}

pub(crate) use self::subscribe::{consume_on, subscriber_ssrc};

/// The tracks the clients of `room` see: those its other peers and its merge group publish.
fn visible_tracks(state: &AppState, room: &RoomId, peer: &PeerId) -> Vec<PublishedTrack> {
    let rooms = state.read(|reg| reg.visible_rooms(room));
    state.hub().tracks_for(&rooms, peer)
}

/// The worker's speaker detection found `producer` the dominant speaker of its room: the
/// clients of the room and of the rooms merged with it hear `speaker`.
pub fn speaker_changed(state: &AppState, worker: usize, producer: ProducerId) {
    let Some(track) = state.hub().track_of(worker, producer) else { return };
    let rooms = state.read(|reg| reg.visible_rooms(&track.room));
    let event =
        Outgoing::Event(ServerEvent::Speaker { peer: track.publisher.clone(), track_id: track.track_id.clone() });
    for room in &rooms {
        state.hub().send(room, |_| true, &event);
    }
}

/// Tells every client of `rooms` that its merge group changed (`merge-changed` with the
/// other rooms of its group now), so that subscribers renegotiate to the group's tracks.
pub fn announce_merge_change(state: &AppState, rooms: &[RoomId]) {
    for room in rooms {
        let merge_room_ids = state.read(|reg| reg.merged_with(room).unwrap_or_default());
        let changed = ServerEvent::MergeChanged { merge_room_ids };
        state.hub().send(room, |_| true, &Outgoing::Tracks(changed));
    }
}

/// Pauses or resumes `track` for the audience of `room` on this node; returns once every
/// session applied it (or a second passed), so that media follows the caller's answer.
pub async fn pause_for_audience(state: &AppState, room: &RoomId, track: &TrackId, paused: bool) {
    state.hub().set_paused(room, track, paused);
    let (applied, mut acks) = tokio::sync::mpsc::channel(hub::SESSION_QUEUE);
    let pause = Outgoing::PauseTrack { track_id: track.clone(), paused, done: applied };
    let sessions = state.hub().send(room, |_| true, &pause);
    let all_applied = async {
        for _ in 0..sessions {
            acks.recv().await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), all_applied).await;
}

/// Closes room `id` as `DELETE /room/{id}` does, if `still` holds for it under the
/// registry's lock: the close is committed, then every client of the room hears
/// `room-closed` and is disconnected. Returns whether the room was closed (50001 when it is
/// not open).
pub async fn close_room(
    state: &AppState,
    id: RoomId,
    still: impl FnOnce(&Room) -> bool + Send + 'static,
) -> Result<bool, ApiError> {
    let closing = id.clone();
    let closed = state
        .write(move |reg| if still(reg.room(&closing)?) { reg.close(&closing).map(|_| true) } else { Ok(false) })
        .await?;
    if closed {
        state.hub().send(&id, |_| true, &room_closed_event());
        crate::cluster::merge::room_closed(state);
    }
    Ok(closed)
}

/// One admitted client: what its messages act on.
struct Session<'a> {
    state: &'a AppState,
    room: RoomId,
    peer: PeerId,
    /// The hub's id of this session.
    id: u64,
    /// The client's address, which its transports count against until they connect.
    source: IpAddr,
    /// The transport the client publishes on, once it has.
    publishing: Option<TransportId>,
    /// What the client receives, once it asked to subscribe.
    subscription: Option<Subscription>,
}

/// What handling one client message leads to.
enum Step {
    /// Send these events (possibly none) and go on.
    Reply(Vec<ServerEvent>),
    /// The client leaves.
    Leave,
}

/// Relays queued events to the client and answers its messages, until either side ends or
/// the client goes silent: it is pinged every ping interval, and a client from which nothing
/// (a pong or a message) came for the ping timeout is gone.
async fn run(session: &mut Session<'_>, socket: &mut WebSocket, queue: &mut tokio::sync::mpsc::Receiver<Outgoing>) {
    let state = session.state;
    let settings = state.settings();
    let mut ping = tokio::time::interval(settings.ping_interval());
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Probes from a new connection of this peer, answered by the next frame the client sends.
    let mut probes: Vec<tokio::sync::mpsc::Sender<()>> = Vec::new();
    loop {
        let replies = tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() >= settings.ping_timeout {
                    tracing::info!(room = %session.room, peer = %session.peer, "client answered no ping; closing it");
                    Lifecycle::bump(&state.lifecycle().ping_timeouts);
                    return;
                }
                if !send_bounded(state, socket, Message::Ping(Default::default())).await {
                    return;
                }
                continue;
            }
            outgoing = queue.recv() => match outgoing {
                Some(Outgoing::Probe { alive }) => {
                    probes.push(alive);
                    if !send_bounded(state, socket, Message::Ping(Default::default())).await {
                        return;
                    }
                    continue;
                }
                Some(Outgoing::TransportClosed { transport, reason }) => session.transport_closed(transport, reason).await,
                Some(Outgoing::Event(event)) => vec![event],
                Some(Outgoing::Tracks(event)) => {
                    let mut events = vec![event];
                    events.extend(session.tracks_changed());
                    events
                }
                Some(Outgoing::Unpublish(event)) => {
                    session.unpublish().await;
                    vec![event]
                }
                Some(Outgoing::PauseTrack { track_id, paused, done }) => {
                    session.set_track_paused(&track_id, paused).await;
                    let _ = done.try_send(());
                    continue;
                }
                Some(Outgoing::Close(event)) => {
                    if send_bounded(state, socket, text(&event)).await {
                        let close = CloseFrame { code: CLOSE_REFUSED, reason: "ended".into() };
                        let _ = send_bounded(state, socket, Message::Close(Some(close))).await;
                    }
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => {
                last_heard = Instant::now();
                for alive in probes.drain(..) {
                    let _ = alive.try_send(());
                }
                match incoming {
                Some(Ok(Message::Text(body))) => match session.handle(&body).await {
                    Step::Reply(events) => events,
                    Step::Leave => return,
                },
                Some(Ok(Message::Binary(_))) => vec![ServerEvent::error(&ApiError::invalid("signalling messages are JSON text"))],
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                }
            },
        };
        for reply in &replies {
            if !send_bounded(state, socket, text(reply)).await {
                return;
            }
        }
    }
}

impl<'a> Session<'a> {
    fn new(state: &'a AppState, room: RoomId, peer: PeerId, id: u64, source: IpAddr) -> Self {
        Session { state, room, peer, id, source, publishing: None, subscription: None }
    }

    /// Ends the session, whoever ended it: its streams leave the room (`track-removed`), its
    /// transports close, and its presence goes (`peer-left`).
    async fn end(mut self) {
        self.unpublish().await;
        let Session { state, room, peer, id, subscription, .. } = self;
        if let Some(subscription) = subscription {
            let worker = subscription.worker();
            if let Some(transport) = subscription.transport() {
                let _ = state.request_worker(worker, Command::CloseTransport { transport }).await;
            }
            state.hub().place(&room, worker, false);
        }
        if !state.hub().detach(&room, &peer, id) {
            // Replaced (after a kick) by a newer session, whose presence this is now.
            return;
        }
        let (left_room, left_peer) = (room.clone(), peer.clone());
        if state.write(move |reg| Ok(reg.depart(&left_room, &left_peer))).await.unwrap_or(false) {
            announce_presence(state, &room, &peer, &peer_left_event(&peer));
        }
        state.hub().end_session();
    }
}

impl Session<'_> {
    /// Ends what the session publishes: its tracks leave the room and its merge group
    /// (`track-removed`, and subscribers renegotiate) and its publishing transport closes.
    async fn unpublish(&mut self) {
        let (state, room, peer) = (self.state, &self.room, &self.peer);
        let removed = state.hub().remove_tracks(room, peer);
        crate::recording::tracks_removed(state, room, &removed).await;
        let audiences = if removed.is_empty() { Vec::new() } else { state.read(|reg| reg.visible_rooms(room)) };
        for track in removed {
            let removed = Outgoing::Tracks(ServerEvent::TrackRemoved { peer: peer.clone(), track_id: track.track_id });
            for audience in &audiences {
                state.hub().send(audience, |p| p != peer, &removed);
            }
        }
        if let Some(transport) = self.publishing.take() {
            let worker = state.read(|reg| reg.room(room).map(|r| r.worker)).unwrap_or(0);
            let _ = state.request_worker(worker, Command::CloseTransport { transport }).await;
        }
    }

    /// Opens a transport on `worker` for the client whose `remote` description (its
    /// "offer" or "answer", as `described` says in errors) brings its ICE credentials and
    /// fingerprint; `local_ice` when the SFU's side was already offered. Returns it with the
    /// worker's media address.
    async fn create_transport(
        &self,
        worker: usize,
        local_ice: Option<IceCredentials>,
        remote: &sdp::RemoteDescription,
        described: &str,
    ) -> Result<(TransportCreated, SocketAddr), ApiError> {
        let remote_ice = IceCredentials::new(remote.ice_ufrag.clone(), remote.ice_pwd.clone())
            .map_err(|e| ApiError::invalid(format!("{described}'s ICE credentials: {e}")))?;
        let remote_fingerprint = remote.fingerprint;
        let hub = self.state.hub();
        if !hub.reserve_pending(self.source, self.state.settings().max_pending_transports_per_ip) {
            Lifecycle::bump(&self.state.lifecycle().pending_refused);
            return Err(ApiError::new(
                ApiCode::RtcFailed,
                "too many transports of this client address are still connecting; try again shortly",
            ));
        }
        let reply = self
            .state
            .request_worker(worker, Command::CreateTransport { local_ice, remote_ice, remote_fingerprint })
            .await;
        match reply {
            Ok(Reply::TransportCreated { created, address }) => {
                hub.own_transport(worker, created.transport, (&self.room, &self.peer, self.id), self.source);
                Ok((created, address))
            }
            Ok(other) => {
                hub.release_pending(self.source);
                Err(ApiError::new(ApiCode::RtcFailed, format!("the worker refused a transport: {other:?}")))
            }
            Err(e) => {
                hub.release_pending(self.source);
                Err(e)
            }
        }
    }

    /// The worker removed one of the session's transports: a publishing one takes the
    /// session's streams out of the room; a receiving one ends the subscription (the client
    /// may subscribe again). The client hears which and why.
    async fn transport_closed(&mut self, transport: TransportId, reason: CloseReason) -> Vec<ServerEvent> {
        let role = if self.publishing == Some(transport) {
            // Already gone in the worker: nothing to close there.
            self.publishing = None;
            self.unpublish().await;
            TransportRole::Publish
        } else if let Some(subscription) = self.subscription.take_if(|s| s.transport() == Some(transport)) {
            self.state.hub().place(&self.room, subscription.worker(), false);
            TransportRole::Subscribe
        } else {
            return Vec::new();
        };
        vec![ServerEvent::TransportClosed { role, reason }]
    }

    /// The tracks this session's client sees (from whichever worker: streams cross workers).
    fn visible_tracks(&self) -> Vec<PublishedTrack> {
        visible_tracks(self.state, &self.room, &self.peer)
    }

    /// The events that answer `body`. Unknown or malformed messages are answered with an
    /// `error` event (10002/10003) and the session goes on.
    async fn handle(&mut self, body: &str) -> Step {
        let outcome = match ClientMessage::parse(body) {
            Ok(ClientMessage::Leave) => return Step::Leave,
            Ok(ClientMessage::Ping) => Ok(vec![ServerEvent::Pong]),
            Ok(ClientMessage::Publish { sdp }) => {
                self.publish(&sdp, true).await.map(|sdp| vec![ServerEvent::Answer { sdp }])
            }
            Ok(ClientMessage::Subscribe) => self.subscribe().await,
            Ok(ClientMessage::Answer { sdp }) => self.accept_answer(&sdp).await,
            Ok(ClientMessage::VideoQuality { track_id, quality, frame_rate, pinned }) => {
                self.set_video_quality(&track_id, (quality, frame_rate), pinned).await.map(|()| Vec::new())
            }
            Ok(ClientMessage::Unknown) => Err(ClientMessage::unknown(body)),
            Err(e) => Err(e),
        };
        Step::Reply(outcome.unwrap_or_else(|e| vec![ServerEvent::error(&e)]))
    }

    /// The SFU's side of a description: its ICE credentials and certificate, and the host
    /// candidates the room's `protocol` allows on the announced address at the worker's
    /// media port (UDP and ICE-TCP share the port number).
    fn local_parameters(
        &self,
        session_id: u64,
        session_version: u64,
        ice: &IceCredentials,
        fingerprint: CertificateFingerprint,
        worker_port: u16,
        bitrate: sdp::BitrateCaps,
    ) -> sdp::LocalParameters {
        sdp::LocalParameters {
            session_id,
            session_version,
            ice_ufrag: ice.ufrag().to_owned(),
            ice_pwd: ice.pwd().to_owned(),
            fingerprint,
            candidates: self.candidates(SocketAddr::new(self.state.settings().announced_ip, worker_port)),
            bitrate,
        }
    }

    /// Protocol 0 and 1 give one candidate; 2 and 3 give both, the preferred one at the
    /// higher priority so that clients nominate it when both work.
    fn candidates(&self, address: SocketAddr) -> Vec<sdp::Candidate> {
        use sdp::CandidateTransport::{TcpPassive, Udp};
        let protocol = self.state.read(|reg| reg.room(&self.room).map(|r| r.protocol)).unwrap_or(Protocol::Udp);
        let order: &[sdp::CandidateTransport] = match protocol {
            Protocol::Udp => &[Udp],
            Protocol::Tcp => &[TcpPassive],
            Protocol::UdpPreferred => &[Udp, TcpPassive],
            Protocol::TcpPreferred => &[TcpPassive, Udp],
        };
        order
            .iter()
            .zip([PREFERRED_LOCAL_PREFERENCE, FALLBACK_LOCAL_PREFERENCE])
            .map(|(&transport, local_preference)| sdp::Candidate {
                transport,
                address,
                priority: host_priority(local_preference),
            })
            .collect()
    }
}

/// RFC 8445 §5.1.2.1 local preferences: the preferred transport's candidate, then the other.
const PREFERRED_LOCAL_PREFERENCE: u32 = 65_535;
const FALLBACK_LOCAL_PREFERENCE: u32 = 32_767;

/// RFC 8445 §5.1.2.1 priority of a host candidate (type preference 126, component 1).
fn host_priority(local_preference: u32) -> u32 {
    (126 << 24) | (local_preference << 8) | 255
}

/// Room events the REST side raises.
pub fn message_event(data: &Value) -> Outgoing {
    Outgoing::Event(ServerEvent::Message { data: data.clone() })
}

pub fn peer_left_event(peer: &PeerId) -> Outgoing {
    Outgoing::Event(ServerEvent::PeerLeft { peer: peer.clone() })
}

pub fn kicked_event() -> Outgoing {
    Outgoing::Close(ServerEvent::Kicked)
}

/// A co-host was taken back to the audience: its media stops, its session goes on.
pub fn unpublished_event() -> Outgoing {
    Outgoing::Unpublish(ServerEvent::Unpublished { reason: UnpublishReason::NoLongerLiveMember })
}

fn room_closed_event() -> Outgoing {
    Outgoing::Close(ServerEvent::RoomClosed)
}
