//! The JavaScript SDK and the demo page, on the client listener.
//!
//! `GET /uprtc.js` (the SDK, `static/uprtc.js`) is always served, to any origin, and so is an
//! empty `GET /favicon.ico` that browsers ask for by themselves. In demo mode
//! (`client.demo`) `GET /demo` serves the demo page and `POST /demo/join` lets anyone create a
//! conversation room or invite themselves into one by its invitation code, and hands back a
//! join token: what a business server would do through the REST API, without the AppSecret,
//! but only for the demo's own rooms. With demo mode off both answer 404.
//!
//! The demo is open to anyone who reaches the client listener, so it is fenced in
//! ([`guard`]): it invites only into rooms it opened itself (marked [`Room::demo`]; any other
//! room's code gets the answer of an unknown code, so real rooms cannot be probed through
//! it), it keeps at most `client.demo_max_rooms` rooms open, it closes its rooms once they
//! have been empty for `client.demo_room_idle_ms` or open for `client.demo_room_max_age_ms`
//! ([`spawn_expiry`]), and it paces each source address to `client.demo_joins_per_minute`.
//!
//! Rules: rooms and invitations go through [`AppState::write`], the registry's one write path,
//! so what the demo creates is committed before it is answered, like any REST change; the
//! demo closes rooms as `DELETE /room/{id}` does ([`signalling::close_room`]). Errors carry
//! the spec's code in an envelope-like body with a real HTTP status (400, 404, 413, 429, 500,
//! 503): the page is not a business server and reads the status first. `POST /demo/join`
//! needs the TCP peer address of each request (axum's [`ConnectInfo`]): the client listener
//! must be served with it.
#![forbid(unsafe_code)]

pub mod guard;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use self::guard::{DemoLimits, Expiry, Refusal, Sweep};
use crate::envelope::{ApiCode, ApiError, Empty, Envelope};
use crate::ids::{PeerId, RoomId};
use crate::registry::{NewRoom, NewRoomKind, Protocol, Room};
use crate::signalling;
use crate::state::AppState;
use crate::token;

/// The SDK, an ES module without dependencies.
pub const SDK: &str = include_str!("../static/uprtc.js");
/// The demo page; it imports `/uprtc.js`.
pub const PAGE: &str = include_str!("../static/demo.html");

/// A demo join is a peer name and perhaps a code: anything larger is not from the page.
const MAX_JOIN_BODY: usize = 4096;
/// How long a demo token lasts (as `POST /room/{id}/token` by default).
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The REST API's defaults for a room whose request names no bitrates.
const MIN_BITRATE: u64 = 600_000;
const MAX_BITRATE: u64 = 3_000_000;

