//! Server-wide calls (miniLoad, room/num, recycle, block) and the recording table: what a
//! recording start checks and the statuses it goes through (the recordings themselves, with
//! media, are tests/recording.rs), uploads checked with ffprobe, downloads with byte ranges,
//! retention, client uploads over WebSocket (with a reconnect in the middle).
//! The contract is docs/rest-api.md, "Server" and "Recording", and docs/signalling.md,
//! "Client upload of a recording".

mod support;

use std::time::{Duration, Instant};

use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn mini_load_describes_this_server() {
    let alias = "rtc-5:cluster-2";
    let srv = Server::builder().alias(alias).start();
    let d = srv.ok("GET", "/server/miniLoad", ());
    str_field(&d, "name");
    assert_eq!(str_field(&d, "serverAlias"), alias, "{d}");
    assert_eq!(str_field(&d, "serverAddress"), srv.api, "{d}");
    assert!(str_field(&d, "serverUrl").starts_with(&srv.url_prefix()), "{d}");
}

#[test]
fn room_num_counts_open_rooms() {
    let srv = Server::start(&[]);
    let num = |s: &Server| u64_field(&s.ok("GET", "/server/room/num", ()), "num");
    assert_eq!(num(&srv), 0);
    let a = srv.convo_id("a", &[]);
    let _b = srv.convo_id("b", &["x"]);
    let c = srv.live_id("c");
    assert_eq!(num(&srv), 3);
    srv.ok("DELETE", &format!("/room/{a}"), ());
    assert_eq!(num(&srv), 2);
    srv.ok("DELETE", &format!("/room/{c}"), ());
    assert_eq!(num(&srv), 1);
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "a", "memberIds": [], "roomId": a}));
    assert_eq!(str_field(&d, "roomId"), a);
    assert_eq!(num(&srv), 2);
    // A refused creation does not count.
    srv.expect("POST", "/room/convo", json!({"masterId": "a", "memberIds": [], "roomId": a}), 50002);
    assert_eq!(num(&srv), 2);
}

#[test]
fn recycle_refuses_creation_while_rooms_go_on_and_a_restart_lifts_it() {
    let mut srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    let closed = srv.convo_id("old", &[]);
    srv.ok("DELETE", &format!("/room/{closed}"), ());

    srv.ok("POST", "/server/recycle", ());
    srv.expect("POST", "/room/convo", json!({"masterId": "new", "memberIds": []}), 50015);
    srv.expect("POST", "/room/live", json!({"masterId": "new"}), 50015);
    srv.expect("POST", "/room/convo", json!({"masterId": "old", "memberIds": [], "roomId": closed}), 50015);
    srv.expect("POST", "/room/live", json!({"masterId": "old", "roomId": closed}), 50015);
    srv.expect("GET", "/server/miniLoad", (), 50015);
    let health = |srv: &Server| srv.client_request("GET", "/healthz", &[], Body::None).text();
    assert_eq!(health(&srv), "draining: 2 rooms, 0 clients\n");
    // Open rooms go on: they answer GET and their calls still work.
    assert_eq!(str_field(&srv.room(&c), "masterId"), "alice");
    assert_eq!(str_field(&srv.room(&l), "masterId"), "host");
    srv.ok("POST", &format!("/room/{c}/convo/members"), json!({"memberIds": ["carol"]}));
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "guest"}));
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 2);
    let e = srv.ok("GET", &format!("/room/{c}/exist"), ());
    assert!(bool_field(&e, "exist"));

    // Not persisted: after a restart the server takes rooms again; the rooms are still there.
    srv.restart();
    assert_eq!(health(&srv), "ok\n");
    assert_eq!(sorted(&srv.room(&c)["invitedUserIds"]), set_of(&["alice", "bob", "carol"]));
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!(["guest"]));
    srv.convo_id("new", &[]);
    srv.live_id("new");
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "old", "memberIds": [], "roomId": closed}));
    assert_eq!(str_field(&d, "roomId"), closed);
}

