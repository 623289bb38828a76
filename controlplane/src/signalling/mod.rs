//! Client signalling over WebSocket on the client listener: a client connects to
//! `serverUrl + invitationCode` with `?peer=<peerId>&token=<join token>`, is admitted under
//! the room's rules, and from then on hears the room's events and the business server's
//! messages. The protocol is versioned JSON, documented in `docs/signalling.md`.
//!
//! Rules: admission is decided once, by the registry, before anything is sent; a refused
//! client gets one `error` event with the spec's code and is closed. A session's presence
//! (registry) and its queue (hub) are added together and removed together, whoever ends the
//! session: the client, a kick, the room's deletion or a stalled queue.
#![forbid(unsafe_code)]

pub mod hub;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::router::{MediaKind, ProducerId, ProducerSpec, TransportId};

use self::hub::{Outgoing, PublishedTrack};
use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RoomId};
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
    let illegal = |msg: String| ApiError::new(ApiCode::IllegalClient, msg);
    let code: u32 =
        code.parse().map_err(|_| ApiError::new(ApiCode::RoomNotFound, "no room has this invitation code"))?;
    let claims = crate::token::verify(&state.settings().app_secret, &query.token, unix_now())
        .map_err(|e| illegal(format!("join token refused: {e}")))?;
    if claims.peer.as_str() != query.peer {
        return Err(illegal("the join token names another peer".into()));
    }
    let room = state
        .read(|reg| reg.room_by_code(code).map(|room| room.id.clone()))
        .ok_or_else(|| ApiError::new(ApiCode::RoomNotFound, "no room has this invitation code"))?;
    if claims.room != room {
        return Err(illegal("the join token names another room".into()));
    }
    let (admitted_room, peer) = (room.clone(), claims.peer.clone());
    state.write(move |reg| reg.admit(&admitted_room, &peer)).await?;
    Ok((room, claims.peer))
}

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
    let (id, mut queue) = state.hub().attach(&room, &peer);
    let peers: Vec<PeerId> =
        state.read(|reg| reg.room(&room).map(|r| r.connected.iter().cloned().collect()).unwrap_or_default());
    let joined = event("joined", json!({"room": room, "peer": peer, "peers": peers}));
    state.hub().send(&room, |p| p != &peer, &Outgoing::Event(event("peer-joined", json!({"peer": peer}))));
    if socket.send(text(&joined)).await.is_ok() {
        let mut context = Session {
            state: &state,
            room: room.clone(),
            peer: peer.clone(),
            publishing: None,
            offered: None,
            subscribed: None,
        };
        run(&mut context, &mut socket, &mut queue).await;
        state.hub().remove_tracks(&room, &peer);
        let worker = state.read(|reg| reg.room(&room).map(|r| r.worker)).unwrap_or(0);
        for transport in [context.publishing, context.subscribed].into_iter().flatten() {
            let _ = state.request_worker(worker, move |request| Command::CloseTransport { request, transport }).await;
        }
    }
    state.hub().detach(&room, &peer, id);
    let (left_room, left_peer) = (room.clone(), peer.clone());
    if state.write(move |reg| Ok(reg.depart(&left_room, &left_peer))).await.unwrap_or(false) {
        state.hub().send(&room, |p| p != &peer, &peer_left_event(&peer));
    }
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

/// One admitted client: what its messages act on.
struct Session<'a> {
    state: &'a AppState,
    room: RoomId,
    peer: PeerId,
    /// The transport the client publishes on, once it has.
    publishing: Option<TransportId>,
    /// The offer made to this client for subscribing, until it answers.
    offered: Option<PendingSubscription>,
    /// The transport the client receives on, once it answered.
    subscribed: Option<TransportId>,
}

/// What the SFU offered a subscriber: its side's ICE credentials and the streams, each with
/// the producer it comes from and the SSRC it is sent as.
struct PendingSubscription {
    local_ice: IceCredentials,
    streams: Vec<(ProducerId, u32)>,
}

