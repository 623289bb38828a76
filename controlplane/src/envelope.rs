//! The `{code, data, msg}` envelope every REST answer travels in, the spec's codes, and the
//! extractors that turn every kind of bad request into one of those codes instead of axum's
//! plain-text rejections.
//!
//! Rule: a handler returns `ApiResult<T>`; the envelope, the HTTP status (200 unless the
//! code says otherwise) and the message are decided here and nowhere else.
#![forbid(unsafe_code)]

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The spec's answer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ApiCode {
    Ok = 0,
    System = 10000,
    Auth = 10001,
    InvalidParameter = 10002,
    InvalidRequest = 10003,
    IllegalClient = 50000,
    RoomNotFound = 50001,
    RoomExists = 50002,
    NotInvited = 50003,
    AlreadyConnected = 50004,
    RtcFailed = 50005,
    AlreadyJoined = 50006,
    MayNotConsume = 50007,
    OwnerAbsent = 50008,
    MayNotProduce = 50009,
    MergedRoomNotFound = 50010,
    PeerNotInRoom = 50011,
    RoomFull = 50012,
    MirrorExists = 50013,
    AlreadyMerged = 50014,
    NoWorker = 50015,
    NoMedia = 50016,
    NoRoute = 50017,
    LicenceExceeded = 50018,
    RecordingNotFound = 50019,
    AlreadyRecording = 50020,
    NoRecorder = 50021,
    JoinDisabled = 50022,
}

impl ApiCode {
    pub fn number(self) -> u32 {
        self as u32
    }

    /// The code with this number (an answer of another node), if it is one of the spec's.
    pub fn from_number(number: u32) -> Option<Self> {
        use ApiCode::*;
        [
            Ok,
            System,
            Auth,
            InvalidParameter,
            InvalidRequest,
            IllegalClient,
            RoomNotFound,
            RoomExists,
            NotInvited,
            AlreadyConnected,
            RtcFailed,
            AlreadyJoined,
            MayNotConsume,
            OwnerAbsent,
            MayNotProduce,
            MergedRoomNotFound,
            PeerNotInRoom,
            RoomFull,
            MirrorExists,
            AlreadyMerged,
            NoWorker,
            NoMedia,
            NoRoute,
            LicenceExceeded,
            RecordingNotFound,
            AlreadyRecording,
            NoRecorder,
            JoinDisabled,
        ]
        .into_iter()
        .find(|code| code.number() == number)
    }

    /// The spec's description of the code, used when a handler has nothing more precise.
    pub fn description(self) -> &'static str {
        match self {
            Self::Ok => "",
            Self::System => "system error",
            Self::Auth => "API authentication error",
            Self::InvalidParameter => "invalid parameter",
            Self::InvalidRequest => "invalid request",
            Self::IllegalClient => "illegal client connection",
            Self::RoomNotFound => "room not found",
            Self::RoomExists => "cannot create a room that already exists",
            Self::NotInvited => "user was not invited to the room",
            Self::AlreadyConnected => "user already has a connection to the room",
            Self::RtcFailed => "cannot establish the RTC connection",
            Self::AlreadyJoined => "user already joined the room",
            Self::MayNotConsume => "user is not allowed to consume that media",
            Self::OwnerAbsent => "room owner has not joined",
            Self::MayNotProduce => "user may not produce that media in the room",
            Self::MergedRoomNotFound => "merged room not found",
            Self::PeerNotInRoom => "user is not in the room",
            Self::RoomFull => "room is at its maximum number of members",
            Self::MirrorExists => "that worker already holds a mirror of this room",
            Self::AlreadyMerged => "the same room cannot be merged twice",
            Self::NoWorker => "no worker available",
            Self::NoMedia => "no media to operate on",
            Self::NoRoute => "client route not found",
            Self::LicenceExceeded => "authorised maximum number of connections exceeded",
            Self::RecordingNotFound => "recording file does not exist",
            Self::AlreadyRecording => "room is already being recorded",
            Self::NoRecorder => "no recording server available",
            Self::JoinDisabled => "room cannot be joined",
        }
    }
}

/// The wire form of every answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 0 on success, else one of the spec's error codes.
    pub code: u32,
    pub data: T,
    /// Empty on success; what was wrong otherwise.
    pub msg: String,
}

/// The `data` of answers that carry none.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

/// A refused request: its code and a message for the integrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ApiCode,
    pub msg: String,
    status: StatusCode,
}

impl ApiError {
    pub fn new(code: ApiCode, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), status: StatusCode::OK }
    }

    /// With the spec's description as message.
    pub fn code(code: ApiCode) -> Self {
        Self::new(code, code.description())
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ApiCode::InvalidParameter, msg)
    }

    pub fn request(msg: impl Into<String>) -> Self {
        Self::new(ApiCode::InvalidRequest, msg)
    }

    pub fn system(msg: impl Into<String>) -> Self {
        Self::new(ApiCode::System, msg)
    }

    /// A path outside the API.
    pub fn not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, ..Self::request("no such path") }
    }

    /// A body over the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, ..Self::invalid(format!("body exceeds {limit} bytes")) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = Envelope { code: self.code.number(), data: Empty {}, msg: self.msg };
        (self.status, Json(envelope)).into_response()
    }
}

/// What every handler returns.
pub type ApiResult<T> = Result<Answer<T>, ApiError>;

/// A successful answer's `data`.
#[derive(Debug)]
pub struct Answer<T>(pub T);

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        Json(Envelope { code: 0, data: self.0, msg: String::new() }).into_response()
    }
}

/// A successful answer's `data` with a `msg` that explains it (why a recording ended in
/// error, say).
#[derive(Debug)]
pub struct Noted<T>(pub T, pub String);

impl<T: Serialize> IntoResponse for Noted<T> {
    fn into_response(self) -> Response {
        Json(Envelope { code: 0, data: self.0, msg: self.1 }).into_response()
    }
}

/// `Ok(Answer(Empty {}))`, for calls that answer no data.
pub fn done() -> ApiResult<Empty> {
    Ok(Answer(Empty {}))
}

/// Body limit of JSON requests, carried in the router's state.
pub trait BodyLimit {
    fn max_body_bytes(&self) -> usize;
}

/// A JSON body, read up to the configured limit and decoded with the failing field named.
/// An empty body reads as `{}`, so a missing required field is reported by name.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: BodyLimit + Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_limited(req, state.max_body_bytes()).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_path_to_error says "." for the whole body and "?" before any key is read.
            if path == "." || path == "?" {
                ApiError::invalid(inner.to_string())
            } else {
                ApiError::invalid(format!("{path}: {inner}"))
            }
        })?;
        deserializer.end().map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(Self(value))
    }
}

/// The whole body, or 413 when it passes `limit`.
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|source| source.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            if over {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::invalid(format!("cannot read the body: {e}")))
            }
        }
    }
}

/// Path parameters, with extraction failures answered as 10002.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }
}