#[test]
fn block_peer_refuses_the_master_and_survives_a_restart() {
    let mut srv = Server::start(&[]);
    srv.ok("DELETE", "/server/block/peer/mallory", ());
    srv.ok("DELETE", "/server/block/peer/mallory", ()); // idempotent
    srv.ok("DELETE", &format!("/server/block/peer/{}", enc("房间🚀")), ());
    srv.expect("POST", "/room/convo", json!({"masterId": "mallory", "memberIds": []}), 10003);
    srv.expect("POST", "/room/live", json!({"masterId": "mallory"}), 10003);
    srv.expect("POST", "/room/convo", json!({"masterId": "房间🚀", "memberIds": []}), 10003);
    // Others are not affected; the block is exact.
    srv.convo_id("alice", &[]);
    srv.live_id("mallory2");
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 2);

    srv.restart();
    srv.expect("POST", "/room/convo", json!({"masterId": "mallory", "memberIds": []}), 10003);
    srv.expect("POST", "/room/live", json!({"masterId": "mallory"}), 10003);
    srv.expect("POST", "/room/live", json!({"masterId": "房间🚀"}), 10003);
    srv.ok("DELETE", "/server/block/peer/mallory", ());
    srv.live_id("alice");

    srv.kill9();
    srv.restart();
    srv.expect("POST", "/room/convo", json!({"masterId": "mallory", "memberIds": ["x"]}), 10003);
}

#[test]
fn without_ffmpeg_no_recording_starts_and_the_answer_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::builder().config_text(dir.path(), "[recording]\nffmpeg = \"/nonexistent/ffmpeg\"\n").start();
    let c = srv.convo_id("alice", &[]);
    let env = srv.expect("GET", "/record/server", (), 50021);
    assert!(str_field(&env, "msg").contains("ffmpeg"), "{env}");
    let env = srv.expect("POST", "/record/start", json!({"roomId": c}), 50021);
    assert!(str_field(&env, "msg").contains("/nonexistent/ffmpeg"), "{env}");
    assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{c}/record/status"), ()), "status"), 0);
    srv.expect("POST", "/record/client/upload", (), 50021);
    srv.expect("POST", "/record/client/upload", json!({}), 50021);
}

#[test]
fn recording_input_is_checked_and_one_recording_runs_per_room() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    let server = srv.ok("GET", "/record/server", ());
    assert_eq!(str_field(&server, "serverAlias"), "rtc-1:cluster-1");
    assert!(str_field(&server, "serverUrl").starts_with(&srv.url_prefix()), "{server}");
    assert!(!str_field(&server, "serverAddress").is_empty());
    for id in [&c, &l] {
        for res in [json!("4k"), json!("720"), json!(720), json!("")] {
            let env = srv.expect("POST", "/record/start", json!({"roomId": id, "resolution": res}), 10002);
            assert!(str_field(&env, "msg").contains("resolution"), "{env}");
        }
        let env = srv.expect("POST", "/record/start", json!({"roomId": id, "peers": ["mallory"]}), 10002);
        assert!(str_field(&env, "msg").contains("peers: mallory"), "{env}");
        let env = srv.expect("POST", "/record/start", json!({"roomId": id, "layout": "mallory"}), 10002);
        assert!(str_field(&env, "msg").contains("layout: mallory"), "{env}");
        let env = srv.expect("POST", "/record/start", json!({"roomId": id, "layout": ""}), 10002);
        assert!(str_field(&env, "msg").contains("layout"), "{env}");
        let env = srv.expect("POST", "/record/start", json!({"roomId": id, "serverAlias": "rtc-9:elsewhere"}), 50021);
        assert!(str_field(&env, "msg").contains("rtc-9:elsewhere"), "{env}");
        // Nothing is being recorded.
        srv.expect("POST", &format!("/record/stop/{id}"), (), 10003);
        assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{id}/record/status"), ()), "status"), 0);
    }
    for body in [json!({}), json!({"roomId": ""}), json!({"roomId": 5}), json!({"resolution": "720p"})] {
        let env = srv.expect("POST", "/record/start", body.clone(), 10002);
        assert!(str_field(&env, "msg").contains("roomId"), "{body}: {env}");
    }
    srv.expect("POST", "/record/start", raw("{\"roomId\""), 10002);
    srv.expect("POST", "/record/start", json!({"roomId": "ZZZZZZZZZZ"}), 50001);
    srv.expect("POST", "/record/stop/ZZZZZZZZZZ", (), 50001);
    srv.expect("POST", "/record/stop/hello", (), 50001);

    // A recording of a room where nobody publishes yet waits in 1 for a first key frame; a
    // second start is refused while it does, and the room's status is the recording's.
    let body = json!({"roomId": c, "all": true, "resolution": "480p", "layout": "bob", "fixVideoDirection": true});
    let started = srv.ok("POST", "/record/start", body.clone());
    let record = str_field(&started, "recordId").to_owned();
    assert_eq!(str_field(&started, "serverAlias"), "rtc-1:cluster-1");
    assert_eq!(u64_field(&srv.ok("GET", &format!("/record/{record}/status"), ()), "status"), 1);
    assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{c}/record/status"), ()), "status"), 1);
    srv.expect("POST", "/record/start", body.clone(), 50020);
    srv.expect("POST", "/record/start", json!({"roomId": c}), 50020);
    // Nothing to download yet.
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{record}"), &[], Body::None);
    assert_eq!(u64_field(&r.envelope("download while recording"), "code"), 50019);

    // Stopped with nothing captured, it cannot become a video: 7, and msg says why.
    srv.ok("POST", &format!("/record/stop/{c}"), ());
    let failed = poll_until(Duration::from_secs(30), || {
        let (_, env) = srv.call("GET", &format!("/record/{record}/status"), ());
        (env["data"]["status"] == 7).then_some(env)
    })
    .unwrap_or_else(|| panic!("status 7 within 30 s; log:\n{}", srv.log()));
    assert!(!str_field(&failed, "msg").is_empty(), "status 7 says why: {failed}");
    assert_eq!(u64_field(&srv.ok("GET", &format!("/room/{c}/record/status"), ()), "status"), 7);
    srv.expect("POST", &format!("/record/stop/{c}"), (), 10003);

    // The room may be recorded again; closing it ends that recording.
    let again = srv.ok("POST", "/record/start", json!({"roomId": c}));
    let second = str_field(&again, "recordId").to_owned();
    assert_ne!(second, record);
    srv.ok("DELETE", &format!("/room/{c}"), ());
    let ended = poll_until(Duration::from_secs(30), || {
        let status = u64_field(&srv.ok("GET", &format!("/record/{second}/status"), ()), "status");
        (status >= 3).then_some(status)
    });
    assert!(ended.is_some(), "closing the room ends its recording; log:\n{}", srv.log());
}

