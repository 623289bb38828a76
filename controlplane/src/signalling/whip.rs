//! WHIP (RFC 9725) and WHEP on the client listener: standard HTTP ingest and playback for
//! tools that speak no signalling of ours. `POST /whip/{roomId}` takes a publisher's SDP
//! offer, `POST /whep/{roomId}` a player's; both need `Authorization: Bearer <join token>`
//! and answer `201 Created` with the SDP answer and a `Location` whose `DELETE` ends the
//! session. CORS lets a page from any origin use them.
//!
//! A WHIP or WHEP client is a room member like a signalling client: admitted under the
//! room's rules, counted in presence, kicked or closed with the room. Its session lives in
//! a task that holds its hub queue; a kick, the room's deletion, the `DELETE` or the end of
//! its transport (the client vanished: consent expired, or it never connected) ends it. The
//! `DELETE` is answered once the member has left, so a new `POST` right after it is admitted.
//! A WHEP player may start before anything is published: its sections play the room's
//! streams as they come and go (see `player`), without renegotiation over HTTP.
#![forbid(unsafe_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tower_http::cors::{Any, CorsLayer};

use super::hub::Outgoing;
use super::{ClientAddress, Session, admit_with_token, enter, source_ip};
use crate::envelope::{ApiCode, ApiError};
use crate::ids::RoomId;
use crate::sdp;
use crate::state::AppState;

/// The WHIP and WHEP routes, with their CORS policy.
pub fn routes() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::ETAG]);
    Router::new()
        .route("/whip/{room}", post(|s, r, c, h, b| offered(Role::Publisher, s, r, c, h, b)))
        .route("/whep/{room}", post(|s, r, c, h, b| offered(Role::Player, s, r, c, h, b)))
        .route("/whip/{room}/{resource}", delete(end).patch(no_trickle))
        .route("/whep/{room}/{resource}", delete(end).patch(no_trickle))
        .layer(DefaultBodyLimit::max(sdp::MAX_SDP_BYTES))
        .layer(cors)
}

/// What each side of the protocol does with the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Player,
}

impl Role {
    fn path(self) -> &'static str {
        match self {
            Role::Publisher => "whip",
            Role::Player => "whep",
        }
    }
}

/// An HTTP error with the spec's code in a JSON body.
struct HttpError(StatusCode, ApiError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let HttpError(status, error) = self;
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"code": error.code.number(), "msg": error.msg}).to_string(),
        )
            .into_response()
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        let status = match error.code {
            ApiCode::RoomNotFound => StatusCode::NOT_FOUND,
            ApiCode::IllegalClient => StatusCode::UNAUTHORIZED,
            ApiCode::InvalidParameter => StatusCode::BAD_REQUEST,
            ApiCode::AlreadyConnected | ApiCode::NoMedia => StatusCode::CONFLICT,
            ApiCode::System | ApiCode::NoWorker | ApiCode::RtcFailed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        HttpError(status, error)
    }
}

/// Where a WHEP player of a live room this node originates and is full for plays instead:
/// the same endpoint on a mirror node (the player sends its offer and token there again,
/// as a 307 asks).
async fn mirror_location(state: &AppState, room: &RoomId, token: &str) -> Option<HeaderValue> {
    state.cluster()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = crate::token::verify(&state.settings().app_secret, token, now).ok().filter(|c| &c.room == room)?;
    let (node, _) = crate::cluster::mirror::audience_redirect(state, room, &claims.peer).await?;
    let base = node.client_url.replacen("ws", "http", 1);
    let location = format!("{}/whep/{}", base.trim_end_matches('/'), percent_encode(room.as_str()));
    tracing::info!(%room, peer = %claims.peer, to = %node.alias, "WHEP player sent to a mirror");
    HeaderValue::from_str(&location).ok()
}

/// `POST /whip/{room}` or `/whep/{room}`, as `role` says: the answer, or the error's response.
async fn offered(
    role: Role,
    state: State<AppState>,
    room: Path<String>,
    client: ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = source_ip(client);
    start(state, room, source, headers, body, role).await.unwrap_or_else(IntoResponse::into_response)
}

