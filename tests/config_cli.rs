//! Configuration and command line: `--check-config`, one clear line naming the bad key for every
//! kind of bad configuration (never a panic), CLI flags over the file, the generated secret,
//! the I/O backend flag and the graceful stop.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use support::*;

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A config file: the base sections (127.0.0.1 listeners, the data dir, a secret, one worker)
/// with `(section, line)` pairs added; a line whose key the base already has replaces it.
/// An empty section name puts the line at the top level.
fn config_text(data_dir: &Path, extra: &[(&str, &str)]) -> String {
    let base: Vec<(&str, Vec<String>)> = vec![
        (
            "server",
            vec![
                format!("data_dir = {:?}", data_dir.display().to_string()),
                "app_secret = \"cfg-secret-0123456789\"".into(),
            ],
        ),
        ("api", vec!["listen = \"127.0.0.1:0\"".into()]),
        ("client", vec!["listen = \"127.0.0.1:0\"".into()]),
        ("dataplane", vec!["workers = 1".into()]),
    ];
    let key_of = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let mut out = String::new();
    for (sec, line) in extra.iter().filter(|(s, _)| s.is_empty()) {
        let _ = sec;
        out.push_str(line);
        out.push('\n');
    }
    let mut sections: Vec<String> = base.iter().map(|(s, _)| s.to_string()).collect();
    for (sec, _) in extra {
        if !sec.is_empty() && !sections.iter().any(|s| s == sec) {
            sections.push(sec.to_string());
        }
    }
    for sec in sections {
        out.push_str(&format!("[{sec}]\n"));
        let mine: Vec<&str> = extra.iter().filter(|(s, _)| *s == sec).map(|(_, l)| *l).collect();
        if let Some((_, lines)) = base.iter().find(|(s, _)| *s == sec) {
            for l in lines {
                if !mine.iter().any(|m| key_of(m) == key_of(l)) {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        for m in mine {
            out.push_str(m);
            out.push('\n');
        }
    }
    out
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let text = format!(
        r#"[server]
alias = "rtc-1:cluster-1"
data_dir = {data:?}
app_secret = "a-good-secret-0123456789"
announced_ip = "127.0.0.1"
announced_ip6 = "::1"

[api]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
max_upload_bytes = 104857600
max_http_connections = 64
header_read_timeout_ms = 5000
idle_timeout_ms = 30000

[client]
listen = "127.0.0.1:0"
max_http_connections = 4096
header_read_timeout_ms = 5000
idle_timeout_ms = 30000

[dataplane]
workers = 2
io_backend = "auto"

[rooms]
default_max_members = 16
"#,
        data = data.display().to_string()
    );
    let cfg = write_file(dir.path(), "good.toml", &text);
    let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string(), "--check-config"]), EXIT_TIMEOUT);
    assert!(st.success(), "--check-config on a good file must exit 0, got {st:?}; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Flags only, no file.
    let (st, err) = run_to_exit(
        &s(&[
            "--check-config",
            "--api-listen",
            "127.0.0.1:0",
            "--client-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
            &data.display().to_string(),
            "--app-secret",
            "x-0123456789abcdef",
            "--server-alias",
            "a",
            "--announced-ip",
            "127.0.0.1",
            "--announced-ip6",
            "::1",
            "--io-backend",
            "epoll",
        ]),
        EXIT_TIMEOUT,
    );
    assert!(st.success(), "--check-config with good flags must exit 0, got {st:?}; stderr:\n{err}");
}

/// (section, line, the key the error line must name)
const BAD_KEYS: &[(&str, &str, &str)] = &[
    ("api", "lisen = \"127.0.0.1:0\"", "api.lisen"),
    ("server", "aliass = \"x\"", "server.aliass"),
    ("rooms", "default_max_member = 3", "rooms.default_max_member"),
    ("bogus", "x = 1", "bogus"),
    ("", "demo = true", "demo"),
    ("api", "listen = \"not-an-address\"", "api.listen"),
    ("client", "listen = \"127.0.0.1:99999\"", "client.listen"),
    ("api", "listen = 8080", "api.listen"),
    ("dataplane", "workers = \"two\"", "dataplane.workers"),
    ("dataplane", "workers = -1", "dataplane.workers"),
    ("dataplane", "io_backend = \"bogus\"", "dataplane.io_backend"),
    ("rooms", "default_max_members = -1", "rooms.default_max_members"),
    ("rooms", "default_max_members = 1e30", "rooms.default_max_members"),
    ("server", "announced_ip = \"not-an-ip\"", "server.announced_ip"),
    ("server", "announced_ip6 = \"zzz\"", "server.announced_ip6"),
    ("api", "max_body_bytes = \"big\"", "api.max_body_bytes"),
    ("api", "max_upload_bytes = -5", "api.max_upload_bytes"),
    ("api", "max_http_connections = 0", "api.max_http_connections"),
    ("client", "max_http_connections = \"many\"", "client.max_http_connections"),
    ("api", "header_read_timeout_ms = 0", "api.header_read_timeout_ms"),
    ("client", "idle_timeout_ms = 86400000", "client.idle_timeout_ms"),
];

#[test]
fn check_config_names_the_bad_key_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut soft = Soft::new();
    for (i, (sec, line, key)) in BAD_KEYS.iter().enumerate() {
        let text = config_text(&dir.path().join("data"), &[(sec, line)]);
        let cfg = write_file(dir.path(), &format!("bad{i}.toml"), &text);
        let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string(), "--check-config"]), EXIT_TIMEOUT);
        soft.add(one_line_error_problem(&st, &err, &[key], &format!("--check-config with [{sec}] {line}")));
    }
    soft.done();
    // Not TOML at all: still one line, no panic.
    let cfg = write_file(dir.path(), "broken.toml", "[api\nlisten = ");
    let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string(), "--check-config"]), EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &[""], "--check-config with a file that is not TOML");
}

