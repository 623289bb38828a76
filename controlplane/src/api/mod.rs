//! The REST API v2 router: every endpoint of the spec under `/uprtc/api/v2`, the
//! AppSecret check, the enveloped answers for unknown paths and wrong methods, and the
//! OpenAPI description generated from the handlers' annotations.
//!
//! Rule: a route is declared once, by its handler's `#[utoipa::path]`; `routes!` registers
//! it with axum and with the OpenAPI document together, so the two cannot drift apart.
#![forbid(unsafe_code)]

mod congestion;
mod live;
mod record;
mod rooms;
mod server;
mod token;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::envelope::{ApiCode, ApiError};
use crate::listener::HttpStats;
use crate::state::AppState;

/// Where every endpoint of the spec lives.
pub const PREFIX: &str = "/uprtc/api/v2";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "uprtcd REST API",
        version = "2",
        description = "Rooms, live rooms, merges, mirrors, recording and server load. Every answer is \
                       the envelope {code, data, msg}; code 0 is success."
    ),
    servers((url = "/uprtc/api/v2")),
    modifiers(&AppSecretScheme),
    security(("appSecret" = []))
)]
struct ApiDoc;

struct AppSecretScheme;

impl Modify for AppSecretScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = ApiKey::Header(ApiKeyValue::with_description("authorization", "key=<AppSecret>"));
        components.add_security_scheme("appSecret", SecurityScheme::ApiKey(scheme));
    }
}

/// The API's routes and their OpenAPI description.
fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(rooms::create_convo))
        .routes(routes!(rooms::add_convo_members))
        .routes(routes!(rooms::broadcast_message))
        .routes(routes!(rooms::peers_message))
        .routes(routes!(rooms::get_room, rooms::close_room))
        .routes(routes!(rooms::room_exists))
        .routes(routes!(rooms::set_join_enabled))
        .routes(routes!(rooms::get_peer, rooms::kick_peer))
        .routes(routes!(rooms::record_status))
        .routes(routes!(live::create_live))
        .routes(routes!(live::add_mirror))
        .routes(routes!(live::list_mirrors))
        .routes(routes!(live::add_live_member))
        .routes(routes!(live::list_live_members))
        .routes(routes!(live::remove_live_member))
        .routes(routes!(live::merge, live::list_merged))
        .routes(routes!(live::separate_by_host))
        .routes(routes!(live::separate))
        .routes(routes!(live::merge_track))
        .routes(routes!(record::record_server))
        .routes(routes!(record::start))
        .routes(routes!(record::stop))
        .routes(routes!(record::status))
        .routes(routes!(record::playback))
        .routes(routes!(record::client_upload))
        .routes(routes!(record::download))
        .routes(routes!(record::upload))
        .routes(routes!(server::mini_load))
        .routes(routes!(server::room_num))
        .routes(routes!(server::cpu_load))
        .routes(routes!(server::recycle))
        .routes(routes!(server::block_peer))
        .routes(routes!(token::mint))
        .split_for_parts()
}

/// The OpenAPI document of the API, as served at `openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().1
}

/// The API listener's whole router; `/metrics` reports `http` besides the state.
pub fn router(state: AppState, http: HttpStats) -> Router {
    let (documented, openapi) = documented_routes();
    // Serialized once: axum clones a handler for each request it serves, and a copy of the
    // document is a tree of thousands of allocations, ~1.5 MB.
    let openapi = Bytes::from(serde_json::to_vec(&openapi).expect("plain data with string keys always serializes"));
    let api = documented
        // The spec's spelling and the corrected one; the trailing-slash twin of peers/message.
        .route("/room/{roomId}/join/enable/{enable}", post(rooms::set_join_enabled))
        .route("/room/{roomId}/peers/message", post(rooms::peers_message))
        .method_not_allowed_fallback(|| async { ApiError::request("method not allowed on this path") })
        // Inside the AppSecret check: only authenticated calls are passed to other nodes.
        .layer(middleware::from_fn_with_state(state.clone(), crate::cluster::forward::to_owner))
        .layer(middleware::from_fn_with_state(state.clone(), require_app_secret))
        // JSON bodies are capped by `ApiJson` (api.max_body_bytes) and uploads by the upload
        // handler (api.max_upload_bytes); axum's own 2 MB default would cut uploads short.
        .layer(DefaultBodyLimit::disable())
        .route("/openapi.json", get(move || async move { ([(CONTENT_TYPE, "application/json")], openapi) }));
    let internal = crate::cluster::mirror::internal_routes()
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(state.clone(), require_app_secret));
    Router::new()
        .nest(PREFIX, api)
        .nest(crate::cluster::mirror::INTERNAL_PREFIX, internal)
        .route(
            "/debug/congestion",
            get(congestion::report).layer(middleware::from_fn_with_state(state.clone(), require_app_secret)),
        )
        .route("/metrics", get(move |State(state): State<AppState>| metrics(state, http)))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

/// Prometheus metrics, outside the API prefix and without the AppSecret: scrapers reach
/// the API listener, which stays on a private address.
async fn metrics(state: AppState, http: HttpStats) -> impl IntoResponse {
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&state, &http))
}

/// Answers 10001 unless the request carries `authorization: key=<AppSecret>`. Both sides
/// are hashed first so the comparison takes the same time whatever their lengths.
async fn require_app_secret(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let expected = Sha256::digest(format!("key={}", state.settings().app_secret));
    let given = Sha256::digest(request.headers().get(AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default());
    if bool::from(expected.ct_eq(&given)) {
        next.run(request).await
    } else {
        ApiError::new(ApiCode::Auth, "missing or wrong authorization: expected key=<AppSecret>").into_response()
    }
}
