//! Rooms over HTTP: creation (convo and live), the roomId rules table, the per-room calls,
//! input validation (10002), auth (10001), wrong methods (10003), 404, 413, and robustness.
//! The contract is docs/rest-api.md.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const ALIAS: &str = "rtc-1:cluster-1";

/// The six fields both creation calls answer.
fn check_creation_data(srv: &Server, d: &Value, alias: &str) -> String {
    let id = str_field(d, "roomId").to_string();
    assert_generated_id(&id);
    let url = str_field(d, "serverUrl");
    assert!(url.starts_with(&srv.url_prefix()), "serverUrl {url:?} must start with {:?}: {d}", srv.url_prefix());
    assert_eq!(str_field(d, "serverUrl6"), "", "serverUrl6 without --announced-ip6: {d}");
    assert_eq!(str_field(d, "serverAddress"), srv.api, "serverAddress must be the bound API address: {d}");
    assert_eq!(str_field(d, "serverAlias"), alias, "serverAlias: {d}");
    assert!(d.get("invitationCode").map(Value::is_u64) == Some(true), "invitationCode must be a number: {d}");
    id
}

#[test]
fn convo_create_answers_every_field_and_get_matches() {
    let srv = Server::builder().alias(ALIAS).start();
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "alice", "memberIds": ["bob", "carol"]}));
    let id = check_creation_data(&srv, &d, ALIAS);

    let g = srv.room(&id);
    assert_eq!(str_field(&g, "roomId"), id, "{g}");
    assert_eq!(g["serverUrl"], d["serverUrl"], "GET serverUrl equals the creation answer: {g}");
    assert_eq!(str_field(&g, "serverUrl6"), "", "{g}");
    assert_eq!(str_field(&g, "serverAddress"), srv.api, "{g}");
    assert_eq!(str_field(&g, "serverAlias"), ALIAS, "{g}");
    assert_eq!(u64_field(&g, "total"), 0, "no client is connected: {g}");
    assert_eq!(str_field(&g, "masterId"), "alice", "{g}");
    assert_eq!(sorted(&g["invitedUserIds"]), set_of(&["alice", "bob", "carol"]), "master + memberIds: {g}");
    assert!(arr_field(&g, "memberIds").is_empty(), "memberIds are connected members, none yet: {g}");
    assert_eq!(u64_field(&g, "maxMemberNum"), 16, "default rooms.default_max_members is 16: {g}");
    assert!(arr_field(&g, "mergeRoomIds").is_empty(), "{g}");
    assert!(arr_field(&g, "mirrorServers").is_empty(), "{g}");
    assert_eq!(str_field(&g, "type"), "convo", "{g}");
    assert_eq!(g["invitationCode"], d["invitationCode"], "{g}");
    assert_eq!(u64_field(&g, "protocol"), 0, "default protocol: {g}");
    assert_eq!(u64_field(&g, "minBitrate"), 600_000, "default minBitrate: {g}");
    assert_eq!(u64_field(&g, "maxBitrate"), 3_000_000, "default maxBitrate: {g}");
    assert!(bool_field(&g, "joinEnabled"), "a new room can be joined: {g}");

    // Unknown fields are ignored; an empty memberIds is allowed.
    let d2 =
        srv.ok("POST", "/room/convo", json!({"masterId": "zed", "memberIds": [], "colour": "blue", "x": {"y": 1}}));
    let id2 = check_creation_data(&srv, &d2, ALIAS);
    assert_ne!(id2, id);
    assert_eq!(sorted(&srv.room(&id2)["invitedUserIds"]), set_of(&["zed"]));
}

#[test]
fn convo_create_with_every_parameter() {
    let srv = Server::start(&[]);
    let d = srv.ok(
        "POST",
        "/room/convo",
        json!({"masterId": "m", "memberIds": ["a"], "maxMemberNum": 5, "protocol": 2,
               "minBitrate": 100000, "maxBitrate": 200000}),
    );
    let g = srv.room(str_field(&d, "roomId"));
    assert_eq!(u64_field(&g, "maxMemberNum"), 5, "{g}");
    assert_eq!(u64_field(&g, "protocol"), 2, "{g}");
    assert_eq!(u64_field(&g, "minBitrate"), 100_000, "{g}");
    assert_eq!(u64_field(&g, "maxBitrate"), 200_000, "{g}");

    // 0 = unlimited, protocol 3 is the top of 0–3, minBitrate == maxBitrate is not ">".
    let d = srv.ok(
        "POST",
        "/room/convo",
        json!({"masterId": "m2", "memberIds": [], "maxMemberNum": 0, "protocol": 3,
               "minBitrate": 700000, "maxBitrate": 700000}),
    );
    let g = srv.room(str_field(&d, "roomId"));
    assert_eq!(u64_field(&g, "maxMemberNum"), 0, "{g}");
    assert_eq!(u64_field(&g, "protocol"), 3, "{g}");
    assert_eq!(u64_field(&g, "minBitrate"), 700_000, "{g}");
    assert_eq!(u64_field(&g, "maxBitrate"), 700_000, "{g}");

    for p in 0..=3u64 {
        let d = srv.ok("POST", "/room/live", json!({"masterId": format!("h{p}"), "protocol": p}));
        assert_eq!(u64_field(&srv.room(str_field(&d, "roomId")), "protocol"), p);
    }
}

