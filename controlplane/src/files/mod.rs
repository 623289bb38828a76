//! Recording files on disk: what checks a file before it becomes a record (ffprobe through
//! [`uprtcd_recorder::probe::probe`]), how a checked file is kept, what `Content-Type` it is served
//! with, HTTP byte ranges of downloads, the retention sweep, and client uploads over
//! WebSocket ([`client_upload`]).
//!
//! Rules: a file is written to a hidden partial name (`.<recordId>.part`) in the recordings
//! folder and becomes `<recordId>.<ext>` only once it is complete, synced and probed; the
//! rename is synced before the registry says status 6, so a record the API calls done always
//! has its whole file. A partial file is never served. Removing a record commits the registry
//! first and removes the file second: a crash between them leaves an orphan file, never a
//! record without its file.
#![forbid(unsafe_code)]

pub mod client_upload;
pub mod range;
pub mod retention;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use uprtcd_recorder::{MediaInfo, Tools};

use crate::envelope::{ApiCode, ApiError};
use crate::ids::RecordId;
use crate::state::AppState;

/// Milliseconds since the epoch, the registry's clock for records.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where a file being received for record `id` is written until it is checked.
pub fn partial_path(dir: &Path, id: &RecordId) -> PathBuf {
    dir.join(format!(".{id}.part"))
}

/// ffmpeg and ffprobe (`recording.ffmpeg`, located at start), or 50021 saying why not.
pub fn require_tools(state: &AppState) -> Result<Tools, ApiError> {
    state.recordings().tools().cloned()
}

/// Checks that `file` is media: ffprobe reads it and finds an audio or a video stream.
/// ffmpeg or ffprobe missing → 50021; not media → 10002 saying why.
pub async fn check_media(state: &AppState, file: &Path) -> Result<MediaInfo, ApiError> {
    let tools = require_tools(state)?;
    let file = file.to_owned();
    let probed = tokio::task::spawn_blocking(move || uprtcd_recorder::probe(&tools, &file))
        .await
        .map_err(|e| ApiError::system(format!("the probe task failed: {e}")))?;
    let info = probed.map_err(|e| match e {
        uprtcd_recorder::Error::ToolMissing { .. } => {
            tracing::error!(error = %e, "recordings need Debian's ffmpeg package");
            ApiError::new(ApiCode::NoRecorder, format!("no recording server is available: {e}"))
        }
        uprtcd_recorder::Error::NotMedia { reason, .. } => {
            ApiError::invalid(format!("file: not media that ffmpeg reads ({reason})"))
        }
        uprtcd_recorder::Error::ProbeTimeout { after, .. } => {
            ApiError::invalid(format!("file: ffprobe could not read it within {after:?}"))
        }
        other => ApiError::system(format!("cannot check the file: {other}")),
    })?;
    if !info.has_media() {
        return Err(ApiError::invalid(format!(
            "file: has no audio or video stream (ffprobe reads it as {})",
            if info.format.is_empty() { "an unknown format" } else { info.format.as_str() }
        )));
    }
    Ok(info)
}

/// The extension a file is kept under, so that players and `Content-Type` see what it is:
/// the uploader's own when it is a plain one (1 to 8 letters or digits) that names the format
/// ffprobe found; else the one that format suggests; else the uploader's plain one; else none.
pub fn extension(given_name: Option<&str>, info: &MediaInfo) -> Option<String> {
    let given = given_name
        .and_then(|name| Path::new(name).extension())
        .and_then(|ext| ext.to_str())
        .filter(|ext| (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_ascii_lowercase);
    match (given, info.extension()) {
        (Some(given), Some(probed)) if given == probed || info.format.split(',').any(|name| name == given) => {
            Some(given)
        }
        (_, Some(probed)) => Some(probed.to_owned()),
        (given, None) => given,
    }
}

/// Moves the checked partial file of record `id` to its final name, `<id>.<ext>`, durably;
/// returns that name.
pub async fn keep(dir: &Path, id: &RecordId, extension: Option<&str>) -> Result<String, ApiError> {
    let name = match extension {
        Some(ext) => format!("{id}.{ext}"),
        None => id.to_string(),
    };
    tokio::fs::rename(partial_path(dir, id), dir.join(&name))
        .await
        .map_err(|e| ApiError::system(format!("cannot store the file: {e}")))?;
    sync_dir(dir).await?;
    Ok(name)
}

/// Makes a rename or removal in `dir` durable.
pub async fn sync_dir(dir: &Path) -> Result<(), ApiError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| ApiError::system(e.to_string()))?
        .map_err(|e| ApiError::system(format!("cannot sync the recordings folder: {e}")))
}

/// The `Content-Type` a stored file is served with, by its extension.
pub fn content_type(file: &str) -> &'static str {
    let ext = Path::new(file).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mov") => "video/quicktime",
        Some("ogg" | "ogv" | "opus") => "video/ogg",
        Some("m4a") => "audio/mp4",
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// Why a client upload's WebSocket ended, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEnd {
    /// `done` with the right size, and the file is media: status 6.
    Stored,
    /// The file is not media: status 7, the file removed.
    NotMedia,
    /// The token is not genuine (forged, malformed, made for something else).
    BadToken,
    /// The token has expired.
    ExpiredToken,
    /// The token is another record's, or the record is gone or finished.
    WrongRecord,
    /// Another connection is uploading the same record.
    Busy,
    /// No frame within the idle timeout.
    Idle,
    /// Past `api.max_upload_bytes`, or a frame over the frame cap.
    TooLarge,
    /// A message the protocol has no place for, or `done` with another size.
    Protocol,
    /// The client went away before `done` (it may come back and resume).
    Disconnected,
    /// The server could not write or check the file (a full disk).
    Failed,
}

