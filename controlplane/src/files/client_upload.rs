//! Client uploads of recordings over WebSocket on the client listener:
//! `GET /record?recordId=…&token=…` (the URL `POST /record/client/upload` answers). The
//! protocol is documented in docs/signalling.md, "Client upload of a recording".
//!
//! Rules: the token (HS256 under the AppSecret, for this one record, expiring) is checked
//! before anything is read from the client; a refused connection keeps no byte and is closed
//! with 1008 (policy violation) after an `error` message. One connection per record at a
//! time. Bytes go to the record's partial file in order; each frame is written through before
//! the next is read, so the length of the partial file is what the server has, and a client
//! that reconnects resumes where the server says (`upload.offset`). On `done` the file is
//! synced, probed and kept (status 6), or refused as not media (status 7, file removed).
//! Every write to the client is bounded by `client.write_timeout_ms`, and every wait for it by
//! the idle timeout: a client that stops reading or sending holds nothing for long.
#![forbid(unsafe_code)]

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{UploadEnd, Uploading};
use crate::envelope::{ApiCode, ApiError};
use crate::ids::RecordId;
use crate::registry::{Recording, record_status};
use crate::state::AppState;
use crate::token::TokenError;

/// Largest binary frame (message) accepted: MediaRecorder's chunks and the SDK's slices stay
/// well below it.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// The server says what it has kept (`received`) each time this many more bytes arrived, so
/// that a client streaming a recording can let go of what it no longer needs to resend.
pub const RECEIVED_EVERY: u64 = 1 << 20;
/// WebSocket close code of a refused connection: policy violation (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code of an upload over the size cap.
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code of a finished upload, and of an idle connection.
const CLOSE_NORMAL: u16 = 1000;

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    #[serde(rename = "recordId", default)]
    record_id: String,
    #[serde(default)]
    token: String,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    /// Send from `offset` on: the bytes the server already has.
    Upload {
        offset: u64,
    },
    /// The first `offset` bytes are kept: a resume never starts before.
    Received {
        offset: u64,
    },
    /// The file is kept: the record is done (status 6).
    Stored {
        #[serde(rename = "recordId")]
        record_id: &'a RecordId,
        size: u64,
    },
    Error {
        code: u32,
        msg: &'a str,
    },
}

/// What the client sends as text (its bytes come as binary frames).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Done { size: u64 },
}

/// `GET /record?recordId=&token=` with a WebSocket upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Up to twice the cap reaches the check below, which says what the cap is; beyond that
    // the library refuses the message and the connection simply ends.
    upgrade
        .max_message_size(2 * MAX_FRAME_BYTES)
        .max_frame_size(2 * MAX_FRAME_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(state, query, socket))
}

fn text(message: &ServerMessage<'_>) -> Message {
    Message::Text(serde_json::to_string(message).expect("plain data serialises").into())
}

/// Sends an `error` and closes with `code`; a client that does not read is not waited for
/// longer than the write timeout.
async fn refuse(state: &AppState, socket: &mut WebSocket, error: &ApiError, code: u16, reason: &'static str) {
    let closing = async {
        socket.send(text(&ServerMessage::Error { code: error.code.number(), msg: &error.msg })).await?;
        socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await
    };
    let _ = tokio::time::timeout(state.settings().write_timeout, closing).await;
}

/// The record the token opens, held for this connection, if the token is genuine, unexpired
/// and this record's, no other connection holds the record, and it still takes bytes. The
/// status is read while holding the record: a connection that just finished it has written
/// its status before letting go.
fn admit<'a>(state: &'a AppState, query: &UploadQuery) -> Result<(RecordId, Uploading<'a>), (UploadEnd, ApiError)> {
    let illegal = |end, msg: String| (end, ApiError::new(ApiCode::IllegalClient, msg));
    let claims = crate::token::verify_upload(&state.settings().app_secret, &query.token, super::unix_ms() / 1000)
        .map_err(|e| {
            let end = if e == TokenError::Expired { UploadEnd::ExpiredToken } else { UploadEnd::BadToken };
            illegal(end, format!("upload token refused: {e}"))
        })?;
    if claims.record.as_str() != query.record_id {
        return Err(illegal(UploadEnd::WrongRecord, "the upload token is another record's".to_owned()));
    }
    let id = claims.record;
    let hold = state.files().start_upload(&id).ok_or_else(|| {
        (UploadEnd::Busy, ApiError::request(format!("recording {id} is being uploaded by another connection")))
    })?;
    let status = state.read(|reg| reg.recording(&id).map(|r| r.status)).map_err(|e| (UploadEnd::WrongRecord, e))?;
    if !matches!(status, record_status::PREPARING | record_status::RECORDING) {
        let msg = format!("recording {id} takes no more bytes (status {status})");
        return Err((UploadEnd::WrongRecord, ApiError::request(msg)));
    }
    Ok((id, hold))
}