/// Relays queued events to the client and answers its messages, until either side ends.
async fn run(session: &mut Session<'_>, socket: &mut WebSocket, queue: &mut tokio::sync::mpsc::Receiver<Outgoing>) {
    loop {
        tokio::select! {
            outgoing = queue.recv() => match outgoing {
                Some(Outgoing::Event(value)) => {
                    if socket.send(text(&value)).await.is_err() {
                        return;
                    }
                }
                Some(Outgoing::Close(value)) => {
                    let _ = socket.send(text(&value)).await;
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: CLOSE_REFUSED, reason: "ended".into() }))).await;
                    return;
                }
                None => return,
            },
            incoming = socket.recv() => {
                let reply = match incoming {
                    Some(Ok(Message::Text(body))) => match session.handle(&body).await {
                        Some(reply) => reply,
                        None => return,
                    },
                    Some(Ok(Message::Binary(_))) => error_event(&ApiError::invalid("signalling messages are JSON text")),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                if socket.send(text(&reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A client message, as far as it must be read to be dispatched.
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    sdp: Option<String>,
}

impl Session<'_> {
    /// The event that answers `body`, or `None` when the client leaves. Unknown or malformed
    /// messages are answered with an `error` event (10002/10003) and the session goes on.
    async fn handle(&mut self, body: &str) -> Option<Value> {
        let message = match serde_json::from_str::<ClientMessage>(body) {
            Ok(message) => message,
            Err(e) => return Some(error_event(&ApiError::invalid(format!("not a signalling message: {e}")))),
        };
        Some(match message.kind.as_str() {
            "leave" => return None,
            "ping" => event("pong", json!({})),
            "publish" => match message.sdp {
                Some(sdp) => self.publish(&sdp).await.unwrap_or_else(|e| error_event(&e)),
                None => error_event(&ApiError::invalid("publish needs sdp: the client's offer")),
            },
            "subscribe" => self.subscribe().unwrap_or_else(|e| error_event(&e)),
            "answer" => match message.sdp {
                Some(sdp) => self.accept_answer(&sdp).await.unwrap_or_else(|e| error_event(&e)),
                None => error_event(&ApiError::invalid("answer needs sdp: the client's answer to our offer")),
            },
            other => error_event(&ApiError::request(format!("unknown message type {other:?}"))),
        })
    }

    /// Answers a publisher's offer: a transport on the room's worker, one producer per
    /// stream the answer accepts, and the SDP answer pointing the client at that worker.
    async fn publish(&mut self, sdp: &str) -> Result<Value, ApiError> {
        if self.publishing.is_some() {
            return Err(ApiError::request("this session publishes already; renegotiation comes later"));
        }
        let offer = sdp::RemoteDescription::parse(sdp).map_err(|e| ApiError::invalid(format!("offer refused: {e}")))?;
        let (room, peer) = (&self.room, &self.peer);
        let (audio, video, worker, min_bitrate, max_bitrate) = self.state.read(|reg| {
            let (audio, video) = reg.publish_rights(room, peer)?;
            let room = reg.room(room)?;
            Ok::<_, ApiError>((audio, video, room.worker, room.min_bitrate, room.max_bitrate))
        })?;
        let remote_ice = IceCredentials::new(offer.ice_ufrag.clone(), offer.ice_pwd.clone())
            .map_err(|e| ApiError::invalid(format!("offer's ICE credentials: {e}")))?;
        let remote_fingerprint = offer.fingerprint;
        let reply = self
            .state
            .request_worker(worker, move |request| Command::CreateTransport {
                request,
                local_ice: None,
                remote_ice,
                remote_fingerprint,
            })
            .await?;
        let Reply::TransportCreated { created, address } = reply else {
            return Err(ApiError::new(ApiCode::RtcFailed, format!("the worker refused a transport: {reply:?}")));
        };
        let bitrate = sdp::BitrateCaps {
            min_bps: u32::try_from(min_bitrate).ok(),
            max_bps: Some(u32::try_from(max_bitrate).unwrap_or(u32::MAX)),
        };
        let session_id = u64::from(created.transport.0) + 1;
        let local = self.local_parameters(session_id, &created.local_ice, created.fingerprint, address.port(), bitrate);
        let allowed = |media: &sdp::RemoteMedia| match media.kind {
            sdp::MediaKind::Audio if audio => sdp::Direction::RecvOnly,
            sdp::MediaKind::Video if video => sdp::Direction::RecvOnly,
            _ => sdp::Direction::Inactive,
        };
        let answer = sdp::answer(&offer, &local, &sdp::CodecPolicy::default(), allowed)
            .map_err(|e| ApiError::invalid(format!("cannot answer the offer: {e}")))?;
        let transport = created.transport;
        let mut published = Vec::new();
        for section in answer.negotiated.sections.iter().filter(|s| s.direction == sdp::Direction::RecvOnly) {
            let kind = if section.kind == sdp::MediaKind::Audio { MediaKind::Audio } else { MediaKind::Video };
            for stream in &section.streams {
                let spec = ProducerSpec { transport, ssrc: stream.ssrc.0, kind, clock_rate: section.codec.clock_rate };
                match self.state.request_worker(worker, move |request| Command::AddProducer { request, spec }).await? {
                    Reply::ProducerAdded(producer) => published.push(PublishedTrack {
                        publisher: self.peer.clone(),
                        producer,
                        kind: section.kind,
                        codec: section.codec.clone(),
                    }),
                    other => return Err(ApiError::new(ApiCode::RtcFailed, format!("producer refused: {other:?}"))),
                }
            }
        }
        self.state.hub().add_tracks(&self.room, published);
        self.publishing = Some(transport);
        Ok(event("answer", json!({"sdp": answer.sdp})))
    }
}

impl Session<'_> {
    /// Offers the client every stream the other peers of the room publish; the transport is
    /// opened when its answer brings the client's ICE credentials and fingerprint.
    fn subscribe(&mut self) -> Result<Value, ApiError> {
        if self.subscribed.is_some() || self.offered.is_some() {
            return Err(ApiError::request("this session subscribes already; renegotiation comes later"));
        }
        let tracks = self.state.hub().tracks_for(&self.room, &self.peer);
        if tracks.is_empty() {
            return Err(ApiError::new(ApiCode::NoMedia, "nobody in the room publishes yet"));
        }
        let worker = self.state.read(|reg| reg.room(&self.room).map(|r| r.worker))?;
        let (address, fingerprint) =
            self.state.worker_endpoint(worker).ok_or_else(|| ApiError::code(ApiCode::NoWorker))?;
        let local_ice = IceCredentials::generate().map_err(|e| ApiError::system(format!("ICE credentials: {e}")))?;
        let outgoing: Vec<sdp::OutgoingTrack> = tracks
            .iter()
            .enumerate()
            .map(|(i, track)| {
                let mut codec = track.codec.clone();
                // RTX towards subscribers is offered once consumers negotiate it.
                codec.rtx_payload_type = None;
                sdp::OutgoingTrack {
                    mid: sdp::Mid::new(format!("{i}")),
                    kind: track.kind,
                    codec,
                    ssrc: sdp::Ssrc(subscriber_ssrc(track.producer)),
                    rtx_ssrc: None,
                    stream_id: format!("publisher-{}", track.producer.0),
                    track_id: format!("track-{}", track.producer.0),
                    cname: format!("cname-{}", track.producer.0),
                }
            })
            .collect();
        let session_id = u64::from(worker as u32) << 32 | 1;
        let no_caps = sdp::BitrateCaps { min_bps: None, max_bps: None };
        let local = self.local_parameters(session_id, &local_ice, fingerprint, address.port(), no_caps);
        let offer = sdp::offer(&local, &sdp::OfferLayout::default(), &outgoing, &sdp::CodecPolicy::default())
            .map_err(|e| ApiError::system(format!("cannot offer the room's streams: {e}")))?;
        let streams = tracks.iter().map(|t| (t.producer, subscriber_ssrc(t.producer))).collect();
        self.offered = Some(PendingSubscription { local_ice, streams });
        Ok(event("offer", json!({"sdp": offer.sdp})))
    }

    /// The SFU's side of a description: its ICE credentials and certificate, and one host
    /// candidate on the announced address at the worker's media port.
    fn local_parameters(
        &self,
        session_id: u64,
        ice: &IceCredentials,
        fingerprint: CertificateFingerprint,
        worker_port: u16,
        bitrate: sdp::BitrateCaps,
    ) -> sdp::LocalParameters {
        sdp::LocalParameters {
            session_id,
            session_version: 1,
            ice_ufrag: ice.ufrag().to_owned(),
            ice_pwd: ice.pwd().to_owned(),
            fingerprint,
            candidates: vec![sdp::Candidate {
                transport: sdp::CandidateTransport::Udp,
                address: SocketAddr::new(self.state.settings().announced_ip, worker_port),
                priority: HOST_UDP_PRIORITY,
            }],
            bitrate,
        }
    }

    /// The client answered our offer: open its receiving transport and a consumer per stream.
    async fn accept_answer(&mut self, sdp: &str) -> Result<Value, ApiError> {
        let pending = self.offered.take().ok_or_else(|| ApiError::request("no offer is waiting for an answer"))?;
        let answer =
            sdp::RemoteDescription::parse(sdp).map_err(|e| ApiError::invalid(format!("answer refused: {e}")))?;
        let remote_ice = IceCredentials::new(answer.ice_ufrag.clone(), answer.ice_pwd.clone())
            .map_err(|e| ApiError::invalid(format!("answer's ICE credentials: {e}")))?;
        let (local_ice, remote_fingerprint) = (Some(pending.local_ice), answer.fingerprint);
        let worker = self.state.read(|reg| reg.room(&self.room).map(|r| r.worker))?;
        let reply = self
            .state
            .request_worker(worker, move |request| Command::CreateTransport {
                request,
                local_ice,
                remote_ice,
                remote_fingerprint,
            })
            .await?;
        let Reply::TransportCreated { created, .. } = reply else {
            return Err(ApiError::new(ApiCode::RtcFailed, format!("the worker refused a transport: {reply:?}")));
        };
        let transport = created.transport;
        for (producer, ssrc) in pending.streams {
            match self
                .state
                .request_worker(worker, move |request| Command::AddConsumer { request, producer, transport, ssrc })
                .await?
            {
                Reply::ConsumerAdded(_) => {}
                // The publisher left between offer and answer: its stream is simply not sent.
                Reply::Refused(_) => {}
                other => return Err(ApiError::new(ApiCode::RtcFailed, format!("consumer refused: {other:?}"))),
            }
        }
        self.subscribed = Some(transport);
        Ok(event("subscribed", json!({})))
    }
}

/// The SSRC a producer's stream is sent to subscribers as: unique per producer of a worker,
/// so the sections of one subscriber's bundle never collide.
fn subscriber_ssrc(producer: ProducerId) -> u32 {
    0x5500_0000 | (producer.0 & 0x00FF_FFFF)
}

/// RFC 8445 §5.1.2.1 priority of a host candidate (type preference 126, one local address,
/// component 1).
const HOST_UDP_PRIORITY: u32 = (126 << 24) | (65_535 << 8) | 255;

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

pub fn room_closed_event() -> Outgoing {
    Outgoing::Close(event("room-closed", json!({})))
}
