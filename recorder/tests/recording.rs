//! Capture and composition end to end with real media: ffmpeg encodes test patterns and
//! sends them as RTP (with sender reports on the same port) to a capture, as a worker would;
//! the capture is composed and the MP4 judged by ffprobe and by the luma of its frames.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_recorder::Tools;
use uprtcd_recorder::capture::{
    Capture, CaptureEvent, CaptureMeta, CaptureProgress, Codec, Layout, Resolution, StreamSpec,
};
use uprtcd_recorder::compose::{ComposeJob, ComposeSummary, compose};

const VP8: u8 = 96;
const VP9: u8 = 98;
const H264: u8 = 102;
const OPUS: u8 = 111;
const CVO_ID: u8 = 3;

/// A child process killed when the test ends, however it ends.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sender {
    fn finish(mut self) {
        let status = self.0.wait().unwrap();
        assert!(status.success(), "sender ffmpeg: {status}");
    }
}

#[derive(Clone, Copy)]
enum Video {
    Vp8,
    Vp9,
    H264,
}

impl Video {
    fn codec(self) -> (Codec, u8) {
        match self {
            Video::Vp8 => (Codec::Vp8, VP8),
            Video::Vp9 => (Codec::Vp9, VP9),
            Video::H264 => (Codec::H264, H264),
        }
    }
}

/// One peer: a video (and optionally an audio) stream, from one ffmpeg in real time.
struct Peer {
    name: &'static str,
    video_ssrc: u32,
    audio_ssrc: Option<u32>,
    video: Video,
    /// The lavfi source, e.g. "testsrc2" or "color=c=white".
    source: &'static str,
}

impl Peer {
    fn specs(&self) -> Vec<StreamSpec> {
        let (codec, payload_type) = self.video.codec();
        let video = StreamSpec::new(self.video_ssrc, self.name, codec, payload_type);
        let mut specs = vec![StreamSpec { cvo_extension_id: Some(CVO_ID), ..video }];
        if let Some(ssrc) = self.audio_ssrc {
            specs.push(StreamSpec::new(ssrc, self.name, Codec::Opus, OPUS));
        }
        specs
    }

    /// Starts sending `seconds` of media: video to `video_to`, audio to `audio_to`.
    fn send(&self, seconds: f32, video_to: SocketAddr, audio_to: SocketAddr) -> Sender {
        let url = |to: SocketAddr| format!("rtp://{to}?rtcpport={}&pkt_size=1200", to.port());
        let mut command = Command::new("ffmpeg");
        command.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"]);
        let separator = if self.source.contains('=') { ':' } else { '=' };
        command.args(["-f", "lavfi", "-i", &format!("{}{separator}size=640x360:rate=25", self.source)]);
        if self.audio_ssrc.is_some() {
            command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        }
        command.args(["-t", &seconds.to_string(), "-map", "0:v"]);
        match self.video {
            Video::Vp8 => command.args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "600k"]),
            // ffmpeg's VP9 packetizer is marked experimental.
            Video::Vp9 => command.args([
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "600k",
                "-strict",
                "experimental",
            ]),
            Video::H264 => command.args([
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ]),
        };
        command.args(["-g", "50", "-pix_fmt", "yuv420p", "-ssrc", &self.video_ssrc.to_string()]);
        let (_, payload_type) = self.video.codec();
        command.args(["-payload_type", &payload_type.to_string(), "-f", "rtp", &url(video_to)]);
        if let Some(ssrc) = self.audio_ssrc {
            command.args(["-t", &seconds.to_string(), "-map", "1:a", "-c:a", "libopus", "-b:a", "48k"]);
            command.args(["-ssrc", &ssrc.to_string(), "-payload_type", &OPUS.to_string(), "-f", "rtp", &url(audio_to)]);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null());
        Sender(command.spawn().expect("ffmpeg runs"))
    }
}

