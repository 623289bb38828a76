//! Recording endpoints. This release stores and serves uploaded recordings and plays them
//! into playback rooms ([`crate::playback`]); the calls that need a recorder (start, client
//! upload) validate their input and then answer 50021, because none is built in yet —
//! nothing pretends to record.
#![forbid(unsafe_code)]

use std::path::Path;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::rooms::{CommonRoomFields, CreatedRoom, Status};
use crate::envelope::{Answer, ApiCode, ApiError, ApiJson, ApiPath, ApiResult, Empty, Envelope};
use crate::ids::{PeerId, RecordId, RoomId};
use crate::registry::{NewRoomKind, Protocol, Recording, record_status};
use crate::state::AppState;

fn no_recorder() -> ApiError {
    ApiError::new(ApiCode::NoRecorder, "no recording server is available: this server has no recorder")
}

/// An available recording server.
#[utoipa::path(get, path = "/record/server", tag = "record", responses((status = 200, body = Envelope<Empty>, description = "50021: this server has no recorder")))]
pub(super) async fn record_server() -> ApiResult<Empty> {
    Err(no_recorder())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StartRecording {
    room_id: RoomId,
    server_alias: Option<String>,
    all: Option<bool>,
    peers: Option<Vec<PeerId>>,
    /// 1080p, 720p (default) or 480p.
    resolution: Option<String>,
    /// `grid` (default) or a peerId placed in the centre.
    layout: Option<String>,
    fix_video_direction: Option<bool>,
}

/// Start recording a room.
#[utoipa::path(post, path = "/record/start", tag = "record", request_body = StartRecording,
    responses((status = 200, body = Envelope<Empty>, description = "50021: this server has no recorder")))]
pub(super) async fn start(State(state): State<AppState>, ApiJson(body): ApiJson<StartRecording>) -> ApiResult<Empty> {
    state.read(|reg| reg.room(&body.room_id).map(|_| ()))?;
    if let Some(resolution) = &body.resolution
        && !["1080p", "720p", "480p"].contains(&resolution.as_str())
    {
        return Err(ApiError::invalid(format!("resolution must be 1080p, 720p or 480p, not {resolution:?}")));
    }
    if body.layout.as_deref() == Some("") {
        return Err(ApiError::invalid("layout must be grid or a peerId"));
    }
    tracing::debug!(room = %body.room_id, alias = ?body.server_alias, all = ?body.all, peers = ?body.peers,
        fix = ?body.fix_video_direction, "recording requested");
    Err(no_recorder())
}

/// Stop the room's recording.
#[utoipa::path(post, path = "/record/stop/{roomId}", tag = "record", params(("roomId" = String, Path)),
    responses((status = 200, body = Envelope<Empty>)))]
pub(super) async fn stop(State(state): State<AppState>, ApiPath(id): ApiPath<RoomId>) -> ApiResult<Empty> {
    let status = state.read(|reg| reg.record_status(&id))?;
    Err(ApiError::request(format!("room {id} is not being recorded (status {status})")))
}

/// The status of one recording.
#[utoipa::path(get, path = "/record/{recordId}/status", tag = "record", params(("recordId" = String, Path)),
    responses((status = 200, body = Envelope<Status>)))]
pub(super) async fn status(State(state): State<AppState>, ApiPath(id): ApiPath<RecordId>) -> ApiResult<Status> {
    Ok(Answer(Status::of(state.read(|reg| reg.recording(&id).map(|r| r.status))?)))
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

/// A URL a client can upload its own recording to.
#[utoipa::path(post, path = "/record/client/upload", tag = "record",
    responses((status = 200, body = Envelope<Empty>, description = "50021: this server has no recorder")))]
pub(super) async fn client_upload() -> ApiResult<Empty> {
    Err(no_recorder())
}

/// The recording's file itself (not an envelope); 50019 in an envelope when there is none.
#[utoipa::path(get, path = "/record/download/{recordId}", tag = "record", params(("recordId" = String, Path)),
    responses((status = 200, description = "the file, or an envelope with 50019 when there is none",
        content((Vec<u8> = "application/octet-stream"), (Envelope<Empty> = "application/json")))))]
pub(super) async fn download(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<RecordId>,
) -> Result<Response, ApiError> {
    let recording = state.read(|reg| reg.recording(&id).cloned())?;
    let path = state.settings().recordings_dir.join(&recording.file);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::new(ApiCode::RecordingNotFound, format!("recording {id} has no file: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition = format!("attachment; filename=\"{}\"", recording.id);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, recording.size.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Uploaded {
    record_id: RecordId,
    server_alias: String,
    server_address: String,
}

/// Upload a recording file (multipart form field `file`).
#[utoipa::path(post, path = "/record/upload", tag = "record",
    request_body(content_type = "multipart/form-data", description = "field `file`: the video file"),
    responses((status = 200, body = Envelope<Uploaded>)))]
pub(super) async fn upload(State(state): State<AppState>, request: Request) -> ApiResult<Uploaded> {
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::invalid(format!("expected a multipart/form-data body: {}", e.body_text())))?;
    let id = state.read(|reg| reg.fresh_record_id());
    let dir = state.settings().recordings_dir.clone();
    let limit = state.settings().max_upload_bytes;
    let partial = dir.join(format!(".{id}.part"));
    let received = loop {
        let field = form.next_field().await.map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}")))?;
        match field {
            None => return Err(ApiError::invalid("the form has no field named file")),
            Some(field) if field.name() == Some("file") => {
                let result = save_field(field, &partial, limit).await;
                if result.is_err() {
                    // Best effort: a leftover partial file is harmless and never served.
                    let _ = tokio::fs::remove_file(&partial).await;
                }
                break result?;
            }
            Some(_) => continue,
        }
    };
    tokio::fs::rename(&partial, dir.join(id.as_str()))
        .await
        .map_err(|e| ApiError::system(format!("cannot store the upload: {e}")))?;
    sync_dir(&dir).await?;
    let recording =
        Recording { id: id.clone(), status: record_status::PROCESSING_DONE, file: id.to_string(), size: received };
    state
        .write(move |reg| {
            reg.add_recording(recording);
            Ok(())
        })
        .await?;
    let s = state.settings();
    Ok(Answer(Uploaded { record_id: id, server_alias: s.alias.clone(), server_address: s.api_address.clone() }))
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

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), ApiError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| ApiError::system(e.to_string()))?
        .map_err(|e| ApiError::system(format!("cannot sync the recordings folder: {e}")))
}
