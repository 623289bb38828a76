//! Join tokens on request, for business servers that would rather not mint their own (see
//! [`crate::token`] for what a token is and how to make one without the API).
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::envelope::{Answer, ApiError, ApiJson, ApiPath, ApiResult, Envelope};
use crate::ids::{PeerId, RoomId};
use crate::state::AppState;
use crate::token;

const DEFAULT_TTL_SECS: u64 = 3600;
/// A day: long enough for any session, short enough that a leaked token does not last.
const MAX_TTL_SECS: u64 = 86_400;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenRequest {
    /// Who the token is for.
    peer_id: PeerId,
    /// Seconds the token stays valid, 1 to 86400; default 3600.
    #[schema(minimum = 1, maximum = 86400)]
    ttl: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct MintedToken {
    /// The JWT (HS256) the client presents when it connects.
    token: String,
    /// The token's `exp`: seconds since the epoch.
    expires_at: u64,
}

/// Mint a join token for a peer of an open room.
#[utoipa::path(post, path = "/room/{roomId}/token", tag = "tokens", request_body = TokenRequest,
    params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<MintedToken>, description = "50001 when the room is not open; 10003 for a blocked peer")))]
pub(super) async fn mint(
    State(state): State<AppState>,
    ApiPath(room): ApiPath<RoomId>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> ApiResult<MintedToken> {
    let ttl_secs = body.ttl.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
        return Err(ApiError::invalid(format!("ttl must be 1 to {MAX_TTL_SECS} seconds, not {ttl_secs}")));
    }
    let peer = body.peer_id;
    state.read(|reg| {
        reg.room(&room)?;
        if reg.is_blocked(&peer) { Err(ApiError::request(format!("user {peer} is blocked"))) } else { Ok(()) }
    })?;
    // The token module is clock-free; this handler is where the time comes in.
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| ApiError::system("the system clock is set before 1970"))?
        .as_secs();
    let ttl = Duration::from_secs(ttl_secs);
    let token = token::mint(&state.settings().app_secret, room, peer, now_unix, ttl)
        .map_err(|e| ApiError::system(e.to_string()))?;
    Ok(Answer(MintedToken { token, expires_at: token::expiry(now_unix, ttl) }))
}
