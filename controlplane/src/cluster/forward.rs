//! REST on any node: a call about a room (or recording) that another node of the cluster
//! made is passed to that node's API and its answer returned unchanged, so an integrator
//! may talk to any node. Which node made an id is in the id ([`crate::ids::tag_of`]): no
//! Redis lookup on the way.
//!
//! Rules: a forwarded call carries the caller's own `authorization` (the cluster shares the
//! AppSecret, and the receiving node checks it like any other call) and the
//! [`FORWARDED_HEADER`], and a forwarded call is never forwarded again, so a stale
//! directory cannot make a loop. A node that is gone, does not connect, or does not answer
//! within `cluster.call_timeout_ms` is a 10000 naming it, never a hang; calls in flight to
//! other nodes are capped.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use super::{Cluster, NodeRecord, Owner};
use crate::api::PREFIX;
use crate::envelope::ApiError;
use crate::state::AppState;

/// Marks a call one node passed to another; its value is the forwarding node's alias.
pub const FORWARDED_HEADER: &str = "x-uprtcd-forwarded";
/// Calls this node has in flight to other nodes at most.
const MAX_IN_FLIGHT: usize = 256;

/// The HTTP client of forwarded calls.
#[derive(Debug)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Body>,
    timeout: Duration,
    in_flight: Semaphore,
}

impl Forwarder {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(3))));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { client, timeout, in_flight: Semaphore::new(MAX_IN_FLIGHT) }
    }
}

impl Forwarder {
    /// Calls the internal API of `node` at `path` with a JSON `body` and the AppSecret:
    /// the answer's `data` on code 0, else its code and msg (10000 when it is no envelope).
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        node: &NodeRecord,
        method: Method,
        path: &str,
        secret: &str,
        body: Vec<u8>,
    ) -> Result<T, ApiError> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", node.api_address))
            .header(header::AUTHORIZATION, format!("key={secret}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| ApiError::system(format!("{}: {e}", node_name(node))))?;
        let work = async {
            let response = self.client.request(request).await.map_err(|e| format!("cannot be reached: {e}"))?;
            let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(response.into_body(), 1 << 20))
                .await
                .map_err(|e| format!("answer cut off: {e}"))?
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| format!("answered no envelope: {e}"))
        };
        let envelope = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(envelope)) => envelope,
            Ok(Err(why)) => return Err(ApiError::system(format!("{} {why}", node_name(node)))),
            Err(_) => {
                return Err(ApiError::system(format!(
                    "{} did not answer within {} ms",
                    node_name(node),
                    self.timeout.as_millis()
                )));
            }
        };
        let code = envelope.get("code").and_then(serde_json::Value::as_u64).unwrap_or(10000);
        if code != 0 {
            let msg = envelope.get("msg").and_then(serde_json::Value::as_str).unwrap_or_default();
            let code = u32::try_from(code).ok().and_then(crate::envelope::ApiCode::from_number);
            return Err(ApiError::new(
                code.unwrap_or(crate::envelope::ApiCode::System),
                format!("{}: {msg}", node_name(node)),
            ));
        }
        let data = envelope.get("data").cloned().unwrap_or(serde_json::Value::Null);
        serde_json::from_value(data)
            .map_err(|e| ApiError::system(format!("{} answered unexpected data: {e}", node_name(node))))
    }
}

/// What a REST path names, for routing it to the node that holds it.
#[derive(Debug, PartialEq, Eq)]
enum Key<'a> {
    /// An id in the path.
    Path(&'a str),
    /// An id in the JSON body's field of this name.
    Body(&'static str),
    /// Nothing: the node called answers.
    None,
}

/// The id `path` (relative to the API prefix) is about, if it is about one room or
/// recording.
fn key_of<'a>(method: &Method, path: &'a str) -> Key<'a> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["room", "convo" | "live"] if method == Method::POST => Key::None,
        ["room", id, ..] => Key::Path(id),
        ["record", "stop" | "download", id, ..] => Key::Path(id),
        ["record", "start"] => Key::Body("roomId"),
        ["record", "playback"] => Key::Body("recordId"),
        ["record", "server" | "upload" | "client", ..] => Key::None,
        ["record", id, "status"] => Key::Path(id),
        _ => Key::None,
    }
}