#[test]
fn starting_with_a_bad_file_names_the_key_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut soft = Soft::new();
    for (i, (sec, line, key)) in BAD_KEYS.iter().enumerate() {
        let text = config_text(&dir.path().join("data"), &[(sec, line)]);
        let cfg = write_file(dir.path(), &format!("bad{i}.toml"), &text);
        let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string()]), EXIT_TIMEOUT);
        soft.add(one_line_error_problem(&st, &err, &[key], &format!("start with [{sec}] {line}")));
    }
    soft.done();
}

#[test]
fn missing_config_file_fails_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such.toml");
    let p = missing.display().to_string();
    for extra in [&[][..], &["--check-config"][..]] {
        let mut args = s(&["--config", &p]);
        args.extend(s(extra));
        let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
        assert_one_line_error(&st, &err, &[&p, "no-such.toml"], "a --config file that does not exist");
    }
}

fn default_args(data_dir: &Path) -> Vec<String> {
    s(&[
        "--api-listen",
        "127.0.0.1:0",
        "--client-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--data-dir",
        &data_dir.display().to_string(),
        "--app-secret",
        "s3cret-0123456789abcdef",
    ])
}

fn replace_flag(args: &mut [String], flag: &str, value: &str) {
    let i = args.iter().position(|a| a == flag).expect("flag present");
    args[i + 1] = value.to_string();
}

#[test]
fn bad_address_on_the_command_line_names_the_key_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut soft = Soft::new();
    for (flag, value, keys) in [
        ("--api-listen", "not-an-address", ["api.listen", "--api-listen"]),
        ("--api-listen", "127.0.0.1:99999", ["api.listen", "--api-listen"]),
        ("--client-listen", "nowhere:", ["client.listen", "--client-listen"]),
        ("--announced-ip", "1.2.3", ["server.announced_ip", "--announced-ip"]),
    ] {
        let mut args = default_args(&dir.path().join("data"));
        if args.iter().any(|a| a == flag) {
            replace_flag(&mut args, flag, value);
        } else {
            args.extend(s(&[flag, value]));
        }
        let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
        soft.add(one_line_error_problem(&st, &err, &keys, &format!("{flag} {value}")));
    }
    soft.done();
}

#[test]
fn port_in_use_names_the_key_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = busy.local_addr().expect("addr").to_string();

    let mut args = default_args(&dir.path().join("data"));
    replace_flag(&mut args, "--api-listen", &addr);
    let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["api.listen", "--api-listen"], "--api-listen on a port in use");

    let mut args = default_args(&dir.path().join("data"));
    replace_flag(&mut args, "--client-listen", &addr);
    let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["client.listen", "--client-listen"], "--client-listen on a port in use");

    // From the file, the error names the file's key.
    let line = format!("listen = {addr:?}");
    let cfg = write_file(dir.path(), "busy.toml", &config_text(&dir.path().join("data"), &[("api", &line)]));
    let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string()]), EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["api.listen"], "api.listen in the file on a port in use");
    drop(busy);

    // The workers' media socket: a UDP port someone else holds.
    let busy_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let udp = busy_udp.local_addr().expect("addr").to_string();
    let mut args = default_args(&dir.path().join("data"));
    args.extend(["--udp-listen".to_owned(), udp]);
    let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["dataplane.udp_listen"], "--udp-listen on a port in use");
}

#[test]
fn unwritable_data_dir_names_the_key_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = tempfile::NamedTempFile::new_in(dir.path()).expect("temp file");
    let under_file = file.path().join("sub");
    let p = under_file.display().to_string();

    let mut args = default_args(&under_file);
    replace_flag(&mut args, "--data-dir", &p);
    let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["server.data_dir", "--data-dir"], "--data-dir under a regular file");

    let cfg = write_file(dir.path(), "dd.toml", &config_text(&under_file, &[]));
    let (st, err) = run_to_exit(&s(&["--config", &cfg.display().to_string()]), EXIT_TIMEOUT);
    assert_one_line_error(&st, &err, &["server.data_dir"], "server.data_dir under a regular file");
}

