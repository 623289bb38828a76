//! The HTTP listeners' bounds against the real binary: what idle connections and idle
//! signalling sessions cost in memory, the header-read and idle timeouts, the connection cap
//! (an upgraded WebSocket keeps its place under it), the counters of each in `/metrics`, the
//! graceful stop with connections open, and the open-files limit the server takes. A normal
//! request and a WebSocket upgrade on the client listener are served by the same loop
//! (tests/signalling.rs has the rest of the WebSocket's life). Timeouts are short in these
//! servers' configurations, and every wait for the server to act allows many times the
//! configured time: only what happens is checked, not when.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::{convo, join, metric};
use support::*;

/// How long a test waits for the server to close connections whose timeout is a second or a
/// few: generous, for noisy machines.
const CLOSE_WAIT: Duration = Duration::from_secs(60);
/// How long a counter may take to show what the test just caused.
const METRIC_WAIT: Duration = Duration::from_secs(30);
/// The memory a connection may cost, idle or with part of a request's head sent.
const MAX_BYTES_PER_CONNECTION: u64 = 64 * 1024;
/// The memory an idle, joined signalling session may cost: its WebSocket, member and queue.
const MAX_BYTES_PER_SESSION: u64 = 32 * 1024;
/// The start of a request's head that never ends.
const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n";

/// A server with these extra TOML lines in its configuration file (listen addresses, data dir
/// and secret come from the harness's flags).
fn start_with(toml: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(dir.path(), "http.toml", toml);
    let srv = Server::builder().args(&["--config", &config.display().to_string()]).start();
    (srv, dir)
}

/// Raises this process's soft limit of open files to at least `n` (uprtcd, started after,
/// inherits it: it does not change its own).
fn raise_open_files_limit(n: u64) {
    let mut limit = open_files_limits();
    if limit.rlim_cur < n {
        limit.rlim_cur = n.min(limit.rlim_max);
        set_open_files_limits(&limit);
    }
    assert!(limit.rlim_cur >= n, "this test needs {n} open files; the hard limit is {}", limit.rlim_max);
}

/// This process's soft and hard limits of open files.
fn open_files_limits() -> libc::rlimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `limit`, which lives for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0, "getrlimit");
    limit
}

fn set_open_files_limits(limit: &libc::rlimit) {
    // SAFETY: setrlimit only reads `limit`.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) }, 0, "setrlimit");
}

/// The soft limit of open files of process `pid`, from /proc/PID/limits.
fn soft_open_files_limit_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    line["Max open files".len()..].split_whitespace().next().and_then(|v| v.parse().ok()).expect("a number")
}

fn connections(srv: &Server, listener: &str) -> u64 {
    metric(srv, &format!("uprtcd_http_connections{{listener=\"{listener}\"}}"))
}

fn refused(srv: &Server, listener: &str) -> u64 {
    metric(srv, &format!("uprtcd_http_connections_refused_total{{listener=\"{listener}\"}}"))
}

fn timeouts(srv: &Server, listener: &str, kind: &str) -> u64 {
    metric(srv, &format!("uprtcd_http_timeouts_total{{listener=\"{listener}\",kind=\"{kind}\"}}"))
}

/// Waits until `value()` is `want`; panics with the last value and the server's log if it
/// never is.
#[track_caller]
fn wait_for(srv: &Server, what: &str, want: u64, mut value: impl FnMut() -> u64) {
    let mut last = None;
    if poll_until(METRIC_WAIT, || {
        let v = value();
        last = Some(v);
        (v == want).then_some(())
    })
    .is_none()
    {
        panic!("{what}: wanted {want}, still {last:?} after {METRIC_WAIT:?}; server log:\n{}", srv.log());
    }
}

/// `n` connections to `addr`, each having sent `head` (nothing if empty).
fn open(addr: &str, n: usize, head: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
            if !head.is_empty() {
                s.write_all(head).unwrap_or_else(|e| panic!("connection {i}: write: {e}"));
            }
            s
        })
        .collect()
}

/// [`support::healthz`] on `s`, with a bound on the wait.
fn healthz(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("set_read_timeout");
    support::healthz(s)
}

