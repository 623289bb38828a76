//! A cluster of real `uprtcd` nodes sharing one Redis of the test's own, each node on a
//! loopback address of its own (127.0.0.1, .2, .3) as if on machines of their own: REST on
//! any node, least-loaded placement, recycling, unique aliases, and nodes or Redis that go
//! away.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::client::metric;
use support::redis::Redis;
use support::*;

/// Short leases so that departures show within seconds.
const NODE_TTL_MS: u64 = 1500;

fn node_with(redis: &Redis, host: &str, alias: &str, secret: &str, dir: &Path) -> ServerBuilder {
    let config =
        format!("[cluster]\nredis_url = \"{}\"\nnode_ttl_ms = {NODE_TTL_MS}\ncall_timeout_ms = 3000\n", redis.url());
    Server::builder().host(host).alias(alias).secret(secret).config_text(dir, &config)
}

fn node(redis: &Redis, host: &str, alias: &str, secret: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (node_with(redis, host, alias, secret, dir.path()).start(), dir)
}

/// Three nodes, rtc-1 to rtc-3 on 127.0.0.1 to .3, each seeing the other two.
fn three_nodes(redis: &Redis) -> Vec<(Server, tempfile::TempDir)> {
    let secret = unique_secret();
    let nodes: Vec<_> = (1..=3).map(|i| node(redis, &format!("127.0.0.{i}"), &format!("rtc-{i}"), &secret)).collect();
    for (server, _) in &nodes {
        wait_until(|| metric(server, "uprtcd_cluster_nodes") == 3, "every node sees three nodes");
    }
    nodes
}

#[track_caller]
fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mini_load_alias(server: &Server) -> String {
    str_field(&server.ok("GET", "/server/miniLoad", ()), "serverAlias").to_owned()
}

#[test]
fn any_node_answers_for_a_room_that_lives_on_another() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two, three) = (&nodes[0].0, &nodes[1].0, &nodes[2].0);
    let room = one.create_live("host");
    let id = str_field(&room, "roomId");
    assert_eq!(str_field(&room, "serverAlias"), "rtc-1");
    assert!(str_field(&room, "serverUrl").starts_with(&one.url_prefix()), "{room}");

    let here = one.room(id);
    assert_eq!(two.room(id), here, "node 2 answers what node 1 holds, unchanged");
    assert_eq!(three.room(id), here);
    two.ok("POST", &format!("/room/{id}/live/member"), json!({"peerId": "guest", "kind": "video"}));
    assert_eq!(one.ok("GET", &format!("/room/{id}/live/members"), ()), json!(["guest"]));
    let token = three.ok("POST", &format!("/room/{id}/token"), json!({"peerId": "viewer"}));
    assert!(!str_field(&token, "token").is_empty(), "{token}");
    // A recording id is routed by its tag too: node 1 made none with this one.
    two.expect("GET", &format!("/record/{id}/status"), (), 50019);

    three.ok("DELETE", &format!("/room/{id}"), ());
    one.expect("GET", &format!("/room/{id}"), (), 50001);
    two.expect("GET", &format!("/room/{id}"), (), 50001);
    assert!(metric(two, "uprtcd_cluster_forwarded_total{result=\"ok\"}") >= 4);
    assert!(metric(one, "uprtcd_cluster_forwarded_total{result=\"received\"}") >= 6);

    // Per-node answers stay per node.
    let other = two.live_id("another");
    assert_eq!(u64_field(&one.ok("GET", "/server/room/num", ()), "num"), 0);
    assert_eq!(u64_field(&two.ok("GET", "/server/room/num", ()), "num"), 1);
    assert_eq!(one.room(&other), two.room(&other));
}

#[test]
fn forwarding_checks_the_app_secret_first_and_never_crosses_the_client_listener() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two) = (&nodes[0].0, &nodes[1].0);
    let id = one.live_id("host");
    let forged = two.request(
        &Auth::Wrong,
        "DELETE",
        &format!("{PREFIX}/room/{id}"),
        &[("x-uprtcd-forwarded", "rtc-1")],
        Body::None,
    );
    expect_code(&(forged.status, forged.envelope("forged forward")), 10001, "a forwarded call with a wrong secret");
    one.room(&id);
    let via_client = two.client_request("GET", &format!("{PREFIX}/room/{id}"), &[], Body::None);
    assert_ne!(via_client.status, 200, "the client listener serves no API");
    assert_eq!(metric(two, "uprtcd_cluster_forwarded_total{result=\"ok\"}"), 0);
}