/// The files in the server's recordings folder.
fn stored_files(srv: &Server) -> Vec<String> {
    let dir = srv.data_dir.join("recordings");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A server with this configuration file (kept in the returned folder).
fn with_config(text: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::builder().config_text(dir.path(), text).start();
    (dir, srv)
}

fn download(srv: &Server, rid: &str, headers: &[(&str, &str)]) -> Resp {
    srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(rid)), headers, Body::None)
}

fn status_of(srv: &Server, rid: &str) -> u64 {
    u64_field(&srv.ok("GET", &format!("/record/{}/status", enc(rid)), ()), "status")
}

fn metric(srv: &Server, line_start: &str) -> f64 {
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {line_start} in /metrics:\n{text}"))
}

#[test]
fn uploads_are_done_at_once_and_download_as_the_same_bytes_with_their_type() {
    let alias = "rec-1";
    let srv = Server::builder().alias(alias).start();
    let webm = media_file("webm", 1);
    let ogg = media_file("ogg", 1);

    let mut ids = Vec::new();
    for (name, bytes, ext, content_type) in [
        ("a.webm", &webm, "webm", "video/webm"),
        ("b.ogg", &ogg, "ogg", "video/ogg"),
        // No extension: the one ffprobe's format names.
        ("clip", &webm, "webm", "video/webm"),
        // A strange one: the format's again.
        ("c.we bm", &webm, "webm", "video/webm"),
        // A name that is not what the file is: what the file is.
        ("movie.MP4", &webm, "webm", "video/webm"),
    ] {
        let r = srv.upload("file", name, bytes);
        let d = expect_ok(&r, &format!("upload {name}"));
        let rid = str_field(&d, "recordId").to_string();
        assert_generated_id(&rid);
        assert_eq!(str_field(&d, "serverAlias"), alias, "{d}");
        assert_eq!(str_field(&d, "serverAddress"), srv.api, "{d}");
        assert!(
            srv.data_dir.join("recordings").join(format!("{rid}.{ext}")).is_file(),
            "{name}: {:?}",
            stored_files(&srv)
        );
        ids.push((rid, bytes.clone(), content_type));
    }
    let mut distinct: Vec<&String> = ids.iter().map(|(i, _, _)| i).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "each upload gets its own recordId: {ids:?}");

    for (rid, bytes, content_type) in &ids {
        assert_eq!(status_of(&srv, rid), 6, "an uploaded file is done");
        let r = download(&srv, rid, &[]);
        assert_eq!(r.status, 200, "download {rid}: {}", r.text());
        assert_eq!(r.content_type.as_deref(), Some(*content_type), "{rid}");
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
        assert!(
            r.body == *bytes,
            "download {rid}: {} bytes back, {} uploaded (or different content)",
            r.body.len(),
            bytes.len()
        );
    }
    // HEAD says the same without the body.
    let r = srv.request(&Auth::Key, "HEAD", &format!("{PREFIX}/record/download/{}", ids[0].0), &[], Body::None);
    assert_eq!((r.status, r.header("content-length")), (200, Some(ids[0].1.len().to_string().as_str())));
}

