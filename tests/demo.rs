//! The SDK and the demo mode on the client listener, against the real binary: `/uprtc.js` is
//! always served to any origin; `/demo` and `POST /demo/join` exist only in demo mode, create
//! and join rooms through the registry (so they persist and the REST API sees them), hand out
//! working join tokens, and refuse bad input with the spec's codes. The demo is fenced in: it
//! invites only into its own rooms, keeps a bounded number of them, closes them when they are
//! idle or old, and paces each source address.

mod support;

use std::time::{Duration, Instant};

use support::client::{connect, metric, patient_event_of};
use support::*;

fn demo_join(srv: &Server, body: Value) -> ClientResp {
    srv.client_request("POST", "/demo/join", &[], Body::Json(body))
}

/// A server in demo mode with these `[client]` keys of the file (they have no flags); the
/// directory holds the file and must live as long as the server.
fn demo_server(client_keys: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::builder().demo(true).config_text(dir.path(), &format!("[client]\n{client_keys}\n")).start();
    (srv, dir)
}

/// A refusal's HTTP status and envelope code, checking the envelope's shape.
#[track_caller]
fn refusal(r: &ClientResp, what: &str) -> (u16, u64) {
    let env = r.json(what);
    check_envelope_shape(&env, what);
    (r.status, env["code"].as_u64().unwrap_or_default())
}

fn room_exists(srv: &Server, room: &str) -> bool {
    bool_field(&srv.ok("GET", &format!("/room/{}/exist", enc(room)), ()), "exist")
}

/// A demo room of `peer`: its id, invitation code and `peer`'s token.
#[track_caller]
fn demo_room(srv: &Server, peer: &str) -> (String, u64, String) {
    let r = demo_join(srv, json!({"peer": peer}));
    assert_eq!(r.status, 200, "{}", r.text());
    let created = r.json("create");
    (
        str_field(&created, "roomId").to_owned(),
        u64_field(&created, "invitationCode"),
        str_field(&created, "token").into(),
    )
}

/// How long the expiry tests wait for the sweep: far beyond the limits they configure.
const EXPIRY_WAIT: Duration = Duration::from_secs(30);

/// Joins a room over signalling with what `/demo/join` answered; returns the first event.
fn first_event(joined: &Value, peer: &str) -> Value {
    let url = format!(
        "{}{}?peer={}&token={}",
        str_field(joined, "serverUrl"),
        u64_field(joined, "invitationCode"),
        enc(peer),
        str_field(joined, "token")
    );
    let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    }
    let event: Value = loop {
        match socket.read().expect("a first event") {
            tungstenite::Message::Text(text) => break serde_json::from_str(&text).expect("JSON event"),
            _ => continue,
        }
    };
    let _ = socket.close(None);
    event
}

