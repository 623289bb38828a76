//! TLS on the HTTP listeners, against the real binary, with a certificate authority each test
//! makes for itself and clients that trust it alone: REST over HTTPS, `serverUrl` as `wss://`,
//! signalling over wss, WHIP over HTTPS, HTTP/2 by ALPN, the handshake's timeout and failures
//! (counted in `/metrics`), plain HTTP on the TLS port, reloads of the certificate on SIGHUP
//! and on a change of its files (bad files keep the certificate in use), start-up with bad
//! files, and what a TLS connection costs the server (CPU per handshake, memory when idle). As
//! in tests/http_limits.rs, waits allow many times the configured timeouts: only what happens
//! is checked, not when.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::client::{convo, metric, next_event, token, video_offer};
use support::tls::{Issued, TestCa, TlsFiles, leaf, metric_over_https, replace_file};
use support::*;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;

/// How long a test waits for the server to close a connection or to serve a new certificate.
const WAIT: Duration = Duration::from_secs(60);

/// What most tests need: a CA, two certificates it issued for 127.0.0.1 and localhost
/// (`first`, in the client listener's files at start, and `second`, a renewal), and a
/// directory for the files and the configuration.
struct Fixture {
    dir: tempfile::TempDir,
    ca: TestCa,
    first: Issued,
    second: Issued,
    files: TlsFiles,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let (first, second) = (ca.issue("first"), ca.issue("second"));
        let files = TlsFiles::new(dir.path(), "client", &first);
        Fixture { dir, ca, first, second, files }
    }

    /// A server whose client listener serves the files, with `extra` lines in its
    /// configuration file (under `[client]` unless they open a section).
    fn server(&self, extra: &str) -> Server {
        start(self.dir.path(), Some(&self.files), None, extra)
    }
}

/// A server whose `[client]` (and `[api]`, if given) listener serves the files named, with
/// `extra` lines in its configuration file.
fn start(dir: &Path, client: Option<&TlsFiles>, api: Option<&TlsFiles>, extra: &str) -> Server {
    let section = |name: &str, files: Option<&TlsFiles>| files.map(|f| format!("[{name}]\n{}", f.toml()));
    let mut text: String = [section("client", client), section("api", api)].into_iter().flatten().collect();
    text.push_str(extra);
    Server::builder().config_text(dir, &text).start()
}

/// Sends `signal` (`HUP`, ...) to the server.
fn signal(srv: &Server, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(srv.pid.to_string()).status();
    assert!(status.expect("run kill").success(), "kill -{signal} {}", srv.pid);
}

/// Waits until `value()` is `want`; panics with the last value and the server's log if not.
#[track_caller]
fn wait_for(srv: &Server, what: &str, want: u64, mut value: impl FnMut() -> u64) {
    let mut last = None;
    let reached = poll_until(WAIT, || {
        let v = value();
        last = Some(v);
        (v == want).then_some(())
    });
    if reached.is_none() {
        panic!("{what}: wanted {want}, still {last:?} after {WAIT:?}; server log:\n{}", srv.log());
    }
}

/// Waits until new connections to `addr` are served `want`.
#[track_caller]
fn wait_served(ca: &TestCa, srv: &Server, want: &Issued, what: &str) {
    if poll_until(WAIT, || (ca.served(&srv.client) == want.der).then_some(())).is_none() {
        panic!("{what}: new connections are still served the old certificate; server log:\n{}", srv.log());
    }
}

fn client_counter(srv: &Server, name: &str, labels: &str) -> u64 {
    metric(srv, &format!("{name}{{listener=\"client\",{labels}}}"))
}

fn reloads(srv: &Server, result: &str) -> u64 {
    client_counter(srv, "uprtcd_tls_reloads_total", &format!("result=\"{result}\""))
}

