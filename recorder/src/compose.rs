//! Composition: one capture folder in, one MP4 (H.264 + AAC, faststart) out.
//!
//! What it owns: a work folder beside the output (`<output>.parts`, removed when done) with
//! one IVF or Ogg Opus file per stream (`compose/track.rs`), the timeline and the layout
//! (`compose/timeline.rs`), and one ffmpeg process, killed and reaped if [`compose`] returns
//! or unwinds early (a panicking progress callback abandons the job). ffmpeg writes
//! `<output>.partial`, which becomes `output` only after ffprobe approved it, so `output` is
//! only ever a checked result.
//!
//! The event log's `Left` and stream ends cut a video's presence; `Joined` and `Muted` are
//! kept for the record but do not change the layout (a muted video stops sending frames, and
//! a gap over two seconds is an absence anyway).
//!
//! Memory stays bounded by a reorder window per stream: frames are streamed to the work
//! files, never held for the whole recording.

mod timeline;
mod track;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use self::timeline::{Rect, Segment, Shown};
use self::track::Track;
use crate::capture::format::{self, LogLine};
use crate::capture::{CaptureMeta, MediaKind, sync_dir};
use crate::{Error, Tools};

/// The composed video's frame rate.
const FRAME_RATE: u32 = 25;
/// How far before its segment a tile's frames are taken, for the frame it shows at the start.
const LOOKBACK_MS: u64 = 1_000;
/// ffmpeg's stderr lines kept for an error message.
const STDERR_LINES: usize = 12;

/// One composition to run.
#[derive(Debug, Clone)]
pub struct ComposeJob {
    pub tools: Tools,
    pub capture_dir: PathBuf,
    pub output: PathBuf,
    /// Cores ffmpeg may run on (`taskset -c`); `None`: any.
    pub cores: Option<Vec<usize>>,
    /// Niceness for ffmpeg (`nice -n`), e.g. 10.
    pub nice: i32,
}

/// What a finished composition produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeSummary {
    /// From the first to the last media of the recording.
    pub duration: Duration,
    /// Streams that had something to show or play.
    pub streams: usize,
    /// Size of the output file.
    pub bytes: u64,
    /// Layout segments (spans with one set of tiles).
    pub segments: usize,
}

/// Reads the capture folder, writes `job.output`; `progress` gets the fraction done (0..=1).
/// See the module documentation.
pub fn compose(job: &ComposeJob, mut progress: impl FnMut(f32)) -> Result<ComposeSummary, Error> {
    let dir = &job.capture_dir;
    let not_a_capture = |reason: String| Error::NotACapture { path: dir.clone(), reason };
    let meta_text = fs::read(dir.join(format::META_FILE)).map_err(|e| not_a_capture(format!("meta: {e}")))?;
    let meta: CaptureMeta = serde_json::from_slice(&meta_text).map_err(|e| not_a_capture(format!("meta: {e}")))?;
    // A missing log (a capture killed before it existed) is an empty one.
    let events = format::read_event_log(&fs::read_to_string(dir.join(format::EVENTS_FILE)).unwrap_or_default());

    let work = WorkDir::create(&job.output)?;
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut tracks = Vec::new();
    for file in format::stream_files(dir).map_err(io_err(dir))? {
        match track::read_track(&file, &work.path) {
            Ok(Some(track)) => tracks.push(track),
            Ok(None) => tracing::info!(file = %file.display(), "stream with nothing to compose"),
            // A stream file whose header never made it to disk whole is skipped, not fatal.
            Err(e) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData) => {
                tracing::warn!(file = %file.display(), error = %e, "stream file without a valid header")
            }
            Err(e) => return Err(io_err(&file)(e)),
        }
    }
    if tracks.is_empty() {
        return Err(Error::NoMedia);
    }
    let plan = Plan::new(&tracks, &events, &meta);
    let script = work.path.join("filter");
    fs::write(&script, plan.filter_graph(&tracks)).map_err(io_err(&script))?;
    let partial = Partial(partial_path(&job.output));
    let args = plan.arguments(&tracks, &script, &partial.0);
    run_ffmpeg(job, &args, plan.duration_ms, &mut progress)?;
    check_output(&job.tools, &partial.0, timeline::has_kind(&tracks, MediaKind::Audio))?;
    // On disk before it takes the output's name: a crash leaves the old name or the whole file.
    fs::File::open(&partial.0).and_then(|file| file.sync_all()).map_err(io_err(&partial.0))?;
    fs::rename(&partial.0, &job.output).map_err(io_err(&job.output))?;
    let folder = job.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(folder).map_err(io_err(folder))?;
    let bytes = fs::metadata(&job.output).map_err(io_err(&job.output))?.len();
    progress(1.0);
    Ok(ComposeSummary {
        duration: Duration::from_millis(plan.duration_ms),
        streams: tracks.len(),
        bytes,
        segments: plan.segments.len(),
    })
}