#[test]
fn the_sdk_is_served_to_any_origin() {
    let srv = Server::builder().demo(false).start();
    let r = srv.client_request("GET", "/uprtc.js", &[], Body::None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/javascript")), "{:?}", r.headers);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let text = r.text();
    assert!(text.contains("export class Room") && text.contains("static join("), "the SDK's entry point");
}

#[test]
fn the_demo_page_imports_the_sdk() {
    let srv = Server::start(&[]);
    let r = srv.client_request("GET", "/demo", &[], Body::None);
    assert_eq!(r.status, 200, "demo mode is on by default: {}", r.text());
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{:?}", r.headers);
    let page = r.text();
    assert!(page.contains("from '/uprtc.js'"), "the page uses the SDK");
    // The health check still answers beside the static routes, and a browser's own favicon
    // request is not taken for an invitation code.
    assert_eq!(srv.client_request("GET", "/healthz", &[], Body::None).status, 200);
    assert_eq!(srv.client_request("GET", "/favicon.ico", &[], Body::None).status, 204);
}

#[test]
fn create_then_join_a_room_with_tokens_that_work() {
    let srv = Server::start(&[]);
    let created = demo_join(&srv, json!({"peer": "alice"}));
    assert_eq!(created.status, 200, "{}", created.text());
    let created = created.json("create");
    let room = str_field(&created, "roomId").to_owned();
    assert_generated_id(&room);
    let code = u64_field(&created, "invitationCode");
    assert!((100_000_000..=999_999_999).contains(&code), "{created}");
    assert_eq!(str_field(&created, "serverUrl"), srv.url_prefix());
    assert!(!str_field(&created, "token").is_empty());

    let info = srv.room(&room);
    assert_eq!(info["type"], "convo");
    assert_eq!(info["masterId"], "alice");
    assert_eq!(sorted(&info["invitedUserIds"]), set_of(&["alice"]));

    // The code as a string (from the page's input) or as a number.
    let joined = demo_join(&srv, json!({"peer": "bob", "invitationCode": code.to_string()}));
    assert_eq!(joined.status, 200, "{}", joined.text());
    let joined = joined.json("join");
    assert_eq!(str_field(&joined, "roomId"), room);
    assert_eq!(u64_field(&joined, "invitationCode"), code);
    let again = demo_join(&srv, json!({"peer": "carol", "invitationCode": code}));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(sorted(&srv.room(&room)["invitedUserIds"]), set_of(&["alice", "bob", "carol"]));

    // The tokens admit their peers; someone not invited is still refused.
    let event = first_event(&created, "alice");
    assert_eq!(event["type"], "joined", "{event}");
    let event = first_event(&joined, "bob");
    assert_eq!(event["type"], "joined", "{event}");
    assert_eq!(event["room"], room.as_str());
    let data = srv.ok("POST", &format!("/room/{}/token", enc(&room)), json!({"peerId": "mallory"}));
    let outsider = json!({"serverUrl": srv.url_prefix(), "invitationCode": code, "token": data["token"]});
    let event = first_event(&outsider, "mallory");
    assert_eq!((event["type"].as_str(), event["code"].as_u64()), (Some("error"), Some(50003)), "{event}");
}

#[test]
fn invitations_are_persisted() {
    let mut srv = Server::start(&[]);
    let created = demo_join(&srv, json!({"peer": "alice"})).json("create");
    let room = str_field(&created, "roomId").to_owned();
    let code = u64_field(&created, "invitationCode");
    assert_eq!(demo_join(&srv, json!({"peer": "bob", "invitationCode": code})).status, 200);
    srv.kill9();
    srv.restart();
    assert_eq!(sorted(&srv.room(&room)["invitedUserIds"]), set_of(&["alice", "bob"]));
    // Still a demo room: the demo invites into it.
    let again = demo_join(&srv, json!({"peer": "carol", "invitationCode": code}));
    assert_eq!(again.status, 200, "{}", again.text());
}

#[test]
fn bad_input_gets_the_spec_codes() {
    // More requests than a minute's default joins from one address.
    let (srv, _dir) = demo_server("demo_joins_per_minute = 100");
    let mut soft = Soft::new();
    let cases: [(&str, Body, u16, u64); 9] = [
        ("no body", Body::None, 400, 10002),
        ("not JSON", raw("{peer"), 400, 10002),
        ("no peer", Body::Json(json!({})), 400, 10002),
        ("empty peer", Body::Json(json!({"peer": ""})), 400, 10002),
        ("peer too long", Body::Json(json!({"peer": "p".repeat(129)})), 400, 10002),
        ("peer not a string", Body::Json(json!({"peer": 7})), 400, 10002),
        ("code not digits", Body::Json(json!({"peer": "bob", "invitationCode": "12ab"})), 400, 10002),
        ("code negative", Body::Json(json!({"peer": "bob", "invitationCode": -5})), 400, 10002),
        ("no such room", Body::Json(json!({"peer": "bob", "invitationCode": 123_456_789})), 404, 50001),
    ];
    for (what, body, status, code) in cases {
        let r = srv.client_request("POST", "/demo/join", &[], body);
        let env: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        soft.check(r.status == status && env["code"].as_u64() == Some(code), || {
            format!("{what}: expected HTTP {status} code {code}, got HTTP {} {}", r.status, r.text())
        });
        soft.add(envelope_problem(&env, what));
    }
    let big = format!("{{\"peer\": \"{}\"}}", "x".repeat(8192));
    let r = srv.client_request("POST", "/demo/join", &[], raw(big));
    soft.check(r.status == 413, || format!("an oversized body: expected HTTP 413, got {} {}", r.status, r.text()));
    soft.done();
}

#[test]
fn the_demo_invites_only_into_its_own_rooms() {
    let srv = Server::start(&[]);
    let convo = srv.create_convo("alice", &["bob"]);
    let (convo_id, convo_code) = (str_field(&convo, "roomId").to_owned(), u64_field(&convo, "invitationCode"));
    let live = srv.create_live("host");
    let (live_id, live_code) = (str_field(&live, "roomId").to_owned(), u64_field(&live, "invitationCode"));
    let unknown = demo_join(&srv, json!({"peer": "mallory", "invitationCode": 123_456_789}));
    assert_eq!(refusal(&unknown, "an unknown code"), (404, 50001));
    for (what, code) in [("a REST conversation room", convo_code), ("a REST live room", live_code)] {
        let r = demo_join(&srv, json!({"peer": "mallory", "invitationCode": code}));
        assert_eq!(refusal(&r, what), (404, 50001), "{what}");
        assert_eq!(r.text(), unknown.text(), "{what}: the answer of an unknown code, so codes cannot be probed");
        let r = demo_join(&srv, json!({"peer": "mallory", "invitationCode": code.to_string()}));
        assert_eq!(r.text(), unknown.text(), "{what}, the code as a string");
    }
    // Nobody was invited into the business server's rooms.
    assert_eq!(sorted(&srv.room(&convo_id)["invitedUserIds"]), set_of(&["alice", "bob"]));
    assert!(arr_field(&srv.room(&live_id), "invitedUserIds").is_empty(), "{}", srv.room(&live_id));
    let token =
        str_field(&srv.ok("POST", &format!("/room/{}/token", enc(&convo_id)), json!({"peerId": "mallory"})), "token")
            .to_owned();
    let (_, first) = connect(&srv, convo_code, "mallory", &token);
    assert_eq!((first["type"].as_str(), first["code"].as_u64()), (Some("error"), Some(50003)), "{first}");

    // The demo's own rooms still take invitations.
    let (room, code, _) = demo_room(&srv, "carol");
    assert_eq!(demo_join(&srv, json!({"peer": "dave", "invitationCode": code})).status, 200);
    assert_eq!(sorted(&srv.room(&room)["invitedUserIds"]), set_of(&["carol", "dave"]));
    assert_eq!(metric(&srv, "uprtcd_demo_joins_refused_total{reason=\"not_a_demo_room\"}"), 4);
    assert_eq!(metric(&srv, "uprtcd_demo_joins_refused_total{reason=\"unknown_code\"}"), 1);
    assert_eq!(metric(&srv, "uprtcd_demo_rooms "), 1, "the business server's rooms are not demo rooms");
}

#[test]
fn demo_rooms_beyond_the_cap_are_refused() {
    let (srv, _dir) = demo_server("demo_max_rooms = 3");
    let rooms: Vec<(String, u64, String)> = (0..3).map(|i| demo_room(&srv, &format!("host{i}"))).collect();
    let r = demo_join(&srv, json!({"peer": "host3"}));
    assert_eq!(refusal(&r, "a room beyond the cap"), (503, 50015), "{}", r.text());
    // An invitation opens no room; the business server's rooms are not capped.
    assert_eq!(demo_join(&srv, json!({"peer": "guest", "invitationCode": rooms[0].1})).status, 200);
    srv.create_convo("biz", &[]);
    assert_eq!(srv.ok("GET", "/server/room/num", ())["num"], 4);
    assert_eq!(metric(&srv, "uprtcd_demo_rooms "), 3);
    assert_eq!(metric(&srv, "uprtcd_demo_joins_refused_total{reason=\"room_cap\"}"), 1);
    // A closed demo room makes room for another.
    srv.ok("DELETE", &format!("/room/{}", enc(&rooms[0].0)), ());
    demo_room(&srv, "host3");
}

#[test]
fn the_eleventh_join_in_a_minute_from_one_address_gets_429() {
    let (srv, _dir) = demo_server("demo_joins_per_minute = 10\ndemo_max_rooms = 100");
    let started = Instant::now();
    let mut answers: Vec<ClientResp> = Vec::new();
    // The bucket holds ten joins and gains one every six seconds: on a machine slow enough
    // for that to matter, a few more are admitted before the first 429.
    while answers.last().is_none_or(|r| r.status == 200) && answers.len() < 30 {
        answers.push(demo_join(&srv, json!({"peer": format!("p{}", answers.len())})));
    }
    let elapsed = started.elapsed();
    let admitted = answers.iter().take_while(|r| r.status == 200).count();
    let refilled = (elapsed.as_secs_f64() / 6.0) as usize;
    let limited = answers.last().expect("answers");
    assert_eq!(refusal(limited, "a join beyond the rate"), (429, 10003), "after {admitted} joins: {}", limited.text());
    assert!(
        (10..=10 + refilled).contains(&admitted),
        "{admitted} joins admitted in {elapsed:?} before the first 429; expected 10 (+{refilled} refilled)"
    );
    let retry: u64 = limited.header("retry-after").and_then(|v| v.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    assert_eq!(srv.ok("GET", "/server/room/num", ())["num"], admitted, "the refused join opened no room");
    assert_eq!(metric(&srv, "uprtcd_demo_joins_refused_total{reason=\"rate_limited\"}"), 1);
    // Only the joins are paced.
    assert_eq!(srv.client_request("GET", "/demo", &[], Body::None).status, 200);
}

#[test]
fn an_idle_demo_room_is_closed_and_its_code_no_longer_works() {
    // Pings far apart: the test client does not read while it waits.
    let (srv, _dir) = demo_server("demo_room_idle_ms = 1000\nping_timeout_ms = 120000");
    let (occupied, occupied_code, token) = demo_room(&srv, "alice");
    let (_alice, first) = connect(&srv, occupied_code, "alice", &token);
    assert_eq!(first["type"], "joined", "{first}");
    let (idle, idle_code, _) = demo_room(&srv, "bob");
    let rest = srv.convo_id("biz", &[]);
    let closed = poll_until(EXPIRY_WAIT, || (!room_exists(&srv, &idle)).then_some(()));
    assert!(closed.is_some(), "the idle demo room is open after {EXPIRY_WAIT:?}; log:\n{}", srv.log());
    let r = demo_join(&srv, json!({"peer": "carol", "invitationCode": idle_code}));
    assert_eq!(refusal(&r, "the code of an expired room"), (404, 50001));
    assert!(room_exists(&srv, &occupied), "a demo room with a client is not idle");
    assert!(room_exists(&srv, &rest), "the business server's rooms do not expire");
    assert_eq!(metric(&srv, "uprtcd_demo_rooms_expired_total{reason=\"idle\"}"), 1);
}

#[test]
fn a_demo_room_is_closed_at_its_maximum_age_with_its_clients_told() {
    let (srv, _dir) = demo_server("demo_room_max_age_ms = 1500\nping_timeout_ms = 120000");
    let (room, code, token) = demo_room(&srv, "alice");
    let (mut alice, first) = connect(&srv, code, "alice", &token);
    assert_eq!(first["type"], "joined", "{first}");
    let closed = patient_event_of(&mut alice, "room-closed", EXPIRY_WAIT);
    assert!(closed.is_some(), "no room-closed within {EXPIRY_WAIT:?}; log:\n{}", srv.log());
    assert!(!room_exists(&srv, &room));
    let r = demo_join(&srv, json!({"peer": "bob", "invitationCode": code}));
    assert_eq!(refusal(&r, "the code of an expired room"), (404, 50001));
    assert_eq!(metric(&srv, "uprtcd_demo_rooms_expired_total{reason=\"max_age\"}"), 1);
}

#[test]
fn demo_mode_off_answers_404() {
    let srv = Server::builder().demo(false).start();
    let page = srv.client_request("GET", "/demo", &[], Body::None);
    assert_eq!(page.status, 404, "{}", page.text());
    let join = demo_join(&srv, json!({"peer": "alice"}));
    assert_eq!(join.status, 404, "{}", join.text());
    assert_eq!(srv.ok("GET", "/server/room/num", ())["num"], 0, "no room was created");
    assert_eq!(srv.client_request("GET", "/uprtc.js", &[], Body::None).status, 200, "the SDK is always served");
}
