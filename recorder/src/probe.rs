//! The external tools recordings need (Debian's ffmpeg and ffprobe), and what ffprobe says a
//! file holds.
//!
//! Rules of [`probe`]: the file is hostile until ffprobe has read it. ffprobe runs with no
//! stdin, may read local files only (`-protocol_whitelist file`: a playlist inside an upload
//! cannot make it fetch a URL), is killed after [`PROBE_TIMEOUT`], and what it prints is read
//! up to [`MAX_PROBE_OUTPUT`] and no further. Formats whose content names other files
//! (playlists, concat lists, image sequences) are refused as not media: whatever later reads
//! the file must find everything inside it.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::Error;

/// Where ffmpeg and the ffprobe beside it are; both answered `-version` when located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Tools {
    /// `ffmpeg` is a path, or a bare name looked up on PATH; ffprobe is looked for in the same
    /// folder, else on PATH. Fails naming the tool that is missing or does not run.
    pub fn locate(ffmpeg: &Path) -> Result<Self, Error> {
        let ffmpeg = resolve(ffmpeg, "ffmpeg")?;
        let beside = ffmpeg.with_file_name("ffprobe");
        let ffprobe = if beside.is_file() { beside } else { resolve(Path::new("ffprobe"), "ffprobe")? };
        for (tool, path) in [("ffmpeg", &ffmpeg), ("ffprobe", &ffprobe)] {
            let status = Command::new(path)
                .arg("-version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| Error::ToolMissing { tool, reason: format!("{}: {e}", path.display()) })?;
            if !status.success() {
                return Err(Error::ToolMissing { tool, reason: format!("{} -version: {status}", path.display()) });
            }
        }
        Ok(Self { ffmpeg, ffprobe })
    }
}

/// `name` itself when it has a folder part, else the first match on PATH.
fn resolve(name: &Path, tool: &'static str) -> Result<PathBuf, Error> {
    if name.components().count() > 1 {
        return if name.is_file() {
            Ok(name.to_owned())
        } else {
            Err(Error::ToolMissing { tool, reason: format!("{} does not exist", name.display()) })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::ToolMissing { tool, reason: format!("{} is not on PATH", name.display()) })
}

/// How long ffprobe may take over one file before it is killed; a well-formed file of any
/// size is read in well under a second (it reads headers, not the whole file).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// What ffprobe may print (its JSON on stdout) before it is killed: a file with thousands of
/// streams is not a recording.
pub const MAX_PROBE_OUTPUT: u64 = 1 << 20;
/// The first bytes of ffprobe's complaints kept for the error.
const MAX_PROBE_ERRORS: u64 = 4096;
/// ffprobe demuxers whose input names other files or URLs to read.
const REFERRING_FORMATS: &[&str] = &["hls", "dash", "concat", "ffconcat", "image2", "tee", "sdp", "rtsp"];

/// A video stream of a probed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInfo {
    /// ffprobe's `codec_name` (`vp8`, `h264`, …).
    pub codec: String,
    pub width: u32,
    pub height: u32,
}

/// An audio stream of a probed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// ffprobe's `codec_name` (`opus`, `aac`, …).
    pub codec: String,
}

/// What ffprobe says a file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// `None` when the container does not say (a live WebM from MediaRecorder often does not).
    pub duration: Option<Duration>,
    /// ffprobe's `format_name`: the demuxer's names, comma-separated (`matroska,webm`).
    pub format: String,
    pub video: Vec<VideoInfo>,
    pub audio: Vec<AudioInfo>,
}

impl MediaInfo {
    /// At least one audio or video stream.
    pub fn has_media(&self) -> bool {
        !self.video.is_empty() || !self.audio.is_empty()
    }

    /// The file extension that names this container for players and `Content-Type`
    /// (`webm`, `mp4`, …), when the format is one of the common ones.
    pub fn extension(&self) -> Option<&'static str> {
        let names: Vec<&str> = self.format.split(',').collect();
        let webm_codecs = |codec: &str| ["vp8", "vp9", "av1", "opus", "vorbis"].contains(&codec);
        if names.contains(&"matroska") {
            let all_webm =
                self.video.iter().map(|v| v.codec.as_str()).chain(self.audio.iter().map(|a| a.codec.as_str()));
            return Some(if all_webm.into_iter().all(webm_codecs) { "webm" } else { "mkv" });
        }
        if names.contains(&"mp4") {
            return Some("mp4");
        }
        [("ogg", "ogg"), ("mp3", "mp3"), ("wav", "wav"), ("flv", "flv"), ("avi", "avi"), ("mpegts", "ts")]
            .into_iter()
            .find(|(name, _)| names.contains(name))
            .map(|(_, extension)| extension)
    }
}

/// ffprobe's JSON, the fields asked for.
#[derive(Debug, Deserialize)]
struct Probed {
    #[serde(default)]
    streams: Vec<ProbedStream>,
    format: Option<ProbedFormat>,
}