#[test]
fn min_load_spreads_a_burst_and_leaves_out_a_recycled_node_until_it_is_drained() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two) = (&nodes[0].0, &nodes[1].0);
    let burst: std::collections::BTreeSet<String> = (0..3).map(|_| mini_load_alias(one)).collect();
    assert_eq!(burst.len(), 3, "three creations in a row go to three nodes: {burst:?}");

    let id = two.live_id("host");
    two.ok("POST", "/server/recycle", ());
    two.expect("POST", "/room/live", json!({"masterId": "late"}), 50015);
    for _ in 0..6 {
        assert_ne!(mini_load_alias(one), "rtc-2", "a recycled node takes no rooms");
        assert_ne!(mini_load_alias(two), "rtc-2", "not even through itself");
    }
    let health = |server: &Server| server.client_request("GET", "/healthz", &[], Body::None).text();
    assert_eq!(health(two), "draining: 1 rooms, 0 clients\n");
    assert_eq!(metric(two, "uprtcd_drained"), 0);
    one.ok("DELETE", &format!("/room/{id}"), ());
    assert_eq!(health(two), "drained\n");
    assert_eq!(metric(two, "uprtcd_drained"), 1);
    assert_eq!(health(one), "ok\n");
}

#[test]
fn an_alias_belongs_to_one_data_dir_while_its_node_lives() {
    let redis = Redis::start();
    let secret = unique_secret();
    let (mut first, dir) = node(&redis, "127.0.0.1", "rtc-same", &secret);
    let twin_dir = tempfile::tempdir().unwrap();
    let config = format!("[cluster]\nredis_url = \"{}\"\nnode_ttl_ms = {NODE_TTL_MS}\n", redis.url());
    let config_file = twin_dir.path().join("uprtcd.toml");
    std::fs::write(&config_file, config).unwrap();
    let args: Vec<String> = [
        "--config",
        config_file.to_str().unwrap(),
        "--data-dir",
        twin_dir.path().to_str().unwrap(),
        "--server-alias",
        "rtc-same",
        "--api-listen",
        "127.0.0.2:0",
        "--client-listen",
        "127.0.0.2:0",
        "--udp-listen",
        "127.0.0.2:0",
        "--workers",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let (status, stderr) = run_to_exit(&args, Duration::from_secs(20));
    assert!(!status.success(), "a second node with the same alias must not start; stderr:\n{stderr}");
    assert!(stderr.contains("rtc-same") && stderr.contains("another data dir"), "{stderr}");

    // The node itself, killed and started again within its lease, takes it back at once.
    let id = first.live_id("host");
    first.kill9();
    first.restart();
    wait_until(|| metric(&first, "uprtcd_cluster_registered") == 1, "the restarted node registers");
    first.room(&id);
    drop(dir);
}

#[test]
fn a_node_that_stops_leaves_placement_and_its_rooms_answer_an_error_until_it_is_back() {
    let redis = Redis::start();
    let mut nodes = three_nodes(&redis);
    let id = nodes[1].0.live_id("host");
    nodes[1].0.kill9();
    let one = &nodes[0].0;
    wait_until(|| metric(one, "uprtcd_cluster_nodes") == 2, "node 2's lease expires");
    for _ in 0..6 {
        assert_ne!(mini_load_alias(one), "rtc-2");
    }
    let started = Instant::now();
    let gone = one.expect("GET", &format!("/room/{id}"), (), 10000);
    assert!(started.elapsed() < Duration::from_secs(2), "an answer, not a hang");
    assert!(str_field(&gone, "msg").contains("rtc-2"), "the error names the node: {gone}");

    nodes[1].0.restart();
    wait_until(|| metric(&nodes[0].0, "uprtcd_cluster_nodes") == 3, "node 2 is back");
    assert_eq!(str_field(&nodes[0].0.room(&id), "roomId"), id, "its room came back from its own store");
}

#[test]
fn without_redis_every_node_serves_its_own_rooms_and_registers_again_when_it_returns() {
    let mut redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two) = (&nodes[0].0, &nodes[1].0);
    let theirs = two.live_id("host");
    redis.kill9();
    let ours = one.live_id("during");
    one.room(&ours);
    one.ok("POST", &format!("/room/{ours}/live/member"), json!({"peerId": "guest"}));
    wait_until(|| metric(one, "uprtcd_cluster_nodes") == 0, "the directory goes stale");
    let cut = one.expect("GET", &format!("/room/{theirs}"), (), 10000);
    assert!(str_field(&cut, "msg").contains("rtc-2"), "{cut}");
    assert_eq!(mini_load_alias(one), "rtc-1", "alone, a node places on itself");

    redis.restart();
    wait_until(|| metric(one, "uprtcd_cluster_nodes") == 3, "the nodes register again in an empty Redis");
    assert_eq!(one.room(&theirs), two.room(&theirs));
    assert_eq!(two.room(&ours), one.room(&ours), "nothing acknowledged was lost");
}
