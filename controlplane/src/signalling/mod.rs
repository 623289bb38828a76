//! Client signalling over WebSocket on the client listener: a client connects to
//! `serverUrl + invitationCode` with `?peer=<peerId>&token=<join token>`, is admitted under
//! the room's rules, and from then on hears the room's events and the business server's
//! messages. The protocol is versioned JSON, documented in `docs/signalling.md`.
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

pub mod hub;
mod publish;
mod subscribe;
pub mod whip;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::engine::{CloseReason, TransportCreated};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::router::TransportId;

use self::hub::{Outgoing, PublishedTrack};
use self::subscribe::Subscription;
use crate::envelope::{ApiCode, ApiError};
use crate::events::Lifecycle;
use crate::ids::{PeerId, RoomId};
use crate::registry::Protocol;
use crate::sdp;
use crate::state::AppState;

/// The signalling protocol version every event carries.
pub const VERSION: u32 = 1;
/// Largest client message accepted; signalling messages are small (SDP stays far below).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// WebSocket close code of a refused or ended session (4000 + the spec's code is too large
/// for the 4000–4999 private range, so the code travels in the `error` event instead).
const CLOSE_REFUSED: u16 = 4000;

#[derive(Debug, Deserialize)]
pub struct JoinQuery {
    peer: String,
    token: String,
}

/// An event as the client receives it.
fn event(kind: &str, mut fields: Value) -> Value {
    if let Value::Object(map) = &mut fields {
        map.insert("v".into(), json!(VERSION));
        map.insert("type".into(), json!(kind));
    }
    fields
}

pub fn error_event(error: &ApiError) -> Value {
    event("error", json!({"code": error.code.number(), "msg": error.msg}))
}

/// `GET /{invitationCode}?peer=&token=` with a WebSocket upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Path(code): Path<String>,
    Query(query): Query<JoinQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| session(state, code, query, socket))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
        let _ = queue.try_send(Outgoing::Close(event("replaced", json!({}))));
    }
    // Its session ends, leaves the room and says so; a write it is stuck in ends within the
    // write timeout.
    let deadline = Instant::now() + settings.write_timeout + settings.probe_timeout();
    while state.read(|reg| reg.joined(room, peer).unwrap_or(false)) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(REPLACE_POLL).await;
    }
    Lifecycle::bump(&state.lifecycle().replaced);
    true
}

/// How often a connection waiting to replace a session checks whether it has left.
const REPLACE_POLL: Duration = Duration::from_millis(20);

async fn session(state: AppState, code: String, query: JoinQuery, mut socket: WebSocket) {
    let (room, peer) = match admit(&state, &code, query).await {
        Ok(admitted) => admitted,
        Err(error) => {
            let _ = socket.send(text(&error_event(&error))).await;
            let _ =
                socket.send(Message::Close(Some(CloseFrame { code: CLOSE_REFUSED, reason: "refused".into() }))).await;
            return;
        }
    };
    let (id, mut queue) = enter(&state, &room, &peer);
    let tracks: Vec<Value> = visible_tracks(&state, &room, &peer).iter().map(track_fields).collect();
    let peers: Vec<PeerId> = state.read(|reg| reg.room(&room).map(|r| r.peers_visible_to(&peer)).unwrap_or_default());
    let joined = event("joined", json!({"room": room, "peer": peer, "peers": peers, "tracks": tracks}));
    let mut context = Session::new(&state, room.clone(), peer.clone(), id);
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
    announce_presence(state, room, peer, &Outgoing::Event(event("peer-joined", json!({"peer": peer}))));
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

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

/// The tracks the clients of `room` see: those its other peers and its merge group publish.
fn visible_tracks(state: &AppState, room: &RoomId, peer: &PeerId) -> Vec<PublishedTrack> {
    let rooms = state.read(|reg| reg.visible_rooms(room));
    state.hub().tracks_for(&rooms, peer)
}

/// Tells every client of `rooms` that its merge group changed (`merge-changed` with the
/// other rooms of its group now), so that subscribers renegotiate to the group's tracks.
pub fn announce_merge_change(state: &AppState, rooms: &[RoomId]) {
    for room in rooms {
        let merged = state.read(|reg| reg.merged_with(room).unwrap_or_default());
        let changed = event("merge-changed", json!({"mergeRoomIds": merged}));
        state.hub().send(room, |_| true, &Outgoing::Tracks(changed));
    }
}

/// How `track-added`, `joined` and `offer` describe a published track.
fn track_fields(track: &PublishedTrack) -> Value {
    json!({"peer": track.publisher, "trackId": track.track_id, "kind": track.kind.to_string()})
}

/// One admitted client: what its messages act on.
struct Session<'a> {
    state: &'a AppState,
    room: RoomId,
    peer: PeerId,
    /// The hub's id of this session.
    id: u64,
    /// The transport the client publishes on, once it has.
    publishing: Option<TransportId>,
    /// What the client receives, once it asked to subscribe.
    subscription: Option<Subscription>,
}