async fn session(state: AppState, query: UploadQuery, mut socket: WebSocket) {
    let (id, _hold) = match admit(&state, &query) {
        Ok(admitted) => admitted,
        Err((end, error)) => {
            tracing::info!(record = %query.record_id, reason = end.name(), "client upload refused");
            state.files().count(end);
            refuse(&state, &mut socket, &error, CLOSE_POLICY, end.name()).await;
            return;
        }
    };
    let end = match receive(&state, &id, &mut socket).await {
        Ok(end) => end,
        Err((end, error)) => {
            let code = if end == UploadEnd::TooLarge { CLOSE_TOO_BIG } else { CLOSE_POLICY };
            refuse(&state, &mut socket, &error, code, end.name()).await;
            end
        }
    };
    tracing::info!(record = %id, result = end.name(), "client upload connection ended");
    state.files().count(end);
}

/// Takes the client's bytes until `done`, a refusal or the end of the connection.
async fn receive(state: &AppState, id: &RecordId, socket: &mut WebSocket) -> Result<UploadEnd, (UploadEnd, ApiError)> {
    let settings = state.settings();
    let dir = &settings.recordings_dir;
    let partial = super::partial_path(dir, id);
    let failed = |e: std::io::Error| (UploadEnd::Failed, ApiError::system(format!("cannot store the upload: {e}")));
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&partial).await.map_err(failed)?;
    let mut offset = file.metadata().await.map_err(failed)?.len();
    if !send_bounded(state, socket, &ServerMessage::Upload { offset }).await {
        return Ok(UploadEnd::Disconnected);
    }
    let idle = settings.client_upload_idle_timeout;
    let mut started = offset > 0;
    loop {
        let message = match tokio::time::timeout(idle, socket.recv()).await {
            Err(_) => {
                let idle = CloseFrame { code: CLOSE_NORMAL, reason: UploadEnd::Idle.name().into() };
                let _ = tokio::time::timeout(settings.write_timeout, socket.send(Message::Close(Some(idle)))).await;
                return Ok(UploadEnd::Idle);
            }
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(UploadEnd::Disconnected),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Binary(bytes) => {
                if bytes.len() > MAX_FRAME_BYTES {
                    let msg = format!("a frame is at most {MAX_FRAME_BYTES} bytes");
                    return Err((UploadEnd::TooLarge, ApiError::invalid(msg)));
                }
                if offset + bytes.len() as u64 > settings.max_upload_bytes {
                    let msg = format!("the upload is over api.max_upload_bytes ({} bytes)", settings.max_upload_bytes);
                    drop(file);
                    fail(state, id, msg.clone()).await.map_err(|e| (UploadEnd::Failed, e))?;
                    return Err((UploadEnd::TooLarge, ApiError::invalid(msg)));
                }
                if !started && !bytes.is_empty() {
                    started = true;
                    let id = id.clone();
                    state
                        .write(move |reg| {
                            reg.update_recording(&id, |r| {
                                if r.status == record_status::PREPARING {
                                    r.status = record_status::RECORDING;
                                }
                            })
                        })
                        .await
                        .map_err(|e| (UploadEnd::Failed, e))?;
                }
                // Written through before the next frame is read: the file's length is what a
                // reconnecting client is told.
                let written = async {
                    file.write_all(&bytes).await?;
                    file.flush().await
                };
                if let Err(e) = written.await {
                    let msg = format!("cannot store the upload: {e}");
                    // Closed before it is removed, or its blocks stay taken.
                    drop(file);
                    fail(state, id, msg.clone()).await.map_err(|e| (UploadEnd::Failed, e))?;
                    return Err((UploadEnd::Failed, ApiError::system(msg)));
                }
                let before = offset;
                offset += bytes.len() as u64;
                if before / RECEIVED_EVERY != offset / RECEIVED_EVERY
                    && !send_bounded(state, socket, &ServerMessage::Received { offset }).await
                {
                    return Ok(UploadEnd::Disconnected);
                }
            }
            Message::Text(text_message) => {
                let done = serde_json::from_str::<ClientMessage>(text_message.as_str());
                let Ok(ClientMessage::Done { size }) = done else {
                    let msg = "expected binary frames or {\"type\":\"done\",\"size\":N}";
                    return Err((UploadEnd::Protocol, ApiError::invalid(msg)));
                };
                if size != offset {
                    let msg = format!("done says {size} bytes but the server has {offset}; resume from {offset}");
                    return Err((UploadEnd::Protocol, ApiError::invalid(msg)));
                }
                return finish(state, id, socket, file, offset).await;
            }
            // Pings are answered by the library; a pong is a sign of life.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return Ok(UploadEnd::Disconnected),
        }
    }
}