fn meta(layout: Layout, resolution: Resolution, fix_video_direction: bool) -> CaptureMeta {
    CaptureMeta {
        room: "room".into(),
        record: "rec".into(),
        started_unix_ms: 0,
        layout,
        resolution,
        fix_video_direction,
    }
}

/// Starts a capture in `dir` with every peer's streams added.
fn capture(dir: &Path, meta: CaptureMeta, peers: &[&Peer]) -> Capture {
    let capture = Capture::start(&dir.join("capture"), meta).unwrap();
    for peer in peers {
        capture.event(CaptureEvent::Joined { peer: peer.name.into() });
        for spec in peer.specs() {
            capture.add_stream(spec);
        }
    }
    capture
}

fn compose_to(dir: &Path, name: &str) -> (PathBuf, ComposeSummary) {
    let output = dir.join(name);
    let job = ComposeJob {
        tools: Tools::locate(Path::new("ffmpeg")).unwrap(),
        capture_dir: dir.join("capture"),
        output: output.clone(),
        cores: None,
        nice: 10,
    };
    let mut last = 0.0;
    let started = Instant::now();
    let summary = compose(&job, |fraction| {
        assert!(fraction >= last, "progress goes forward");
        last = fraction;
    })
    .unwrap();
    eprintln!("{name}: {:?} composed in {:?}", summary.duration, started.elapsed());
    assert_eq!(last, 1.0);
    assert!(!dir.join(format!("{name}.parts")).exists(), "the work folder is removed");
    (output, summary)
}

struct Probed {
    width: u64,
    height: u64,
    video: String,
    audio: Option<String>,
    duration: f64,
}

fn probe(file: &Path) -> Probed {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height:format=duration"])
        .args(["-of", "json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = json["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio");
    Probed {
        width: video["width"].as_u64().unwrap(),
        height: video["height"].as_u64().unwrap(),
        video: video["codec_name"].as_str().unwrap().into(),
        audio: audio.map(|a| a["codec_name"].as_str().unwrap().into()),
        duration: json["format"]["duration"].as_str().unwrap().parse().unwrap(),
    }
}

/// One frame at `seconds` as 8-bit luma, `width` × `height`.
struct Gray {
    width: usize,
    pixels: Vec<u8>,
}

impl Gray {
    fn at(file: &Path, seconds: f32, width: usize) -> Gray {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-ss", &seconds.to_string(), "-i"])
            .arg(file)
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty());
        Gray { width, pixels: out.stdout }
    }

    fn height(&self) -> usize {
        self.pixels.len() / self.width
    }

    /// Mean luma of the rectangle `x0..x1` × `y0..y1`.
    fn mean(&self, (x0, x1): (usize, usize), (y0, y1): (usize, usize)) -> f64 {
        let mut sum = 0u64;
        for y in y0..y1 {
            sum += self.pixels[y * self.width + x0..y * self.width + x1].iter().map(|&p| u64::from(p)).sum::<u64>();
        }
        sum as f64 / ((x1 - x0) * (y1 - y0)) as f64
    }

    /// How many columns and rows hold some picture (mean luma above black).
    fn picture_extent(&self) -> (usize, usize) {
        let h = self.height();
        let columns = (0..self.width).filter(|&x| self.mean((x, x + 1), (0, h)) > 20.0).count();
        let rows = (0..h).filter(|&y| self.mean((0, self.width), (y, y + 1)) > 20.0).count();
        (columns, rows)
    }
}

/// Records two peers (VP8 + Opus each, test patterns) for `seconds` in a 720p grid.
/// Also returns how long the senders ran, from the first start to the last end: what the
/// recording can span at most (on a loaded machine their starts may be far apart).
fn record_two_peers(dir: &Path, seconds: f32) -> (CaptureProgress, f64) {
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: Some(0x0A02), video: Video::Vp8, source: "testsrc2" };
    let b = Peer { name: "b", video_ssrc: 0x0B01, audio_ssrc: Some(0x0B02), video: Video::Vp8, source: "testsrc2" };
    let capture = capture(dir, meta(Layout::Grid, Resolution::P720, false), &[&a, &b]);
    let to = capture.address();
    let started = Instant::now();
    let senders = [a.send(seconds, to, to), b.send(seconds, to, to)];
    senders.into_iter().for_each(Sender::finish);
    (capture.stop().unwrap(), started.elapsed().as_secs_f64())
}

