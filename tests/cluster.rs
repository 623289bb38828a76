//! A cluster of real `uprtcd` nodes sharing one Redis of the test's own, each node on a
//! loopback address of its own (127.0.0.1, .2, .3) as if on machines of their own: REST on
//! any node, least-loaded placement, recycling, unique aliases, and nodes or Redis that go
//! away.

mod support;

use std::time::{Duration, Instant};

use support::client::*;
use support::redis::Redis;
use support::*;

/// Short leases so that departures show within seconds.
const NODE_TTL_MS: u64 = 1500;

/// A node of the cluster on loopback address `host`, with `extra` configuration.
fn node(redis: &Redis, host: &str, alias: &str, secret: &str, extra: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{extra}\n[cluster]\nredis_url = \"{}\"\nnode_ttl_ms = {NODE_TTL_MS}\ncall_timeout_ms = 3000\n",
        redis.url()
    );
    let server = Server::builder().host(host).alias(alias).secret(secret).config_text(dir.path(), &config).start();
    (server, dir)
}

/// Three nodes, rtc-1 to rtc-3 on 127.0.0.1 to .3, each seeing the other two.
fn three_nodes(redis: &Redis) -> Vec<(Server, tempfile::TempDir)> {
    three_nodes_with(redis, "")
}

fn three_nodes_with(redis: &Redis, extra: &str) -> Vec<(Server, tempfile::TempDir)> {
    let secret = unique_secret();
    let nodes: Vec<_> =
        (1..=3).map(|i| node(redis, &format!("127.0.0.{i}"), &format!("rtc-{i}"), &secret, extra)).collect();
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
    // The nodes' internal API takes the AppSecret too, and is not on the client listener.
    let internal = format!("/uprtc/internal/v1/mirror/{id}/release");
    let forged = two.request(&Auth::Wrong, "POST", &internal, &[], Body::None);
    expect_code(
        &(forged.status, forged.envelope("forged internal call")),
        10001,
        "an internal call with a wrong secret",
    );
    assert_ne!(two.client_request("POST", &internal, &[], Body::None).status, 200);
    let dropped = two.request(&Auth::Key, "DELETE", &format!("/uprtc/internal/v1/feed/{id}/rtc-9"), &[], Body::None);
    assert_eq!(dropped.status, 200, "dropping a feed that is not there changes nothing");
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
    let (mut first, dir) = node(&redis, "127.0.0.1", "rtc-same", &secret, "");
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
    let ours = one.live_id("host");
    let refused = one.expect("POST", &format!("/room/{ours}/live/merge"), json!({"roomId": id}), 10000);
    assert!(str_field(&refused, "msg").contains("rtc-2"), "merging with a room of a node that is down: {refused}");
    assert_eq!(one.ok("GET", &format!("/room/{ours}/live/merge"), ()), json!([]), "and nothing changed");

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
    for (server, _) in &nodes {
        wait_until(|| metric(server, "uprtcd_cluster_nodes") == 3, "the nodes register again in an empty Redis");
    }
    assert_eq!(one.room(&theirs), two.room(&theirs));
    assert_eq!(two.room(&ours), one.room(&ours), "nothing acknowledged was lost");
}

fn live_room(server: &Server, host: &str) -> (String, u64) {
    let room = server.live_id(host);
    let code = u64_field(&server.room(&room), "invitationCode");
    (room, code)
}