#[test]
fn server_urls_are_wss_when_the_client_listener_has_tls() {
    let fx = Fixture::new();
    let ca = &fx.ca;
    let srv = Server::builder()
        .config_text(fx.dir.path(), &format!("[client]\n{}", fx.files.toml()))
        .args(&["--announced-ip6", "::1"])
        .start();
    let port = srv.client_port();
    let (url, url6) = (format!("wss://127.0.0.1:{port}/"), format!("wss://[::1]:{port}/"));

    let created = srv.create_convo("m1", &["m2"]);
    assert_eq!((str_field(&created, "serverUrl"), str_field(&created, "serverUrl6")), (url.as_str(), url6.as_str()));
    let room = str_field(&created, "roomId");
    let read = srv.room(room);
    assert_eq!((str_field(&read, "serverUrl"), str_field(&read, "serverUrl6")), (url.as_str(), url6.as_str()));
    let live = srv.create_live("host");
    assert_eq!(str_field(&live, "serverUrl"), url);
    assert_eq!(str_field(&srv.ok("GET", "/server/miniLoad", ()), "serverUrl"), url);

    // The demo page, served over HTTPS, hands out the same URL.
    let mut joined = ca
        .agent()
        .post(format!("https://{}/demo/join", srv.client))
        .send_json(json!({"peer": "alice"}))
        .expect("POST /demo/join over https");
    assert_eq!(joined.status(), 200);
    let joined: Value = joined.body_mut().read_json().expect("JSON");
    assert_eq!(str_field(&joined, "serverUrl"), url, "{joined}");
}

#[test]
fn public_host_names_the_server_in_client_urls_and_the_certificate_is_checked_against_it() {
    let fx = Fixture::new();
    let srv = fx.server("public_host = \"localhost\"\n");
    let url = str_field(&srv.create_convo("m1", &[]), "serverUrl").to_owned();
    assert_eq!(url, format!("wss://localhost:{}/", srv.client_port()));
    assert!(!srv.log().contains("does not name"), "the certificate names localhost:\n{}", srv.log());
    drop(srv);

    // A name the certificate does not cover: browsers would refuse it, so the start says so.
    let other = tempfile::tempdir().unwrap();
    let srv = start(other.path(), Some(&fx.files), None, "public_host = \"sfu.example.com\"\n");
    assert_eq!(
        str_field(&srv.create_convo("m1", &[]), "serverUrl"),
        format!("wss://sfu.example.com:{}/", srv.client_port())
    );
    let warning = srv.log().lines().find(|l| l.contains("does not name")).map(str::to_owned);
    let warning = warning.unwrap_or_else(|| panic!("no warning of an uncovered host:\n{}", srv.log()));
    assert!(warning.contains("WARN") && warning.contains("sfu.example.com"), "{warning}");
}

#[test]
fn signalling_clients_join_over_wss() {
    let fx = Fixture::new();
    let ca = &fx.ca;
    let srv = fx.server("");
    let (room, code) = convo(&srv, "m1", &["m2"], 2);
    let (mut first, joined) = ca.wss_connect(&srv.client, code, "m1", &token(&srv, &room, "m1"));
    assert_eq!(joined["type"], "joined", "{joined}");
    let (_second, joined) = ca.wss_connect(&srv.client, code, "m2", &token(&srv, &room, "m2"));
    assert_eq!(joined["type"], "joined", "{joined}");
    let event = next_event(&mut first).expect("an event for the first client");
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-joined"), Some("m2")), "{event}");
    assert_eq!(u64_field(&srv.room(&room), "total"), 2);
    assert!(client_counter(&srv, "uprtcd_tls_handshakes_total", "kind=\"full\"") >= 2);
}

#[test]
fn whip_over_https_answers_201_and_its_location_ends_the_session() {
    let fx = Fixture::new();
    let ca = &fx.ca;
    let srv = fx.server("");
    let (room, _) = convo(&srv, "alice", &["bob"], 0);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let offer = video_offer(&IceCredentials::generate().unwrap(), &identity.fingerprint().to_string(), 1234);
    let agent = ca.agent();
    let mut answered = agent
        .post(format!("https://{}/whip/{}", srv.client, enc(&room)))
        .header("content-type", "application/sdp")
        .header("authorization", format!("Bearer {}", token(&srv, &room, "alice")))
        .send(offer.as_str())
        .expect("POST /whip over https");
    let location = answered.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = answered.body_mut().read_to_string().unwrap();
    assert_eq!(answered.status(), 201, "{body}");
    assert!(body.starts_with("v=0"), "an SDP answer: {body}");
    let location = location.expect("a Location");
    assert!(location.starts_with("/whip/"), "a path on the same origin, so it keeps https: {location}");
    assert!(client::joined(&srv, &room, "alice"));

    let deleted = agent.delete(format!("https://{}{location}", srv.client)).call().expect("DELETE over https");
    assert_eq!(deleted.status(), 200);
    assert!(!client::joined(&srv, &room, "alice"));
}