#[test]
fn downloads_serve_single_byte_ranges() {
    let srv = Server::start(&[]);
    let bytes = media_file("webm", 1);
    let len = bytes.len();
    let rid = str_field(&expect_ok(&srv.upload("file", "r.webm", &bytes), "upload"), "recordId").to_string();
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len - 1),
        ("bytes=-100", len - 100, len - 1),
        ("bytes=10-10", 10, 10),
        (&*format!("bytes=50-{}", len + 1000), 50, len - 1),
    ] {
        let r = download(&srv, &rid, &[("range", range)]);
        assert_eq!(r.status, 206, "{range}: {}", r.text());
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{end}/{len}").as_str()), "{range}");
        assert_eq!(r.header("content-length"), Some((end - start + 1).to_string().as_str()), "{range}");
        assert_eq!(r.content_type.as_deref(), Some("video/webm"));
        assert!(r.body == bytes[start..=end], "{range}: other bytes");
    }
    for range in [format!("bytes={len}-"), format!("bytes={}-{}", len + 5, len + 10), "bytes=-0".to_owned()] {
        let r = download(&srv, &rid, &[("range", &range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()), "{range}");
        assert!(r.body.is_empty());
    }
    // Malformed or several ranges: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2", "bytes=x-"] {
        let r = download(&srv, &rid, &[("range", range)]);
        assert_eq!(r.status, 200, "{range}");
        assert!(r.body == bytes, "{range}: the whole file");
    }
}

#[test]
fn upload_refusals() {
    let srv = Server::start(&[]);
    // A multipart form without a `file` part.
    let (ct, body) = multipart("video", "a.webm", b"data");
    let r =
        srv.request(&Auth::Key, "POST", &format!("{PREFIX}/record/upload"), &[("content-type", &ct)], Body::Raw(body));
    let env = r.envelope("upload without file");
    let env = (r.status, env);
    expect_code(&env, 10002, "upload without a file part");
    assert!(str_field(&env.1, "msg").contains("file"), "msg names the field: {}", env.1);
    // Not a multipart body at all.
    let (st, env) = srv.call("POST", "/record/upload", json!({"file": "abc"}));
    expect_code(&(st, env), 10002, "upload with a JSON body");
    let (st, env) = srv.call("POST", "/record/upload", ());
    expect_code(&(st, env), 10002, "upload with no body");
    // A broken multipart body (never closed).
    let r = srv.request(
        &Auth::Key,
        "POST",
        &format!("{PREFIX}/record/upload"),
        &[("content-type", "multipart/form-data; boundary=XYZ")],
        raw("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"),
    );
    let env = r.envelope("truncated multipart");
    expect_code(&(r.status, env), 10002, "truncated multipart");
    // Files that are not media: text, random bytes, nothing, a playlist of a URL.
    let playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://192.0.2.1/a.ts\n#EXT-X-ENDLIST\n";
    for (name, bytes) in [
        ("notes.txt", b"hello, this is text".to_vec()),
        ("fake.webm", random_bytes(20_000)),
        ("empty.mp4", Vec::new()),
        ("list.m3u8", playlist.to_vec()),
    ] {
        let r = srv.upload("file", name, &bytes);
        expect_code(&r, 10002, name);
        let msg = str_field(&r.1, "msg");
        assert!(msg.starts_with("file: "), "{name}: msg names the field and the problem: {msg}");
        assert!(msg.contains("not media") || msg.contains("no audio or video"), "{name}: {msg}");
    }
    // A file ffprobe reads that has no audio or video stream: a subtitle file.
    let srt = b"1\n00:00:00,000 --> 00:00:01,000\nhello\n";
    let r = srv.upload("file", "subs.srt", srt);
    expect_code(&r, 10002, "subtitles");
    assert!(str_field(&r.1, "msg").contains("no audio or video stream"), "{}", r.1);
    assert_eq!(stored_files(&srv), Vec::<String>::new(), "nothing is kept of a refused upload");
    assert_eq!(metric(&srv, "uprtcd_record_uploads_not_media_total"), 5.0);
    // The server still stores good uploads.
    expect_ok(&srv.upload("file", "ok.webm", &media_file("webm", 1)), "good upload after refusals");
}