/// Whether some frame between `from` and `to` seconds shows two tiles side by side of
/// 16:9 video on a 16:9 canvas: letterboxed (the top rows black), both halves lit.
fn shows_two_tiles(mp4: &Path, width: usize, from: f32, to: f32) -> bool {
    let steps = 6;
    (0..=steps).map(|i| from + (to - from) * i as f32 / steps as f32).any(|t| {
        let frame = Gray::at(mp4, t, width);
        let (height, half) = (frame.height(), width / 2);
        let top = frame.mean((0, width), (0, height / 8));
        let rows = (height * 3 / 8, height * 5 / 8);
        let (left, right) =
            (frame.mean((half / 10, half * 9 / 10), rows), frame.mean((half * 11 / 10, width - half / 10), rows));
        top < 20.0 && left > 40.0 && right > 40.0
    })
}

#[test]
fn two_peers_in_a_grid_with_their_audio() {
    let dir = tempfile::tempdir().unwrap();
    let (progress, sent) = record_two_peers(dir.path(), 3.5);
    assert!(progress.started && progress.packets > 100, "{progress:?}");
    assert_eq!((progress.dropped_unknown, progress.dropped_invalid, progress.failure), (0, 0, None));

    let (mp4, summary) = compose_to(dir.path(), "grid.mp4");
    assert_eq!(summary.streams, 4);
    let probed = probe(&mp4);
    assert_eq!((probed.width, probed.height, probed.video.as_str()), (1280, 720, "h264"));
    assert_eq!(probed.audio.as_deref(), Some("aac"));
    assert!(probed.duration >= 2.5 && probed.duration <= sent + 0.5, "duration {} of {sent} s sent", probed.duration);
    assert!(shows_two_tiles(&mp4, 1280, 0.5, probed.duration as f32 - 0.5), "two lit tiles");
}

#[test]
fn the_centre_peer_is_in_the_centre_h264() {
    let dir = tempfile::tempdir().unwrap();
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: None, video: Video::H264, source: "color=c=white" };
    let b = Peer { name: "b", video_ssrc: 0x0B01, audio_ssrc: None, video: Video::Vp8, source: "testsrc2" };
    let capture = capture(dir.path(), meta(Layout::Centre("a".into()), Resolution::P480, false), &[&b, &a]);
    let to = capture.address();
    let senders = [a.send(3.0, to, to), b.send(3.0, to, to)];
    senders.into_iter().for_each(Sender::finish);
    capture.stop().unwrap();

    let (mp4, _) = compose_to(dir.path(), "centre.mp4");
    let probed = probe(&mp4);
    assert_eq!((probed.width, probed.height, probed.audio), (854, 480, None));
    // Centre: the white peer; along the bottom, the thumbnail of the other; black around.
    // Looked for over the recording, as the two senders may start far apart.
    let lumas: Vec<_> = (1..=5)
        .map(|i| {
            let frame = Gray::at(&mp4, probed.duration as f32 * i as f32 / 6.0, 854);
            (frame.mean((327, 527), (120, 260)), frame.mean((380, 474), (400, 470)), frame.mean((0, 60), (0, 30)))
        })
        .collect();
    let laid_out = |&(centre, thumbnail, corner): &(f64, f64, f64)| {
        centre > 200.0 && thumbnail > 40.0 && thumbnail < 200.0 && corner < 20.0
    };
    assert!(lumas.iter().any(laid_out), "(centre, thumbnail, corner) luma: {lumas:.0?}");
}