#[test]
fn live_create_answers_every_field_and_get_matches() {
    let srv = Server::builder().alias(ALIAS).start();
    let d = srv.ok("POST", "/room/live", json!({"masterId": "host"}));
    let id = check_creation_data(&srv, &d, ALIAS);

    let g = srv.room(&id);
    assert_eq!(str_field(&g, "roomId"), id, "{g}");
    assert_eq!(g["serverUrl"], d["serverUrl"], "{g}");
    assert_eq!(str_field(&g, "serverUrl6"), "", "{g}");
    assert_eq!(str_field(&g, "serverAddress"), srv.api, "{g}");
    assert_eq!(str_field(&g, "serverAlias"), ALIAS, "{g}");
    assert_eq!(u64_field(&g, "total"), 0, "{g}");
    assert_eq!(str_field(&g, "masterId"), "host", "{g}");
    assert!(arr_field(&g, "invitedUserIds").is_empty(), "empty for live rooms: {g}");
    assert!(arr_field(&g, "memberIds").is_empty(), "{g}");
    assert_eq!(u64_field(&g, "maxMemberNum"), 0, "0 for live rooms: {g}");
    assert!(arr_field(&g, "mergeRoomIds").is_empty(), "{g}");
    assert!(arr_field(&g, "mirrorServers").is_empty(), "{g}");
    assert_eq!(str_field(&g, "type"), "live", "{g}");
    assert_eq!(g["invitationCode"], d["invitationCode"], "{g}");
    assert_eq!(u64_field(&g, "protocol"), 0, "{g}");
    assert_eq!(u64_field(&g, "minBitrate"), 600_000, "{g}");
    assert_eq!(u64_field(&g, "maxBitrate"), 3_000_000, "{g}");
    assert!(bool_field(&g, "joinEnabled"), "{g}");

    let d =
        srv.ok("POST", "/room/live", json!({"masterId": "h2", "protocol": 1, "minBitrate": 1000, "maxBitrate": 2000}));
    let g = srv.room(str_field(&d, "roomId"));
    assert_eq!(u64_field(&g, "protocol"), 1, "{g}");
    assert_eq!(u64_field(&g, "minBitrate"), 1000, "{g}");
    assert_eq!(u64_field(&g, "maxBitrate"), 2000, "{g}");
}

#[test]
fn announced_ip6_fills_server_url6() {
    let srv = Server::start(&["--announced-ip6", "::1"]);
    let c = srv.ok("POST", "/room/convo", json!({"masterId": "a", "memberIds": []}));
    let l = srv.ok("POST", "/room/live", json!({"masterId": "b"}));
    for d in [&c, &l] {
        let u6 = str_field(d, "serverUrl6");
        assert!(u6.starts_with("ws://[::1]:"), "serverUrl6 with --announced-ip6 ::1: {d}");
        let u = str_field(d, "serverUrl");
        assert!(u.starts_with(&srv.url_prefix()), "serverUrl stays IPv4: {d}");
        let g = srv.room(str_field(d, "roomId"));
        assert_eq!(g["serverUrl6"], d["serverUrl6"], "GET serverUrl6: {g}");
    }
}

#[test]
fn invitation_codes_are_unique_across_open_rooms() {
    let srv = Server::start(&[]);
    let srv = &srv;
    let mut all: Vec<(String, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let d = if i % 2 == 0 {
                                srv.create_convo(&format!("m{t}-{i}"), &[])
                            } else {
                                srv.create_live(&format!("h{t}-{i}"))
                            };
                            (str_field(&d, "roomId").to_string(), u64_field(&d, "invitationCode"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("creator thread")).collect()
    });
    let mut ids: Vec<&String> = all.iter().map(|(i, _)| i).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "40 rooms, 40 distinct roomIds: {all:?}");
    let mut codes: Vec<u64> = all.iter().map(|(_, c)| *c).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 40, "40 open rooms, 40 distinct invitation codes: {all:?}");
    // GET tells the same code.
    all.truncate(6);
    for (id, code) in &all {
        assert_eq!(u64_field(&srv.room(id), "invitationCode"), *code);
    }
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 40);
}

#[test]
fn convo_members_adds_invitations() {
    let srv = Server::start(&[]);
    let id = srv.convo_id("alice", &["bob"]);
    srv.ok("POST", &format!("/room/{id}/convo/members"), json!({"memberIds": ["dave", "erin"]}));
    srv.ok("POST", &format!("/room/{id}/convo/members"), json!({"memberIds": []}));
    srv.ok("POST", &format!("/room/{id}/convo/members"), json!({"memberIds": ["frank"]}));
    let g = srv.room(&id);
    assert_eq!(sorted(&g["invitedUserIds"]), set_of(&["alice", "bob", "dave", "erin", "frank"]), "{g}");

    let mut soft = Soft::new();
    for body in [json!({}), json!({"memberIds": "dave"}), json!({"memberIds": [1, 2]}), json!({"memberIds": [""]})] {
        srv.soft_expect(&mut soft, "POST", &format!("/room/{id}/convo/members"), body, 10002, Some("memberIds"));
    }
    srv.soft_expect(
        &mut soft,
        "POST",
        &format!("/room/{id}/convo/members"),
        raw("{\"memberIds\": [\"x\""),
        10002,
        None,
    );
    soft.done();
    // Nothing was added by the refused calls.
    assert_eq!(sorted(&srv.room(&id)["invitedUserIds"]), set_of(&["alice", "bob", "dave", "erin", "frank"]));

    let live = srv.live_id("host");
    srv.expect("POST", &format!("/room/{live}/convo/members"), json!({"memberIds": ["x"]}), 10003);
    assert!(arr_field(&srv.room(&live), "invitedUserIds").is_empty());
}

#[test]
fn room_message_accepts_any_json_value() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("a", &["b"]);
    let l = srv.live_id("h");
    for id in [&c, &l] {
        let p = format!("/room/{id}/message");
        srv.ok("POST", &p, json!({"type": "notice", "text": "hello", "n": [1, 2, 3]}));
        srv.ok("POST", &p, json!("just a string"));
        srv.ok("POST", &p, json!([1, "two", {"three": 3}]));
        srv.ok("POST", &p, json!(42));
        srv.ok("POST", &p, json!({"unicode": "房间🚀"}));
        srv.expect("POST", &p, raw("{\"type\": "), 10002);
        srv.expect("POST", &p, raw("not json at all"), 10002);
    }
}