#[test]
fn without_ffmpeg_uploads_answer_50021_and_keep_nothing() {
    let srv = Server::builder().env("PATH", "/nonexistent").start();
    let r = srv.upload("file", "a.webm", &media_file("webm", 1));
    expect_code(&r, 50021, "upload without ffmpeg");
    assert!(str_field(&r.1, "msg").contains("ffmpeg"), "msg says what is missing: {}", r.1);
    let env = srv.expect("POST", "/record/client/upload", (), 50021);
    assert!(str_field(&env, "msg").contains("ffmpeg"), "{env}");
    assert_eq!(stored_files(&srv), Vec::<String>::new());
}

#[test]
fn retention_removes_finished_records_and_their_files() {
    // 0.0001 day = 8.64 s; the sweep runs at start (and hourly).
    let (_dir, mut srv) = with_config("[recording]\nretention_days = 0.0001\n");
    let webm = media_file("webm", 1);
    let old = str_field(&expect_ok(&srv.upload("file", "old.webm", &webm), "upload"), "recordId").to_string();
    std::thread::sleep(Duration::from_millis(9_000));
    let young = str_field(&expect_ok(&srv.upload("file", "young.webm", &webm), "upload"), "recordId").to_string();
    srv.restart();
    // The record goes first, its file right after.
    let kept = vec![format!("{young}.webm")];
    let gone = poll_until(Duration::from_secs(10), || (stored_files(&srv) == kept).then_some(()));
    assert!(
        gone.is_some(),
        "the old record's file is removed at start, the young one's kept: {:?}",
        stored_files(&srv)
    );
    srv.expect("GET", &format!("/record/{old}/status"), (), 50019);
    assert_eq!(status_of(&srv, &young), 6);
    assert_eq!(metric(&srv, "uprtcd_recordings_expired_total"), 1.0);
    // Durable: a restart does not bring it back.
    srv.kill9();
    srv.restart();
    srv.expect("GET", &format!("/record/{old}/status"), (), 50019);
}

#[test]
fn unknown_record_is_50019() {
    let srv = Server::start(&[]);
    for rid in ["nope", "ZZZZZZZZZZ", "房间🚀"] {
        srv.expect("GET", &format!("/record/{}/status", enc(rid)), (), 50019);
        let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(rid)), &[], Body::None);
        let env = r.envelope("download of an unknown record");
        expect_code(&(r.status, env), 50019, &format!("download {rid}"));
        srv.expect("POST", "/record/playback", json!({"recordId": rid}), 50019);
    }
}

/// A stored file that is not media passes the parameter checks and is refused when probed
/// (10003); tests/playback.rs plays real files.
#[test]
fn playback_checks_its_parameters_and_plays_only_processed_records() {
    let srv = Server::start(&[]);
    // A client upload's record exists at once, in status 1: not playable yet.
    let pending = str_field(&srv.ok("POST", "/record/client/upload", ()), "recordId").to_string();
    for body in [
        json!({"recordId": pending}),
        json!({"recordId": pending, "loopPlay": false}),
        json!({"recordId": pending, "loopPlay": true, "endTime": 1_900_000_000_000u64}),
        json!({"recordId": pending, "startTime": 1_800_000_000_000u64, "protocol": 1, "minBitrate": 1000, "maxBitrate": 2000}),
    ] {
        let env = srv.expect("POST", "/record/playback", body.clone(), 10003);
        assert!(str_field(&env, "msg").contains("status is 1"), "{body}: {env}");
    }
    let env = srv.expect("POST", "/record/playback", json!({"recordId": pending, "loopPlay": true}), 10002);
    assert!(str_field(&env, "msg").contains("endTime"), "{env}");
    for body in [json!({}), json!({"recordId": ""}), json!({"recordId": 3})] {
        let env = srv.expect("POST", "/record/playback", body.clone(), 10002);
        assert!(str_field(&env, "msg").contains("recordId"), "{body}: {env}");
    }
    srv.expect("POST", "/record/playback", json!({"recordId": pending, "loopPlay": "yes"}), 10002);
    srv.expect("POST", "/record/playback", raw("{\"recordId\": "), 10002);
    // Refused playbacks open no room; an uploaded file plays.
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 0);
    let uploaded = expect_ok(&srv.upload("file", "clip.webm", &media_file("webm", 1)), "upload");
    let room = srv.ok("POST", "/record/playback", json!({"recordId": str_field(&uploaded, "recordId")}));
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 1);
    srv.ok("DELETE", &format!("/room/{}", str_field(&room, "roomId")), ());
}