#[test]
fn a_mirror_on_another_node_feeds_its_audience_over_a_link_and_closes_with_the_room() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two, three) = (&nodes[0].0, &nodes[1].0, &nodes[2].0);
    let (room, code) = live_room(one, "host");
    let mut host = join(one, &room, code, "host");
    let mut host_media = publish_video(&mut host, 0xA0);

    // By hand, through a third node: the call goes to the origin, which opens it on node 2.
    let mirror = format!("/room/{room}/live/mirror");
    three.ok("POST", &mirror, json!({"serverAlias": "rtc-2"}));
    three.expect("POST", &mirror, json!({"serverAlias": "rtc-2"}), 50013);
    let unknown = three.expect("POST", &mirror, json!({"serverAlias": "rtc-9"}), 50015);
    assert!(str_field(&unknown, "msg").contains("rtc-9"), "{unknown}");
    let mirrors = one.ok("GET", &format!("/room/{room}/live/mirrors"), ());
    let listed = mirrors.as_array().expect("an array");
    assert_eq!(listed.len(), 1, "{mirrors}");
    assert_eq!(str_field(&listed[0], "serverAlias"), "rtc-2");
    assert_eq!(str_field(&listed[0], "serverUrl"), two.url_prefix());
    assert_eq!(one.room(&room)["mirrorServers"], json!(["rtc-2"]));

    // The audience of node 2 joins with the room's invitation code there.
    let mut viewer = Viewer::join(two, &room, code, "viewer");
    let tracks = viewer.renegotiate();
    assert_eq!(tracks.len(), 1, "the host's track, fed over the link: {tracks:?}");
    assert_eq!(tracks[0]["peer"], "host");
    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut host_media, 0xA0, 60));
        let media = viewer.media.as_mut().unwrap();
        let arrived = receive_video(|buf, wait| media.receive(buf, wait), None, 60);
        assert_eq!(sequence(&arrived), (0..60).collect::<Vec<u16>>(), "every packet, in order, across nodes");
    });
    // A key-frame request of node 2's audience reaches the host at the origin.
    let mut buf = vec![0u8; 2048];
    let sent_as = tracks[0]["ssrc"].as_u64().expect("the offer names the SSRC") as u32;
    let len = uprtcd_dataplane::wire::rtcp::write_pli(&mut buf, 0x77, sent_as).unwrap();
    viewer.media.as_mut().unwrap().send_rtcp(&mut buf, len).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pli = loop {
        assert!(Instant::now() < deadline, "no PLI reached the host at the origin");
        match host_media.receive(&mut buf, Duration::from_millis(200)) {
            Some(Ok(uprtcd_dataplane::peer::Received::Rtcp { len })) => {
                let compound = uprtcd_dataplane::wire::rtcp::RtcpCompound::new_checked(&buf[..len]).unwrap();
                let asked = compound.packets().any(
                    |p| matches!(p, uprtcd_dataplane::wire::rtcp::RtcpPacket::Pli(pli) if pli.media_ssrc() == 0xA0),
                );
                if asked {
                    break true;
                }
            }
            _ => continue,
        }
    };
    assert!(pli);
    // Worker counters are published about once a second.
    wait_until(
        || metric(two, "uprtcd_worker_packets_in_total") >= 60,
        "node 2's link worker counts what came over the link",
    );

    // Hosts publish at the origin only.
    let mut stray = join(two, &room, code, "host");
    let identity =
        uprtcd_dataplane::dtls::DtlsIdentity::generate(uprtcd_dataplane::dtls::DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = uprtcd_dataplane::ice::IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), 0xB0);
    stray.send(tungstenite::Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let refused = event_of(&mut stray, "error").expect("an error event");
    assert_eq!(refused["code"], 50009, "{refused}");

    // Closing the room at the origin closes the mirror and its audience.
    two.ok("DELETE", &format!("/room/{room}"), ());
    let closed = patient_event_of(&mut viewer.signalling, "room-closed", Duration::from_secs(5));
    assert!(closed.is_some(), "the mirror's audience hears the room close");
    wait_until(|| u64_field(&two.ok("GET", "/server/room/num", ()), "num") == 0, "node 2 holds no mirror any more");
}

