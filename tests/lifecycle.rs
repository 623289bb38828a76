//! Clients that vanish, stall or come back, against the real binary: whoever ends a session
//! (the client, its network, the worker's timers), the room is told and the member leaves;
//! a refused join changes nothing; a reconnecting peer replaces a session that no longer
//! answers, and only such a session; a publisher that goes quiet is counted stopped, and
//! started again when it sends.

mod support;

use std::time::{Duration, Instant};

use support::client::*;
use support::*;
use tungstenite::Message;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;

/// A server whose clients must connect media within one second and answer pings within
/// `ping_timeout_ms`; writes to a client may stall for `write_timeout_ms`.
fn server(dir: &std::path::Path, ping_timeout_ms: u64, write_timeout_ms: u64) -> Server {
    let text = format!(
        "[client]\nping_timeout_ms = {ping_timeout_ms}\nwrite_timeout_ms = {write_timeout_ms}\n\
         [dataplane]\nconnect_timeout_ms = 1000\n"
    );
    Server::builder().config_text(dir, &text).start()
}

fn counter(srv: &Server, line: &str) -> u64 {
    metric(srv, line)
}

fn left_within(srv: &Server, room: &str, peer: &str, within: Duration) -> bool {
    poll_until(within, || (!joined(srv, room, peer)).then_some(())).is_some()
}

/// A WHIP publisher's identity, ICE credentials and offer of one VP8 stream (0xCAFE).
fn publisher_offer() -> (DtlsIdentity, IceCredentials, String) {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), 0xCAFE);
    (identity, ice, offer)
}

#[test]
fn a_whip_offer_that_never_connects_leaves_the_room_and_may_publish_again() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 30_000, 10_000);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut bob = join(&srv, &room, code, "bob");
    let (identity, ice, offer) = publisher_offer();

    let abandoned = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(abandoned.status, 201, "{}", abandoned.text());
    assert!(joined(&srv, &room, "alice"));
    assert_eq!(event_of(&mut bob, "peer-joined").unwrap()["peer"], "alice");
    assert_eq!(event_of(&mut bob, "track-added").unwrap()["peer"], "alice");

    // No ICE within the connect timeout: the worker frees the transport, and that ends the
    // WHIP session, its track and its presence.
    assert!(left_within(&srv, &room, "alice", Duration::from_secs(10)), "the silent publisher left");
    assert_eq!(event_of(&mut bob, "track-removed").unwrap()["peer"], "alice");
    assert_eq!(event_of(&mut bob, "peer-left").unwrap()["peer"], "alice");
    assert_eq!(counter(&srv, "uprtcd_transports_closed_total{reason=\"ice_timeout\"}"), 1);
    let location = abandoned.header("location").unwrap();
    assert_eq!(srv.client_request("DELETE", location, &[], Body::None).status, 404, "its location went too");

    // The same publisher comes back at once, with the scheme name in lower case.
    let bearer = format!("bearer {}", token(&srv, &room, "alice"));
    let headers = [("content-type", "application/sdp"), ("authorization", bearer.as_str())];
    let again = srv.client_request("POST", &format!("/whip/{}", enc(&room)), &headers, raw(&offer));
    assert_eq!(again.status, 201, "{}", again.text());
    let mut publisher = connect_media(&again.text(), ice, &identity);
    send_video(&mut publisher, 0xCAFE, 5);
    assert!(joined(&srv, &room, "alice"));
    assert_eq!(counter(&srv, "uprtcd_transports_connected_total"), 1);
}

#[test]
fn a_whip_delete_is_answered_after_the_member_left() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &[], 0);
    let (_, _, offer) = publisher_offer();
    for round in 0..10 {
        let published = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
        assert_eq!(published.status, 201, "round {round}: {}", published.text());
        let location = published.header("location").unwrap().to_owned();
        assert_eq!(srv.client_request("DELETE", &location, &[], Body::None).status, 200);
        assert!(!joined(&srv, &room, "alice"), "round {round}: gone when the DELETE is answered");
    }
}

#[test]
fn a_vanished_whip_publisher_leaves_when_its_consent_expires() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut bob = join(&srv, &room, code, "bob");
    // Bob keeps reading (and so answering pings) through the half minute this takes.
    let bob_hears_alice_leave =
        std::thread::spawn(move || patient_event_of(&mut bob, "peer-left", Duration::from_secs(60)));
    let (identity, ice, offer) = publisher_offer();
    let published = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(published.status, 201, "{}", published.text());
    let mut publisher = connect_media(&published.text(), ice.clone(), &identity);
    send_video(&mut publisher, 0xCAFE, 5);
    let vanished = Instant::now();
    // Killed: no DELETE, no DTLS close, no more consent checks.
    drop(publisher);

    let again = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(again.status, 409, "still there until its consent runs out");
    assert!(left_within(&srv, &room, "alice", Duration::from_secs(45)), "gone once its consent expired");
    let after = vanished.elapsed();
    assert!(after >= Duration::from_secs(25), "not before consent expiry: {after:?}");
    assert_eq!(bob_hears_alice_leave.join().unwrap().expect("bob is still connected")["peer"], "alice");
    assert_eq!(counter(&srv, "uprtcd_transports_closed_total{reason=\"consent_expired\"}"), 1);
    let back = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(back.status, 201, "publishes again at once: {}", back.text());
}

