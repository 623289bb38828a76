//! Server-wide calls (miniLoad, room/num, recycle, block) and the recording table
//! (upload/download/status work; the calls that need a recorder answer 50021).
//! The contract is docs/rest-api.md, "Server" and "Recording".

mod support;

use support::*;

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
fn recording_calls_that_need_a_recorder_answer_50021() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &[]);
    let l = srv.live_id("host");
    srv.expect("GET", "/record/server", (), 50021);
    srv.expect("POST", "/record/client/upload", (), 50021);
    srv.expect("POST", "/record/client/upload", json!({}), 50021);
    for id in [&c, &l] {
        srv.expect("POST", "/record/start", json!({"roomId": id}), 50021);
        for res in ["1080p", "720p", "480p"] {
            srv.expect("POST", "/record/start", json!({"roomId": id, "resolution": res}), 50021);
        }
        srv.expect(
            "POST",
            "/record/start",
            json!({"roomId": id, "all": true, "peers": ["alice"], "layout": "grid", "fixVideoDirection": true}),
            50021,
        );
        for res in [json!("4k"), json!("720"), json!(720), json!("")] {
            let env = srv.expect("POST", "/record/start", json!({"roomId": id, "resolution": res}), 10002);
            assert!(str_field(&env, "msg").contains("resolution"), "{env}");
        }
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
}

#[test]
fn upload_then_status_6_and_download_returns_the_same_bytes() {
    let alias = "rec-1";
    let srv = Server::builder().alias(alias).start();
    let mut one = random_bytes(200_000);
    // Bytes that look like multipart framing inside the file must survive.
    one.splice(1000..1000, b"\r\n--\r\n------WebKitFormBoundary\r\n\r\n".iter().copied());
    let two = random_bytes(1);
    let three: Vec<u8> = Vec::new();

    let mut ids = Vec::new();
    for (name, bytes) in [("a.webm", &one), ("b.mp4", &two), ("empty.mkv", &three)] {
        let r = srv.upload("file", name, bytes);
        let d = expect_ok(&r, &format!("upload {name}"));
        let rid = str_field(&d, "recordId").to_string();
        assert!(!rid.is_empty() && rid.chars().count() <= 128, "{d}");
        assert_eq!(str_field(&d, "serverAlias"), alias, "{d}");
        assert_eq!(str_field(&d, "serverAddress"), srv.api, "{d}");
        ids.push((rid, bytes.clone()));
    }
    let mut distinct: Vec<&String> = ids.iter().map(|(i, _)| i).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each upload gets its own recordId: {ids:?}");

    for (rid, bytes) in &ids {
        let s = srv.ok("GET", &format!("/record/{}/status", enc(rid)), ());
        assert_eq!(u64_field(&s, "status"), 6, "an uploaded file is done: {s}");
        let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(rid)), &[], Body::None);
        assert_eq!(r.status, 200, "download {rid}: {}", r.text());
        let ct = r.content_type.clone().unwrap_or_default();
        assert!(ct.starts_with("application/octet-stream"), "download content-type {ct:?}");
        assert!(
            r.body == *bytes,
            "download {rid}: {} bytes back, {} uploaded (or different content)",
            r.body.len(),
            bytes.len()
        );
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
    // The server still stores good uploads.
    expect_ok(&srv.upload("file", "ok.bin", b"fine"), "good upload after refusals");
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
fn playback_checks_its_parameters_then_refuses_a_file_that_is_not_media() {
    let srv = Server::start(&[]);
    let d = expect_ok(&srv.upload("file", "clip.webm", &random_bytes(4096)), "upload");
    let rid = str_field(&d, "recordId").to_string();
    srv.expect("POST", "/record/playback", json!({"recordId": rid}), 10003);
    srv.expect("POST", "/record/playback", json!({"recordId": rid, "loopPlay": false}), 10003);
    srv.expect(
        "POST",
        "/record/playback",
        json!({"recordId": rid, "loopPlay": true, "endTime": 1_900_000_000_000u64}),
        10003,
    );
    srv.expect(
        "POST",
        "/record/playback",
        json!({"recordId": rid, "startTime": 1_800_000_000_000u64, "protocol": 1, "minBitrate": 1000, "maxBitrate": 2000}),
        10003,
    );
    let env = srv.expect("POST", "/record/playback", json!({"recordId": rid, "loopPlay": true}), 10002);
    assert!(str_field(&env, "msg").contains("endTime"), "{env}");
    for body in [json!({}), json!({"recordId": ""}), json!({"recordId": 3})] {
        let env = srv.expect("POST", "/record/playback", body.clone(), 10002);
        assert!(str_field(&env, "msg").contains("recordId"), "{body}: {env}");
    }
    srv.expect("POST", "/record/playback", json!({"recordId": rid, "loopPlay": "yes"}), 10002);
    srv.expect("POST", "/record/playback", raw("{\"recordId\": "), 10002);
    // Refused playbacks open no room.
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 0);
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
    let bytes = random_bytes(16 * 1024);
    let d = expect_ok(&srv.upload("file", "16k.bin", &bytes), "a 16 KiB upload under max_upload_bytes");
    let rid = str_field(&d, "recordId").to_string();
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(&rid)), &[], Body::None);
    assert!(r.body == bytes, "download returns the 16 KiB");

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
