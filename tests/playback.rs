//! Playback rooms through the binary: a file uploaded with `POST /record/upload` plays into a
//! live room (`POST /record/playback`) whose audience receives it as VP8 and Opus RTP, once
//! (the room closes at the file's end) or looped until `endTime`, from `startTime`; closing
//! the room stops ffmpeg; a restart closes playback rooms; bad requests get the contract's
//! codes. Each file is a few seconds of ffmpeg's test pattern and tone, made here.

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::client::*;
use support::*;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::{Received, UdpPeer};
use uprtcd_dataplane::wire::rtp::RtpPacket;

/// `secs` seconds of test pattern (320×240, 25 fps, VP8) and/or tone (Opus) as WebM.
fn clip(dir: &Path, secs: u32, video: bool, audio: bool) -> Vec<u8> {
    let out = dir.join(format!("clip-{secs}-{video}-{audio}.webm"));
    let mut ffmpeg = std::process::Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
    if video {
        ffmpeg.args(["-f", "lavfi", "-i", &format!("testsrc2=size=320x240:rate=25:duration={secs}")]);
    }
    if audio {
        ffmpeg.args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={secs}")]);
    }
    if video {
        ffmpeg.args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"]);
    }
    if audio {
        ffmpeg.args(["-c:a", "libopus"]);
    }
    let status = ffmpeg.arg(&out).status().expect("the test suite installs Debian's ffmpeg");
    assert!(status.success(), "ffmpeg made no clip");
    std::fs::read(&out).unwrap()
}

/// Uploads `bytes` and returns the recordId.
fn uploaded(srv: &Server, bytes: &[u8]) -> String {
    let (status, env) = srv.upload("file", "clip.webm", bytes);
    assert_eq!(status, 200);
    str_field(&expect_ok(&(status, env), "upload"), "recordId").to_owned()
}

/// A server with one uploaded clip (see [`clip`]), and the clip's recordId.
fn server_with_clip(secs: u32, video: bool, audio: bool) -> (Server, String) {
    let srv = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let record = uploaded(&srv, &clip(dir.path(), secs, video, audio));
    (srv, record)
}

/// Opens a playback room; its id and invitation code.
fn playback(srv: &Server, body: Value) -> (String, u64) {
    let data = srv.ok("POST", "/record/playback", body);
    for field in ["roomId", "serverUrl", "serverAddress", "serverAlias"] {
        assert!(data[field].is_string(), "{field} in {data}");
    }
    (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// RTP that reaches `media` within `wait`: (ssrc, payload type, sequence number, arrival).
fn rtp_within(media: &mut UdpPeer, wait: Duration) -> Vec<(u32, u8, u16, Instant)> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    let mut packets = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match media.receive(&mut buf, left) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = RtpPacket::new_checked(&buf[..len]).expect("forwarded RTP parses");
                packets.push((packet.ssrc(), packet.payload_type(), packet.sequence_number(), Instant::now()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("a packet did not decrypt: {e}"),
            None => break,
        }
    }
    packets
}

/// The payload type the offer gives `format` (`VP8/90000`, `opus/48000/2`).
fn payload_type(sdp: &str, format: &str) -> u8 {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .find_map(|l| {
            l.split_once(' ').filter(|(_, f)| f.eq_ignore_ascii_case(format)).map(|(pt, _)| pt.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {format} in\n{sdp}"))
}

/// Asserts the packets of payload type `pt` are numbered without a gap, and returns how many.
fn continuous(packets: &[(u32, u8, u16, Instant)], pt: u8) -> usize {
    let seqs: Vec<u16> = packets.iter().filter(|p| p.1 == pt).map(|p| p.2).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "sequence numbers {seqs:?}");
    }
    seqs.len()
}

/// The ffmpeg processes playing files of `data_dir` (whoever their parent is now), and
/// whether any of them is a zombie.
fn ffmpegs(data_dir: &Path) -> Vec<(u32, bool)> {
    let needle = data_dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            (cmdline.contains("-re") && cmdline.contains(&needle)).then_some((pid, zombie))
        })
        .collect()
}

