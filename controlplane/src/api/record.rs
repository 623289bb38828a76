//! Recording endpoints: server-side recordings (start, stop, status; see `crate::recording`),
//! uploads (`POST /record/upload`, and client uploads over WebSocket, see
//! [`crate::files::client_upload`]) checked with ffprobe, `GET /record/download/{recordId}`
//! with byte ranges, and playback rooms ([`crate::playback`]).
#![forbid(unsafe_code)]

use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use utoipa::ToSchema;

use super::rooms::{CommonRoomFields, CreatedRoom, Status};
use crate::envelope::{Answer, ApiCode, ApiError, ApiJson, ApiPath, ApiResult, Empty, Envelope, Noted, done};
use crate::files::range::{self, Selection};
use crate::ids::{PeerId, RecordId, RoomId};
use crate::recording::{self, StartRequest};
use crate::registry::{NewRoomKind, Protocol, Recording, record_status};
use crate::state::AppState;

/// This server, as a recording server.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecordServer {
    name: String,
    server_alias: String,
    server_address: String,
    server_url: String,
}

/// An available recording server: in a cluster the least loaded SERVING node that has
/// ffmpeg and free space; a single node answers itself when it has them.
#[utoipa::path(get, path = "/record/server", tag = "record",
    responses((status = 200, body = Envelope<RecordServer>, description = "50021 when no server can record")))]
pub(super) async fn record_server(State(state): State<AppState>) -> ApiResult<RecordServer> {
    if let Some(cluster) = state.cluster()
        && let Some(node) = cluster.choose(|node| node.can_record).await
    {
        return Ok(Answer(RecordServer {
            name: "uprtcd".to_owned(),
            server_alias: node.alias,
            server_address: node.api_address,
            server_url: node.client_url,
        }));
    }
    state.recordings().check_available()?;
    let s = state.settings();
    Ok(Answer(RecordServer {
        name: "uprtcd".to_owned(),
        server_alias: s.alias.clone(),
        server_address: s.api_address.clone(),
        server_url: s.client_url.clone(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StartRecording {
    room_id: RoomId,
    /// The recording server; this one's alias or absent.
    server_alias: Option<String>,
    /// Record everyone who publishes, also those who start later.
    all: Option<bool>,
    /// Record these peers; a live room records its host by default, a conversation everyone.
    peers: Option<Vec<PeerId>>,
    /// 1080p, 720p (default) or 480p.
    resolution: Option<String>,
    /// `grid` (default) or a peerId placed in the centre.
    layout: Option<String>,
    /// Turn phone video upright by its orientation tags.
    fix_video_direction: Option<bool>,
}

/// Where a recording is made.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Started {
    record_id: RecordId,
    server_alias: String,
    server_address: String,
}

/// Start recording a room.
#[utoipa::path(post, path = "/record/start", tag = "record", request_body = StartRecording,
    responses((status = 200, body = Envelope<Started>, description = "50020 while the room is being recorded; 50021 when this server cannot record")))]
pub(super) async fn start(State(state): State<AppState>, ApiJson(body): ApiJson<StartRecording>) -> ApiResult<Started> {
    state.read(|reg| reg.room(&body.room_id).map(|_| ()))?;
    let request = StartRequest {
        room: body.room_id,
        all: body.all.unwrap_or(false),
        peers: body.peers.unwrap_or_default(),
        resolution: recording::parse_resolution(body.resolution.as_deref())?,
        layout: recording::parse_layout(body.layout.as_deref())?,
        fix_video_direction: body.fix_video_direction.unwrap_or(false),
    };
    let s = state.settings();
    // A room is recorded on the node that holds its media; any live node of the cluster may
    // be named (the answer says where the recording is made).
    let known = |alias: &str| state.cluster().is_some_and(|cluster| cluster.node(alias).is_some());
    if let Some(alias) = body.server_alias.filter(|alias| *alias != s.alias && !known(alias)) {
        return Err(ApiError::new(
            ApiCode::NoRecorder,
            format!("no recording server {alias:?}: this server is {:?}", s.alias),
        ));
    }
    let record_id = recording::start(&state, request).await?;
    let s = state.settings();
    Ok(Answer(Started { record_id, server_alias: s.alias.clone(), server_address: s.api_address.clone() }))
}

/// Stop the room's recording; its processing starts.
#[utoipa::path(post, path = "/record/stop/{roomId}", tag = "record", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Empty>, description = "10003 when the room is not being recorded")))]
pub(super) async fn stop(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<Empty> {
    recording::stop(&state, &id).await?;
    done()
}

/// The status of one recording; for status 7, `msg` says what went wrong.
#[utoipa::path(get, path = "/record/{recordId}/status", tag = "record", params(("recordId" = String, Path)),
    responses((status = 200, body = Envelope<Status>)))]
pub(super) async fn status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RecordId>,
) -> Result<Noted<Status>, ApiError> {
    let (status, msg) = state.read(|reg| reg.recording(&id).map(|r| (r.status, r.msg.clone())))?;
    Ok(Noted(Status::of(status), msg))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Playback {
    record_id: RecordId,
    server_alias: Option<String>,
    /// Milliseconds since the epoch; default now.
    start_time: Option<u64>,
    loop_play: Option<bool>,
    /// Required when loopPlay is true.
    end_time: Option<u64>,
    #[schema(value_type = Option<u8>)]
    protocol: Option<Protocol>,
    min_bitrate: Option<u64>,
    max_bitrate: Option<u64>,
}

/// Open a live room whose host plays a recording: ffmpeg plays the file in real time from
/// `startTime` (once, or looped until `endTime`) and the room closes when it ends.
#[utoipa::path(post, path = "/record/playback", tag = "record", request_body = Playback,
    responses((status = 200, body = Envelope<CreatedRoom>, description = "as POST /room/live; 50019 unknown recording; 10003 not processed yet (its status in msg); 50021 ffmpeg missing, another serverAlias or recording.max_playbacks reached")))]