#[derive(Debug, Deserialize)]
struct ProbedStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    #[serde(default)]
    disposition: ProbedDisposition,
}

#[derive(Debug, Default, Deserialize)]
struct ProbedDisposition {
    /// A cover picture (an MP3's, an M4A's): a video stream of one frame, not video to play.
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Debug, Deserialize)]
struct ProbedFormat {
    format_name: Option<String>,
    duration: Option<String>,
}

/// What ffprobe finds in `file`. Fails when ffprobe cannot run ([`Error::ToolMissing`]), cannot
/// read the file as media or finds a format that refers to other files ([`Error::NotMedia`]),
/// or does not finish within [`PROBE_TIMEOUT`] ([`Error::ProbeTimeout`]). A file ffprobe reads
/// but that holds no audio or video is not an error: see [`MediaInfo::has_media`].
pub fn probe(tools: &Tools, file: &Path) -> Result<MediaInfo, Error> {
    probe_within(tools, file, PROBE_TIMEOUT)
}

fn probe_within(tools: &Tools, file: &Path, timeout: Duration) -> Result<MediaInfo, Error> {
    let not_media = |reason: String| Error::NotMedia { path: file.to_owned(), reason };
    // `file:` keeps a name from being taken for another protocol or an option.
    let mut input = std::ffi::OsString::from("file:");
    input.push(file.as_os_str());
    let child = Command::new(&tools.ffprobe)
        .args(["-v", "error", "-protocol_whitelist", "file"])
        .args(["-show_entries", "stream=codec_type,codec_name,width,height:stream_disposition=attached_pic"])
        .args(["-show_entries", "format=duration,format_name"])
        .args(["-of", "json"])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::ToolMissing { tool: "ffprobe", reason: format!("{}: {e}", tools.ffprobe.display()) })?;
    let Finished { success, stdout, stderr } = finish(child, timeout).map_err(|e| match e {
        Wait::TimedOut => Error::ProbeTimeout { path: file.to_owned(), after: timeout },
        Wait::Io(source) => Error::Io { path: tools.ffprobe.clone(), source },
    })?;
    if !success {
        let complaint = String::from_utf8_lossy(&stderr);
        let first = complaint.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("ffprobe failed");
        // ffprobe starts its lines with the input's name, which the caller already knows.
        let first = first.rsplit_once(": ").map_or(first, |(_, why)| why);
        return Err(not_media(first.to_owned()));
    }
    if stdout.len() as u64 > MAX_PROBE_OUTPUT {
        return Err(not_media(format!("ffprobe described it in more than {MAX_PROBE_OUTPUT} bytes")));
    }
    let probed: Probed =
        serde_json::from_slice(&stdout).map_err(|e| not_media(format!("ffprobe's description is not JSON: {e}")))?;
    let format = probed.format.as_ref().and_then(|f| f.format_name.clone()).unwrap_or_default();
    if let Some(name) = format.split(',').find(|name| REFERRING_FORMATS.contains(name)) {
        return Err(not_media(format!("{name} refers to other files; upload the media itself")));
    }
    let duration = probed
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
    let mut info = MediaInfo { duration, format, video: Vec::new(), audio: Vec::new() };
    for stream in probed.streams {
        let codec = stream.codec_name.unwrap_or_default();
        match stream.codec_type.as_deref() {
            Some("video") if stream.disposition.attached_pic == 1 => {}
            Some("video") => info.video.push(VideoInfo {
                codec,
                width: stream.width.unwrap_or(0),
                height: stream.height.unwrap_or(0),
            }),
            Some("audio") => info.audio.push(AudioInfo { codec }),
            _ => {}
        }
    }
    Ok(info)
}

/// A child that ran to its end.
struct Finished {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum Wait {
    TimedOut,
    Io(std::io::Error),
}

/// Reads the child's output and reaps it. Reading is bounded: a reader stops at its limit and
/// closes the pipe, so a child that goes on writing fails (EPIPE) or is killed at `timeout`.
fn finish(mut child: Child, timeout: Duration) -> Result<Finished, Wait> {
    let deadline = Instant::now() + timeout;
    let stdout = child.stdout.take().map(|out| bounded_reader(out, MAX_PROBE_OUTPUT + 1));
    let stderr = child.stderr.take().map(|err| bounded_reader(err, MAX_PROBE_ERRORS));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // The child may end by itself meanwhile; either way it is reaped below.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Wait::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Wait::Io(e));
            }
        }
    };
    let collect =
        |reader: Option<std::thread::JoinHandle<Vec<u8>>>| reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok(Finished { success: status.success(), stdout: collect(stdout), stderr: collect(stderr) })
}