#[test]
fn a_silent_signalling_client_is_dropped_after_the_ping_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 1_500, 10_000);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut alice = join(&srv, &room, code, "alice");
    // Bob's client stops (its process is stopped, or its link is down): it reads nothing,
    // so it answers no ping.
    let _bob = join(&srv, &room, code, "bob");
    assert_eq!(event_of(&mut alice, "peer-joined").unwrap()["peer"], "bob");

    // Alice reads (and so answers pings) and hears that bob left.
    assert_eq!(event_of(&mut alice, "peer-left").unwrap()["peer"], "bob");
    assert!(!joined(&srv, &room, "bob"));
    assert!(joined(&srv, &room, "alice"), "a client that answers pings stays");
    assert_eq!(counter(&srv, "uprtcd_signalling_ping_timeouts_total"), 1);
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), 60_000, 500);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let _stalled = join(&srv, &room, code, "bob");
    let filler = "x".repeat(256 * 1024);
    // Far more than the socket buffers hold: the session's writes stall, then time out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while joined(&srv, &room, "bob") {
        assert!(Instant::now() < deadline, "a client that reads nothing is still joined");
        srv.ok("POST", &format!("/room/{}/message", enc(&room)), json!({"filler": filler}));
    }
    assert!(counter(&srv, "uprtcd_signalling_write_timeouts_total") >= 1);
    let _alice = join(&srv, &room, code, "alice");
}

#[test]
fn a_refused_join_changes_nothing() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "eve"], 2);
    let bob_token = token(&srv, &room, "bob");
    for _ in 0..3 {
        assert_eq!(refused(&srv, code, "eve", &bob_token), 50000, "bob's token is not eve's");
    }
    assert!(!joined(&srv, &room, "bob"), "no ghost of bob");
    assert_eq!(srv.room(&room)["total"], 0, "nobody counted");
    let _bob = join(&srv, &room, code, "bob");
    let _eve = join(&srv, &room, code, "eve");
}

#[test]
fn a_reconnecting_peer_replaces_only_a_session_that_does_not_answer() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut alice = join(&srv, &room, code, "alice");

    // Bob's first connection reads its socket (answers pings): a second one is refused.
    let bob = join(&srv, &room, code, "bob");
    assert_eq!(event_of(&mut alice, "peer-joined").unwrap()["peer"], "bob");
    let reading = Reading::start(bob);
    assert_eq!(refused(&srv, code, "bob", &token(&srv, &room, "bob")), 50004, "the first connection is alive");
    let silent_bob = reading.stop();

    // Now it reads nothing (its phone left the Wi-Fi): the next connection replaces it.
    let started = Instant::now();
    let (mut new_bob, first) = connect(&srv, code, "bob", &token(&srv, &room, "bob"));
    assert_eq!(first["type"], "joined", "{first}");
    assert!(started.elapsed() < Duration::from_secs(15), "within seconds: {:?}", started.elapsed());
    assert_eq!(event_of(&mut alice, "peer-left").unwrap()["peer"], "bob");
    assert_eq!(event_of(&mut alice, "peer-joined").unwrap()["peer"], "bob");
    assert!(joined(&srv, &room, "bob"));
    assert_eq!(counter(&srv, "uprtcd_sessions_replaced_total"), 1);
    drop(silent_bob);
    new_bob.send(Message::Text(json!({"type": "ping"}).to_string().into())).unwrap();
    assert_eq!(event_of(&mut new_bob, "pong").unwrap()["type"], "pong", "the new session is the live one");
    assert!(joined(&srv, &room, "bob"), "the old session's end did not take the new one's presence");
}

#[test]
fn client_supplied_sdp_never_reaches_the_log() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &[], 0);
    let (_, _, offer) = publisher_offer();
    let marker = "uprtcd-log-injection-marker";
    let hostile = offer
        .replace("a=mid:0\r\n", &format!("a=mid:0\r\na={marker}:{}\r\na=\u{1b}[31m{marker}\r\n", "A".repeat(4000)));
    for _ in 0..20 {
        let answered = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &hostile);
        assert_eq!(answered.status, 201, "unknown attributes are no reason to refuse: {}", answered.text());
        let location = answered.header("location").unwrap().to_owned();
        assert_eq!(srv.client_request("DELETE", &location, &[], Body::None).status, 200);
    }
    let garbage = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &format!("v=0\r\n{marker}\r\n"));
    assert_eq!(garbage.status, 400);
    assert!(!srv.log().contains(marker), "the offers' text was logged:\n{}", srv.log());
}