/// Middleware of the API router (after the AppSecret check): passes a call about another
/// node's room to that node.
pub async fn to_owner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster() else { return next.run(request).await };
    if request.headers().contains_key(FORWARDED_HEADER) {
        cluster.stats.received_forwarded.fetch_add(1, Ordering::Relaxed);
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let path = path.strip_prefix(PREFIX).unwrap_or(&path);
    let (key, request) = match key_of(request.method(), path) {
        Key::None => return next.run(request).await,
        Key::Path(id) => (id.to_owned(), request),
        Key::Body(field) => match body_field(request, field, state.settings().max_body_bytes).await {
            Ok((Some(id), request)) => (id, request),
            Ok((None, request)) => return next.run(request).await,
            Err(e) => return e.into_response(),
        },
    };
    let Some(tag) = crate::ids::tag_of(&key) else { return next.run(request).await };
    match cluster.owner_of_tag(tag) {
        Owner::Here => next.run(request).await,
        Owner::Gone(alias) => {
            cluster.stats.forwarded_unreachable.fetch_add(1, Ordering::Relaxed);
            ApiError::system(format!(
                "{key} belongs to node {alias:?}, which is not in the cluster now (no heartbeat within {} ms)",
                cluster.settings.node_ttl.as_millis()
            ))
            .into_response()
        }
        Owner::Node(node) => forward(cluster, &node, request).await.unwrap_or_else(IntoResponse::into_response),
    }
}

/// Reads the body (within the API's cap) for the string in `field`, and gives the request
/// back whole.
async fn body_field(request: Request, field: &str, limit: usize) -> Result<(Option<String>, Request), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::invalid(format!("the request body is over {limit} bytes or was cut off")))?;
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| value.get(field).and_then(|v| v.as_str()).map(str::to_owned));
    Ok((id, Request::from_parts(parts, Body::from(bytes))))
}

/// Passes `request` to `node` and returns its answer as it is.
async fn forward(cluster: &Cluster, node: &NodeRecord, request: Request) -> Result<Response, ApiError> {
    let forwarder = &cluster.forwarder;
    let Ok(_permit) = forwarder.in_flight.try_acquire() else {
        cluster.stats.forwarded_refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::system(format!("too many calls in flight to other nodes ({MAX_IN_FLIGHT})")));
    };
    let (mut parts, body) = request.into_parts();
    let path = parts.extensions.get::<OriginalUri>().map_or_else(
        || format!("{PREFIX}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str())),
        |original| original.0.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    );
    let uri: Uri = format!("http://{}{path}", node.api_address)
        .parse()
        .map_err(|e| ApiError::system(format!("node {:?} has no usable API address: {e}", node.alias)))?;
    parts.uri = uri;
    for hop in [header::HOST, header::CONNECTION, header::TRANSFER_ENCODING, header::TE, header::UPGRADE] {
        parts.headers.remove(hop);
    }
    parts.headers.remove("keep-alive");
    let alias = HeaderValue::from_str(&cluster.alias).unwrap_or(HeaderValue::from_static("node"));
    parts.headers.insert(FORWARDED_HEADER, alias);
    let request = Request::from_parts(parts, body);
    let reply = tokio::time::timeout(forwarder.timeout, forwarder.client.request(request)).await;
    let unreachable = |why: String| ApiError::system(format!("{} holds this room and {why}", node_name(node)));
    match reply {
        Ok(Ok(response)) => {
            cluster.stats.forwarded_ok.fetch_add(1, Ordering::Relaxed);
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(header::CONNECTION);
            parts.headers.remove(header::TRANSFER_ENCODING);
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        Ok(Err(e)) => {
            cluster.stats.forwarded_unreachable.fetch_add(1, Ordering::Relaxed);
            Err(unreachable(format!("cannot be reached: {e}")))
        }
        Err(_) => {
            cluster.stats.forwarded_timeout.fetch_add(1, Ordering::Relaxed);
            Err(unreachable(format!("did not answer within {} ms", forwarder.timeout.as_millis())))
        }
    }
}

fn node_name(node: &NodeRecord) -> String {
    format!("node {:?} ({})", node.alias, node.api_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_about_one_room_or_recording_are_keyed_by_its_id() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(key_of(&post, "/room/convo"), Key::None);
        assert_eq!(key_of(&post, "/room/live"), Key::None);
        assert_eq!(key_of(&get, "/room/abc"), Key::Path("abc"));
        assert_eq!(key_of(&post, "/room/abc/live/mirror"), Key::Path("abc"));
        assert_eq!(key_of(&Method::DELETE, "/room/abc/peer/p"), Key::Path("abc"));
        assert_eq!(key_of(&post, "/record/stop/abc"), Key::Path("abc"));
        assert_eq!(key_of(&get, "/record/download/r1"), Key::Path("r1"));
        assert_eq!(key_of(&get, "/record/r1/status"), Key::Path("r1"));
        assert_eq!(key_of(&post, "/record/start"), Key::Body("roomId"));
        assert_eq!(key_of(&post, "/record/playback"), Key::Body("recordId"));
        for local in ["/record/server", "/record/upload", "/record/client/upload", "/server/miniLoad", "/room", "/"] {
            assert_eq!(key_of(&get, local), Key::None, "{local}");
        }
    }
}