/// Waits until no ffmpeg plays files of `data_dir` (a zombie counts: it must be reaped).
fn no_ffmpeg_within(data_dir: &Path, wait: Duration) -> bool {
    poll_until(wait, || ffmpegs(data_dir).is_empty().then_some(())).is_some()
}

/// Waits until one ffmpeg plays files of `data_dir`.
fn ffmpeg_within(data_dir: &Path, wait: Duration) -> bool {
    poll_until(wait, || (ffmpegs(data_dir).len() == 1).then_some(())).is_some()
}

/// The room is gone (50001) and its ffmpeg ended and was reaped.
fn assert_closed_and_reaped(srv: &Server, room: &str) {
    srv.expect("GET", &format!("/room/{}", enc(room)), Body::None, 50001);
    assert!(no_ffmpeg_within(&srv.data_dir, Duration::from_secs(3)), "ffmpeg ended and was reaped");
}

/// An audience member of `room` who subscribed and connected its media: its signalling, the
/// offer's tracks and SDP, and its media peer.
struct Audience {
    signalling: Client,
    tracks: Vec<Value>,
    sdp: String,
    media: UdpPeer,
}

/// `peer` joins `room` and subscribes; `joined` is its first event.
fn audience(srv: &Server, room: &str, code: u64, peer: &str) -> (Audience, Value) {
    let (mut signalling, joined) = connect(srv, code, peer, &token(srv, room, peer));
    assert_eq!(joined["type"], "joined", "{joined}");
    signalling.send(tungstenite::Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    let offer = loop {
        let event = next_room_event(&mut signalling);
        if event["type"] == "offer" {
            break event;
        }
    };
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    answer_offer(&mut signalling, &offer, &ice, &identity);
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    let media = connect_media(&sdp, ice, &identity);
    let tracks = offer["tracks"].as_array().cloned().unwrap_or_default();
    (Audience { signalling, tracks, sdp, media }, joined)
}

#[test]
fn a_playback_room_plays_the_file_to_its_audience_and_closes_at_its_end() {
    let (srv, record) = server_with_clip(3, true, true);
    let opened = Instant::now();
    let (room, code) = playback(&srv, json!({"recordId": record}));
    let info = srv.room(&room);
    assert_eq!(str_field(&info, "masterId"), record, "the host is the recording");
    assert_eq!(u64_field(&info, "total"), 1, "and is present");

    let (mut viewer, joined) = audience(&srv, &room, code, "viewer");
    assert!(joined["peers"].as_array().unwrap().iter().any(|p| p == record.as_str()), "{joined}");
    let mut kinds: Vec<&str> = joined["tracks"].as_array().unwrap().iter().filter_map(|t| t["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["audio", "video"], "{joined}");
    assert_eq!(viewer.tracks.len(), 2, "{:?}", viewer.tracks);
    assert!(viewer.tracks.iter().all(|t| t["peer"] == record.as_str()), "{:?}", viewer.tracks);
    assert!(ffmpeg_within(&srv.data_dir, Duration::from_secs(3)), "one ffmpeg plays the file");

    let (vp8, opus) = (payload_type(&viewer.sdp, "VP8/90000"), payload_type(&viewer.sdp, "opus/48000/2"));
    let packets = rtp_within(&mut viewer.media, Duration::from_millis(1500));
    let video = continuous(&packets, vp8);
    assert!(video >= 10, "VP8 packets arrive, numbered without a gap: {} packets, {video} of them VP8", packets.len());
    assert!(continuous(&packets, opus) >= 10, "Opus packets arrive too");

    let closed = patient_event_of(&mut viewer.signalling, "room-closed", Duration::from_secs(10));
    assert!(closed.is_some(), "the room closes when the file ends");
    let metrics = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    let strangers = metrics.lines().find(|l| l.contains("reason=\"unknown_source\"")).expect("the drop counter");
    assert!(strangers.ends_with(" 0"), "ffmpeg's RTP and RTCP (sender reports) come from known sources: {strangers}");
    let after = opened.elapsed();
    assert!(after >= Duration::from_millis(2500) && after < Duration::from_secs(9), "closed after {after:?}");
    assert_closed_and_reaped(&srv, &room);
}

#[test]
fn a_looped_playback_plays_past_the_files_end_and_closes_at_end_time() {
    let (srv, record) = server_with_clip(2, true, true);
    let end = now_ms() + 8_000;
    let (room, code) = playback(&srv, json!({"recordId": record, "loopPlay": true, "endTime": end}));
    let (mut viewer, _) = audience(&srv, &room, code, "viewer");
    let vp8 = payload_type(&viewer.sdp, "VP8/90000");
    // From before the file's first end to after it: the loop goes on without a gap.
    let packets = rtp_within(&mut viewer.media, Duration::from_millis(2500));
    assert!(now_ms() + 1_000 < end, "the test machine is too slow to judge the loop");
    assert!(continuous(&packets, vp8) >= 40, "{} packets", packets.len());
    let later = rtp_within(&mut viewer.media, Duration::from_millis(300));
    assert!(later.iter().any(|p| p.1 == vp8), "still playing past the file's length");
    srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None);

    let closed = patient_event_of(&mut viewer.signalling, "room-closed", Duration::from_secs(10));
    assert!(closed.is_some(), "the room closes at endTime");
    let at = now_ms();
    assert!(at + 200 >= end && at < end + 3_000, "closed {}ms from endTime", at as i64 - end as i64);
    assert_closed_and_reaped(&srv, &room);
}

#[test]
fn a_start_time_delays_the_first_packet_and_deleting_the_room_stops_ffmpeg() {
    let (srv, record) = server_with_clip(3, true, false);
    let start = now_ms() + 2_500;
    let (room, code) = playback(&srv, json!({"recordId": record, "startTime": start}));
    let (mut viewer, _) = audience(&srv, &room, code, "viewer");
    assert_eq!(viewer.tracks.len(), 1, "a file with video only publishes video: {:?}", viewer.tracks);
    assert!(ffmpegs(&srv.data_dir).is_empty(), "no ffmpeg before startTime");
    // A WHEP player of the room, as any live room's.
    let player_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let player_ice = IceCredentials::generate().unwrap();
    let offer = player_offer(&player_ice, &player_identity.fingerprint().to_string());
    let played = whip_post(&srv, "whep", &room, &token(&srv, &room, "player"), &offer);
    assert_eq!(played.status, 201, "{}", played.text());
    let mut player = connect_media(&played.text(), player_ice, &player_identity);

    let vp8 = payload_type(&viewer.sdp, "VP8/90000");
    let first = poll_until(Duration::from_secs(8), || {
        rtp_within(&mut viewer.media, Duration::from_millis(100)).iter().find(|p| p.1 == vp8).map(|_| now_ms())
    })
    .expect("the playback starts");
    assert!(first + 50 >= start, "the first packet came {}ms before startTime", start as i64 - first as i64);
    assert!(first < start + 3_000, "the first packet came {}ms after startTime", first - start);

    let whep_vp8 = payload_type(&played.text(), "VP8/90000");
    let played_packets = rtp_within(&mut player, Duration::from_millis(1000));
    assert!(continuous(&played_packets, whep_vp8) >= 5, "the WHEP player gets VP8 too: {}", played_packets.len());

    srv.ok("DELETE", &format!("/room/{}", enc(&room)), Body::None);
    assert!(patient_event_of(&mut viewer.signalling, "room-closed", Duration::from_secs(5)).is_some());
    assert_closed_and_reaped(&srv, &room);
}

#[test]
fn bad_playback_requests_get_the_contracts_codes_and_the_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let srv =
        Server::builder().alias("rtc-1:cluster-1").config_text(dir.path(), "[recording]\nmax_playbacks = 1\n").start();
    let record = uploaded(&srv, &clip(dir.path(), 2, false, true));
    let now = now_ms();
    let mut soft = Soft::new();
    for (body, code, named) in [
        (json!({"recordId": "nosuchrecord"}), 50019, Some("nosuchrecord")),
        (json!({"recordId": record, "loopPlay": true}), 10002, Some("endTime")),
        (json!({"recordId": record, "startTime": now + 9_000, "endTime": now + 9_000}), 10002, Some("endTime")),
        (json!({"recordId": record, "startTime": now + 9_000, "endTime": now + 5_000}), 10002, Some("endTime")),
        (json!({"recordId": record, "endTime": now - 1_000}), 10002, Some("endTime")),
        (json!({"recordId": 5}), 10002, Some("recordId")),
        (json!({"recordId": record, "startTime": "soon"}), 10002, Some("startTime")),
        (json!({"recordId": record, "loopPlay": "yes"}), 10002, Some("loopPlay")),
        (json!({"recordId": record, "endTime": -5}), 10002, Some("endTime")),
        (json!({"recordId": record, "protocol": 7}), 10002, Some("protocol")),
        (json!({"recordId": record, "minBitrate": 5, "maxBitrate": 4}), 10002, Some("minBitrate")),
        (json!({}), 10002, Some("recordId")),
        (json!({"recordId": record, "serverAlias": "rtc-9:elsewhere"}), 50021, Some("rtc-9:elsewhere")),
    ] {
        srv.soft_expect(&mut soft, "POST", "/record/playback", body, code, named);
    }
    soft.done();
    assert!(ffmpegs(&srv.data_dir).is_empty(), "no refused request started anything");

    let end = now_ms() + 20_000;
    let (room, code) =
        playback(&srv, json!({"recordId": record, "serverAlias": "rtc-1:cluster-1", "loopPlay": true, "endTime": end}));
    let (_, joined) = connect(&srv, code, "viewer", &token(&srv, &room, "viewer"));
    let kinds: Vec<&str> = joined["tracks"].as_array().unwrap().iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds, ["audio"], "a file with audio only publishes audio: {joined}");
    let full = srv.expect("POST", "/record/playback", json!({"recordId": record}), 50021);
    assert!(full["msg"].as_str().unwrap_or("").contains("max_playbacks"), "{full}");
    // Kicking the host ends the playback as the room's end does.
    srv.ok("DELETE", &format!("/room/{}/peer/{}", enc(&room), enc(&record)), Body::None);
    let freed = poll_until(Duration::from_secs(3), || {
        let (_, env) = srv.call("POST", "/record/playback", json!({"recordId": record}));
        (env["code"] == 0).then_some(env)
    });
    assert!(freed.is_some(), "the slot is given back when the room closes");
    srv.expect("GET", &format!("/room/{}", enc(&room)), Body::None, 50001);
    let again = str_field(&freed.unwrap()["data"], "roomId").to_owned();
    srv.ok("DELETE", &format!("/room/{}", enc(&again)), Body::None);
    assert!(no_ffmpeg_within(&srv.data_dir, Duration::from_secs(3)));
}