/// Admits the client, answers its offer, and leaves the session running in a task.
async fn start(
    State(state): State<AppState>,
    Path(room): Path<String>,
    source: std::net::IpAddr,
    headers: HeaderMap,
    body: Bytes,
    role: Role,
) -> Result<Response, HttpError> {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")));
    if !is_sdp {
        let error = ApiError::invalid("the body must be an SDP offer (Content-Type: application/sdp)");
        return Err(HttpError(StatusCode::UNSUPPORTED_MEDIA_TYPE, error));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the SDP offer is not UTF-8"))?.to_owned();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or_else(|| ApiError::new(ApiCode::IllegalClient, "Authorization: Bearer <join token> is required"))?;
    let room = RoomId::try_from(room).map_err(|_| ApiError::new(ApiCode::RoomNotFound, "no such room"))?;
    state.read(|reg| reg.room(&room).map(|_| ()))?;
    if role == Role::Player
        && let Some(location) = mirror_location(&state, &room, token).await
    {
        return Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response());
    }
    let peer = admit_with_token(&state, &room, token, None).await?;
    let (id, queue) = enter(&state, &room, &peer);
    let mut session = Session::new(&state, room.clone(), peer, id, source);
    let answered = match role {
        Role::Publisher => session.publish(&offer, false).await,
        Role::Player => session.play(&offer).await,
    };
    let answer = match answered {
        Ok(answer) => answer,
        Err(error) => {
            session.end().await;
            return Err(error.into());
        }
    };
    let resource = format!("{:032x}", rand::random::<u128>());
    let (stop, stopped) = oneshot::channel();
    state.hub().add_http_session(&resource, &room, stop);
    let owned = SessionParts::from(session);
    let task_state = state.clone();
    let held = resource.clone();
    tokio::spawn(async move { hold(task_state, owned, held, queue, stopped).await });
    let location = format!("/{}/{}/{resource}", role.path(), percent_encode(room.as_str()));
    let mut response = (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// A session's state, without the borrow of the app state, to move into its task.
struct SessionParts {
    room: RoomId,
    peer: crate::ids::PeerId,
    id: u64,
    source: std::net::IpAddr,
    publishing: Option<uprtcd_dataplane::router::TransportId>,
    subscription: Option<super::subscribe::Subscription>,
}

impl From<Session<'_>> for SessionParts {
    fn from(s: Session<'_>) -> Self {
        let (room, peer, id, source) = (s.room, s.peer, s.id, s.source);
        SessionParts { room, peer, id, source, publishing: s.publishing, subscription: s.subscription }
    }
}

/// The token of an `Authorization` header's Bearer scheme, whose name is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Keeps the session until its `DELETE`, a kick, the room's deletion or the end of its
/// transport, then ends it.
async fn hold(
    state: AppState,
    parts: SessionParts,
    resource: String,
    mut queue: mpsc::Receiver<Outgoing>,
    mut stopped: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let SessionParts { room, peer, id, source, publishing, subscription } = parts;
    let mut session = Session { state: &state, room, peer, id, source, publishing, subscription };
    let mut deleted = None;
    loop {
        tokio::select! {
            stop = &mut stopped => {
                deleted = stop.ok();
                break;
            }
            outgoing = queue.recv() => match outgoing {
                Some(Outgoing::Close(_) | Outgoing::Unpublish(_)) | None => break,
                Some(Outgoing::TransportClosed { reason, .. }) => {
                    tracing::info!(room = %session.room, peer = %session.peer, reason = reason.as_str(), "WHIP/WHEP client gone");
                    break;
                }
                Some(Outgoing::PauseTrack { track_id, paused, done }) => {
                    session.set_track_paused(&track_id, paused).await;
                    let _ = done.try_send(());
                }
                // An HTTP client has no channel to be pinged on: it is there as long as its
                // transport is, whose end (consent expiry) ends this session.
                Some(Outgoing::Probe { alive }) => {
                    let _ = alive.try_send(());
                }
                // A player's slots follow the room's streams.
                Some(Outgoing::Tracks(_)) => {
                    if let Err(e) = session.fill_slots().await {
                        tracing::warn!(room = %session.room, peer = %session.peer, error = %e.msg, "a WHEP player's streams could not follow the room");
                    }
                }
                Some(Outgoing::Event(_)) => {}
            },
        }
    }
    // Ended other than by its `DELETE`: its location goes too.
    state.hub().take_http_session(&resource, &session.room);
    session.end().await;
    if let Some(deleted) = deleted {
        let _ = deleted.send(());
    }
}

/// How long a `DELETE` waits for the session to leave before answering anyway.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `DELETE` on a session's location: answered once the session has left the room.
async fn end(State(state): State<AppState>, Path((room, resource)): Path<(String, String)>) -> Response {
    let stop = RoomId::try_from(room).ok().and_then(|room| state.hub().take_http_session(&resource, &room));
    match stop {
        Some(stop) => {
            let (left, has_left) = oneshot::channel();
            if stop.send(left).is_ok() {
                let _ = tokio::time::timeout(DELETE_WAIT, has_left).await;
            }
            StatusCode::OK.into_response()
        }
        None => {
            HttpError(StatusCode::NOT_FOUND, ApiError::new(ApiCode::PeerNotInRoom, "no such session")).into_response()
        }
    }
}

/// A room id as one path segment: everything but RFC 3986's unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Trickle ICE and ICE restarts over `PATCH` (RFC 9725 §4.3): the SFU is ICE-lite with its
/// candidates in the answer, so it takes none.
async fn no_trickle() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "DELETE")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