/// Sends `message` unless the client stops reading for longer than `client.write_timeout_ms`;
/// false when the connection must end.
async fn send_bounded(state: &AppState, socket: &mut WebSocket, message: &ServerMessage<'_>) -> bool {
    let sent = tokio::time::timeout(state.settings().write_timeout, socket.send(text(message))).await;
    matches!(sent, Ok(Ok(())))
}

/// `done` with the right size: sync, probe, keep or refuse.
async fn finish(
    state: &AppState,
    id: &RecordId,
    socket: &mut WebSocket,
    file: tokio::fs::File,
    size: u64,
) -> Result<UploadEnd, (UploadEnd, ApiError)> {
    let dir = &state.settings().recordings_dir;
    let partial = super::partial_path(dir, id);
    let synced = file.sync_all().await;
    drop(file);
    if let Err(e) = synced {
        let msg = format!("cannot store the upload: {e}");
        fail(state, id, msg.clone()).await.map_err(|e| (UploadEnd::Failed, e))?;
        return Err((UploadEnd::Failed, ApiError::system(msg)));
    }
    let info = match super::check_media(state, &partial).await {
        Ok(info) => info,
        Err(e) if e.code == ApiCode::InvalidParameter => {
            fail(state, id, e.msg.clone()).await.map_err(|e| (UploadEnd::Failed, e))?;
            return Err((UploadEnd::NotMedia, e));
        }
        // ffprobe missing: the bytes stay, and `done` may be sent again once it is installed.
        Err(e) => return Err((UploadEnd::Failed, e)),
    };
    let kept = super::keep(dir, id, info.extension()).await.map_err(|e| (UploadEnd::Failed, e))?;
    conclude(state, id, move |r| {
        r.status = record_status::PROCESSING_DONE;
        r.file = kept;
        r.size = size;
    })
    .await
    .map_err(|e| (UploadEnd::Failed, e))?;
    if send_bounded(state, socket, &ServerMessage::Stored { record_id: id, size }).await {
        let stored = CloseFrame { code: CLOSE_NORMAL, reason: UploadEnd::Stored.name().into() };
        let _ = tokio::time::timeout(state.settings().write_timeout, socket.send(Message::Close(Some(stored)))).await;
    }
    Ok(UploadEnd::Stored)
}

/// Ends client upload `id` in error: its partial file removed, then status 7 with `msg`. The
/// file goes first: on a full disk, the space it frees lets the store commit the status.
pub async fn fail(state: &AppState, id: &RecordId, msg: String) -> Result<(), ApiError> {
    let _ = tokio::fs::remove_file(super::partial_path(&state.settings().recordings_dir, id)).await;
    conclude(state, id, move |r| {
        r.status = record_status::ERROR;
        r.msg = msg;
    })
    .await
}

/// Ends client upload `id` with `outcome` (its URL takes no more bytes), durably; refused
/// when it has ended already (the retention sweep ended it as abandoned meanwhile).
async fn conclude(
    state: &AppState,
    id: &RecordId,
    outcome: impl FnOnce(&mut Recording) + Send + 'static,
) -> Result<(), ApiError> {
    let id = id.clone();
    state
        .write(move |reg| {
            let open = reg.update_recording(&id, |r| {
                let open = matches!(r.status, record_status::PREPARING | record_status::RECORDING);
                if open {
                    outcome(r);
                    r.upload_expires = None;
                }
                open
            })?;
            if open { Ok(()) } else { Err(ApiError::request(format!("recording {id} is no longer being uploaded"))) }
        })
        .await
}