#[test]
fn a_thousand_idle_connections_cost_little_memory() {
    const N: usize = 1000;
    raise_open_files_limit(3 * N as u64);
    // Timeouts far longer than the test, so that every connection is still open when measured.
    let (srv, _dir) = start_with("[api]\nmax_http_connections = 2100\nheader_read_timeout_ms = 600000\n");
    // Lazily made things (the first request's buffers, the metrics text) exist before the
    // baseline.
    for _ in 0..3 {
        connections(&srv, "api");
    }
    let base = rss_bytes(srv.pid);
    let silent = open(&srv.api, N, b"");
    // Each count includes the connection that asks for it.
    wait_for(&srv, "API connections after the silent ones", N as u64 + 1, || connections(&srv, "api"));
    let after_silent = rss_bytes(srv.pid);
    let partial = open(&srv.api, N, PARTIAL_HEAD);
    wait_for(&srv, "API connections after the partial heads", 2 * N as u64 + 1, || connections(&srv, "api"));
    // The server reads the partial heads soon after accepting; give it a moment so that their
    // buffers are counted (a late read only makes the number smaller).
    std::thread::sleep(Duration::from_secs(1));
    let after_partial = rss_bytes(srv.pid);
    let per_silent = after_silent.saturating_sub(base) / N as u64;
    let per_partial = after_partial.saturating_sub(after_silent) / N as u64;
    println!(
        "VmRSS {} KiB; +{N} silent connections: {} KiB ({per_silent} B each); \
         +{N} with a partial head: {} KiB ({per_partial} B each)",
        base / 1024,
        after_silent / 1024,
        after_partial / 1024
    );
    assert!(per_silent < MAX_BYTES_PER_CONNECTION, "a silent connection costs {per_silent} B");
    assert!(per_partial < MAX_BYTES_PER_CONNECTION, "a connection with a partial head costs {per_partial} B");
    drop((silent, partial));
}

#[test]
fn the_server_takes_the_hard_limit_of_open_files() {
    let ours = open_files_limits();
    let low = libc::rlimit { rlim_cur: 256.min(ours.rlim_max), rlim_max: ours.rlim_max };
    // The server inherits the low soft limit a login shell would give it; this process gets
    // its own back at once (nextest runs each test in a process of its own).
    set_open_files_limits(&low);
    let srv = Server::start(&[]);
    set_open_files_limits(&ours);
    assert_eq!(soft_open_files_limit_of(srv.pid), ours.rlim_max, "the soft limit is raised to the hard one");
}

#[test]
fn idle_signalling_sessions_cost_little_memory() {
    const N: usize = 300;
    raise_open_files_limit(2 * N as u64 + 200);
    // Pings far apart, so that these clients, which never read, stay joined while measured.
    let (srv, _dir) = start_with("[client]\nping_timeout_ms = 600000\n");
    let room = str_field(&srv.ok("POST", "/room/live", json!({"masterId": "host"})), "roomId").to_owned();
    let code = u64_field(&srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None), "invitationCode");
    // An audience hears of nobody but the stage, so nothing queues for these clients; the
    // first joins make what every session shares (the room's hub, the first buffers).
    let mut audience: Vec<_> = (0..10).map(|i| join(&srv, &room, code, &format!("warm{i}"))).collect();
    let base = rss_bytes(srv.pid);
    audience.extend((0..N).map(|i| join(&srv, &room, code, &format!("viewer{i}"))));
    assert_eq!(u64_field(&srv.room(&room), "total"), N as u64 + 10);
    let after = rss_bytes(srv.pid);
    let per_session = after.saturating_sub(base) / N as u64;
    println!("VmRSS {} KiB; +{N} idle signalling sessions: {} KiB ({per_session} B each)", base / 1024, after / 1024);
    assert!(per_session < MAX_BYTES_PER_SESSION, "an idle signalling session costs {per_session} B");
    drop(audience);
}

#[test]
fn a_thousand_idle_connections_are_closed_after_the_header_read_timeout() {
    const N: usize = 1000;
    raise_open_files_limit(2 * N as u64 + 200);
    let (srv, _dir) = start_with("[api]\nmax_http_connections = 1100\nheader_read_timeout_ms = 1000\n");
    let silent = open(&srv.api, N / 2, b"");
    let partial = open(&srv.api, N / 2, PARTIAL_HEAD);
    let deadline = Instant::now() + CLOSE_WAIT;
    let still_open = silent.iter().chain(&partial).filter(|s| !closed_by_server(s, deadline)).count();
    assert_eq!(still_open, 0, "connections still open {CLOSE_WAIT:?} after a 1 s header-read timeout");
    wait_for(&srv, "header timeouts", N as u64, || timeouts(&srv, "api", "header"));
    assert_eq!(timeouts(&srv, "api", "idle"), 0, "a first request's wait is the header-read timeout's");
    wait_for(&srv, "API connections once all are closed", 1, || connections(&srv, "api"));
}

