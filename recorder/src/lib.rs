//! The recorder: what turns a room's live streams into one MP4, and what checks media files.
//!
//! - [`capture`]: receives the plaintext RTP and RTCP a worker sends to a recording's
//!   loopback socket and writes each stream append-only, with arrival times, sender-report
//!   timing and an event log, so that a crash at any moment leaves files that still process.
//! - [`compose`]: after the capture ends, depacketizes each stream, aligns the streams on one
//!   timeline and runs one ffmpeg job that lays them out, turns phone video upright, mixes the
//!   audio and writes an H.264 + AAC MP4.
//! - [`probe`](mod@probe): what ffprobe says a file holds (streams, duration), to refuse what is not media.
//!
//! ffmpeg is the codec library: no codec is written here.
#![forbid(unsafe_code)]

pub mod capture;
pub mod compose;
pub mod probe;

use std::path::PathBuf;

pub use self::probe::{AudioInfo, MediaInfo, Tools, VideoInfo, probe};

/// What can go wrong while capturing, composing or probing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} is not usable: {reason}")]
    ToolMissing { tool: &'static str, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The capture thread stopped writing; the reason is the first write error.
    #[error("capture failed: {0}")]
    Capture(String),
    /// A capture folder that is not one (no or unreadable meta, foreign stream files).
    #[error("{}: not a capture: {reason}", path.display())]
    NotACapture { path: PathBuf, reason: String },
    /// Nothing in the capture can be shown or heard.
    #[error("nothing to compose: no video stream had a key frame and no audio packet was recorded")]
    NoMedia,
    /// ffmpeg ended with an error; `stderr` is its last lines.
    #[error("ffmpeg failed ({status}): {stderr}")]
    Ffmpeg { status: String, stderr: String },
    /// ffmpeg succeeded but ffprobe does not see what the output must hold.
    #[error("composed file rejected: {0}")]
    BadOutput(String),
    // Probing (probe.rs).
    /// ffprobe cannot read the file as media, or its format refers to other files.
    #[error("{} is not media ffprobe reads: {reason}", path.display())]
    NotMedia { path: PathBuf, reason: String },
    /// ffprobe did not finish in time and was killed.
    #[error("ffprobe did not finish reading {} within {after:?}", path.display())]
    ProbeTimeout { path: PathBuf, after: std::time::Duration },
}