/// `GET /uprtc.js`: the SDK, importable from any origin.
pub async fn sdk() -> Response {
    let mut response = static_file(SDK, "application/javascript; charset=utf-8");
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// `GET /demo`: the demo page, in demo mode.
pub async fn page(State(state): State<AppState>) -> Response {
    if state.settings().demo.is_none() {
        return (StatusCode::NOT_FOUND, "demo mode is off\n").into_response();
    }
    static_file(PAGE, "text/html; charset=utf-8")
}

/// `GET /favicon.ico`: nothing, so that a browser's automatic request is not taken for an
/// invitation code by the signalling route (which would answer 400).
pub async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The binary carries the file: a new binary must not be hidden behind a cached copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest {
    peer: String,
    /// A number or a string of digits; absent or null: create a room.
    invitation_code: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Joined {
    room_id: RoomId,
    invitation_code: u32,
    /// Clients connect to `serverUrl + invitationCode`.
    server_url: String,
    /// A join token for the peer, valid for an hour.
    token: String,
}

/// An error as the page sees it: the spec's code in an envelope, and an HTTP status.
#[derive(Debug)]
struct DemoError {
    status: StatusCode,
    error: ApiError,
    /// Why a well-formed request was refused, counted in `/metrics`.
    refusal: Option<Refusal>,
    /// For 429: when the source may try again.
    retry_after: Option<Duration>,
}

impl DemoError {
    fn new(status: StatusCode, error: ApiError) -> Self {
        Self { status, error, refusal: None, retry_after: None }
    }

    fn refused(refusal: Refusal, limits: &DemoLimits) -> Self {
        let (status, error) = match refusal {
            Refusal::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                ApiError::request("too many demo joins from this address; try again later"),
            ),
            Refusal::RoomCap => (
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::new(
                    ApiCode::NoWorker,
                    format!("the demo has {} rooms open, its most; try again later", limits.max_rooms),
                ),
            ),
            // One answer for both, so that a code's answer does not tell whether a room has it.
            Refusal::NotADemoRoom | Refusal::UnknownCode => {
                (StatusCode::NOT_FOUND, ApiError::new(ApiCode::RoomNotFound, "no demo room has this invitation code"))
            }
        };
        Self { status, error, refusal: Some(refusal), retry_after: None }
    }
}

impl From<ApiError> for DemoError {
    fn from(error: ApiError) -> Self {
        let status = match error.code {
            ApiCode::RoomNotFound => StatusCode::NOT_FOUND,
            ApiCode::System => StatusCode::INTERNAL_SERVER_ERROR,
            ApiCode::NoWorker => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error)
    }
}

impl IntoResponse for DemoError {
    fn into_response(self) -> Response {
        let Self { status, error, retry_after, .. } = self;
        let mut response =
            (status, Json(Envelope { code: error.code.number(), data: Empty {}, msg: error.msg })).into_response();
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up: a client that waits as told finds a join left.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `POST /demo/join` `{peer, invitationCode?}`: without a code, a new demo room (a
/// conversation room) mastered by `peer`; with the code of a demo room, `peer` invited into
/// it. Answers where to connect and a join token.
pub async fn join(State(state): State<AppState>, request: Request) -> Response {
    let Some(limits) = state.settings().demo else {
        return DemoError::new(StatusCode::NOT_FOUND, ApiError::request("demo mode is off")).into_response();
    };
    let joined = async {
        pace(&state, &limits, &request)?;
        join_room(&state, &limits, request).await
    };
    match joined.await {
        Ok(joined) => Json(joined).into_response(),
        Err(error) => {
            if let Some(refusal) = error.refusal {
                state.demo_guard().count_refused(refusal);
            }
            error.into_response()
        }
    }
}

/// Takes one join from the bucket of the request's source address: every request counts,
/// bad ones and unknown codes included, so that codes cannot be guessed faster.
fn pace(state: &AppState, limits: &DemoLimits, request: &Request) -> Result<(), DemoError> {
    let Some(ConnectInfo(source)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        // The listener was served without its peers' addresses: a bug of the binary, which
        // must not turn into a demo without a limit.
        tracing::error!("the client listener gives no peer address; demo joins are refused");
        return Err(ApiError::system("the client listener gives no peer address").into());
    };
    state
        .demo_guard()
        .admit(source.ip(), Instant::now(), limits.joins_per_minute)
        .map_err(|wait| DemoError { retry_after: Some(wait), ..DemoError::refused(Refusal::RateLimited, limits) })
}

async fn join_room(state: &AppState, limits: &DemoLimits, request: Request) -> Result<Joined, DemoError> {
    let body = axum::body::to_bytes(request.into_body(), MAX_JOIN_BODY).await.map_err(|_| {
        DemoError::new(StatusCode::PAYLOAD_TOO_LARGE, ApiError::invalid(format!("body exceeds {MAX_JOIN_BODY} bytes")))
    })?;
    let body: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("expected {{peer, invitationCode?}}: {e}")))?;
    let peer = PeerId::try_from(body.peer).map_err(|e| ApiError::invalid(format!("peer: {e}")))?;
    let code = body.invitation_code.map(invitation_code).transpose()?.flatten();
    let invited = peer.clone();
    let max_rooms = limits.max_rooms as usize;
    let (room, code) = state
        .write(move |reg| {
            if reg.is_blocked(&invited) {
                return Err(ApiError::request(format!("user {invited} is blocked")));
            }
            match code {
                None => {
                    if reg.demo_rooms().count() >= max_rooms {
                        return Ok(Err(Refusal::RoomCap));
                    }
                    let new = NewRoom {
                        master: invited,
                        requested_id: None,
                        protocol: Protocol::Udp,
                        min_bitrate: MIN_BITRATE,
                        max_bitrate: MAX_BITRATE,
                        kind: NewRoomKind::Convo { members: Vec::new(), max_members: None },
                        demo: true,
                    };
                    reg.create(new).map(|room| Ok((room.id.clone(), room.invitation_code)))
                }
                Some(code) => {
                    let id = match reg.room_by_code(code) {
                        Some(room) if room.demo => room.id.clone(),
                        Some(_) => return Ok(Err(Refusal::NotADemoRoom)),
                        None => return Ok(Err(Refusal::UnknownCode)),
                    };
                    reg.add_convo_members(&id, vec![invited])?;
                    Ok(Ok((id, code)))
                }
            }
        })
        .await?
        .map_err(|refusal| DemoError::refused(refusal, limits))?;
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ApiError::system("the system clock is set before 1970"))?
        .as_secs();
    let settings = state.settings();
    let token = token::mint(&settings.app_secret, room.clone(), peer, now_unix, TOKEN_TTL)
        .map_err(|e| ApiError::system(e.to_string()))?;
    Ok(Joined { room_id: room, invitation_code: code, server_url: settings.client_url.clone(), token })
}

/// Starts closing demo rooms on the current runtime, in demo mode: each sweep
/// ([`DemoLimits::sweep_interval`]) closes, as `DELETE /room/{id}` does, the demo rooms that
/// have had no client for `room_idle` or been open for `room_max_age`.
pub fn spawn_expiry(state: &AppState) {
    let Some(limits) = state.settings().demo else { return };
    let state = state.clone();
    tokio::spawn(async move {
        let mut sweep = Sweep::default();
        let mut tick = tokio::time::interval(limits.sweep_interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let open: Vec<(RoomId, bool)> =
                state.read(|reg| reg.demo_rooms().map(|room| (room.id.clone(), !room.connected.is_empty())).collect());
            for (id, expiry) in sweep.due(Instant::now(), open, &limits) {
                expire(&state, id, expiry).await;
            }
        }
    });
}

async fn expire(state: &AppState, id: RoomId, expiry: Expiry) {
    // An idle room that a client entered since the sweep looked is not idle.
    let still_due = move |room: &Room| expiry == Expiry::MaxAge || room.connected.is_empty();
    match signalling::close_room(state, id.clone(), still_due).await {
        Ok(true) => {
            state.demo_guard().count_expired(expiry);
            tracing::info!(room = %id, reason = expiry.name(), "demo room closed");
        }
        Ok(false) => {}
        // Closed through the REST API since the sweep looked.
        Err(e) if e.code == ApiCode::RoomNotFound => {}
        Err(e) => tracing::warn!(room = %id, error = %e.msg, "cannot close an expired demo room"),
    }
}

/// An invitation code as the page may send it: a number or a string of digits (`null`: none).
fn invitation_code(value: Value) -> Result<Option<u32>, ApiError> {
    let bad = || ApiError::invalid("invitationCode: a nine-digit number");
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map(Some).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invitation_codes_as_numbers_or_digits() {
        assert_eq!(invitation_code(json!(123456789)).unwrap(), Some(123_456_789));
        assert_eq!(invitation_code(json!(" 123456789 ")).unwrap(), Some(123_456_789));
        assert_eq!(invitation_code(Value::Null).unwrap(), None);
        for bad in [json!(""), json!("12a"), json!(-1), json!(1.5), json!(99_999_999_999u64), json!([1]), json!(true)] {
            assert_eq!(invitation_code(bad.clone()).unwrap_err().code, ApiCode::InvalidParameter, "{bad}");
        }
    }

    #[test]
    fn the_page_imports_the_sdk_it_is_served_with() {
        assert!(PAGE.contains("/uprtc.js"));
        assert!(SDK.contains("export class Room"));
    }
}
