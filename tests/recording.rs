//! Server-side recordings of real media, end to end through the binary: test clients publish
//! VP8 that ffmpeg encodes from its test patterns (tagged with a video orientation the way
//! phones tag theirs), a recording captures the room, and the MP4 it turns into is checked
//! with ffprobe and by its pixels. Also a kill -9 in the middle of a recording, and a
//! recording that ends by itself when its publishers leave.

mod support;

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::client::*;
use support::*;
use uprtcd_dataplane::peer::UdpPeer;
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};

/// The id the test publishers give the video-orientation extension in their offers.
const CVO_ID: u8 = 3;

/// A publisher's offer with the video-orientation extension, as Chrome offers it.
fn with_orientation(offer: String) -> String {
    offer.replace("a=mid:0\r\n", &format!("a=mid:0\r\na=extmap:{CVO_ID} urn:3gpp:video-orientation\r\n"))
}

/// A test client's camera: ffmpeg encodes a test pattern to VP8 RTP on loopback, and a thread
/// publishes each packet as the client's stream, tagged with `rotation` (quarter turns, as the
/// CVO byte carries them).
struct Camera {
    ffmpeg: Child,
    stop: Arc<AtomicBool>,
    relay: Option<JoinHandle<u64>>,
    /// The RTP timestamp of the last packet published.
    timestamp: Arc<AtomicU32>,
}