/// Where ffmpeg writes before the result is checked.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// ffmpeg's output before it is checked, removed unless renamed to the output (a failed,
/// rejected or abandoned composition leaves nothing half-written).
#[derive(Debug)]
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        // After the rename there is nothing left to remove.
        let _ = fs::remove_file(&self.0);
    }
}

/// The work folder of one composition, removed on drop.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(output: &Path) -> Result<Self, Error> {
        let mut name = output.file_name().unwrap_or_default().to_os_string();
        name.push(".parts");
        let path = output.with_file_name(name);
        // Left over from a composition that was killed: its files are rewritten anyway.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Everything ffmpeg is told, decided before it runs.
#[derive(Debug)]
struct Plan {
    /// Per track, its start on the timeline in µs.
    starts: Vec<u64>,
    duration_ms: u64,
    canvas: (u32, u32),
    segments: Vec<Segment>,
}

impl Plan {
    fn new(tracks: &[Track], events: &[LogLine], meta: &CaptureMeta) -> Self {
        let (starts, origin) = timeline::place(tracks);
        let duration_ms = tracks.iter().zip(&starts).map(|(t, s)| s / 1000 + t.end_ms).max().unwrap_or(0).max(1);
        let shown: Vec<Option<Shown<'_>>> = tracks
            .iter()
            .zip(&starts)
            .map(|(track, &start)| {
                (track.spec.kind == MediaKind::Video).then(|| Shown {
                    peer: &track.spec.peer,
                    spans: timeline::presence(track, start, events, origin),
                    rotations: if meta.fix_video_direction {
                        track.rotations.iter().map(|&(at, r)| (at + start / 1000, r)).collect()
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect();
        // Audio tracks take part as never shown, so tile indices stay track indices.
        let shown: Vec<Shown<'_>> = shown
            .into_iter()
            .map(|s| s.unwrap_or(Shown { peer: "", spans: Vec::new(), rotations: Vec::new() }))
            .collect();
        let canvas = meta.resolution.size();
        let segments = timeline::segments(&shown, &meta.layout, canvas, duration_ms, u64::from(1000 / FRAME_RATE));
        Self { starts, duration_ms, canvas, segments }
    }

    /// The inputs ffmpeg reads: tracks that are shown or heard, in track order.
    fn inputs<'t>(&self, tracks: &'t [Track]) -> Vec<(usize, &'t Track)> {
        tracks
            .iter()
            .enumerate()
            .filter(|&(i, t)| {
                t.spec.kind == MediaKind::Audio
                    || self.segments.iter().any(|s| s.tiles.iter().any(|tile| tile.track == i))
            })
            .collect()
    }

    /// The filter graph: each segment is its own black canvas with its tiles overlaid, and
    /// the segments are concatenated. Rendering them one after the other keeps ffmpeg from
    /// decoding a video far ahead for a later segment while an earlier one still waits for
    /// the same frames (a single canvas with every segment's overlay buffered that way).
    fn filter_graph(&self, tracks: &[Track]) -> String {
        let (width, height) = self.canvas;
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        let mut graph = String::new();
        let mut audio = Vec::new();
        // Per track: its ffmpeg input and how many tiles it is shown in.
        let mut branches: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for (input, (i, track)) in self.inputs(tracks).into_iter().enumerate() {
            if track.spec.kind == MediaKind::Audio {
                // amix mixes samples in arrival order: each input is made continuous from 0
                // (silence before its start and in its gaps) so that samples are times.
                let _ = writeln!(graph, "[{input}:a]aresample=async=1:first_pts=0[a{input}];");
                audio.push(format!("[a{input}]"));
                continue;
            }
            let shown = self.segments.iter().flat_map(|s| &s.tiles).filter(|t| t.track == i).count();
            let _ = write!(graph, "[{input}:v]split={shown}");
            for k in 0..shown {
                let _ = write!(graph, "[v{input}s{k}]");
            }
            graph.push_str(";\n");
            branches.insert(i, (input, 0));
        }
        for (k, segment) in self.segments.iter().enumerate() {
            let (start, end) = (seconds(segment.start_ms), seconds(segment.end_ms));
            let lookback = seconds(segment.start_ms.saturating_sub(LOOKBACK_MS));
            let length = seconds(segment.end_ms - segment.start_ms);
            let _ =
                writeln!(graph, "color=c=black:s={width}x{height}:r={FRAME_RATE}:d={length},format=yuv420p[g{k}b0];");
            for (j, tile) in segment.tiles.iter().enumerate() {
                let Some((input, used)) = branches.get_mut(&tile.track) else { continue };
                let branch = format!("v{input}s{used}");
                *used += 1;
                let turn = match tile.rotation {
                    1 => "transpose=1,",
                    2 => "hflip,vflip,",
                    3 => "transpose=2,",
                    _ => "",
                };
                let Rect { x, y, w, h } = tile.rect;
                // The segment's frames, moved to start at 0 like its canvas, with the last
                // second before it: the overlay shows the latest frame at or before each
                // canvas frame, so a tile shown on does not flash black until its next frame.
                let _ = writeln!(
                    graph,
                    "[{branch}]trim=start={lookback}:end={end},setpts=PTS-{start}/TB,{turn}scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1[g{k}t{j}];"
                );
                let _ = writeln!(graph, "[g{k}b{j}][g{k}t{j}]overlay=x={x}:y={y}:eof_action=pass[g{k}b{}];", j + 1);
            }
        }
        for (k, segment) in self.segments.iter().enumerate() {
            let _ = write!(graph, "[g{k}b{}]", segment.tiles.len());
        }
        let _ = write!(graph, "concat=n={}:v=1:a=0[vout]", self.segments.len());
        if !audio.is_empty() {
            let _ = write!(
                graph,
                ";\n{}amix=inputs={}:normalize=0:duration=longest,apad=whole_dur={}[aout]",
                audio.concat(),
                audio.len(),
                seconds(self.duration_ms)
            );
        }
        graph
    }

    fn arguments(&self, tracks: &[Track], script: &Path, partial: &Path) -> Vec<String> {
        let mut args: Vec<String> =
            ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-progress", "pipe:1"]
                .map(String::from)
                .to_vec();
        let inputs = self.inputs(tracks);
        for &(i, track) in &inputs {
            let start_us = self.starts[i];
            args.extend(["-itsoffset".into(), format!("{}.{:06}", start_us / 1_000_000, start_us % 1_000_000)]);
            args.extend(["-i".into(), track.path.display().to_string()]);
        }
        args.extend(["-filter_complex_script".into(), script.display().to_string()]);
        args.extend(["-map".into(), "[vout]".into()]);
        if inputs.iter().any(|(_, t)| t.spec.kind == MediaKind::Audio) {
            args.extend(["-map", "[aout]", "-c:a", "aac", "-b:a", "128k"].map(String::from));
        }
        args.extend(
            ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
                .map(String::from),
        );
        args.extend(["-t".into(), format!("{}.{:03}", self.duration_ms / 1000, self.duration_ms % 1000)]);
        args.extend(["-f".into(), "mp4".into(), "-y".into(), partial.display().to_string()]);
        args
    }
}

/// A child process killed (and reaped) when dropped, so an abandoned composition leaves no ffmpeg.
#[derive(Debug)]
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `nice -n N taskset -c CORES ffmpeg ARGS`, without the wrappers that are not asked for.
fn ffmpeg_command(job: &ComposeJob, args: &[String]) -> Command {
    let mut words: Vec<String> = Vec::new();
    if job.nice != 0 {
        words.extend(["nice".into(), "-n".into(), job.nice.to_string()]);
    }
    if let Some(cores) = &job.cores {
        let list: Vec<String> = cores.iter().map(usize::to_string).collect();
        words.extend(["taskset".into(), "-c".into(), list.join(",")]);
    }
    words.push(job.tools.ffmpeg.display().to_string());
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]).args(args);
    command
}

fn run_ffmpeg(
    job: &ComposeJob,
    args: &[String],
    duration_ms: u64,
    progress: &mut impl FnMut(f32),
) -> Result<(), Error> {
    let mut command = ffmpeg_command(job, args);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().map_err(|source| Error::Io { path: job.tools.ffmpeg.clone(), source })?;
    let mut child = KillOnDrop(child);
    let stderr = child.0.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            let mut last = VecDeque::with_capacity(STDERR_LINES);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if last.len() == STDERR_LINES {
                    last.pop_front();
                }
                last.push_back(line);
            }
            Vec::from(last).join("\n")
        })
    });
    if let Some(stdout) = child.0.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // `-progress` writes key=value lines; out_time_us is the output's time so far.
            if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.parse::<u64>().ok()) {
                progress(((us / 1000) as f32 / duration_ms as f32).clamp(0.0, 1.0));
            }
        }
    }
    let status = child.0.wait().map_err(|source| Error::Io { path: job.tools.ffmpeg.clone(), source })?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(Error::Ffmpeg { status: status.to_string(), stderr });
    }
    Ok(())
}

/// ffprobe must see H.264 video, and AAC audio when the recording had audio.
fn check_output(tools: &Tools, file: &Path, with_audio: bool) -> Result<(), Error> {
    let output = Command::new(&tools.ffprobe)
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "json"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io { path: tools.ffprobe.clone(), source })?;
    if !output.status.success() {
        return Err(Error::BadOutput(format!("ffprobe: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    let probed: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| Error::BadOutput(format!("ffprobe output: {e}")))?;
    let streams = probed["streams"].as_array().cloned().unwrap_or_default();
    let has = |kind: &str, codec: &str| streams.iter().any(|s| s["codec_type"] == kind && s["codec_name"] == codec);
    if !has("video", "h264") {
        return Err(Error::BadOutput("no H.264 video stream".into()));
    }
    if with_audio && !has("audio", "aac") {
        return Err(Error::BadOutput("no AAC audio stream".into()));
    }
    Ok(())
}