#[test]
fn the_rest_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let files = TlsFiles::new(dir.path(), "api", &ca.issue("uprtcd api"));
    let srv = start(dir.path(), None, Some(&files), "");
    let agent = ca.agent();
    let mut created = agent
        .post(format!("https://{}{PREFIX}/room/convo", srv.api))
        .header("authorization", format!("key={}", srv.secret))
        .send_json(json!({"masterId": "m1", "memberIds": []}))
        .expect("POST /room/convo over https");
    assert_eq!(created.status(), 200);
    let created: Value = created.body_mut().read_json().unwrap();
    assert_eq!(created["code"], 0, "{created}");
    // The client listener has no TLS here: its URLs stay ws://.
    assert_eq!(str_field(&created["data"], "serverUrl"), srv.url_prefix());
    let unauthorized: Value = agent
        .get(format!("https://{}{PREFIX}/room/count", srv.api))
        .call()
        .expect("GET /room/count over https")
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(unauthorized["code"], 10001, "no secret, no answer: {unauthorized}");
    // The agent keeps its TLS session: after the first, its connections resume with a ticket.
    let handshakes = |kind: &str| {
        metric_over_https(&agent, &srv.api, &format!("uprtcd_tls_handshakes_total{{listener=\"api\",kind=\"{kind}\"}}"))
    };
    let (full, resumed) = (handshakes("full"), handshakes("resumed"));
    assert!(full >= 1 && resumed >= 2, "{full} full and {resumed} resumed handshakes");
}

#[test]
fn http2_is_chosen_by_alpn_and_an_idle_http2_connection_is_closed() {
    let fx = Fixture::new();
    let ca = &fx.ca;
    let srv = fx.server("header_read_timeout_ms = 1000\nidle_timeout_ms = 2000\n");
    let config = ca.client_config(&[b"h2", b"http/1.1"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use http_body_util::{BodyExt, Empty};
        use hyper::body::Bytes;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(&srv.client).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.expect("TLS");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose HTTP/2");
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
            (sender, tokio::spawn(connection))
        };

        let (mut sender, connection) = connect().await;
        for _ in 0..3 {
            let request = hyper::Request::get(format!("https://{}/healthz", srv.client)).body(Empty::<Bytes>::new());
            let response = sender.send_request(request.unwrap()).await.expect("GET /healthz over h2");
            assert_eq!((response.version(), response.status().as_u16()), (hyper::Version::HTTP_2, 200));
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok\n");
        }
        // Idle after its requests: closed after the idle timeout.
        tokio::time::timeout(WAIT, connection).await.expect("an idle HTTP/2 connection is closed").unwrap().ok();
        // No request at all: closed after the header-read timeout.
        let (_sender, silent) = connect().await;
        tokio::time::timeout(WAIT, silent).await.expect("a silent HTTP/2 connection is closed").unwrap().ok();
    });
    wait_for(&srv, "idle timeouts", 1, || client_counter(&srv, "uprtcd_http_timeouts_total", "kind=\"idle\""));
    wait_for(&srv, "header timeouts", 1, || client_counter(&srv, "uprtcd_http_timeouts_total", "kind=\"header\""));
    wait_for(&srv, "client connections", 0, || metric(&srv, "uprtcd_http_connections{listener=\"client\"}"));
}