#[test]
fn peers_message_with_and_without_trailing_slash() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("a", &["b", "c"]);
    let l = srv.live_id("h");
    for id in [&c, &l] {
        for p in [format!("/room/{id}/peers/message/"), format!("/room/{id}/peers/message")] {
            srv.ok("POST", &p, json!({"msg": {"hi": true}, "peers": ["b", "c"]}));
            srv.ok("POST", &p, json!({"msg": "text", "peers": []}));
            srv.ok("POST", &p, json!({"msg": [1, 2], "peers": ["nobody-connected"]}));
            let mut soft = Soft::new();
            for (body, field) in [
                (json!({"peers": ["b"]}), "msg"),
                (json!({"msg": {}}), "peers"),
                (json!({"msg": {}, "peers": "b"}), "peers"),
                (json!({"msg": {}, "peers": [7]}), "peers"),
                (json!({"msg": {}, "peers": [""]}), "peers"),
            ] {
                srv.soft_expect(&mut soft, "POST", &p, body, 10002, Some(field));
            }
            srv.soft_expect(&mut soft, "POST", &p, raw("{\"msg\": {}, \"peers\": ["), 10002, None);
            soft.done();
        }
    }
}

#[test]
fn delete_room_closes_it() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("a", &["b"]);
    let l = srv.live_id("h");
    let keep = srv.convo_id("k", &[]);
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 3);
    for id in [&c, &l] {
        srv.ok("DELETE", &format!("/room/{id}"), ());
        srv.expect("GET", &format!("/room/{id}"), (), 50001);
        let e = srv.ok("GET", &format!("/room/{id}/exist"), ());
        assert!(!bool_field(&e, "exist"), "{e}");
        srv.expect("DELETE", &format!("/room/{id}"), (), 50001);
    }
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 1);
    assert_eq!(str_field(&srv.room(&keep), "masterId"), "k");
}

#[test]
fn exist_is_never_50001() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("a", &[]);
    let l = srv.live_id("h");
    for id in [&c, &l] {
        let e = srv.ok("GET", &format!("/room/{id}/exist"), ());
        assert!(bool_field(&e, "exist"), "{e}");
    }
    for id in ["ZZZZZZZZZZ", "hello", "N6QAwbs", "房间🚀"] {
        let e = srv.ok("GET", &format!("/room/{}/exist", enc(id)), ());
        assert!(!bool_field(&e, "exist"), "{id}: {e}");
    }
    let e = srv.ok("GET", &format!("/room/{}/exist", with_wrong_check_char(&c)), ());
    assert!(!bool_field(&e, "exist"), "{e}");
}

#[test]
fn join_enable_toggles_join_enabled() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("a", &[]);
    let l = srv.live_id("h");
    for id in [&c, &l] {
        srv.ok("POST", &format!("/room/{id}/join/enbale/false"), ());
        assert!(!bool_field(&srv.room(id), "joinEnabled"));
        srv.ok("POST", &format!("/room/{id}/join/enbale/true"), ());
        assert!(bool_field(&srv.room(id), "joinEnabled"));
        srv.ok("POST", &format!("/room/{id}/join/enable/false"), ());
        assert!(!bool_field(&srv.room(id), "joinEnabled"));
        srv.ok("POST", &format!("/room/{id}/join/enable/true"), ());
        assert!(bool_field(&srv.room(id), "joinEnabled"));
        let mut soft = Soft::new();
        for bad in ["maybe", "1", "0", "yes", "TRUEE"] {
            srv.soft_expect(&mut soft, "POST", &format!("/room/{id}/join/enbale/{bad}"), (), 10002, None);
            srv.soft_expect(&mut soft, "POST", &format!("/room/{id}/join/enable/{bad}"), (), 10002, None);
        }
        soft.done();
        assert!(bool_field(&srv.room(id), "joinEnabled"), "refused calls changed nothing");
    }
}

#[test]
fn peer_calls_without_a_connection() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    for (id, who) in [(&c, "alice"), (&c, "bob"), (&c, "stranger"), (&l, "host"), (&l, "viewer")] {
        let j = srv.ok("GET", &format!("/room/{id}/peer/{who}"), ());
        assert!(!bool_field(&j, "joined"), "{who} has no connection: {j}");
        srv.expect("DELETE", &format!("/room/{id}/peer/{who}"), (), 50011);
    }
    let j = srv.ok("GET", &format!("/room/{c}/peer/{}", enc("房间🚀")), ());
    assert!(!bool_field(&j, "joined"), "{j}");
}

#[test]
fn room_record_status_of_a_new_room_is_zero() {
    let srv = Server::start(&[]);
    for id in [srv.convo_id("a", &[]), srv.live_id("h")] {
        let s = srv.ok("GET", &format!("/room/{id}/record/status"), ());
        assert_eq!(u64_field(&s, "status"), 0, "not recorded: {s}");
    }
}