/// Forwards RTP from ffmpeg to `to`, adding a one-byte CVO extension (id [`CVO_ID`]) with
/// `rotation` to every packet; RTCP passes as is.
fn cvo_relay(to: SocketAddr, rotation: u8, stop: Arc<AtomicBool>) -> (SocketAddr, thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let address = socket.local_addr().unwrap();
    let relay = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 2100];
        while !stop.load(Ordering::Relaxed) {
            let Ok(len) = socket.recv(&mut buf) else { continue };
            let datagram = &buf[..len];
            let is_rtcp = matches!(datagram.get(1), Some(192..=223));
            let rewritten = match RtpPacket::new_checked(datagram) {
                Ok(packet) if !is_rtcp => {
                    let value = [rotation];
                    let extensions = [(CVO_ID, &value[..])];
                    let header = RtpHeader::new(
                        packet.payload_type(),
                        packet.sequence_number(),
                        packet.timestamp(),
                        packet.ssrc(),
                    )
                    .marker(packet.marker())
                    .extensions(&extensions);
                    let at = header.write(&mut out).unwrap();
                    out[at..at + packet.payload().len()].copy_from_slice(packet.payload());
                    &out[..at + packet.payload().len()]
                }
                _ => datagram,
            };
            let _ = socket.send_to(rewritten, to);
        }
    });
    (address, relay)
}

#[test]
fn video_direction_is_fixed_by_cvo() {
    let dir = tempfile::tempdir().unwrap();
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: None, video: Video::Vp8, source: "testsrc2" };
    let capture = capture(dir.path(), meta(Layout::Grid, Resolution::P480, true), &[&a]);
    let stop = Arc::new(AtomicBool::new(false));
    let (relay, relay_thread) = cvo_relay(capture.address(), 1, Arc::clone(&stop));
    a.send(3.0, relay, relay).finish();
    stop.store(true, Ordering::Relaxed);
    relay_thread.join().unwrap();
    capture.stop().unwrap();

    let (upright, _) = compose_to(dir.path(), "upright.mp4");
    let (columns, rows) = Gray::at(&upright, 1.5, 854).picture_extent();
    assert!(columns < rows, "turned upright: {columns} columns × {rows} rows of picture");

    // The same capture without the fix stays as sent: landscape.
    let meta_path = dir.path().join("capture/meta.json");
    let text = fs::read_to_string(&meta_path)
        .unwrap()
        .replace("\"fix_video_direction\": true", "\"fix_video_direction\": false");
    fs::write(&meta_path, text).unwrap();
    let (as_sent, _) = compose_to(dir.path(), "as-sent.mp4");
    let (columns, rows) = Gray::at(&as_sent, 1.5, 854).picture_extent();
    assert!(columns > rows, "as sent: {columns} columns × {rows} rows of picture");
}

#[test]
fn a_late_joiner_is_absent_before_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: Some(0x0A02), video: Video::Vp8, source: "testsrc2" };
    let b = Peer { name: "b", video_ssrc: 0x0B01, audio_ssrc: None, video: Video::Vp8, source: "testsrc2" };
    let capture = capture(dir.path(), meta(Layout::Grid, Resolution::P480, false), &[&a]);
    let to = capture.address();
    let first = a.send(6.0, to, to);
    // b joins 1.8 s after a's first key frame is written, however slowly a's ffmpeg started.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !capture.progress().started && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(1800));
    capture.event(CaptureEvent::Joined { peer: "b".into() });
    b.specs().into_iter().for_each(|spec| capture.add_stream(spec));
    let second = b.send(2.5, to, to);
    first.finish();
    second.finish();
    capture.stop().unwrap();

    let (mp4, summary) = compose_to(dir.path(), "late.mp4");
    assert!(summary.segments >= 2, "{summary:?}");
    // Alone, a fills the canvas (16:9 on 16:9): the top rows hold picture.
    let early = Gray::at(&mp4, 0.8, 854);
    assert!(early.mean((0, 854), (0, 60)) > 40.0, "a alone fills the canvas");
    // Once b is there, two tiles side by side. When exactly depends on how fast b's ffmpeg
    // started; a runs on long enough to overlap however late that was.
    let end = summary.duration.as_secs_f32() - 0.3;
    assert!(shows_two_tiles(&mp4, 854, 2.0, end), "two tiles once b joined: {summary:?}");
}