#[test]
fn a_client_sending_its_head_byte_by_byte_is_cut_off() {
    let (srv, _dir) = start_with("[api]\nheader_read_timeout_ms = 1000\n");
    // A byte every 100 ms, each well within a second; the whole head would take ~60 s.
    let head = format!("GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: {}\r\n\r\n", "a".repeat(550));
    let mut s = TcpStream::connect(&srv.api).expect("connect");
    s.set_nonblocking(true).expect("set_nonblocking");
    let mut sent = 0;
    let closed = head.as_bytes().iter().any(|&byte| {
        std::thread::sleep(Duration::from_millis(100));
        let mut probe = [0u8; 1];
        match s.read(&mut probe) {
            Ok(0) => return true,
            Ok(_) => panic!("the server answered a head it had not received whole"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        if s.write_all(&[byte]).is_err() {
            return true;
        }
        sent += 1;
        false
    });
    assert!(closed, "the server read the whole head, sent over ~60 s, with a 1 s header-read timeout");
    println!("closed after {sent} of {} bytes", head.len());
    wait_for(&srv, "header timeouts", 1, || timeouts(&srv, "api", "header"));
}

#[test]
fn a_kept_alive_connection_waits_the_idle_timeout_then_the_header_read_timeout() {
    // The idle timeout is longer than the header-read timeout, so a connection closed while
    // waiting for its next request shows which of the two ended it.
    let (srv, _dir) = start_with("[client]\nheader_read_timeout_ms = 1000\nidle_timeout_ms = 3000\n");
    let mut idle = TcpStream::connect(&srv.client).expect("connect");
    let answer = healthz(&mut idle);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed_by_server(&idle, Instant::now() + CLOSE_WAIT), "an idle kept-alive connection stays open");
    wait_for(&srv, "idle timeouts", 1, || timeouts(&srv, "client", "idle"));
    assert_eq!(timeouts(&srv, "client", "header"), 0, "the wait for a next request is the idle timeout's");

    // A next request that begins and stalls is the header-read timeout's.
    let mut stalled = TcpStream::connect(&srv.client).expect("connect");
    healthz(&mut stalled);
    stalled.write_all(b"GET /healthz HTTP/1.1\r\n").expect("write part of a head");
    assert!(closed_by_server(&stalled, Instant::now() + CLOSE_WAIT), "a stalled head is never cut off");
    wait_for(&srv, "header timeouts", 1, || timeouts(&srv, "client", "header"));
    assert_eq!(timeouts(&srv, "client", "idle"), 1);
}

#[test]
fn over_the_cap_a_connection_is_closed_at_once_and_a_websocket_keeps_its_place() {
    let (srv, _dir) = start_with("[client]\nmax_http_connections = 1\nheader_read_timeout_ms = 600000\n");
    let (room, code) = convo(&srv, "m1", &["m1"], 2);
    let socket = join(&srv, &room, code, "m1");
    wait_for(&srv, "client connections with the WebSocket open", 1, || connections(&srv, "client"));

    let over = TcpStream::connect(&srv.client).expect("connect");
    // Far sooner than the header-read timeout could close it.
    assert!(closed_by_server(&over, Instant::now() + CLOSE_WAIT), "a connection over the cap stays open");
    wait_for(&srv, "refused client connections", 1, || refused(&srv, "client"));
    assert_eq!(refused(&srv, "api"), 0);

    drop(socket);
    wait_for(&srv, "client connections once the WebSocket closed", 0, || connections(&srv, "client"));
    let r = srv.client_request("GET", "/healthz", &[], Body::None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "a request once a place is free");
    assert_eq!(refused(&srv, "client"), 1);
}

#[test]
fn sigterm_stops_with_connections_open() {
    let (mut srv, _dir) = start_with("[api]\nheader_read_timeout_ms = 2000\n[client]\nheader_read_timeout_ms = 2000\n");
    let mut open_ones = open(&srv.api, 5, b"");
    open_ones.extend(open(&srv.client, 5, PARTIAL_HEAD));
    let mut kept_alive = TcpStream::connect(&srv.client).expect("connect");
    healthz(&mut kept_alive);
    open_ones.push(kept_alive);
    wait_for(&srv, "client connections", 6, || connections(&srv, "client"));
    // Silent and kept-alive connections close at once; the partial heads when their
    // header-read timeout ends them; `stop` allows 20 s.
    let status = srv.stop();
    assert!(status.success(), "SIGTERM with connections open must end uprtcd with exit 0, got {status:?}");
    drop(open_ones);
}