#[test]
fn every_room_call_answers_50001_for_a_room_not_open() {
    let srv = Server::start(&[]);
    let me = str_field(&srv.ok("GET", "/server/miniLoad", ()), "serverAlias").to_string();
    let live = srv.live_id("h");
    let closed = srv.live_id("gone");
    srv.ok("DELETE", &format!("/room/{closed}"), ());
    let mut soft = Soft::new();
    for id in ["ZZZZZZZZZZ", "hello", closed.as_str()] {
        let r = format!("/room/{}", enc(id));
        let calls: Vec<(&str, String, Body)> = vec![
            ("POST", format!("{r}/convo/members"), json!({"memberIds": ["x"]}).into()),
            ("POST", format!("{r}/message"), json!({"a": 1}).into()),
            ("POST", format!("{r}/peers/message/"), json!({"msg": {}, "peers": ["x"]}).into()),
            ("POST", format!("{r}/peers/message"), json!({"msg": {}, "peers": ["x"]}).into()),
            ("DELETE", r.clone(), Body::None),
            ("GET", r.clone(), Body::None),
            ("POST", format!("{r}/join/enbale/true"), Body::None),
            ("POST", format!("{r}/join/enable/false"), Body::None),
            ("DELETE", format!("{r}/peer/x"), Body::None),
            ("GET", format!("{r}/peer/x"), Body::None),
            ("GET", format!("{r}/record/status"), Body::None),
            ("POST", format!("{r}/live/member"), json!({"peerId": "x"}).into()),
            ("GET", format!("{r}/live/members"), Body::None),
            ("DELETE", format!("{r}/live/member/x"), Body::None),
            ("POST", format!("{r}/live/merge"), json!({"roomId": live}).into()),
            ("GET", format!("{r}/live/merge"), Body::None),
            ("POST", format!("{r}/live/master/h/separate"), Body::None),
            ("POST", format!("{r}/live/separate"), json!({"roomId": live}).into()),
            ("POST", format!("{r}/live/pause/mergeTrack/t1"), Body::None),
            ("POST", format!("{r}/live/resume/mergeTrack/t1"), Body::None),
            ("POST", format!("{r}/live/mirror"), json!({"serverAlias": me}).into()),
            ("GET", format!("{r}/live/mirrors"), Body::None),
        ];
        for (m, p, b) in calls {
            srv.soft_expect(&mut soft, m, &p, b, 50001, None);
        }
    }
    soft.done();
    // The open room was not touched.
    assert!(srv.merge_ids(&live).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The roomId rules table, one test per row.

#[test]
fn room_id_row_absent_gives_a_new_id() {
    let srv = Server::start(&[]);
    let a = srv.convo_id("m", &[]);
    let b = srv.convo_id("m", &[]);
    let c = srv.live_id("m");
    assert_generated_id(&a);
    assert_generated_id(&b);
    assert_generated_id(&c);
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
}

#[test]
fn room_id_row_own_open_same_master_is_50002() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    srv.expect("POST", "/room/convo", json!({"masterId": "alice", "memberIds": [], "roomId": c}), 50002);
    srv.expect("POST", "/room/live", json!({"masterId": "host", "roomId": l}), 50002);
    // The row does not depend on the room type.
    srv.expect("POST", "/room/live", json!({"masterId": "alice", "roomId": c}), 50002);
    srv.expect("POST", "/room/convo", json!({"masterId": "host", "memberIds": [], "roomId": l}), 50002);
    // The open rooms are unchanged.
    let g = srv.room(&c);
    assert_eq!(str_field(&g, "type"), "convo");
    assert_eq!(sorted(&g["invitedUserIds"]), set_of(&["alice", "bob"]));
    assert_eq!(str_field(&srv.room(&l), "type"), "live");
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 2);
}

#[test]
fn room_id_row_own_open_other_master_gives_a_new_id() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &[]);
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "mallet", "memberIds": [], "roomId": c}));
    let n = str_field(&d, "roomId").to_string();
    assert_generated_id(&n);
    assert_ne!(n, c, "another master gets a new id");
    assert_eq!(str_field(&srv.room(&c), "masterId"), "alice", "the open room keeps its master");
    assert_eq!(str_field(&srv.room(&n), "masterId"), "mallet", "the answer carries the id used");

    let l = srv.live_id("host");
    let d = srv.ok("POST", "/room/live", json!({"masterId": "other", "roomId": l}));
    let n2 = str_field(&d, "roomId").to_string();
    assert_generated_id(&n2);
    assert_ne!(n2, l);
    assert_eq!(str_field(&srv.room(&l), "masterId"), "host");
    assert_eq!(str_field(&srv.room(&n2), "masterId"), "other");
}

#[test]
fn room_id_row_own_closed_is_created_with_that_id() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    srv.ok("DELETE", &format!("/room/{c}"), ());
    // Any master: here another one.
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "carol", "memberIds": ["dan"], "roomId": c}));
    assert_eq!(str_field(&d, "roomId"), c, "a closed room of this server is re-created with its id: {d}");
    let g = srv.room(&c);
    assert_eq!(str_field(&g, "masterId"), "carol");
    assert_eq!(sorted(&g["invitedUserIds"]), set_of(&["carol", "dan"]), "a fresh room: {g}");

    // Same master after close, and again, and as a live room.
    srv.ok("DELETE", &format!("/room/{c}"), ());
    let d = srv.ok("POST", "/room/live", json!({"masterId": "carol", "roomId": c}));
    assert_eq!(str_field(&d, "roomId"), c);
    assert_eq!(str_field(&srv.room(&c), "type"), "live");

    let l = srv.live_id("host");
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "guest"}));
    srv.ok("DELETE", &format!("/room/{l}"), ());
    let d = srv.ok("POST", "/room/live", json!({"masterId": "host", "roomId": l}));
    assert_eq!(str_field(&d, "roomId"), l);
    let members = srv.ok("GET", &format!("/room/{l}/live/members"), ());
    assert_eq!(members, json!([]), "a re-created room starts empty");
}

#[test]
fn room_id_row_from_another_server_gives_a_new_id() {
    let first = Server::start(&[]);
    let second = Server::start(&[]);
    let foreign_convo = second.convo_id("alice", &[]);
    let foreign_live = second.live_id("host");
    // Closed on the second server too, so that "open elsewhere" plays no part.
    let foreign_closed = second.convo_id("x", &[]);
    second.ok("DELETE", &format!("/room/{foreign_closed}"), ());

    for (path, body, given) in [
        ("/room/convo", json!({"masterId": "alice", "memberIds": [], "roomId": foreign_convo}), &foreign_convo),
        ("/room/live", json!({"masterId": "host", "roomId": foreign_live}), &foreign_live),
        ("/room/convo", json!({"masterId": "x", "memberIds": [], "roomId": foreign_closed}), &foreign_closed),
    ] {
        let d = first.ok("POST", path, body);
        let got = str_field(&d, "roomId").to_string();
        assert_generated_id(&got);
        assert_ne!(&got, given, "an id made by another server must not be taken: {d}");
        first.room(&got);
        let e = first.ok("GET", &format!("/room/{given}/exist"), ());
        assert!(!bool_field(&e, "exist"), "no room under the foreign id: {e}");
    }
}