#[test]
fn a_capture_cut_mid_record_still_composes() {
    let dir = tempfile::tempdir().unwrap();
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: Some(0x0A02), video: Video::Vp9, source: "testsrc2" };
    let capture = capture(dir.path(), meta(Layout::Grid, Resolution::P480, false), &[&a]);
    let to = capture.address();
    a.send(2.5, to, to).finish();
    capture.stop().unwrap();
    // What a kill -9 in the middle of a write leaves: each file's last record torn, the
    // event log's last line half written.
    for entry in fs::read_dir(dir.path().join("capture")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rec") {
            let len = fs::metadata(&path).unwrap().len();
            fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
        }
    }
    // A stream file created but whose header never reached the disk.
    fs::write(dir.path().join("capture/stream-0000dead.rec"), [0u8; 20]).unwrap();
    let events = dir.path().join("capture/events.log");
    let mut log = fs::read_to_string(&events).unwrap();
    log.push_str("{\"at_us\":12,\"ent");
    fs::write(&events, log).unwrap();

    // A composition abandoned midway (its progress callback panics) leaves no ffmpeg behind
    // and no output.
    let abandoned = dir.path().join("abandoned.mp4");
    let job = ComposeJob {
        tools: Tools::locate(Path::new("ffmpeg")).unwrap(),
        capture_dir: dir.path().join("capture"),
        output: abandoned.clone(),
        cores: None,
        nice: 0,
    };
    let result = std::panic::catch_unwind(|| compose(&job, |_| panic!("abandoned")));
    assert!(result.is_err());
    assert!(!abandoned.exists() && !dir.path().join("abandoned.mp4.partial").exists());
    assert!(!dir.path().join("abandoned.mp4.parts").exists());
    let needle = abandoned.to_string_lossy().into_owned();
    let running = fs::read_dir("/proc").unwrap().filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok());
    assert!(!running.into_iter().any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle)), "ffmpeg killed");

    let (mp4, _) = compose_to(dir.path(), "torn.mp4");
    let probed = probe(&mp4);
    assert_eq!(probed.audio.as_deref(), Some("aac"));
    assert!((probed.duration - 2.5).abs() <= 1.0, "duration {}", probed.duration);
    let picture = Gray::at(&mp4, 1.2, 854).mean((200, 654), (100, 380));
    assert!(picture > 40.0, "the VP9 video shows: luma {picture:.0}");
}

#[test]
fn a_capture_without_media_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: None, video: Video::Vp8, source: "testsrc2" };
    let capture = capture(dir.path(), meta(Layout::Grid, Resolution::P720, false), &[&a]);
    capture.stop().unwrap();
    let job = ComposeJob {
        tools: Tools::locate(Path::new("ffmpeg")).unwrap(),
        capture_dir: dir.path().join("capture"),
        output: dir.path().join("none.mp4"),
        cores: Some(vec![0]),
        nice: 0,
    };
    let err = compose(&job, |_| {}).unwrap_err();
    assert!(err.to_string().contains("no video stream had a key frame"), "{err}");
    assert!(!job.output.exists());
}