impl Camera {
    fn start(mut publisher: UdpPeer, ssrc: u32, pattern: &str, rotation: u8) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let ffmpeg = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
            .arg(format!("{pattern}=size=320x180:rate=25"))
            .args(["-t", "60", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k"])
            .args(["-g", "25", "-payload_type", "96", "-ssrc", &ssrc.to_string(), "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{port}?pkt_size=1200"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg (the test suite installs Debian's)");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let timestamp = Arc::new(AtomicU32::new(0));
        let published = Arc::clone(&timestamp);
        let relay = std::thread::spawn(move || {
            let (mut input, mut output) = (vec![0u8; 2048], vec![0u8; 2048]);
            let mut consent = Instant::now();
            let mut sent = 0;
            while !stopped.load(Ordering::Relaxed) {
                if consent.elapsed() > Duration::from_secs(1) {
                    let _ = publisher.refresh_consent();
                    consent = Instant::now();
                }
                let Ok(len) = socket.recv(&mut input) else { continue };
                let Ok(packet) = RtpPacket::new_checked(&input[..len]) else { continue };
                let orientation = [rotation & 3];
                let elements: [(u8, &[u8]); 1] = [(CVO_ID, &orientation)];
                let header = RtpHeader::new(96, packet.sequence_number(), packet.timestamp(), ssrc)
                    .marker(packet.marker())
                    .extensions(&elements)
                    .write(&mut output)
                    .unwrap();
                let payload = packet.payload();
                output[header..header + payload.len()].copy_from_slice(payload);
                if publisher.send_rtp(&mut output, header + payload.len()).is_ok() {
                    sent += 1;
                    published.store(packet.timestamp(), Ordering::Relaxed);
                }
            }
            sent
        });
        Camera { ffmpeg, stop, relay: Some(relay), timestamp }
    }

    /// The media time published so far, on the stream's 90 kHz clock. ffmpeg encodes in real
    /// time only when it gets the CPU it needs, so durations are judged in media time.
    fn media_time(&self) -> u32 {
        self.timestamp.load(Ordering::Relaxed)
    }

    /// Stops the camera; returns how many packets it published.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.relay.take().and_then(|r| r.join().ok()).unwrap_or(0)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.ffmpeg.kill();
        let _ = self.ffmpeg.wait();
    }
}

/// Joins `peer` to the room and starts its camera; returns its signalling, kept reading.
fn publish_camera(
    srv: &Server,
    room: &str,
    code: u64,
    peer: &str,
    ssrc: u32,
    pattern: &str,
    rotation: u8,
) -> (Reading, Camera) {
    let mut signalling = join(srv, room, code, peer);
    let publisher = publish_video_offer(&mut signalling, ssrc, with_orientation);
    (Reading::start(signalling), Camera::start(publisher, ssrc, pattern, rotation))
}

fn record_status(srv: &Server, record: &str) -> (u64, String) {
    let (_, env) = srv.call("GET", &format!("/record/{record}/status"), ());
    (env["data"]["status"].as_u64().unwrap_or(u64::MAX), env["msg"].as_str().unwrap_or("").to_owned())
}

/// Waits for the recording to reach `status`, failing on 7 or after `within`.
fn await_status(srv: &Server, record: &str, status: u64, within: Duration) {
    let reached = poll_until(within, || {
        let (now, msg) = record_status(srv, record);
        assert_ne!(now, 7, "recording {record} failed: {msg}; log:\n{}", srv.log());
        (now == status).then_some(())
    });
    assert!(
        reached.is_some(),
        "recording {record} reached no status {status} within {within:?}: {:?}",
        record_status(srv, record)
    );
}

/// The recording's MP4, downloaded into `dir`.
fn download(srv: &Server, record: &str, dir: &Path) -> std::path::PathBuf {
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{record}"), &[], Body::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let path = dir.join(format!("{record}.mp4"));
    std::fs::write(&path, &r.body).unwrap();
    path
}

/// What ffprobe says of `file`'s streams and duration.
fn probe(file: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height:format=duration",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn duration_s(probe: &Value) -> f64 {
    probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration")
}

fn video_stream(probe: &Value) -> &Value {
    probe["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == "video").expect("a video stream")
}

/// One frame at `at_s`, as 8-bit luma of the recording's size.
fn luma_frame(file: &Path, at_s: f64, (width, height): (usize, usize)) -> Vec<u8> {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-ss", &format!("{at_s:.2}"), "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut frame = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut frame).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(frame.len(), width * height, "one gray frame");
    frame
}

/// The bounding box (x0, y0, x1, y1) of the pixels brighter than black in the columns
/// `columns` of a luma frame `width` wide; `None` when they are all black.
fn lit_box(frame: &[u8], width: usize, columns: std::ops::Range<usize>) -> Option<(usize, usize, usize, usize)> {
    let mut found: Option<(usize, usize, usize, usize)> = None;
    for (y, row) in frame.chunks(width).enumerate() {
        for x in columns.clone().filter(|&x| row[x] > 40) {
            let b = found.get_or_insert((x, y, x, y));
            *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
        }
    }
    found
}

#[test]
fn a_room_of_two_cameras_becomes_one_upright_720p_grid() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "u1", &["u2"], 0);
    // u1 holds its phone upright: its landscape frames are tagged "turn 90° clockwise".
    let (_s1, cam1) = publish_camera(&srv, &room, code, "u1", 0x1001, "testsrc2", 1);
    let (_s2, cam2) = publish_camera(&srv, &room, code, "u2", 0x1002, "testsrc", 0);
    let publishing =
        poll_until(Duration::from_secs(10), || (cam1.media_time() != 0 && cam2.media_time() != 0).then_some(()));
    assert!(publishing.is_some(), "both cameras publish");
    let started = srv.ok("POST", "/record/start", json!({"roomId": room, "all": true, "fixVideoDirection": true}));
    let record = str_field(&started, "recordId").to_owned();
    await_status(&srv, &record, 2, Duration::from_secs(10));
    let recorded_from = [cam1.media_time(), cam2.media_time()];
    assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{room}/record/status"), ()), "status"), 2);
    std::thread::sleep(Duration::from_secs(4));
    srv.ok("POST", &format!("/record/stop/{room}"), ());
    let recorded_to = [cam1.media_time(), cam2.media_time()];
    let media_s =
        (0..2).map(|i| f64::from(recorded_to[i].wrapping_sub(recorded_from[i])) / 90_000.0).fold(0.0, f64::max);
    let published = (cam1.stop(), cam2.stop());
    assert!(published.0 > 20 && published.1 > 20, "both cameras published: {published:?}");
    assert!(record_status(&srv, &record).0 >= 3, "stopped");
    await_status(&srv, &record, 6, Duration::from_secs(90));

    let dir = tempfile::tempdir().unwrap();
    let mp4 = download(&srv, &record, dir.path());
    let probed = probe(&mp4);
    let video = video_stream(&probed);
    assert_eq!(
        (video["codec_name"].as_str(), video["width"].as_u64(), video["height"].as_u64()),
        (Some("h264"), Some(1280), Some(720)),
        "{probed}"
    );
    let duration = duration_s(&probed);
    // Each stream from its first key frame (at most a second of media after the start, and
    // some before status 2 was seen) to the stop.
    assert!(
        (media_s - 1.25..=media_s + 1.0).contains(&duration),
        "the {media_s:.2} s of media published while recording ({recorded_from:?} to {recorded_to:?}): {duration} s; {probed}"
    );

    // Two tiles side by side: u2's as sent (wider than tall), u1's turned upright (taller
    // than wide), each in its own half of the frame.
    let frame = luma_frame(&mp4, duration / 2.0, (1280, 720));
    let halves = [lit_box(&frame, 1280, 0..640), lit_box(&frame, 1280, 640..1280)];
    let shapes: Vec<&str> = halves
        .iter()
        .map(|b| match b {
            Some((x0, y0, x1, y1)) if y1 - y0 > x1 - x0 => "portrait",
            Some(_) => "landscape",
            None => "black",
        })
        .collect();
    let mut sorted = shapes.clone();
    sorted.sort();
    assert_eq!(sorted, ["landscape", "portrait"], "one tile per half, the tagged one upright: {halves:?}");

    // The room can be recorded again once a recording ended.
    let again = srv.ok("POST", "/record/start", json!({"roomId": room}));
    assert_ne!(str_field(&again, "recordId"), record);
    srv.ok("POST", &format!("/record/stop/{room}"), ());
}

#[test]
fn a_recording_killed_mid_way_still_becomes_a_playable_mp4_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::builder().data_dir(dir.path()).start();
    let (room, code) = convo(&srv, "u1", &[], 0);
    let (_s1, cam) = publish_camera(&srv, &room, code, "u1", 0x2001, "testsrc2", 0);
    let started = srv.ok("POST", "/record/start", json!({"roomId": room}));
    let record = str_field(&started, "recordId").to_owned();
    await_status(&srv, &record, 2, Duration::from_secs(10));
    let from = cam.media_time();
    std::thread::sleep(Duration::from_secs(3));
    srv.kill9();
    let media_s = f64::from(cam.media_time().wrapping_sub(from)) / 90_000.0;
    drop(cam);
    srv.restart();
    // The restart ends the capture where the kill left it and processes what was written.
    await_status(&srv, &record, 6, Duration::from_secs(90));
    let out = tempfile::tempdir().unwrap();
    let probed = probe(&download(&srv, &record, out.path()));
    assert_eq!(video_stream(&probed)["codec_name"], "h264", "{probed}");
    // All that was published until the kill but what the last flush (every 200 ms) held.
    assert!(duration_s(&probed) >= media_s - 0.5, "the {media_s:.2} s captured before the kill: {probed}");
    assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{room}/record/status"), ()), "status"), 6);
}