#[test]
fn room_id_row_arbitrary_strings_give_a_new_id() {
    let srv = Server::start(&[]);
    let own = srv.convo_id("seed", &[]);
    srv.ok("DELETE", &format!("/room/{own}"), ());
    let long128 = "r".repeat(128);
    let givens = [
        "hello".to_string(),
        "N6QAwbs".to_string(),
        with_wrong_check_char(&own),
        "房间🚀".to_string(),
        long128,
        "0000000000".to_string(),
    ];
    for (i, given) in givens.iter().enumerate() {
        let body = if i % 2 == 0 {
            json!({"masterId": format!("m{i}"), "memberIds": [], "roomId": given})
        } else {
            json!({"masterId": format!("m{i}"), "roomId": given})
        };
        let path = if i % 2 == 0 { "/room/convo" } else { "/room/live" };
        let d = srv.ok("POST", path, body);
        let got = str_field(&d, "roomId").to_string();
        assert_generated_id(&got);
        assert_ne!(&got, given, "{given:?} was not made by this server: {d}");
        assert_eq!(str_field(&srv.room(&got), "masterId"), format!("m{i}"));
        let e = srv.ok("GET", &format!("/room/{}/exist", enc(given)), ());
        assert!(!bool_field(&e, "exist"), "{given:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn convo_creation_validation_is_10002_naming_the_field() {
    let srv = Server::start(&[]);
    let cases: Vec<(Body, &str)> = vec![
        (json!({"memberIds": []}).into(), "masterId"),
        (json!({"masterId": "a"}).into(), "memberIds"),
        (json!({"masterId": 5, "memberIds": []}).into(), "masterId"),
        (json!({"masterId": null, "memberIds": []}).into(), "masterId"),
        (json!({"masterId": "", "memberIds": []}).into(), "masterId"),
        (json!({"masterId": "a", "memberIds": "b"}).into(), "memberIds"),
        (json!({"masterId": "a", "memberIds": [1]}).into(), "memberIds"),
        (json!({"masterId": "a", "memberIds": [""]}).into(), "memberIds"),
        (json!({"masterId": "a", "memberIds": [], "roomId": ""}).into(), "roomId"),
        (json!({"masterId": "a", "memberIds": [], "roomId": 12}).into(), "roomId"),
        (json!({"masterId": "a", "memberIds": [], "maxMemberNum": -1}).into(), "maxMemberNum"),
        (json!({"masterId": "a", "memberIds": [], "maxMemberNum": "5"}).into(), "maxMemberNum"),
        (json!({"masterId": "a", "memberIds": [], "maxMemberNum": 1.5}).into(), "maxMemberNum"),
        (raw(r#"{"masterId": "a", "memberIds": [], "maxMemberNum": 1e30}"#), "maxMemberNum"),
        (raw(r#"{"masterId": "a", "memberIds": [], "maxMemberNum": 18446744073709551616}"#), "maxMemberNum"),
        (json!({"masterId": "a", "memberIds": [], "protocol": 4}).into(), "protocol"),
        (json!({"masterId": "a", "memberIds": [], "protocol": -1}).into(), "protocol"),
        (json!({"masterId": "a", "memberIds": [], "protocol": "udp"}).into(), "protocol"),
        (json!({"masterId": "a", "memberIds": [], "minBitrate": -1}).into(), "minBitrate"),
        (raw(r#"{"masterId": "a", "memberIds": [], "minBitrate": 1e30}"#), "minBitrate"),
        (raw(r#"{"masterId": "a", "memberIds": [], "maxBitrate": 18446744073709551616}"#), "maxBitrate"),
        (json!({"masterId": "a", "memberIds": [], "maxBitrate": "fast"}).into(), "maxBitrate"),
    ];
    let mut soft = Soft::new();
    for (body, field) in cases {
        srv.soft_expect(&mut soft, "POST", "/room/convo", body, 10002, Some(field));
    }
    // minBitrate > maxBitrate names one of the two.
    for body in [
        json!({"masterId": "a", "memberIds": [], "minBitrate": 500, "maxBitrate": 400}),
        json!({"masterId": "a", "memberIds": [], "minBitrate": 3000001}),
        json!({"masterId": "a", "memberIds": [], "maxBitrate": 599999}),
    ] {
        let env = srv.soft_expect(&mut soft, "POST", "/room/convo", body.clone(), 10002, None);
        let msg = env.get("msg").and_then(Value::as_str).unwrap_or("");
        soft.check(msg.contains("minBitrate") || msg.contains("maxBitrate"), || {
            format!("{body}: msg must name the bitrate: {env}")
        });
    }
    for body in ["{\"masterId\": \"a\", \"memberIds\": [", "", "null", "[]", "\"str\"", "{,}", "\u{0}\u{1}"] {
        srv.soft_expect(&mut soft, "POST", "/room/convo", raw(body), 10002, None);
    }
    soft.done();
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 0, "nothing was created");
}

#[test]
fn live_creation_validation_is_10002_naming_the_field() {
    let srv = Server::start(&[]);
    let cases: Vec<(Body, &str)> = vec![
        (json!({}).into(), "masterId"),
        (json!({"masterId": 7}).into(), "masterId"),
        (json!({"masterId": ""}).into(), "masterId"),
        (json!({"masterId": ["h"]}).into(), "masterId"),
        (json!({"masterId": "h", "roomId": ""}).into(), "roomId"),
        (json!({"masterId": "h", "protocol": 9}).into(), "protocol"),
        (json!({"masterId": "h", "minBitrate": -5}).into(), "minBitrate"),
        (raw(r#"{"masterId": "h", "maxBitrate": 1e30}"#), "maxBitrate"),
        (raw(r#"{"masterId": "h", "protocol": 18446744073709551616}"#), "protocol"),
    ];
    let mut soft = Soft::new();
    for (body, field) in cases {
        srv.soft_expect(&mut soft, "POST", "/room/live", body, 10002, Some(field));
    }
    srv.soft_expect(
        &mut soft,
        "POST",
        "/room/live",
        json!({"masterId": "h", "minBitrate": 9000, "maxBitrate": 8000}),
        10002,
        None,
    );
    srv.soft_expect(&mut soft, "POST", "/room/live", raw("{\"masterId\": \"h\""), 10002, None);
    srv.soft_expect(&mut soft, "POST", "/room/live", raw(""), 10002, None);
    soft.done();
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 0);
}

#[test]
fn ids_are_1_to_128_characters_of_any_unicode_but_control_characters() {
    let srv = Server::start(&[]);
    let a128 = "a".repeat(128);
    let a129 = "a".repeat(129);
    let cjk128 = "房".repeat(128);
    let cjk129 = "房".repeat(129);

    // masterId and memberIds
    let id = srv.convo_id(&a128, &[&cjk128, "房间🚀"]);
    let g = srv.room(&id);
    assert_eq!(str_field(&g, "masterId"), a128);
    assert_eq!(sorted(&g["invitedUserIds"]), set_of(&[&a128, &cjk128, "房间🚀"]));
    let l = srv.live_id("房间🚀");
    assert_eq!(str_field(&srv.room(&l), "masterId"), "房间🚀");
    let mut soft = Soft::new();
    let mut bad = |m: &str, p: String, b: Body, field: Option<&str>| {
        srv.soft_expect(&mut soft, m, &p, b, 10002, field);
    };
    bad("POST", "/room/convo".into(), json!({"masterId": a129, "memberIds": []}).into(), Some("masterId"));
    bad("POST", "/room/convo".into(), json!({"masterId": cjk129, "memberIds": []}).into(), Some("masterId"));
    bad("POST", "/room/convo".into(), json!({"masterId": "m", "memberIds": [a129]}).into(), Some("memberIds"));
    bad("POST", "/room/live".into(), json!({"masterId": a129}).into(), Some("masterId"));
    bad("POST", "/room/convo".into(), json!({"masterId": "m", "memberIds": [], "roomId": a129}).into(), Some("roomId"));
    bad("POST", "/room/live".into(), json!({"masterId": "m", "roomId": cjk129}).into(), Some("roomId"));
    bad("POST", format!("/room/{id}/convo/members"), json!({"memberIds": [cjk129]}).into(), Some("memberIds"));
    // A control character could forge a log line.
    bad(
        "POST",
        "/room/convo".into(),
        json!({"masterId": "m\nuprtcd: ready", "memberIds": []}).into(),
        Some("masterId"),
    );
    bad("POST", "/room/live".into(), json!({"masterId": "m", "roomId": "r\u{1b}[2J"}).into(), Some("roomId"));
    bad("GET", format!("/room/{id}/peer/{}", enc("p\r")), Body::None, None);

    // path ids
    bad("GET", format!("/room/{a129}"), Body::None, None);
    bad("GET", format!("/room/{}", enc(&cjk129)), Body::None, None);
    bad("GET", format!("/room/{a129}/exist"), Body::None, None);
    bad("DELETE", format!("/room/{a129}"), Body::None, None);
    bad("GET", format!("/room/{id}/peer/{a129}"), Body::None, None);
    bad("DELETE", format!("/room/{id}/peer/{a129}"), Body::None, None);
    bad("DELETE", format!("/server/block/peer/{a129}"), Body::None, None);
    bad("GET", format!("/record/{a129}/status"), Body::None, None);
    bad("GET", format!("/record/download/{a129}"), Body::None, None);

    // live member ids
    bad("POST", format!("/room/{l}/live/member"), json!({"peerId": ""}).into(), Some("peerId"));
    bad("POST", format!("/room/{l}/live/member"), json!({"peerId": a129}).into(), Some("peerId"));
    bad("DELETE", format!("/room/{l}/live/member/{a129}"), Body::None, None);
    srv.soft_expect(&mut soft, "GET", &format!("/room/{a128}"), (), 50001, None);
    srv.soft_expect(&mut soft, "GET", &format!("/room/{}", enc(&cjk128)), (), 50001, None);
    soft.done();

    let j = srv.ok("GET", &format!("/room/{id}/peer/{}", enc(&cjk128)), ());
    assert!(!bool_field(&j, "joined"));
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": cjk128}));
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!([cjk128]));
}

#[test]
fn wrong_method_on_a_known_path_is_200_10003() {
    let srv = Server::start(&[]);
    let id = srv.convo_id("a", &[]);
    let l = srv.live_id("h");
    let calls = [
        ("PUT", "/room/convo".to_string()),
        ("PATCH", "/room/live".to_string()),
        ("PUT", format!("/room/{id}")),
        ("GET", format!("/room/{id}/message")),
        ("POST", format!("/room/{id}/exist")),
        ("GET", format!("/room/{id}/convo/members")),
        ("GET", format!("/room/{id}/join/enbale/true")),
        ("PATCH", format!("/room/{l}/live/members")),
        ("GET", format!("/room/{l}/live/mirror")),
        ("GET", format!("/room/{l}/live/separate")),
        ("GET", "/server/recycle".to_string()),
        ("POST", "/server/room/num".to_string()),
        ("DELETE", "/server/miniLoad".to_string()),
        ("POST", "/server/cpu/load".to_string()),
        ("GET", "/server/block/peer/eve".to_string()),
        ("GET", "/record/upload".to_string()),
        ("DELETE", "/record/start".to_string()),
        ("PUT", "/record/server".to_string()),
    ];
    let mut soft = Soft::new();
    for (m, p) in calls {
        srv.soft_expect(&mut soft, m, &p, (), 10003, None);
    }
    soft.done();
    // None of them acted: the server was not recycled, eve was not blocked.
    srv.convo_id("eve", &[]);
    assert_eq!(str_field(&srv.room(&id), "masterId"), "a");
}

#[test]
fn paths_outside_the_api_are_404_with_an_envelope() {
    let srv = Server::start(&[]);
    let mut soft = Soft::new();
    for (m, p) in [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/uprtc/api/v2/nope"),
        ("POST", "/uprtc/api/v1/room/convo"),
        ("GET", "/uprtc/api/v2/room/x/y/z/w"),
        ("GET", "/"),
    ] {
        let r = srv.request(&Auth::Key, m, p, &[], Body::None);
        let env: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        soft.check(r.status == 404 && env.get("code").and_then(Value::as_u64) == Some(10003), || {
            format!("{m} {p}: expected HTTP 404 with envelope code 10003, got HTTP {} {:?}", r.status, r.text())
        });
        soft.add(envelope_problem(&env, &format!("{m} {p}")));
    }
    soft.done();
}

#[test]
fn body_over_the_limit_is_413_with_an_envelope() {
    let srv = Server::start(&[]);
    let pad = "x".repeat(2 * 1024 * 1024);
    let body = format!(r#"{{"masterId": "a", "memberIds": [], "pad": "{pad}"}}"#);
    let path = format!("{PREFIX}/room/convo");
    for expect_continue in [true, false] {
        let r = srv
            .raw_exchange("POST", &path, &[("content-type", "application/json")], body.as_bytes(), expect_continue)
            .unwrap_or_else(|e| panic!("2 MiB POST (expect-continue {expect_continue}): {e}"));
        let env = r.envelope("2 MiB POST /room/convo");
        expect_status_code(&(r.status, env), 413, 10002, "2 MiB POST /room/convo");
    }
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 0, "nothing was created");
    srv.convo_id("a", &[]);
}

#[test]
fn missing_or_wrong_secret_is_10001_and_does_nothing() {
    let srv = Server::start(&[]);
    let id = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    let bad = [
        Auth::Missing,
        Auth::Wrong,
        Auth::Header("key=".into()),
        Auth::Header(srv.secret.clone()),
        Auth::Header(format!("Bearer {}", srv.secret)),
        Auth::Header(format!("key={}", &srv.secret[..srv.secret.len() - 1])),
    ];
    let calls: Vec<(&str, String, Body)> = vec![
        ("POST", "/room/convo".into(), json!({"masterId": "x", "memberIds": []}).into()),
        ("POST", "/room/live".into(), json!({"masterId": "y"}).into()),
        ("GET", format!("/room/{id}"), Body::None),
        ("DELETE", format!("/room/{id}"), Body::None),
        ("POST", format!("/room/{id}/convo/members"), json!({"memberIds": ["z"]}).into()),
        ("GET", format!("/room/{l}/live/members"), Body::None),
        ("POST", format!("/room/{l}/live/member"), json!({"peerId": "p"}).into()),
        ("GET", "/server/room/num".into(), Body::None),
        ("GET", "/server/cpu/load".into(), Body::None),
        ("POST", "/server/recycle".into(), Body::None),
        ("DELETE", "/server/block/peer/eve".into(), Body::None),
        ("GET", "/record/download/whatever".into(), Body::None),
        ("GET", "/record/server".into(), Body::None),
    ];
    let mut soft = Soft::new();
    for auth in &bad {
        for (m, p, b) in &calls {
            let r = srv.call_auth(auth, m, p, b.clone());
            soft.check(r.0 == 200 && r.1["code"] == json!(10001), || {
                format!("{auth:?} {m} {p}: expected 200/10001, got {} {}", r.0, r.1)
            });
        }
        let (ct, body) = multipart("file", "a.bin", b"abc");
        let r =
            srv.request(auth, "POST", &format!("{PREFIX}/record/upload"), &[("content-type", &ct)], Body::Raw(body));
        let env = r.envelope("upload");
        soft.check(r.status == 200 && env["code"] == json!(10001), || {
            format!("{auth:?} upload: expected 200/10001, got {} {env}", r.status)
        });
    }
    soft.done();
    // Nothing happened: no room created or deleted, no member added, not recycled, eve not blocked.
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 2);
    assert_eq!(sorted(&srv.room(&id)["invitedUserIds"]), set_of(&["alice", "bob"]));
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!([]));
    srv.convo_id("eve", &[]);
}

#[test]
fn openapi_json_is_served_without_authorization() {
    let srv = Server::start(&[]);
    let r = srv.request(&Auth::Missing, "GET", &format!("{PREFIX}/openapi.json"), &[], Body::None);
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("openapi.json is not JSON ({e}): {}", r.text()));
    assert!(str_field(&doc, "openapi").starts_with('3'), "an OpenAPI 3 document: {}", r.text());
    let paths = doc.get("paths").and_then(Value::as_object).expect("paths object");
    let norm = |p: &str| -> String {
        let p = p.strip_prefix(PREFIX).unwrap_or(p);
        let mut out = String::new();
        let mut in_param = false;
        for ch in p.chars() {
            match ch {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                _ if in_param => {}
                _ => out.push(ch),
            }
        }
        out.trim_end_matches('/').to_string()
    };
    let have: Vec<String> = paths.keys().map(|k| norm(k)).collect();
    for want in [
        "/room/convo",
        "/room/live",
        "/room/{}/convo/members",
        "/room/{}/message",
        "/room/{}/peers/message",
        "/room/{}",
        "/room/{}/exist",
        "/room/{}/join/enbale/{}",
        "/room/{}/peer/{}",
        "/room/{}/record/status",
        "/room/{}/live/member",
        "/room/{}/live/members",
        "/room/{}/live/member/{}",
        "/room/{}/live/merge",
        "/room/{}/live/master/{}/separate",
        "/room/{}/live/separate",
        "/room/{}/live/{}/mergeTrack/{}",
        "/room/{}/live/mirror",
        "/room/{}/live/mirrors",
        "/record/server",
        "/record/start",
        "/record/stop/{}",
        "/record/client/upload",
        "/record/upload",
        "/record/{}/status",
        "/record/download/{}",
        "/record/playback",
        "/server/miniLoad",
        "/server/room/num",
        "/server/cpu/load",
        "/server/recycle",
        "/server/block/peer/{}",
    ] {
        assert!(have.iter().any(|h| h == want), "openapi.json lacks {want}; it has {have:?}");
    }
}

#[test]
fn bad_input_never_breaks_the_server() {
    let srv = Server::start(&[]);
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "guest", "kind": "video"}));
    let before_c = srv.room(&c);
    let before_l = srv.room(&l);
    let long = "x".repeat(300);

    // Malformed for both creation calls and for the live calls below.
    let bad_bodies = [
        "{",
        "}",
        "{\"masterId\":",
        "[[[[[[[[[[",
        "\"\\u",
        "{\"masterId\": \"\\ud800\", \"memberIds\": []}",
        r#"{"masterId": "a", "memberIds": [], "protocol": 99999999999999999999999999}"#,
        r#"{"masterId": "a", "memberIds": [], "minBitrate": 1e30}"#,
        r#"{"masterId": "a", "memberIds": [], "maxBitrate": 18446744073709551616}"#,
        r#"{"masterId": {"nested": {"deep": [1,2,3]}}, "memberIds": []}"#,
    ];
    let mut soft = Soft::new();
    for b in bad_bodies {
        srv.soft_expect(&mut soft, "POST", "/room/convo", raw(b), 10002, None);
        srv.soft_expect(&mut soft, "POST", "/room/live", raw(b), 10002, None);
        srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/member"), raw(b), 10002, None);
        srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/merge"), raw(b), 10002, None);
    }
    for b in [
        r#"{"masterId": "a", "memberIds": [], "maxMemberNum": 1e30}"#,
        r#"{"masterId": "a", "memberIds": [], "maxMemberNum": 18446744073709551616}"#,
        r#"{"masterId": "a", "memberIds": [], "maxMemberNum": -18446744073709551616}"#,
    ] {
        srv.soft_expect(&mut soft, "POST", "/room/convo", raw(b), 10002, None);
    }
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    srv.soft_expect(&mut soft, "POST", "/room/convo", raw(&deep), 10002, None);
    for id in ["房间🚀", "🚀🚀🚀", "\u{202e}evil", "a/b", "%00"] {
        let e = srv.ok("GET", &format!("/room/{}/exist", enc(id)), ());
        soft.check(e.get("exist") == Some(&json!(false)), || format!("exist of {id:?}: {e}"));
        srv.soft_expect(&mut soft, "GET", &format!("/room/{}", enc(id)), (), 50001, None);
    }
    srv.soft_expect(&mut soft, "GET", &format!("/room/{long}"), (), 10002, None);
    srv.soft_expect(&mut soft, "POST", "/room/convo", json!({"masterId": long, "memberIds": []}), 10002, None);
    srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/member"), json!({"peerId": long}), 10002, None);
    srv.soft_expect(
        &mut soft,
        "POST",
        &format!("/room/{l}/live/member"),
        json!({"peerId": "p", "maxBitrate": -1}),
        10002,
        None,
    );

    // Garbage that is not HTTP at all, and requests cut short.
    for junk in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"POST /uprtc/api/v2/room/convo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"mast",
        b"GET /uprtc/api/v2/server/room/num HTTP/1.1\r\nhost: x\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
    ] {
        if let Ok(mut s) = TcpStream::connect(&srv.api) {
            s.set_write_timeout(Some(Duration::from_secs(5))).ok();
            let _ = s.write_all(junk);
        }
    }

    // A normal call still succeeds, and the earlier rooms are intact.
    let num_created_by_bad_input = u64_field(&srv.ok("GET", "/server/room/num", ()), "num") - 2;
    let fresh = srv.convo_id("房间🚀", &["🚀"]);
    assert_eq!(str_field(&srv.room(&fresh), "masterId"), "房间🚀");
    assert_eq!(srv.room(&c), before_c);
    assert_eq!(srv.room(&l), before_l);
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!(["guest"]));
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), 3 + num_created_by_bad_input);
    soft.check(num_created_by_bad_input == 0, || {
        format!("{num_created_by_bad_input} room(s) were created by refused input")
    });
    soft.done();
}

#[test]
fn content_type_is_not_checked() {
    let srv = Server::start(&[]);
    let body = br#"{"masterId": "plain", "memberIds": ["x"]}"#;
    let path = format!("{PREFIX}/room/convo");
    for headers in
        [&[][..], &[("content-type", "text/plain")][..], &[("content-type", "application/x-www-form-urlencoded")][..]]
    {
        let r = srv.request(&Auth::Key, "POST", &path, headers, raw(body));
        let env = r.envelope(&format!("POST /room/convo with {headers:?}"));
        let d = expect_ok(&(r.status, env), &format!("POST /room/convo with {headers:?}"));
        assert_eq!(str_field(&srv.room(str_field(&d, "roomId")), "masterId"), "plain");
    }
    let r = srv.request(
        &Auth::Key,
        "POST",
        &format!("{PREFIX}/room/live"),
        &[("content-type", "text/html")],
        raw(br#"{"masterId": "h"}"#),
    );
    let env = r.envelope("POST /room/live text/html");
    expect_ok(&(r.status, env), "POST /room/live with content-type text/html");
}