/// A WHEP player of `room` at `server` (a mirror node, say), connected.
fn whep_player(server: &Server, room: &str, peer: &str) -> uprtcd_dataplane::peer::UdpPeer {
    let identity =
        uprtcd_dataplane::dtls::DtlsIdentity::generate(uprtcd_dataplane::dtls::DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = uprtcd_dataplane::ice::IceCredentials::generate().unwrap();
    let offer = player_offer(&ice, &identity.fingerprint().to_string());
    let played = whip_post(server, "whep", room, &token(server, room, peer), &offer);
    assert_eq!(played.status, 201, "{}", played.text());
    connect_media(&played.text(), ice, &identity)
}

#[test]
fn mirrors_go_on_when_another_mirror_node_is_killed_and_a_restarted_one_is_fed_again() {
    let redis = Redis::start();
    let mut nodes = three_nodes(&redis);
    let (room, code) = live_room(&nodes[0].0, "host");
    let mut host = join(&nodes[0].0, &room, code, "host");
    let mut host_media = publish_video(&mut host, 0xA0);
    for alias in ["rtc-2", "rtc-3"] {
        nodes[0].0.ok("POST", &format!("/room/{room}/live/mirror"), json!({"serverAlias": alias}));
    }
    let mut watching_three = whep_player(&nodes[2].0, &room, "p3");
    nodes[1].0.kill9();
    let mut first = 0;
    let mut feed = |host_media: &mut uprtcd_dataplane::peer::UdpPeer, player: &mut uprtcd_dataplane::peer::UdpPeer| {
        std::thread::scope(|scope| {
            let from = first;
            scope.spawn(move || send_video_from(host_media, 0xA0, from, 40));
            first += 40;
            receive_video(|buf, wait| player.receive(buf, wait), None, 40).len()
        })
    };
    // A stream reaches a mirror within a feeder's turn: the host sends until the player has it.
    let mut watch = |host_media: &mut uprtcd_dataplane::peer::UdpPeer, player: &mut uprtcd_dataplane::peer::UdpPeer| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < 30 && Instant::now() < deadline {
            got = feed(host_media, player);
        }
        got
    };
    let seen = watch(&mut host_media, &mut watching_three);
    assert!(seen >= 30, "node 3's audience goes on without node 2 ({seen} of 40)");

    nodes[1].0.restart();
    let two = &nodes[1].0;
    wait_until(|| metric(two, "uprtcd_cluster_nodes") == 3, "node 2 is back");
    assert_eq!(u64_field(&two.ok("GET", "/server/room/num", ()), "num"), 1, "it kept the mirror in its store");
    let mut watching_two = whep_player(two, &room, "p2");
    let got = watch(&mut host_media, &mut watching_two);
    assert!(got >= 30, "the origin feeds the restarted mirror node again over a new link ({got})");
}

/// Joins at a `redirect`'s server with its token: the session and its first event.
fn follow(redirect: &Value, peer: &str) -> (Client, Value) {
    let url = format!(
        "{}{}?peer={peer}&token={}",
        str_field(redirect, "serverUrl"),
        redirect["invitationCode"],
        str_field(redirect, "token")
    );
    let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let first = next_event(&mut socket).expect("a first event");
    (socket, first)
}

#[test]
fn a_full_origin_sends_its_audience_to_a_mirror_it_opens_on_another_node() {
    let redis = Redis::start();
    let nodes = three_nodes_with(&redis, "[rooms]\nmax_audience_per_node = 1\n");
    let one = &nodes[0].0;
    let (room, code) = live_room(one, "host");
    let mut host = join(one, &room, code, "host");
    let mut host_media = publish_video(&mut host, 0xA0);
    let mut stays = Viewer::join(one, &room, code, "first");
    assert_eq!(stays.renegotiate().len(), 1, "the first of the audience stays at the origin");

    let (_, redirect) = connect(one, code, "second", &token(one, &room, "second"));
    assert_eq!(redirect["type"], "redirect", "{redirect}");
    let alias = str_field(&redirect, "serverAlias").to_owned();
    let mirror = nodes
        .iter()
        .map(|(n, _)| n)
        .find(|n| n.url_prefix() == str_field(&redirect, "serverUrl"))
        .expect("the redirect names a node of the cluster");
    assert_ne!(alias, "rtc-1");
    assert_eq!(redirect["invitationCode"], json!(code));
    assert_eq!(one.room(&room)["mirrorServers"], json!([alias]), "the origin opened a mirror there");
    assert_eq!(metric(one, "uprtcd_cluster_redirects_total"), 1);

    let (mut signalling, joined) = follow(&redirect, "second");
    assert_eq!(joined["type"], "joined", "{joined}");
    signalling.send(tungstenite::Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    let identity =
        uprtcd_dataplane::dtls::DtlsIdentity::generate(uprtcd_dataplane::dtls::DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = uprtcd_dataplane::ice::IceCredentials::generate().unwrap();
    let mut moved = Viewer { signalling, ice, identity, media: None };
    assert_eq!(moved.renegotiate().len(), 1, "the host's track at the mirror");

    // A WHEP player is sent to the same mirror, which has room, with a 307.
    let identity =
        uprtcd_dataplane::dtls::DtlsIdentity::generate(uprtcd_dataplane::dtls::DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = uprtcd_dataplane::ice::IceCredentials::generate().unwrap();
    let offer = player_offer(&ice, &identity.fingerprint().to_string());
    let player_token = token(one, &room, "third");
    let sent = whip_post(one, "whep", &room, &player_token, &offer);
    assert_eq!(sent.status, 307, "{}", sent.text());
    let location = sent.header("location").expect("a Location").to_owned();
    assert_eq!(location, format!("http://{}/whep/{room}", mirror.client));
    let played = mirror.client_request(
        "POST",
        &format!("/whep/{room}"),
        &[("content-type", "application/sdp"), ("authorization", &format!("Bearer {player_token}"))],
        raw(offer),
    );
    assert_eq!(played.status, 201, "{}", played.text());
    let mut player = connect_media(&played.text(), ice, &identity);

    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut host_media, 0xA0, 40));
        for media in [stays.media.as_mut().unwrap(), moved.media.as_mut().unwrap(), &mut player] {
            let arrived = receive_video(|buf, wait| media.receive(buf, wait), None, 40);
            assert!(arrived.len() >= 30, "the audience at the origin and at the mirror receive ({})", arrived.len());
        }
    });
    assert_eq!(metric(one, "uprtcd_cluster_redirects_total"), 2);
}

