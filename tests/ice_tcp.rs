//! ICE-TCP against the real binary: a few hundred connections to a worker's media port that
//! never authenticate are closed by the server once `dataplane.tcp_auth_timeout_ms` passed,
//! and counted in /metrics, and a client that does ICE over TCP afterwards connects and
//! stays past that deadline.

mod support;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::*;
use support::*;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::Received;

/// Idle connections opened at once: a few hundred, well within a test's descriptor limit.
const STRANGERS: usize = 300;
const AUTH_TIMEOUT: Duration = Duration::from_millis(1000);
/// Generous: the server closes them about [`AUTH_TIMEOUT`] after their accept.
const WAIT: Duration = Duration::from_secs(30);

/// The answer to a WHIP publisher `peer` of `room`, and the client's credentials.
fn publish_over_whip(srv: &Server, room: &str, peer: &str) -> (String, IceCredentials, DtlsIdentity) {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), 0xCAFE);
    let published = whip_post(srv, "whip", room, &token(srv, room, peer), &offer);
    assert_eq!(published.status, 201, "{}", published.text());
    (published.text(), ice, identity)
}

/// Worker 0's connections closed for want of an authenticated ICE check.
fn unauthenticated_closes(srv: &Server) -> u64 {
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("uprtcd_worker_drops_total{worker=\"0\",") && l.contains("reason=\"tcp_unauthenticated\"")
        })
        .unwrap_or_else(|| panic!("no tcp_unauthenticated drops in:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).expect("a number") as u64
}

#[test]
fn idle_tcp_connections_are_closed_after_the_deadline_and_ice_tcp_still_connects() {
    let dir = tempfile::tempdir().unwrap();
    // Every stranger comes from 127.0.0.1, so that address gets room for all of them.
    let config = format!(
        "[dataplane]\ntcp_auth_timeout_ms = {}\ntcp_max_connections_per_ip = {}\n",
        AUTH_TIMEOUT.as_millis(),
        STRANGERS + 10
    );
    let srv = Server::builder().config_text(dir.path(), &config).start();
    let data = srv.ok("POST", "/room/convo", json!({"masterId": "alice", "memberIds": ["bob"], "protocol": 1}));
    let room = str_field(&data, "roomId").to_owned();
    let (answer, _, _) = publish_over_whip(&srv, &room, "alice");
    let (_, media_port, _) = candidates(&answer)
        .into_iter()
        .find(|(kind, _, _)| kind == "tcp")
        .expect("a TCP room's answer has a tcp candidate");

    let opened = Instant::now();
    let mut strangers: Vec<TcpStream> = (0..STRANGERS).map(|_| TcpStream::connect(media_port).unwrap()).collect();
    for (i, stranger) in strangers.iter_mut().enumerate() {
        // The server sends a stranger nothing: the first read sees the end, or a reset.
        stranger.set_read_timeout(Some(WAIT)).unwrap();
        let end = stranger.read(&mut [0u8; 1]);
        let waited = end.as_ref().is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        assert!(matches!(end, Ok(0)) || end.is_err() && !waited, "idle connection {i} after {WAIT:?}: {end:?}");
    }
    // Each deadline runs from the server's accept, which came after `opened`.
    assert!(opened.elapsed() >= AUTH_TIMEOUT, "closed before the deadline: {:?}", opened.elapsed());
    // Counters are published about once a second.
    poll_until(WAIT, || (unauthenticated_closes(&srv) == STRANGERS as u64).then_some(()))
        .unwrap_or_else(|| panic!("/metrics counts {} closes, not {STRANGERS}", unauthenticated_closes(&srv)));

    // A client that does ICE over TCP connects, and its connection outlives the deadline: the
    // worker's receiver report for its media comes back on it.
    let (answer, ice, identity) = publish_over_whip(&srv, &room, "bob");
    let mut publisher = connect_media_tcp(&answer, ice, &identity);
    std::thread::sleep(2 * AUTH_TIMEOUT);
    send_video_with(|buf, len| publisher.send_rtp(buf, len), 0xCAFE, 0, 20);
    let mut buf = vec![0u8; 2048];
    let report = poll_until(WAIT, || match publisher.receive(&mut buf, Duration::from_millis(500)) {
        Some(Ok(Received::Rtcp { .. })) => Some(Ok(())),
        Some(Err(e)) => Some(Err(e)),
        _ => None,
    });
    assert!(matches!(report, Some(Ok(()))), "the ICE-TCP client's connection carries RTCP back: {report:?}");
    assert_eq!(unauthenticated_closes(&srv), STRANGERS as u64, "the ICE-TCP client was not counted");
}
