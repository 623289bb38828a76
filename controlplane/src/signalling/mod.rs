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

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use self::hub::Outgoing;
use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RoomId};
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
        run(&mut socket, &mut queue).await;
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

/// Relays queued events to the client and answers its messages, until either side ends.
async fn run(socket: &mut WebSocket, queue: &mut tokio::sync::mpsc::Receiver<Outgoing>) {
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
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(body))) => match client_message(&body) {
                    ClientMessage::Leave => return,
                    ClientMessage::Reply(value) => {
                        if socket.send(text(&value)).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let refused = ApiError::invalid("signalling messages are JSON text");
                    if socket.send(text(&error_event(&refused))).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
        }
    }
}

enum ClientMessage {
    Leave,
    Reply(Value),
}

/// What a client's message asks for. Unknown or malformed messages are answered with an
/// `error` event (10002/10003) and the session goes on.
fn client_message(body: &str) -> ClientMessage {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Err(e) => ClientMessage::Reply(error_event(&ApiError::invalid(format!("not a signalling message: {e}")))),
        Ok(message) => match message.kind.as_str() {
            "leave" => ClientMessage::Leave,
            "ping" => ClientMessage::Reply(event("pong", json!({}))),
            other => ClientMessage::Reply(error_event(&ApiError::request(format!("unknown message type {other:?}")))),
        },
    }
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

pub fn room_closed_event() -> Outgoing {
    Outgoing::Close(event("room-closed", json!({})))
}