#[test]
fn a_handshake_that_never_ends_is_closed_and_counted() {
    const EACH: usize = 5;
    let fx = Fixture::new();
    let ca = &fx.ca;
    // Only the handshake's timeout can close these: the header-read timeout is far away.
    let srv = fx.server("tls_handshake_timeout_ms = 1000\nheader_read_timeout_ms = 600000\n");
    let silent: Vec<TcpStream> = (0..EACH).map(|_| TcpStream::connect(&srv.client).unwrap()).collect();
    // A ClientHello, then nothing: the server answers it and waits for the client's Finished.
    let mut hello = Vec::new();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    rustls::ClientConnection::new(ca.client_config(&[b"http/1.1"]), name).unwrap().write_tls(&mut hello).unwrap();
    let stalled: Vec<TcpStream> = (0..EACH)
        .map(|_| {
            let mut s = TcpStream::connect(&srv.client).unwrap();
            s.write_all(&hello).unwrap();
            s
        })
        .collect();
    wait_for(&srv, "client connections", 2 * EACH as u64, || {
        metric(&srv, "uprtcd_http_connections{listener=\"client\"}")
    });
    let deadline = Instant::now() + WAIT;
    let open = silent.iter().chain(&stalled).filter(|s| !closed_by_server(s, deadline)).count();
    assert_eq!(open, 0, "connections still open {WAIT:?} after a 1 s handshake timeout");
    wait_for(&srv, "handshake timeouts", 2 * EACH as u64, || {
        client_counter(&srv, "uprtcd_http_timeouts_total", "kind=\"tls_handshake\"")
    });
    wait_for(&srv, "client connections", 0, || metric(&srv, "uprtcd_http_connections{listener=\"client\"}"));
    assert_eq!(client_counter(&srv, "uprtcd_http_timeouts_total", "kind=\"header\""), 0);
    assert!(ca.connect(&srv.client).is_ok(), "the listener still serves");
}

#[test]
fn plain_http_and_other_bytes_on_the_tls_port_are_refused_cleanly() {
    let fx = Fixture::new();
    let ca = &fx.ca;
    let srv = fx.server("");

    let mut plain = TcpStream::connect(&srv.client).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).expect("an answer, then the close (no reset)");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("https://"), "the answer says what to use: {answer:?}");
    wait_for(&srv, "plain HTTP refusals", 1, || {
        client_counter(&srv, "uprtcd_tls_handshake_failures_total", "reason=\"plain_http\"")
    });

    let mut other = TcpStream::connect(&srv.client).unwrap();
    other.write_all(&[0u8; 64]).unwrap();
    assert!(closed_by_server(&other, Instant::now() + WAIT), "bytes that are not TLS close the connection");
    wait_for(&srv, "not-TLS refusals", 1, || {
        client_counter(&srv, "uprtcd_tls_handshake_failures_total", "reason=\"not_tls\"")
    });

    // A TLS record that is not a handshake rustls accepts.
    let mut garbled = TcpStream::connect(&srv.client).unwrap();
    garbled.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(closed_by_server(&garbled, Instant::now() + WAIT), "a malformed handshake closes the connection");
    wait_for(&srv, "malformed handshakes", 1, || {
        client_counter(&srv, "uprtcd_tls_handshake_failures_total", "reason=\"malformed\"")
    });
    let mut fine = ca.connect(&srv.client).expect("a TLS client is still served");
    assert!(healthz(&mut fine).starts_with("HTTP/1.1 200"));
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_keep_theirs() {
    let fx = Fixture::new();
    let Fixture { ca, first, second, files, .. } = &fx;
    // No watching of the files: only the signal can reload them.
    let srv = fx.server("[server]\ntls_watch_interval_ms = 0\n");
    let mut open = ca.connect(&srv.client).unwrap();
    assert!(healthz(&mut open).starts_with("HTTP/1.1 200"));
    assert_eq!(leaf(&open), first.der);

    files.replace(second);
    signal(&srv, "HUP");
    wait_served(ca, &srv, second, "after SIGHUP");
    assert_eq!(reloads(&srv, "ok"), 1);
    assert_eq!(reloads(&srv, "failed"), 0);
    assert!(healthz(&mut open).starts_with("HTTP/1.1 200"), "a connection from before the reload goes on");
    assert_eq!(leaf(&open), first.der);
    // The server goes on: SIGHUP is not a stop.
    let mut srv = srv;
    assert!(srv.is_running(), "uprtcd exited on SIGHUP; log:\n{}", srv.log());
    assert!(u64_field(&srv.create_convo("m1", &[]), "invitationCode") > 0);
}

#[test]
fn sighup_without_tls_changes_nothing() {
    let mut srv = Server::start(&[]);
    signal(&srv, "HUP");
    wait_for(&srv, "the SIGHUP log line", 1, || srv.log().contains("nothing to reload") as u64);
    assert!(srv.is_running(), "uprtcd exited on SIGHUP; log:\n{}", srv.log());
}