#[test]
fn body_and_upload_limits_come_from_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(dir.path(), "limits.toml", "[api]\nmax_body_bytes = 1024\nmax_upload_bytes = 65536\n");
    let srv = Server::builder().args(&["--config", &cfg.display().to_string()]).start();

    // JSON bodies: 1 KiB.
    let small = json!({"masterId": "a", "memberIds": [], "pad": "x".repeat(500)});
    srv.ok("POST", "/room/convo", small);
    let big = format!(r#"{{"masterId": "b", "memberIds": [], "pad": "{}"}}"#, "x".repeat(2048));
    for expect_continue in [true, false] {
        let r = srv
            .raw_exchange(
                "POST",
                &format!("{PREFIX}/room/convo"),
                &[("content-type", "application/json")],
                big.as_bytes(),
                expect_continue,
            )
            .unwrap_or_else(|e| panic!("2 KiB body: {e}"));
        let env = r.envelope("2 KiB body");
        expect_status_code(&(r.status, env), 413, 10002, "a body over api.max_body_bytes");
    }

    // Uploads have their own limit, above max_body_bytes.
    let bytes = media_file("webm", 1);
    assert!(bytes.len() < 65536);
    let d = expect_ok(&srv.upload("file", "small.webm", &bytes), "an upload under max_upload_bytes");
    let rid = str_field(&d, "recordId").to_string();
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(&rid)), &[], Body::None);
    assert!(r.body == bytes, "download returns the file");

    let (ct, body) = multipart("file", "big.bin", &random_bytes(256 * 1024));
    for expect_continue in [true, false] {
        let r = srv
            .raw_exchange("POST", &format!("{PREFIX}/record/upload"), &[("content-type", &ct)], &body, expect_continue)
            .unwrap_or_else(|e| panic!("256 KiB upload: {e}"));
        let env = r.envelope("256 KiB upload");
        expect_status_code(&(r.status, env), 413, 10002, "an upload over api.max_upload_bytes");
    }
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 1);
}

// ---------------------------------------------------------------------------------------------
// Client uploads over WebSocket (docs/signalling.md, "Client upload of a recording")

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// `POST /record/client/upload`: (recordId, serverUrl).
fn client_upload_url(srv: &Server) -> (String, String) {
    let d = srv.ok("POST", "/record/client/upload", ());
    let rid = str_field(&d, "recordId").to_string();
    let url = str_field(&d, "serverUrl").to_string();
    assert_generated_id(&rid);
    assert_eq!(str_field(&d, "serverAddress"), srv.api, "{d}");
    assert!(!str_field(&d, "serverAlias").is_empty(), "{d}");
    let expected = format!("{}record?recordId={rid}&token=", srv.url_prefix());
    assert!(url.starts_with(&expected), "{url} starts with {expected}");
    (rid, url)
}

fn open(url: &str) -> Socket {
    let (socket, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    }
    socket
}