#[test]
fn a_restart_right_after_kill_9_binds_the_same_media_port() {
    // A port free for UDP and TCP alike, as the workers bind both.
    let port = loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let media = format!("127.0.0.1:{port}");
    let mut srv = Server::builder().args(&["--udp-listen", &media]).start();
    let (room, _) = convo(&srv, "alice", &[], 0);
    for round in 0..5 {
        // Sockets in use: a publisher's transport open on the worker, which answers on the port.
        let (_, _, offer) = publisher_offer();
        let published = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
        assert_eq!(published.status, 201, "round {round}: {}", published.text());
        let ports: Vec<u16> = candidates(&published.text()).iter().map(|(_, address, _)| address.port()).collect();
        assert_eq!(ports, vec![port], "round {round}: the worker is on {media}");
        srv.kill9();
        srv.restart();
    }
}

#[test]
fn offers_that_never_connect_are_capped_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[client]\nmax_pending_transports_per_ip = 2\n[dataplane]\nconnect_timeout_ms = 1000\n";
    let srv = Server::builder().config_text(dir.path(), text).start();
    let (room, _) = convo(&srv, "alice", &["bob", "carol", "dave"], 0);
    let (_, _, offer) = publisher_offer();
    let post = |peer: &str| whip_post(&srv, "whip", &room, &token(&srv, &room, peer), &offer);
    assert_eq!(post("alice").status, 201);
    assert_eq!(post("bob").status, 201);
    let refused = post("carol");
    assert_eq!((refused.status, refused.json("a refusal")["code"].as_u64()), (503, Some(50005)), "a third waits");
    assert!(!joined(&srv, &room, "carol"), "the refused client holds nothing");
    assert_eq!(counter(&srv, "uprtcd_transports_pending_refused_total"), 1);
    // The two never connect: their places free once the worker drops them.
    assert!(left_within(&srv, &room, "alice", Duration::from_secs(10)));
    assert!(left_within(&srv, &room, "bob", Duration::from_secs(10)));
    assert_eq!(counter(&srv, "uprtcd_transports_pending"), 0);
    assert_eq!(post("dave").status, 201);
}

#[test]
fn a_publisher_that_goes_quiet_is_counted_stopped_and_started_again() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &[], 0);
    let (identity, ice, offer) = publisher_offer();
    let answer = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(answer.status, 201, "{}", answer.text());
    let mut publisher = connect_media(&answer.text(), ice, &identity);
    let count_of = |what: &str| counter(&srv, &format!("uprtcd_producers_{what}_total"));
    assert_eq!(count_of("started"), 0, "published, but nothing sent yet");
    send_video(&mut publisher, 0xCAFE, 20);
    let waited = poll_until(Duration::from_secs(10), || (count_of("started") == 1).then_some(()));
    assert!(waited.is_some(), "the first packets start the stream");
    // Silence, with consent kept: the stream stops, the publisher stays.
    let stopped = poll_until(Duration::from_secs(30), || {
        publisher.refresh_consent().unwrap();
        (count_of("stopped") == 1).then_some(())
    });
    assert!(stopped.is_some(), "a quiet publisher's stream is counted stopped");
    assert!(joined(&srv, &room, "alice"), "and the publisher is still in the room");
    send_video_from(&mut publisher, 0xCAFE, 20, 5);
    let restarted = poll_until(Duration::from_secs(10), || (count_of("started") == 2).then_some(()));
    assert!(restarted.is_some(), "packets after the stop start it again");
    assert_eq!(count_of("stopped"), 1);
}

#[test]
fn a_client_whose_certificate_is_not_its_fingerprint_is_refused_and_counted() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &[], 0);
    // The offer names one certificate; the client shows another.
    let (_, ice, offer) = publisher_offer();
    let published = whip_post(&srv, "whip", &room, &token(&srv, &room, "alice"), &offer);
    assert_eq!(published.status, 201, "{}", published.text());
    let impostor = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let mut client = media_client(&published.text(), ice, &impostor);
    assert!(client.connect(Duration::from_secs(3)).is_err(), "no keys for a certificate the offer did not name");

    let mismatches = "uprtcd_dtls_failures_total{reason=\"fingerprint_mismatch\"}";
    poll_until(Duration::from_secs(5), || (counter(&srv, mismatches) == 1).then_some(())).expect("counted");
    assert_eq!(counter(&srv, "uprtcd_transports_closed_total{reason=\"dtls_failed\"}"), 1);
    assert!(left_within(&srv, &room, "alice", Duration::from_secs(5)), "its session ends with its transport");
}