#[test]
fn a_renewal_on_disk_is_served_without_a_signal() {
    let fx = Fixture::new();
    let Fixture { ca, first, second, files, .. } = &fx;
    let srv = fx.server("[server]\ntls_watch_interval_ms = 300\n");
    assert_eq!(ca.served(&srv.client), first.der);
    files.replace(second);
    wait_served(ca, &srv, second, "after the files changed");
    wait_for(&srv, "reloads", 1, || reloads(&srv, "ok"));

    // A broken file is tried once, and the certificate in use stays.
    replace_file(&files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n");
    wait_for(&srv, "failed reloads", 1, || reloads(&srv, "failed"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reloads(&srv, "failed"), 1, "the same broken files are not reloaded again and again");
    assert_eq!(ca.served(&srv.client), second.der);
    let error = srv.log().lines().find(|l| l.contains("not reloaded")).map(str::to_owned);
    let error = error.unwrap_or_else(|| panic!("no error logged:\n{}", srv.log()));
    assert!(error.contains("ERROR") && error.contains(&files.cert.display().to_string()), "{error}");
}

#[test]
fn a_reload_of_bad_files_keeps_the_certificate_in_use() {
    let fx = Fixture::new();
    let Fixture { ca, first, second, files, .. } = &fx;
    let mut srv = fx.server("[server]\ntls_watch_interval_ms = 0\n");
    // (what, the file broken, what it then holds: nothing when removed)
    let malformed_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let bad = [
        ("a malformed certificate", &files.cert, Some("not PEM at all")),
        ("a key that is not the certificate's", &files.cert, Some(second.cert_pem.as_str())),
        ("a malformed key", &files.key, Some(malformed_key)),
        ("a missing key", &files.key, None),
    ];
    for (n, (what, path, text)) in bad.into_iter().enumerate() {
        match text {
            Some(text) => replace_file(path, text),
            None => std::fs::remove_file(path).unwrap(),
        }
        signal(&srv, "HUP");
        wait_for(&srv, &format!("failed reloads after {what}"), n as u64 + 1, || reloads(&srv, "failed"));
        assert_eq!(ca.served(&srv.client), first.der, "{what}: the certificate in use stays");
    }
    assert!(srv.is_running());
    files.replace(second);
    signal(&srv, "HUP");
    wait_served(ca, &srv, second, "once the files are good again");
    assert_eq!((reloads(&srv, "ok"), reloads(&srv, "failed")), (1, 4));
}

#[test]
fn bad_tls_files_stop_the_start_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (good, other) = (ca.issue("good"), ca.issue("other"));
    let p = |name: &str, text: &str| write_file(dir.path(), name, text).display().to_string();
    let (cert, key) = (p("cert.pem", &good.cert_pem), p("key.pem", &good.key_pem));
    let other_key = p("other-key.pem", &other.key_pem);
    let garbage = p("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n");
    let missing = dir.path().join("missing.pem").display().to_string();
    // (tls_cert, tls_key, the key the error names)
    let cases: [(Option<&str>, Option<&str>, &str); 9] = [
        (Some(&cert), None, "tls_key"),
        (None, Some(&key), "tls_cert"),
        (Some(&missing), Some(&key), "tls_cert"),
        (Some(&garbage), Some(&key), "tls_cert"),
        (Some(&key), Some(&key), "tls_cert"),
        (Some(&cert), Some(&missing), "tls_key"),
        (Some(&cert), Some(&garbage), "tls_key"),
        (Some(&cert), Some(&cert), "tls_key"),
        (Some(&cert), Some(&other_key), "tls_key"),
    ];
    let data = dir.path().join("data").display().to_string();
    let mut soft = Soft::new();
    for section in ["client", "api"] {
        for (tls_cert, tls_key, named) in cases {
            let mut text = format!(
                "[server]\ndata_dir = {data:?}\napp_secret = \"tls-secret-0123456789\"\n[dataplane]\nworkers = 1\n"
            );
            for listener in ["api", "client"] {
                text.push_str(&format!("[{listener}]\nlisten = \"127.0.0.1:0\"\n"));
                if listener == section {
                    text.extend(tls_cert.map(|c| format!("tls_cert = {c:?}\n")));
                    text.extend(tls_key.map(|k| format!("tls_key = {k:?}\n")));
                }
            }
            let config = write_file(dir.path(), "bad.toml", &text).display().to_string();
            let key = format!("{section}.{named}");
            for check in [true, false] {
                let mut args = vec!["--config".to_owned(), config.clone()];
                args.extend(check.then(|| "--check-config".to_owned()));
                let (status, stderr) = run_to_exit(&args, Duration::from_secs(15));
                let what = format!("{section} cert {tls_cert:?} key {tls_key:?} (check {check})");
                soft.check(status.code() == Some(2), || format!("{what}: exit {status:?}, not 2; stderr:\n{stderr}"));
                soft.add(one_line_error_problem(&status, &stderr, &[&key], &what));
            }
        }
    }
    soft.done();

    // Good files pass the check.
    let text = format!(
        "[server]\ndata_dir = {data:?}\n[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n\
         [client]\nlisten = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n"
    );
    let config = write_file(dir.path(), "good.toml", &text).display().to_string();
    let (status, stderr) = run_to_exit(&["--config".into(), config, "--check-config".into()], Duration::from_secs(15));
    assert!(status.success(), "good TLS files: {status:?}; stderr:\n{stderr}");
}

/// CPU ticks (utime + stime, all threads) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command's closing parenthesis: state is the 3rd, utime the 14th, stime the 15th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a command").1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The server's CPU time per connection that makes a TLS handshake and one request: `full`
/// handshakes (a new client each time) or resumed ones (one client keeping its session).
fn server_cpu_per_connection(srv: &Server, ca: &TestCa, n: usize, resume: bool) -> Duration {
    let ticks_per_second = 100; // USER_HZ, what /proc counts in on Linux
    let kept = ca.client_config(&[b"http/1.1"]);
    let connect = || {
        if !resume {
            return ca.connect(&srv.client).unwrap();
        }
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let session = rustls::ClientConnection::new(kept.clone(), name).unwrap();
        let mut stream = rustls::StreamOwned::new(session, TcpStream::connect(&srv.client).unwrap());
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream
    };
    // The first one makes the session the others resume (TLS 1.3 sends tickets after the
    // handshake: an answer read takes them).
    healthz(&mut connect());
    let before = cpu_ticks(srv.pid);
    for _ in 0..n {
        healthz(&mut connect());
    }
    Duration::from_millis((cpu_ticks(srv.pid) - before) * 1000 / ticks_per_second) / n as u32
}

/// Measures (printed, not judged: times belong to benchmarks) the server's CPU per TLS
/// connection; bounds the memory an idle one holds.
#[test]
fn what_a_tls_connection_costs() {
    const HANDSHAKES: usize = 500;
    const OPEN: usize = 300;
    /// As for a plain connection in tests/http_limits.rs.
    const MAX_BYTES_PER_CONNECTION: u64 = 64 * 1024;
    let fx = Fixture::new();
    let srv = fx.server("header_read_timeout_ms = 600000\n");
    let full = server_cpu_per_connection(&srv, &fx.ca, HANDSHAKES, false);
    let resumed = server_cpu_per_connection(&srv, &fx.ca, HANDSHAKES, true);
    assert!(client_counter(&srv, "uprtcd_tls_handshakes_total", "kind=\"resumed\"") >= HANDSHAKES as u64);

    let before = rss_bytes(srv.pid);
    let open: Vec<_> = (0..OPEN).map(|_| fx.ca.connect(&srv.client).unwrap()).collect();
    wait_for(&srv, "client connections", OPEN as u64, || metric(&srv, "uprtcd_http_connections{listener=\"client\"}"));
    let per_connection = rss_bytes(srv.pid).saturating_sub(before) / OPEN as u64;
    println!(
        "server CPU per connection (TLS handshake and one request): {full:?} full, {resumed:?} resumed; \
         an idle TLS connection after its handshake: {per_connection} B"
    );
    assert!(per_connection < MAX_BYTES_PER_CONNECTION, "an idle TLS connection costs {per_connection} B");
    drop(open);
}