#[test]
fn generated_secret_is_persisted_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut srv = Server::builder().data_dir(dir.path()).generated_secret().start();
    let stored = std::fs::read_to_string(dir.path().join("app-secret")).expect("app-secret written on first start");
    let secret = stored.trim().to_string();
    assert!(secret.len() >= 16, "a generated secret should not be trivially short: {secret:?}");
    assert_eq!(srv.secret, secret);
    let id = srv.convo_id("alice", &[]);
    expect_code(&srv.call_auth(&Auth::Wrong, "GET", "/server/room/num", ()), 10001, "wrong secret");
    expect_code(&srv.call_auth(&Auth::Missing, "GET", "/server/room/num", ()), 10001, "no secret");

    srv.restart();
    let again = std::fs::read_to_string(dir.path().join("app-secret")).expect("app-secret still there");
    assert_eq!(again, stored, "the stored secret is reused, not regenerated");
    assert_eq!(srv.secret, secret);
    assert_eq!(str_field(&srv.room(&id), "masterId"), "alice", "the first secret still opens the API");
    srv.kill9();
    srv.restart();
    let r = srv.call_auth(&Auth::Header(format!("key={secret}")), "GET", "/server/room/num", ());
    assert_eq!(u64_field(&expect_ok(&r, "the first secret after a crash"), "num"), 1);

    // Another data dir gets another secret.
    let other = Server::builder().generated_secret().start();
    assert_ne!(other.secret, secret, "two data dirs, two generated secrets");
    expect_code(
        &other.call_auth(&Auth::Header(format!("key={secret}")), "GET", "/server/room/num", ()),
        10001,
        "another server's secret",
    );
}

#[test]
fn file_values_apply_and_flags_override_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let text = config_text(
        &data,
        &[
            ("server", "alias = \"from-file\""),
            ("server", "app_secret = \"file-secret-0123456789\""),
            ("dataplane", "workers = 2"),
            ("rooms", "default_max_members = 7"),
        ],
    );
    let cfg = write_file(dir.path(), "uprtcd.toml", &text);

    let mut srv = Server::builder_from_config(&cfg, "file-secret-0123456789", &data).start();
    let d = srv.ok("GET", "/server/miniLoad", ());
    assert_eq!(str_field(&d, "serverAlias"), "from-file", "{d}");
    assert_eq!(srv.cpu_load().len(), 2, "dataplane.workers = 2");
    let id = srv.convo_id("a", &[]);
    assert_eq!(u64_field(&srv.room(&id), "maxMemberNum"), 7, "rooms.default_max_members = 7");
    let st = srv.stop();
    assert!(st.success(), "SIGTERM exits 0: {st:?}");
    drop(srv);

    let srv = Server::builder_from_config(&cfg, "cli-secret-0123456789", &data)
        .args(&["--server-alias", "from-cli", "--workers", "1", "--app-secret", "cli-secret-0123456789"])
        .start();
    let d = srv.ok("GET", "/server/miniLoad", ());
    assert_eq!(str_field(&d, "serverAlias"), "from-cli", "--server-alias overrides the file: {d}");
    assert_eq!(srv.cpu_load().len(), 1, "--workers overrides the file");
    expect_code(
        &srv.call_auth(&Auth::Header("key=file-secret-0123456789".into()), "GET", "/server/room/num", ()),
        10001,
        "--app-secret overrides the file's secret",
    );
    // Same data dir: the room made under the file's settings is still there.
    assert_eq!(str_field(&srv.room(&id), "masterId"), "a");
    let id2 = srv.convo_id("b", &[]);
    assert_eq!(u64_field(&srv.room(&id2), "maxMemberNum"), 7, "the file's rooms section still applies");
}

#[test]
fn io_backend_flag_epoll_and_auto_serve() {
    for backend in ["epoll", "auto"] {
        let srv = Server::start(&["--io-backend", backend]);
        let id = srv.live_id("h");
        assert_eq!(str_field(&srv.room(&id), "type"), "live", "--io-backend {backend}");
        assert_eq!(srv.cpu_load().len(), 1);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = default_args(dir.path());
    args.extend(s(&["--io-backend", "bogus"]));
    let (st, err) = run_to_exit(&args, EXIT_TIMEOUT);
    assert!(!st.success(), "--io-backend bogus must be refused; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn sigterm_stops_with_exit_0() {
    let mut srv = Server::builder().workers(2).start();
    srv.convo_id("a", &[]);
    let st = srv.stop();
    assert!(st.success(), "SIGTERM must end uprtcd with exit 0, got {st:?}; stderr:\n{}", srv.log());
    assert!(!srv.log().contains("panicked"), "{}", srv.log());
}