/// Processing speed of a 2-peer 720p grid of 10 s (VP8 + Opus each), in × real time:
/// `cargo test -p uprtcd-recorder --test recording -- --ignored --nocapture processing_speed`.
/// Set `UPRTCD_KEEP_CAPTURE=DIR` to keep the capture and the MP4 there.
#[test]
#[ignore = "a measurement: 10 s of capture, then composition"]
fn processing_speed() {
    let dir = tempfile::tempdir().unwrap();
    let _ = record_two_peers(dir.path(), 10.0);
    let (started, children_before) = (Instant::now(), children_cpu_seconds());
    let (mp4, summary) = compose_to(dir.path(), "speed.mp4");
    let (elapsed, cpu) = (started.elapsed(), children_cpu_seconds() - children_before);
    let media = summary.duration.as_secs_f64();
    println!(
        "composed {:?} of a 2-peer 720p grid in {elapsed:?}: {:.2}× real time; ffmpeg and ffprobe used \
         {cpu:.2} CPU-seconds, {:.2} per second of output ({} bytes)",
        summary.duration,
        media / elapsed.as_secs_f64(),
        cpu / media,
        summary.bytes
    );
    if let Some(keep) = std::env::var_os("UPRTCD_KEEP_CAPTURE") {
        let keep = PathBuf::from(keep);
        fs::create_dir_all(&keep).unwrap();
        let _ = fs::remove_dir_all(keep.join("capture"));
        fs::rename(dir.path().join("capture"), keep.join("capture")).unwrap();
        fs::rename(mp4, keep.join("speed.mp4")).unwrap();
    }
}

/// CPU time (user + system) of this process's children that have been waited for, from
/// /proc/self/stat (fields 16 and 17, in clock ticks of 1/100 s on Linux).
fn children_cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The environment variable that makes [`capture_in_a_child_process`] run (in the child).
const CHILD_DIR: &str = "UPRTCD_TEST_CAPTURE_CHILD_DIR";

/// The child side of [`a_capture_killed_with_sigkill_still_composes`]: captures peer a into
/// the folder named by [`CHILD_DIR`], prints its address and waits to be killed.
#[test]
#[ignore = "the child process of a_capture_killed_with_sigkill_still_composes"]
fn capture_in_a_child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: Some(0x0A02), video: Video::Vp8, source: "testsrc2" };
    let capture = capture(Path::new(&dir), meta(Layout::Grid, Resolution::P480, false), &[&a]);
    println!("capture address {}", capture.address());
    thread::sleep(Duration::from_secs(30));
}

#[test]
fn a_capture_killed_with_sigkill_still_composes() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Sender(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "capture_in_a_child_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let to: SocketAddr = stdout
        .lines()
        .map_while(Result::ok)
        // libtest may print the test's name on the same line first.
        .find_map(|line| line.split("capture address ").nth(1).map(|a| a.trim().parse().unwrap()))
        .expect("the child prints its capture's address");
    let a = Peer { name: "a", video_ssrc: 0x0A01, audio_ssrc: Some(0x0A02), video: Video::Vp8, source: "testsrc2" };
    let sender = a.send(8.0, to, to);
    // Two seconds after the video's first records reached the file (however slowly the
    // sender started), the capture process is killed.
    let video = dir.path().join("capture/stream-00000a01.rec");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::metadata(&video).map_or(0, |m| m.len()) < 4096 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let first_records = Instant::now();
    thread::sleep(Duration::from_millis(2000));
    // Sender's drop sends SIGKILL: the capture thread dies wherever it is.
    drop(child);
    let recorded = first_records.elapsed().as_secs_f64();
    drop(sender);

    let (mp4, summary) = compose_to(dir.path(), "killed.mp4");
    let probed = probe(&mp4);
    assert_eq!(probed.audio.as_deref(), Some("aac"));
    // Up to the kill, less at most the 200 ms not yet handed to the OS.
    let duration = summary.duration.as_secs_f64();
    assert!(duration >= recorded - 0.5 && duration <= recorded + 1.0, "{duration} s of {recorded} s: {summary:?}");
}