#[test]
fn garbage_in_redis_is_ignored_and_counted_and_a_stalled_redis_holds_up_no_call() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let (one, two) = (&nodes[0].0, &nodes[1].0);
    let theirs = two.live_id("host");
    assert_eq!(redis.command(&["SADD", "uprtcd:aliases", "evil", "rtc-1x"]), ":2");
    assert_eq!(redis.command(&["SET", "uprtcd:node:evil", "{not json"]), "+OK");
    assert_eq!(redis.command(&["SET", "uprtcd:node:rtc-1x", r#"{"alias":"someone-else"}"#]), "+OK");
    wait_until(|| metric(one, "uprtcd_cluster_bad_entries_total") >= 2, "the bad entries are counted");
    assert_eq!(metric(one, "uprtcd_cluster_nodes"), 3, "and ignored");
    assert_eq!(one.room(&theirs), two.room(&theirs), "forwarding goes on");

    // The tag table of the wrong type: heartbeats fail, every node serves its own rooms.
    redis.command(&["DEL", "uprtcd:tags"]);
    redis.command(&["SET", "uprtcd:tags", "garbage"]);
    wait_until(|| metric(one, "uprtcd_cluster_heartbeats_total{result=\"failed\"}") >= 1, "heartbeats fail");
    let ours = one.live_id("during");
    one.room(&ours);
    redis.command(&["DEL", "uprtcd:tags"]);
    wait_until(|| metric(one, "uprtcd_cluster_nodes") == 3 && metric(two, "uprtcd_cluster_nodes") == 3, "back");
    assert_eq!(two.room(&ours), one.room(&ours));

    // Redis stalled for 3 s: calls that need it go on without it, promptly.
    std::thread::scope(|scope| {
        scope.spawn(|| redis.command(&["DEBUG", "SLEEP", "3"]));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let during = one.live_id("stalled");
        one.room(&during);
        mini_load_alias(one);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no call waits for a stalled Redis: {:?}",
            started.elapsed()
        );
    });
    wait_until(|| metric(one, "uprtcd_cluster_nodes") == 3, "the cluster after the stall");
}

/// The SSRC the audience receives `host`'s track as, from an offer's `tracks`.
fn sent_ssrc_of(tracks: &[Value], host: &str) -> u32 {
    let track = tracks.iter().find(|t| t["peer"] == host).expect("the host's track");
    track["ssrc"].as_u64().expect("offers name each track's SSRC") as u32
}

/// Packets of `ssrc` that reach `media`, up to `most`, until none came for `quiet`
/// (sequence numbers go on across a pause, so payloads are not checked).
fn packets_of(media: &mut uprtcd_dataplane::peer::UdpPeer, ssrc: u32, most: usize, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 2048];
    let mut seen = 0;
    while seen < most {
        match media.receive(&mut buf, quiet) {
            Some(Ok(uprtcd_dataplane::peer::Received::Rtp { len })) => {
                if uprtcd_dataplane::wire::rtp::RtpPacket::new_checked(&buf[..len]).unwrap().ssrc() == ssrc {
                    seen += 1;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    seen
}

/// Renegotiates until the offer has `count` tracks.
fn tracks_until(viewer: &mut Viewer, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tracks = viewer.renegotiate();
        if tracks.len() == count {
            return tracks;
        }
        assert!(Instant::now() < deadline, "no offer of {count} tracks within 15 s: {tracks:?}");
    }
}

#[test]
fn live_rooms_on_three_nodes_merge_transitively_and_separate() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let hosts = ["anna", "ben", "cleo"];
    let ssrcs = [0xA0u32, 0xB0, 0xC0];
    let rooms: Vec<(String, u64)> = nodes.iter().zip(hosts).map(|((n, _), h)| live_room(n, h)).collect();
    let mut publishers = Vec::new();
    let mut viewers = Vec::new();
    for (i, (node, _)) in nodes.iter().enumerate() {
        let (room, code) = &rooms[i];
        let mut signalling = join(node, room, *code, hosts[i]);
        let media = publish_video(&mut signalling, ssrcs[i]);
        publishers.push((signalling, media));
        let mut viewer = Viewer::join(node, room, *code, &format!("viewer{i}"));
        assert_eq!(viewer.renegotiate().len(), 1, "before merging, only the room's own host");
        viewers.push(viewer);
    }
    let (a, b, c) = (&rooms[0].0, &rooms[1].0, &rooms[2].0);
    // A+B asked of node 3, B+C of node 1: each call goes to its room's own node.
    nodes[2].0.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    nodes[0].0.ok("POST", &format!("/room/{b}/live/merge"), json!({"roomId": c}));
    nodes[1].0.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": c}), 50014);
    nodes[1].0.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": "nope"}), 50010);

    let merged = nodes[0].0.ok("GET", &format!("/room/{a}/live/merge"), ());
    let mut listed: Vec<(String, String)> = merged
        .as_array()
        .expect("an array")
        .iter()
        .map(|m| (str_field(m, "roomId").to_owned(), str_field(m, "serverAlias").to_owned()))
        .collect();
    listed.sort();
    let mut expected = vec![(b.clone(), "rtc-2".to_owned()), (c.clone(), "rtc-3".to_owned())];
    expected.sort();
    assert_eq!(listed, expected, "each merged room with the node that holds it");

    let all: Vec<Vec<Value>> = viewers.iter_mut().map(|v| tracks_until(v, 3)).collect();
    for (i, tracks) in all.iter().enumerate() {
        let mut peers: Vec<&str> = tracks.iter().filter_map(|t| t["peer"].as_str()).collect();
        peers.sort_unstable();
        assert_eq!(peers, hosts, "viewer {i} is offered every host of the group");
    }
    // Every audience receives every host, across the three nodes.
    for (h, host) in hosts.iter().enumerate() {
        std::thread::scope(|scope| {
            let (_, media) = &mut publishers[h];
            let ssrc = ssrcs[h];
            scope.spawn(move || send_video(media, ssrc, 40));
            for (i, viewer) in viewers.iter_mut().enumerate() {
                let media = viewer.media.as_mut().unwrap();
                let arrived =
                    receive_video(|buf, wait| media.receive(buf, wait), Some(sent_ssrc_of(&all[i], host)), 40);
                assert!(arrived.len() >= 30, "viewer {i} receives {host} ({} of 40)", arrived.len());
            }
        });
    }

    // Room A's audience pauses B's host, which lives on node 2, and resumes it; so does
    // room A's audience on node 3, where A is mirrored (node 3 fed A to its group already:
    // the feed becomes the mirror).
    nodes[1].0.ok("POST", &format!("/room/{a}/live/mirror"), json!({"serverAlias": "rtc-3"}));
    let mut far = Viewer::join(&nodes[2].0, a, rooms[0].1, "far");
    let far_tracks = tracks_until(&mut far, 3);
    let ben = all[0].iter().find(|t| t["peer"] == "ben").expect("ben's track")["trackId"].as_str().unwrap().to_owned();
    let ben_ssrcs = [sent_ssrc_of(&all[0], "ben"), sent_ssrc_of(&far_tracks, "ben")];
    nodes[1].0.ok("POST", &format!("/room/{a}/live/pause/mergeTrack/{ben}"), ());
    let (_, ben_media) = &mut publishers[1];
    send_video_from(ben_media, 0xB0, 40, 30);
    for (i, (media, ssrc)) in
        [viewers[0].media.as_mut().unwrap(), far.media.as_mut().unwrap()].into_iter().zip(ben_ssrcs).enumerate()
    {
        assert_eq!(packets_of(media, ssrc, 30, Duration::from_millis(500)), 0, "paused for room A's audience ({i})");
    }
    nodes[2].0.ok("POST", &format!("/room/{a}/live/resume/mergeTrack/{ben}"), ());
    std::thread::scope(|scope| {
        scope.spawn(|| send_video_from(ben_media, 0xB0, 70, 40));
        for (media, ssrc) in
            [viewers[0].media.as_mut().unwrap(), far.media.as_mut().unwrap()].into_iter().zip(ben_ssrcs)
        {
            assert_eq!(packets_of(media, ssrc, 30, Duration::from_secs(2)), 30, "resumed for room A's audience");
        }
    });

    // C leaves the group: its audience sees only C, the others A and B.
    nodes[1].0.ok("POST", &format!("/room/{b}/live/separate"), json!({"roomId": c}));
    tracks_until(&mut viewers[2], 1);
    tracks_until(&mut viewers[0], 2);
    tracks_until(&mut viewers[1], 2);
    assert_eq!(nodes[2].0.ok("GET", &format!("/room/{c}/live/merge"), ()), json!([]));
    // The host of A takes A out: B is alone again.
    nodes[0].0.ok("POST", &format!("/room/{a}/live/master/anna/separate"), ());
    tracks_until(&mut viewers[1], 1);
    nodes[0].0.expect("POST", &format!("/room/{a}/live/master/anna/separate"), (), 50010);
    // The feeds of other nodes' rooms that each node held for its group are given up.
    for (node, _) in &nodes {
        wait_until(
            || u64_field(&node.ok("GET", "/server/room/num", ()), "num") == 1,
            "only the node's own room is left",
        );
    }
}

#[test]
fn min_load_moves_to_the_node_with_the_fewest_clients_and_record_server_to_one_that_can_record() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis);
    let mut clients = Vec::new();
    for (i, (node, _)) in nodes.iter().enumerate().skip(1) {
        let (room, code) = live_room(node, "host");
        clients.push(join(node, &room, code, &format!("viewer{i}")));
    }
    // Past the penalty window of the choices made so far, the load alone decides.
    std::thread::sleep(Duration::from_millis(2100));
    wait_until(|| mini_load_alias(&nodes[1].0) == "rtc-1", "the node without clients is the least loaded");
    std::thread::sleep(Duration::from_millis(2100));
    let (room, code) = live_room(&nodes[0].0, "host");
    for i in 0..2 {
        clients.push(join(&nodes[0].0, &room, code, &format!("crowd{i}")));
    }
    std::thread::sleep(Duration::from_millis(2100));
    wait_until(|| mini_load_alias(&nodes[2].0) != "rtc-1", "once it has the most clients, another node is chosen");

    let recorder = nodes[0].0.ok("GET", "/record/server", ());
    let alias = str_field(&recorder, "serverAlias");
    assert!(["rtc-1", "rtc-2", "rtc-3"].contains(&alias), "{recorder}");
    let node = nodes.iter().map(|(n, _)| n).find(|n| n.url_prefix() == str_field(&recorder, "serverUrl"));
    assert!(node.is_some(), "the answer is one node's, whole: {recorder}");
}

#[test]
fn a_node_with_no_rooms_yet_whose_tag_is_taken_takes_a_fresh_one() {
    let redis = Redis::start();
    let (mut node, _dir) = node(&redis, "127.0.0.1", "rtc-new", &unique_secret(), "");
    let probe = node.live_id("probe");
    node.ok("DELETE", &format!("/room/{probe}"), ());
    let tag = probe[7..9].to_owned();
    node.kill9();
    // Another node holds that tag now (two fresh nodes drew the same one).
    assert_eq!(redis.command(&["HSET", "uprtcd:tags", &tag, "intruder"]), ":0");
    node.restart();
    wait_until(|| metric(&node, "uprtcd_cluster_registered") == 1, "the node registers under a fresh tag");
    let room = node.live_id("host");
    let fresh = &room[7..9];
    assert_ne!(fresh, tag, "its ids carry the fresh tag");
    assert_eq!(redis.command(&["HGET", "uprtcd:tags", fresh]), "$7");
    assert!(node.log().contains("takes a fresh one"), "{}", node.log());
}