/// The next text message as JSON, or the close code when the server closed instead.
fn next(socket: &mut Socket) -> Result<Value, Option<CloseCode>> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Ok(serde_json::from_str(&text).expect("JSON message")),
            Ok(Message::Close(frame)) => return Err(frame.map(|f| f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Err(None),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The `upload` message's offset; retries while an earlier connection still holds the record
/// (the server has not seen it go yet), as the SDK does.
fn resume(url: &str) -> (Socket, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut socket = open(url);
        let first = next(&mut socket).expect("a first message");
        if first["type"] == "upload" {
            return (socket, first["offset"].as_u64().expect("offset"));
        }
        assert!(str_field(&first, "msg").contains("another connection"), "{first}");
        assert!(Instant::now() < deadline, "the record stays busy: {first}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_bytes(socket: &mut Socket, bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        socket.send(Message::binary(chunk.to_vec())).expect("send a frame");
    }
}

/// The error a refused connection gets, and its close code.
fn refused(url: &str) -> (Value, Option<CloseCode>) {
    let mut socket = open(url);
    let error = next(&mut socket).expect("an error message");
    assert_eq!(error["type"], "error", "{error}");
    let close = next(&mut socket).expect_err("then the close");
    (error, close)
}

#[test]
fn a_client_upload_resumes_after_a_disconnect_and_downloads_as_the_same_bytes() {
    let srv = Server::start(&[]);
    let bytes = media_file("webm", 2);
    let (rid, url) = client_upload_url(&srv);
    assert_eq!(status_of(&srv, &rid), 1, "preparing until bytes arrive");
    srv.expect("GET", &format!("/record/download/{rid}"), (), 50019);

    let (mut socket, offset) = resume(&url);
    assert_eq!(offset, 0);
    let half = bytes.len() / 2;
    send_bytes(&mut socket, &bytes[..half]);
    socket.flush().expect("flush");
    let receiving = poll_until(Duration::from_secs(5), || (status_of(&srv, &rid) == 2).then_some(()));
    assert!(receiving.is_some(), "status 2 while bytes arrive");
    // Gone without a close frame, as a phone that loses its network.
    drop(socket);

    let (mut socket, offset) = resume(&url);
    assert!(offset as usize <= half && offset > 0, "the server has {offset} of the {half} bytes sent");
    send_bytes(&mut socket, &bytes[offset as usize..]);
    socket.send(Message::text(json!({"type": "done", "size": bytes.len()}).to_string())).expect("done");
    let stored = next(&mut socket).expect("stored");
    assert_eq!(stored, json!({"type": "stored", "recordId": rid, "size": bytes.len()}));
    assert_eq!(next(&mut socket).expect_err("closed"), Some(CloseCode::Normal));

    assert_eq!(status_of(&srv, &rid), 6);
    let r = download(&srv, &rid, &[]);
    assert_eq!((r.status, r.content_type.as_deref()), (200, Some("video/webm")));
    assert!(r.body == bytes, "{} bytes back, {} sent (or different content)", r.body.len(), bytes.len());
    assert_eq!(stored_files(&srv), vec![format!("{rid}.webm")], "no partial file left");
    // Done: the URL takes nothing more.
    let (error, close) = refused(&url);
    assert_eq!((error["code"].as_u64(), close), (Some(10003), Some(CloseCode::Policy)), "{error}");
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"stored\"}"), 1.0);
}

#[test]
fn client_upload_tokens_open_their_own_record_only() {
    let srv = Server::start(&[]);
    let (a, url_a) = client_upload_url(&srv);
    let (b, url_b) = client_upload_url(&srv);
    assert_ne!(a, b);
    let token_b = url_b.split("token=").nth(1).expect("a token");
    // A tampered token, another record's, none, a malformed one.
    let cases = [
        format!("{url_a}x"),
        format!("{}record?recordId={a}&token={token_b}", srv.url_prefix()),
        format!("{}record?recordId={a}", srv.url_prefix()),
        format!("{}record?recordId={a}&token=abc.def.ghi", srv.url_prefix()),
    ];
    for url in &cases {
        let (error, close) = refused(url);
        assert_eq!((error["code"].as_u64(), close), (Some(50000), Some(CloseCode::Policy)), "{url}: {error}");
    }
    // A join token is no upload token.
    let room = srv.convo_id("alice", &[]);
    let join =
        str_field(&srv.ok("POST", &format!("/room/{room}/token"), json!({"peerId": "alice"})), "token").to_owned();
    let (error, _) = refused(&format!("{}record?recordId={a}&token={join}", srv.url_prefix()));
    assert_eq!(error["code"], 50000, "{error}");
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"bad_token\"}"), 4.0);
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"wrong_record\"}"), 1.0);
    for rid in [&a, &b] {
        assert_eq!(status_of(&srv, rid), 1, "nothing was taken");
    }
    assert_eq!(stored_files(&srv), Vec::<String>::new(), "no byte kept");
}

#[test]
fn an_expired_client_upload_url_is_refused() {
    let (_dir, srv) = with_config("[recording]\nclient_upload_ttl_ms = 1000\n");
    let (rid, url) = client_upload_url(&srv);
    std::thread::sleep(Duration::from_millis(2100));
    let (error, close) = refused(&url);
    assert_eq!((error["code"].as_u64(), close), (Some(50000), Some(CloseCode::Policy)), "{error}");
    assert!(str_field(&error, "msg").contains("expired"), "{error}");
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"expired_token\"}"), 1.0);
    assert_eq!(status_of(&srv, &rid), 1);
    assert_eq!(stored_files(&srv), Vec::<String>::new());
}