/// What handling one client message leads to.
enum Step {
    /// Send these events (possibly none) and go on.
    Reply(Vec<Value>),
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
                Some(Outgoing::Event(value)) => vec![value],
                Some(Outgoing::Tracks(value)) => {
                    let mut events = vec![value];
                    events.extend(session.tracks_changed());
                    events
                }
                Some(Outgoing::Unpublish(value)) => {
                    session.unpublish().await;
                    vec![value]
                }
                Some(Outgoing::PauseTrack { track_id, paused, done }) => {
                    session.set_track_paused(&track_id, paused).await;
                    let _ = done.try_send(());
                    continue;
                }
                Some(Outgoing::Close(value)) => {
                    if send_bounded(state, socket, text(&value)).await {
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
                Some(Ok(Message::Binary(_))) => vec![error_event(&ApiError::invalid("signalling messages are JSON text"))],
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

/// A client message, as far as it must be read to be dispatched.
#[derive(Debug, Deserialize)]
pub struct ClientMessage {
    /// The message's `type`: `publish`, `subscribe`, `answer`, `ping` or `leave`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The client's offer (`publish`) or answer (`answer`).
    pub sdp: Option<String>,
}

/// Reads a text frame a client sent: the one parse of the socket's input before dispatch.
/// Anything that is not such a message is the `error` (10002) the client hears. Public so
/// that the fuzz target drives what a stranger's frame goes through.
pub fn parse_client_message(body: &str) -> Result<ClientMessage, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::invalid(format!("not a signalling message: {e}")))
}

impl<'a> Session<'a> {
    fn new(state: &'a AppState, room: RoomId, peer: PeerId, id: u64) -> Self {
        Session { state, room, peer, id, publishing: None, subscription: None }
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
    }
}

impl Session<'_> {
    /// Ends what the session publishes: its tracks leave the room and its merge group
    /// (`track-removed`, and subscribers renegotiate) and its publishing transport closes.
    async fn unpublish(&mut self) {
        let (state, room, peer) = (self.state, &self.room, &self.peer);
        let removed = state.hub().remove_tracks(room, peer);
        let audiences = if removed.is_empty() { Vec::new() } else { state.read(|reg| reg.visible_rooms(room)) };
        for track in removed {
            let removed = Outgoing::Tracks(event("track-removed", json!({"peer": peer, "trackId": track.track_id})));
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
        let reply = self
            .state
            .request_worker(worker, Command::CreateTransport { local_ice, remote_ice, remote_fingerprint })
            .await?;
        match reply {
            Reply::TransportCreated { created, address } => {
                self.state.hub().own_transport(worker, created.transport, &self.room, &self.peer, self.id);
                Ok((created, address))
            }
            other => Err(ApiError::new(ApiCode::RtcFailed, format!("the worker refused a transport: {other:?}"))),
        }
    }

    /// The worker removed one of the session's transports: a publishing one takes the
    /// session's streams out of the room; a receiving one ends the subscription (the client
    /// may subscribe again). The client hears which and why.
    async fn transport_closed(&mut self, transport: TransportId, reason: CloseReason) -> Vec<Value> {
        let role = if self.publishing == Some(transport) {
            // Already gone in the worker: nothing to close there.
            self.publishing = None;
            self.unpublish().await;
            "publish"
        } else if let Some(subscription) = self.subscription.take_if(|s| s.transport() == Some(transport)) {
            self.state.hub().place(&self.room, subscription.worker(), false);
            "subscribe"
        } else {
            return Vec::new();
        };
        vec![event("transport-closed", json!({"role": role, "reason": reason.as_str()}))]
    }

    /// The tracks this session's client sees (from whichever worker: streams cross workers).
    fn visible_tracks(&self) -> Vec<PublishedTrack> {
        visible_tracks(self.state, &self.room, &self.peer)
    }

    /// The events that answer `body`. Unknown or malformed messages are answered with an
    /// `error` event (10002/10003) and the session goes on.
    async fn handle(&mut self, body: &str) -> Step {
        let message = match parse_client_message(body) {
            Ok(message) => message,
            Err(e) => return Step::Reply(vec![error_event(&e)]),
        };
        let outcome = match message.kind.as_str() {
            "leave" => return Step::Leave,
            "ping" => Ok(vec![event("pong", json!({}))]),
            "publish" => match message.sdp {
                Some(sdp) => self.publish(&sdp).await.map(|answer| vec![answer]),
                None => Err(ApiError::invalid("publish needs sdp: the client's offer")),
            },
            "subscribe" => self.subscribe().await,
            "answer" => match message.sdp {
                Some(sdp) => self.accept_answer(&sdp).await,
                None => Err(ApiError::invalid("answer needs sdp: the client's answer to our offer")),
            },
            other => Err(ApiError::request(format!("unknown message type {other:?}"))),
        };
        Step::Reply(outcome.unwrap_or_else(|e| vec![error_event(&e)]))
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
    Outgoing::Event(event("message", json!({"data": data})))
}

pub fn peer_left_event(peer: &PeerId) -> Outgoing {
    Outgoing::Event(event("peer-left", json!({"peer": peer})))
}

pub fn kicked_event() -> Outgoing {
    Outgoing::Close(event("kicked", json!({})))
}

/// A co-host was taken back to the audience: its media stops, its session goes on.
pub fn unpublished_event() -> Outgoing {
    Outgoing::Unpublish(event("unpublished", json!({"reason": "no longer a live member"})))
}

pub fn room_closed_event() -> Outgoing {
    Outgoing::Close(event("room-closed", json!({})))
}