impl UploadEnd {
    pub const ALL: [Self; 11] = [
        Self::Stored,
        Self::NotMedia,
        Self::BadToken,
        Self::ExpiredToken,
        Self::WrongRecord,
        Self::Busy,
        Self::Idle,
        Self::TooLarge,
        Self::Protocol,
        Self::Disconnected,
        Self::Failed,
    ];

    /// The `result` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::NotMedia => "not_media",
            Self::BadToken => "bad_token",
            Self::ExpiredToken => "expired_token",
            Self::WrongRecord => "wrong_record",
            Self::Busy => "busy",
            Self::Idle => "idle_timeout",
            Self::TooLarge => "too_large",
            Self::Protocol => "protocol",
            Self::Disconnected => "disconnected",
            Self::Failed => "failed",
        }
    }

    /// Refused before any byte was taken.
    pub fn is_refusal(self) -> bool {
        matches!(self, Self::BadToken | Self::ExpiredToken | Self::WrongRecord | Self::Busy)
    }
}

/// The recording files' counters and the client uploads in progress.
#[derive(Debug, Default)]
pub struct FileStats {
    client_uploads: [AtomicU64; UploadEnd::ALL.len()],
    uploads_not_media: AtomicU64,
    expired: AtomicU64,
    /// Records whose client upload is connected now: one connection each.
    uploading: std::sync::Mutex<std::collections::HashSet<RecordId>>,
}

impl FileStats {
    pub fn count(&self, end: UploadEnd) {
        self.client_uploads[end as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_upload_not_media(&self) {
        self.uploads_not_media.fetch_add(1, Ordering::Relaxed);
    }

    /// Files `POST /record/upload` refused as not media.
    pub fn uploads_not_media(&self) -> u64 {
        self.uploads_not_media.load(Ordering::Relaxed)
    }

    pub fn count_expired(&self, records: u64) {
        self.expired.fetch_add(records, Ordering::Relaxed);
    }

    /// Records the retention sweep removed.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Client upload connections, by how they ended.
    pub fn client_uploads(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        UploadEnd::ALL.iter().map(|&e| (e.name(), self.client_uploads[e as usize].load(Ordering::Relaxed)))
    }

    /// Takes record `id` for one connection; `None` while another holds it.
    pub fn start_upload(&self, id: &RecordId) -> Option<Uploading<'_>> {
        let mut uploading = self.uploading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        uploading.insert(id.clone()).then(|| Uploading { stats: self, id: id.clone() })
    }

    /// Whether a connection is uploading record `id` now.
    pub fn is_uploading(&self, id: &RecordId) -> bool {
        self.uploading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(id)
    }
}

/// A connection's hold on its record; dropping it lets the next connection in.
#[derive(Debug)]
pub struct Uploading<'a> {
    stats: &'a FileStats,
    id: RecordId,
}

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        self.stats.uploading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: &str) -> MediaInfo {
        MediaInfo { duration: None, format: format.into(), video: Vec::new(), audio: Vec::new() }
    }

    #[test]
    fn the_given_extension_when_it_names_the_format() {
        let webm = info("matroska,webm");
        assert_eq!(extension(Some("clip.WebM"), &webm).as_deref(), Some("webm"));
        assert_eq!(extension(Some("clip.mp4"), &webm).as_deref(), Some("webm"), "the content decides");
        let mp4 = info("mov,mp4,m4a,3gp,3g2,mj2");
        assert_eq!(extension(Some("voice.m4a"), &mp4).as_deref(), Some("m4a"));
        assert_eq!(extension(Some("phone.MOV"), &mp4).as_deref(), Some("mov"));
        assert_eq!(extension(Some("x.webm"), &mp4).as_deref(), Some("mp4"));
        for odd in [None, Some("noext"), Some("a.we/bm"), Some("a.verylongext"), Some("a.mp4 "), Some("a.é")] {
            assert_eq!(extension(odd, &webm).as_deref(), Some("webm"), "{odd:?}");
        }
        assert_eq!(extension(None, &info("weird")), None);
        assert_eq!(extension(Some("a.xyz"), &info("weird")).as_deref(), Some("xyz"));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("a.mp4"), "video/mp4");
        assert_eq!(content_type("a.WEBM"), "video/webm");
        assert_eq!(content_type("abc"), "application/octet-stream");
        assert_eq!(content_type("a.bin"), "application/octet-stream");
    }

    #[test]
    fn one_connection_per_record() {
        let stats = FileStats::default();
        let id = RecordId::try_from("r1".to_owned()).unwrap();
        let first = stats.start_upload(&id).expect("free");
        assert!(stats.start_upload(&id).is_none());
        assert!(stats.is_uploading(&id));
        drop(first);
        assert!(stats.start_upload(&id).is_some());
    }
}