pub(super) async fn playback(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Playback>,
) -> ApiResult<CreatedRoom> {
    let common = CommonRoomFields {
        room_id: None,
        protocol: body.protocol,
        min_bitrate: body.min_bitrate,
        max_bitrate: body.max_bitrate,
    };
    let host = PeerId::try_from(body.record_id.to_string()).map_err(|e| ApiError::invalid(format!("recordId: {e}")))?;
    let room = common.into_new_room(host, NewRoomKind::Live)?;
    if room.min_bitrate > room.max_bitrate {
        return Err(ApiError::invalid("minBitrate must not exceed maxBitrate"));
    }
    let request = crate::playback::Request {
        record: body.record_id,
        server_alias: body.server_alias,
        start_ms: body.start_time,
        loop_play: body.loop_play.unwrap_or(false),
        end_ms: body.end_time,
        room,
    };
    let room = crate::playback::open(&state, request).await?;
    Ok(Answer(CreatedRoom::of(&state, &room)))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClientUpload {
    record_id: RecordId,
    /// The WebSocket URL the client uploads to: `serverUrl` + `record?recordId=…&token=…`.
    server_url: String,
    server_alias: String,
    server_address: String,
}

/// A URL a client can upload its own recording to, over WebSocket (docs/signalling.md,
/// "Client upload of a recording"). The record exists from now on, with status 1.
#[utoipa::path(post, path = "/record/client/upload", tag = "record",
    responses((status = 200, body = Envelope<ClientUpload>, description = "50021: ffmpeg is not installed")))]
pub(super) async fn client_upload(State(state): State<AppState>) -> ApiResult<ClientUpload> {
    crate::files::require_tools(&state)?;
    let settings = state.settings();
    let id = state.read(|reg| reg.fresh_record_id());
    let now = crate::files::unix_ms() / 1000;
    let token = crate::token::mint_upload(&settings.app_secret, id.clone(), now, settings.client_upload_ttl)
        .map_err(|e| ApiError::system(format!("cannot make the upload token: {e}")))?;
    let recording = Recording {
        id: id.clone(),
        status: record_status::PREPARING,
        file: String::new(),
        size: 0,
        created_ms: crate::files::unix_ms(),
        msg: String::new(),
        upload_expires: Some(crate::token::expiry(now, settings.client_upload_ttl)),
        room: None,
    };
    state
        .write(move |reg| {
            reg.add_recording(recording);
            Ok(())
        })
        .await?;
    // Generated ids and JWTs are URL-safe as they are.
    let server_url = format!("{}record?recordId={id}&token={token}", settings.client_url);
    Ok(Answer(ClientUpload {
        record_id: id,
        server_url,
        server_alias: settings.alias.clone(),
        server_address: settings.api_address.clone(),
    }))
}

/// The recording's file itself (not an envelope), whole or one byte range; 50019 in an
/// envelope when there is none, or not yet (status other than 6).
#[utoipa::path(get, path = "/record/download/{recordId}", tag = "record", params(("recordId" = String, Path),
        ("Range" = Option<String>, Header, description = "one range: bytes=a-b, bytes=a- or bytes=-n")),
    responses((status = 200, description = "the file (its type by its extension), or an envelope with 50019 when there is none",
        content((Vec<u8> = "video/mp4"), (Vec<u8> = "video/webm"), (Vec<u8> = "application/octet-stream"),
            (Envelope<Empty> = "application/json"))),
        (status = 206, description = "the range asked for",
            content((Vec<u8> = "video/mp4"), (Vec<u8> = "video/webm"), (Vec<u8> = "application/octet-stream"))),
        (status = 416, description = "the range starts past the end of the file")))]