#[test]
fn a_client_upload_that_is_not_media_ends_in_status_7_and_keeps_nothing() {
    let srv = Server::start(&[]);
    let (rid, url) = client_upload_url(&srv);
    let (mut socket, _) = resume(&url);
    let text = b"this is not a video at all\n".repeat(100);
    send_bytes(&mut socket, &text);
    // A wrong size first: refused, the bytes kept for a resume.
    socket.send(Message::text(json!({"type": "done", "size": 1}).to_string())).expect("done");
    let error = next(&mut socket).expect("error");
    assert_eq!(error["code"], 10002, "{error}");
    assert!(str_field(&error, "msg").contains(&text.len().to_string()), "says what the server has: {error}");
    let (mut socket, offset) = resume(&url);
    assert_eq!(offset as usize, text.len());
    socket.send(Message::text(json!({"type": "done", "size": text.len()}).to_string())).expect("done");
    let error = next(&mut socket).expect("error");
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], 10002, "{error}");
    assert!(str_field(&error, "msg").contains("not media"), "{error}");
    assert_eq!(status_of(&srv, &rid), 7);
    srv.expect("GET", &format!("/record/download/{rid}"), (), 50019);
    assert_eq!(stored_files(&srv), Vec::<String>::new(), "the file is removed");
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"not_media\"}"), 1.0);
}

#[test]
fn a_silent_client_upload_is_closed_at_the_idle_timeout_and_may_resume() {
    let (_dir, srv) = with_config("[recording]\nclient_upload_idle_timeout_ms = 1000\n");
    let (rid, url) = client_upload_url(&srv);
    let (mut socket, _) = resume(&url);
    send_bytes(&mut socket, b"0123456789");
    let started = Instant::now();
    assert_eq!(next(&mut socket).expect_err("closed"), Some(CloseCode::Normal));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"idle_timeout\"}"), 1.0);
    assert_eq!(status_of(&srv, &rid), 2);
    let (_socket, offset) = resume(&url);
    assert_eq!(offset, 10, "what was sent before the timeout is kept");
}

#[test]
fn a_client_upload_that_fills_the_disk_ends_in_status_7_and_frees_the_space() {
    let Some(disk) = support::tmpfs::Tmpfs::mount(6 << 20) else { return };
    let srv = Server::builder().data_dir(disk.path()).start();
    let (rid, url) = client_upload_url(&srv);
    let (mut socket, _) = resume(&url);
    // More than the disk holds; the server refuses at the first write that fails.
    for _ in 0..160 {
        if socket.send(Message::binary(random_bytes(64 * 1024))).is_err() {
            break;
        }
    }
    let ended = poll_until(Duration::from_secs(10), || (status_of(&srv, &rid) == 7).then_some(()));
    assert!(ended.is_some(), "status 7 once the disk is full, not {}; log:\n{}", status_of(&srv, &rid), srv.log());
    assert_eq!(stored_files(&srv), Vec::<String>::new(), "the partial file is removed");
    srv.expect("GET", &format!("/record/download/{rid}"), (), 50019);
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"failed\"}"), 1.0);
    // The space is back: another upload is stored.
    expect_ok(&srv.upload("file", "after.webm", &media_file("webm", 1)), "an upload after the disk was full");
}

#[test]
fn client_upload_frames_and_totals_over_their_caps_are_refused() {
    let (_dir, srv) = with_config("[api]\nmax_upload_bytes = 2097152\n");
    let (rid, url) = client_upload_url(&srv);
    let (mut socket, _) = resume(&url);
    socket.send(Message::binary(vec![0u8; (1 << 20) + 1])).expect("send");
    let error = next(&mut socket).expect("error");
    assert_eq!(error["code"], 10002, "{error}");
    assert!(str_field(&error, "msg").contains("1048576"), "names the cap: {error}");
    assert_eq!(next(&mut socket).expect_err("closed"), Some(CloseCode::Size));
    assert_eq!(status_of(&srv, &rid), 1, "nothing was taken");
    // Frames within the cap, but more than api.max_upload_bytes in all.
    let (mut socket, offset) = resume(&url);
    assert_eq!(offset, 0);
    for _ in 0..2 {
        socket.send(Message::binary(vec![0u8; 1 << 20])).expect("send");
    }
    socket.send(Message::binary(vec![0u8; 1])).expect("send");
    // Each further MiB is acknowledged.
    assert_eq!(next(&mut socket).expect("received"), json!({"type": "received", "offset": 1 << 20}));
    assert_eq!(next(&mut socket).expect("received"), json!({"type": "received", "offset": 2 << 20}));
    let error = next(&mut socket).expect("error");
    assert_eq!(error["code"], 10002, "{error}");
    assert!(str_field(&error, "msg").contains("max_upload_bytes"), "{error}");
    assert_eq!(next(&mut socket).expect_err("closed"), Some(CloseCode::Size));
    assert_eq!(status_of(&srv, &rid), 7);
    assert_eq!(stored_files(&srv), Vec::<String>::new());
    assert_eq!(metric(&srv, "uprtcd_record_client_uploads_total{result=\"too_large\"}"), 2.0);
}