#[test]
fn a_recording_ends_by_itself_once_its_publishers_are_gone() {
    let srv = Server::start(&[]);
    let (room, code) = live_room(&srv, "host");
    let (signalling, cam) = publish_camera(&srv, &room, code, "host", 0x3001, "testsrc2", 0);
    let started = srv.ok("POST", "/record/start", json!({"roomId": room}));
    let record = str_field(&started, "recordId").to_owned();
    await_status(&srv, &record, 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    drop(cam);
    drop(signalling.stop());
    // Within the grace (10 s) it still records, then it ends and is processed.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(record_status(&srv, &record).0, 2, "a publisher back within the grace would continue");
    await_status(&srv, &record, 6, Duration::from_secs(90));
}

/// A live room of `host`: its id and invitation code.
fn live_room(srv: &Server, host: &str) -> (String, u64) {
    let data = srv.create_live(host);
    (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"))
}

#[test]
fn a_full_recordings_disk_ends_the_recording_in_7_saying_why() {
    let Some(disk) = support::tmpfs::Tmpfs::mount(48 << 20) else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[recording]\ndir = \"{}\"\nmin_free_mb = 1\n", disk.path().display());
    let srv = Server::builder().config_text(dir.path(), &config).start();
    let (room, code) = convo(&srv, "u1", &[], 0);
    let (_s1, _cam) = publish_camera(&srv, &room, code, "u1", 0x4001, "testsrc2", 0);
    let started = srv.ok("POST", "/record/start", json!({"roomId": room}));
    let record = str_field(&started, "recordId").to_owned();
    await_status(&srv, &record, 2, Duration::from_secs(10));
    disk.fill();
    let failed = poll_until(Duration::from_secs(30), || {
        let (status, msg) = record_status(&srv, &record);
        (status == 7).then_some(msg)
    })
    .unwrap_or_else(|| {
        panic!("status 7 once the disk is full; now {:?}; log:\n{}", record_status(&srv, &record), srv.log())
    });
    assert!(failed.contains("space"), "the reason names the full disk: {failed}");
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{record}"), &[], Body::None);
    assert_eq!(u64_field(&r.envelope("download of a failed recording"), "code"), 50019);
    // With the disk full, no recording starts.
    let env = srv.expect("POST", "/record/start", json!({"roomId": room}), 50021);
    assert!(str_field(&env, "msg").contains("free"), "{env}");
}

/// Nanoseconds on a CPU (the scheduler's count) of the threads of `pid` whose name starts
/// with `prefix`.
fn thread_cpu_ns(pid: u32, prefix: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

/// What a recorded stream costs the capture thread: CPU per second of two recorded cameras,
/// against the run's length. A measurement, not a check: `cargo nextest run -p uprtcd --test
/// recording --run-ignored only --no-capture what_capture_costs` (benches/README.md).
#[test]
#[ignore = "a measurement: run it alone on a quiet machine"]
fn what_capture_costs() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "u1", &["u2"], 0);
    let (_s1, cam1) = publish_camera(&srv, &room, code, "u1", 0x5001, "testsrc2", 0);
    let (_s2, cam2) = publish_camera(&srv, &room, code, "u2", 0x5002, "testsrc", 0);
    let started = srv.ok("POST", "/record/start", json!({"roomId": room, "all": true}));
    let record = str_field(&started, "recordId").to_owned();
    await_status(&srv, &record, 2, Duration::from_secs(10));
    let (capture_before, begun) = (thread_cpu_ns(srv.pid, "uprtcd-capture"), Instant::now());
    std::thread::sleep(Duration::from_secs(20));
    let capture_ms = (thread_cpu_ns(srv.pid, "uprtcd-capture") - capture_before) as f64 / 1e6;
    let seconds = begun.elapsed().as_secs_f64();
    srv.ok("POST", &format!("/record/stop/{room}"), ());
    let packets = (cam1.stop(), cam2.stop());
    eprintln!(
        "capture threads: {:.3} ms of CPU per second for 2 streams ({:.4} % of a core per stream); cameras sent {packets:?} packets in all",
        capture_ms / seconds,
        capture_ms / seconds / 2.0 / 10.0,
    );
}