pub(super) async fn download(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RecordId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let recording = state.read(|reg| reg.recording(&id).cloned())?;
    let missing = |why: String| ApiError::new(ApiCode::RecordingNotFound, format!("recording {id} has no file: {why}"));
    if recording.status != record_status::PROCESSING_DONE {
        return Err(missing(format!("its status is {}, not 6 (done)", recording.status)));
    }
    if recording.file.is_empty() {
        return Err(missing("none was stored".to_owned()));
    }
    let path = state.settings().recordings_dir.join(&recording.file);
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| missing(e.to_string()))?;
    let len = file.metadata().await.map_err(|e| missing(e.to_string()))?.len();
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let disposition = format!("attachment; filename=\"{}\"", recording.file);
    let common = [
        (header::CONTENT_TYPE, crate::files::content_type(&recording.file).to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    let (status, start, end) = match range::select(asked, len) {
        Selection::Whole => (StatusCode::OK, 0, len.checked_sub(1)),
        Selection::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, Some(end)),
        Selection::Unsatisfiable => {
            let unsatisfied = [(header::CONTENT_RANGE, format!("bytes */{len}"))];
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common, unsatisfied, Body::empty()).into_response());
        }
    };
    let count = end.map_or(0, |end| end - start + 1);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::system(format!("cannot read recording {id}: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let mut response = (status, common, [(header::CONTENT_LENGTH, count.to_string())], body).into_response();
    if let (StatusCode::PARTIAL_CONTENT, Some(end)) = (status, end) {
        let value = format!("bytes {start}-{end}/{len}");
        response.headers_mut().insert(header::CONTENT_RANGE, value.parse().expect("digits, a dash and a slash"));
    }
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Uploaded {
    record_id: RecordId,
    server_alias: String,
    server_address: String,
}

/// Upload a recording file (multipart form field `file`): any file ffmpeg reads with an
/// audio or video stream; anything else is refused (10002) and nothing is kept.
#[utoipa::path(post, path = "/record/upload", tag = "record",
    request_body(content_type = "multipart/form-data", description = "field `file`: the video file"),
    responses((status = 200, body = Envelope<Uploaded>, description = "10002: not media; 50021: ffmpeg is not installed")))]
pub(super) async fn upload(State(state): State<AppState>, request: Request) -> ApiResult<Uploaded> {
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::invalid(format!("expected a multipart/form-data body: {}", e.body_text())))?;
    let id = state.read(|reg| reg.fresh_record_id());
    let dir = state.settings().recordings_dir.clone();
    let limit = state.settings().max_upload_bytes;
    let partial = crate::files::partial_path(&dir, &id);
    let (received, name) = loop {
        let field = form.next_field().await.map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}")))?;
        match field {
            None => return Err(ApiError::invalid("the form has no field named file")),
            Some(field) if field.name() == Some("file") => {
                let name = field.file_name().map(str::to_owned);
                let result = save_field(field, &partial, limit).await;
                break (discard_unless_ok(result, &partial).await?, name);
            }
            Some(_) => continue,
        }
    };
    let checked = crate::files::check_media(&state, &partial).await;
    if let Err(e) = &checked
        && e.code == ApiCode::InvalidParameter
    {
        state.files().count_upload_not_media();
    }
    let info = discard_unless_ok(checked, &partial).await?;
    let extension = crate::files::extension(name.as_deref(), &info);
    let file = crate::files::keep(&dir, &id, extension.as_deref()).await?;
    let recording = Recording {
        id: id.clone(),
        status: record_status::PROCESSING_DONE,
        file,
        size: received,
        created_ms: crate::files::unix_ms(),
        msg: String::new(),
        upload_expires: None,
        room: None,
    };
    state
        .write(move |reg| {
            reg.add_recording(recording);
            Ok(())
        })
        .await?;
    let s = state.settings();
    Ok(Answer(Uploaded { record_id: id, server_alias: s.alias.clone(), server_address: s.api_address.clone() }))
}

/// `result`, after removing the partial file when it is an error.
async fn discard_unless_ok<T>(result: Result<T, ApiError>, partial: &Path) -> Result<T, ApiError> {
    if result.is_err() {
        // Best effort: a leftover partial file is harmless and never served.
        let _ = tokio::fs::remove_file(partial).await;
    }
    result
}

/// Streams one form field to `path`, refusing more than `limit` bytes; returns the size.
async fn save_field(mut field: axum::extract::multipart::Field<'_>, path: &Path, limit: u64) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| ApiError::system(format!("cannot store the upload: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| ApiError::invalid(format!("upload interrupted: {e}")))? {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::too_large(usize::try_from(limit).unwrap_or(usize::MAX)));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(size)
}