/// A thread reading at most `limit` bytes of `source`, then dropping it (a writer past the
/// limit gets EPIPE and ends).
fn bounded_reader(source: impl Read + Send + 'static, limit: u64) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.take(limit).read_to_end(&mut bytes);
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        let err = Tools::locate(Path::new("/nonexistent/ffmpeg")).unwrap_err();
        assert!(matches!(err, Error::ToolMissing { tool: "ffmpeg", .. }), "{err}");
        let err = Tools::locate(Path::new("no-such-ffmpeg-here")).unwrap_err();
        assert!(err.to_string().contains("not on PATH"), "{err}");
    }

    fn tools() -> Tools {
        Tools::locate(Path::new("ffmpeg")).expect("the test suite installs Debian's ffmpeg")
    }

    /// Runs ffmpeg with `args` (lavfi sources) writing `name` in `dir`.
    fn make(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let out = dir.join(name);
        let status = Command::new(tools().ffmpeg)
            .args(["-v", "error", "-y"])
            .args(args)
            .arg(&out)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg {args:?}: {status}");
        out
    }

    #[test]
    fn a_webm_shows_its_video_audio_and_duration() {
        let dir = tempfile::tempdir().unwrap();
        let file = make(
            dir.path(),
            "a b.webm",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120:rate=10",
                "-f",
                "lavfi",
                "-i",
                "sine",
                "-t",
                "1",
                "-c:v",
                "libvpx",
            ],
        );
        let info = probe(&tools(), &file).unwrap();
        assert!(info.has_media());
        assert_eq!(info.video, [VideoInfo { codec: "vp8".into(), width: 160, height: 120 }]);
        assert_eq!(info.audio.len(), 1, "{info:?}");
        assert_eq!(info.format, "matroska,webm");
        assert_eq!(info.extension(), Some("webm"));
        let duration = info.duration.expect("a file ffmpeg finished has a duration");
        assert!(duration.abs_diff(Duration::from_secs(1)) < Duration::from_millis(100), "{duration:?}");
    }

    #[test]
    fn an_audio_only_ogg_is_media_without_video() {
        let dir = tempfile::tempdir().unwrap();
        let file = make(dir.path(), "a.ogg", &["-f", "lavfi", "-i", "sine", "-t", "1", "-c:a", "libopus"]);
        let info = probe(&tools(), &file).unwrap();
        assert!(info.has_media());
        assert!(info.video.is_empty());
        assert_eq!(info.audio, [AudioInfo { codec: "opus".into() }]);
        assert_eq!(info.extension(), Some("ogg"));
    }

    #[test]
    fn a_cover_picture_is_not_video() {
        let dir = tempfile::tempdir().unwrap();
        let args = ["-f", "lavfi", "-i", "sine", "-f", "lavfi", "-i", "color=size=64x64", "-map", "0", "-map", "1"];
        let cover = ["-frames:v", "1", "-t", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", "-c:a", "aac"];
        let file = make(dir.path(), "song.m4a", &[&args[..], &cover[..]].concat());
        let info = probe(&tools(), &file).unwrap();
        assert!(info.video.is_empty(), "{info:?}");
        assert_eq!(info.audio, [AudioInfo { codec: "aac".into() }]);
    }

    #[test]
    fn text_and_empty_files_are_not_media() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, this is not a video\n").unwrap();
        let empty = dir.path().join("empty.webm");
        std::fs::write(&empty, "").unwrap();
        for file in [text, empty] {
            let err = probe(&tools(), &file).unwrap_err();
            assert!(matches!(err, Error::NotMedia { .. }), "{err}");
            assert!(!err.to_string().contains("file:"), "the reason without ffprobe's prefix: {err}");
        }
    }

    #[test]
    fn a_playlist_is_refused_and_fetches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let playlist = dir.path().join("list.m3u8");
        std::fs::write(
            &playlist,
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://192.0.2.1/a.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let err = probe(&tools(), &playlist).unwrap_err();
        assert!(matches!(err, Error::NotMedia { .. }), "{err}");
    }

    /// Tools whose ffprobe is a shell script running `body`.
    fn fake_ffprobe(dir: &Path, body: &str) -> Tools {
        let script = dir.join("ffprobe");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Tools { ffmpeg: script.clone(), ffprobe: script }
    }

    #[test]
    fn a_probe_that_hangs_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let tools = fake_ffprobe(dir.path(), "exec sleep 30");
        let started = Instant::now();
        let err = probe_within(&tools, Path::new("/dev/null"), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::ProbeTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn endless_output_is_cut_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let tools = fake_ffprobe(dir.path(), "exec yes '{}'");
        let err = probe_within(&tools, Path::new("/dev/null"), Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, Error::NotMedia { .. } | Error::ProbeTimeout { .. }), "{err}");
    }

    #[test]
    fn debian_ffmpeg_is_found_on_path() {
        let tools = Tools::locate(Path::new("ffmpeg")).expect("the test suite installs Debian's ffmpeg");
        assert!(tools.ffprobe.ends_with("ffprobe"));
    }
}