#[test]
fn a_restart_closes_playback_rooms_and_a_killed_server_leaves_no_ffmpeg_behind() {
    let (mut srv, record) = server_with_clip(2, true, true);
    let looping =
        |srv: &Server| playback(srv, json!({"recordId": record, "loopPlay": true, "endTime": now_ms() + 60_000}));
    let (room, _) = looping(&srv);
    assert!(ffmpeg_within(&srv.data_dir, Duration::from_secs(3)), "ffmpeg plays");
    srv.restart();
    assert!(no_ffmpeg_within(&srv.data_dir, Duration::from_secs(3)), "a graceful stop ends ffmpeg");
    let closed = poll_until(Duration::from_secs(3), || {
        (srv.call("GET", &format!("/room/{}", enc(&room)), Body::None).1["code"] == 50001).then_some(())
    });
    assert!(closed.is_some(), "the restarted server closed the playback room its predecessor left");

    let (_, _) = looping(&srv);
    assert!(ffmpeg_within(&srv.data_dir, Duration::from_secs(3)), "ffmpeg plays");
    srv.kill9();
    // ffmpeg is no child of the test: it is reaped by whoever inherits it once it exits.
    let gone =
        poll_until(Duration::from_secs(5), || ffmpegs(&srv.data_dir).iter().all(|(_, zombie)| *zombie).then_some(()));
    assert!(gone.is_some(), "ffmpeg ends by itself once the server is gone: {:?}", ffmpegs(&srv.data_dir));
}
