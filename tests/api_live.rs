//! Live rooms over HTTP: co-hosts (live members), merge groups, merged-track pause/resume and
//! mirrors on the workers of this node. The contract is docs/rest-api.md, "Live rooms".

mod support;

use support::*;

fn members(srv: &Server, id: &str) -> Value {
    srv.ok("GET", &format!("/room/{id}/live/members"), ())
}

fn merge_room_ids(srv: &Server, id: &str) -> Vec<String> {
    sorted(&srv.room(id)["mergeRoomIds"])
}

#[test]
fn live_members_are_added_listed_in_order_updated_and_removed() {
    let srv = Server::start(&[]);
    let l = srv.live_id("host");
    assert_eq!(members(&srv, &l), json!([]));
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "bob", "kind": "video", "maxBitrate": 1500000}));
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "carol"}));
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "dave", "kind": "audio"}));
    assert_eq!(members(&srv, &l), json!(["bob", "carol", "dave"]), "in the order added");
    // Adding again updates kind and cap: no duplicate, order kept.
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "bob", "kind": "audio", "maxBitrate": 100000}));
    assert_eq!(members(&srv, &l), json!(["bob", "carol", "dave"]));
    // Live members are not connected members, not invitations.
    let g = srv.room(&l);
    assert!(arr_field(&g, "memberIds").is_empty(), "{g}");
    assert!(arr_field(&g, "invitedUserIds").is_empty(), "{g}");

    srv.ok("DELETE", &format!("/room/{l}/live/member/carol"), ());
    assert_eq!(members(&srv, &l), json!(["bob", "dave"]));
    srv.expect("DELETE", &format!("/room/{l}/live/member/carol"), (), 50011);
    srv.expect("DELETE", &format!("/room/{l}/live/member/never"), (), 50011);
    srv.expect("DELETE", &format!("/room/{l}/live/member/host"), (), 50011);
    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "carol"}));
    assert_eq!(members(&srv, &l), json!(["bob", "dave", "carol"]), "re-added goes last");
}

#[test]
fn live_member_refusals() {
    let srv = Server::start(&[]);
    let l = srv.live_id("host");
    let c = srv.convo_id("alice", &["bob"]);
    let mut soft = Soft::new();
    srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/member"), json!({"peerId": "host"}), 10003, None);
    srv.soft_expect(&mut soft, "POST", &format!("/room/{c}/live/member"), json!({"peerId": "bob"}), 10003, None);
    for (body, field) in [
        (json!({}), "peerId"),
        (json!({"peerId": 3}), "peerId"),
        (json!({"peerId": ""}), "peerId"),
        (json!({"peerId": "p", "kind": "screen"}), "kind"),
        (json!({"peerId": "p", "kind": 1}), "kind"),
        (json!({"peerId": "p", "maxBitrate": -1}), "maxBitrate"),
        (json!({"peerId": "p", "maxBitrate": "high"}), "maxBitrate"),
    ] {
        srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/member"), body, 10002, Some(field));
    }
    for b in [
        r#"{"peerId": "p", "maxBitrate": 1e30}"#,
        r#"{"peerId": "p", "maxBitrate": 18446744073709551616}"#,
        r#"{"peerId": "p""#,
    ] {
        srv.soft_expect(&mut soft, "POST", &format!("/room/{l}/live/member"), raw(b), 10002, None);
    }
    soft.done();
    assert_eq!(members(&srv, &l), json!([]), "no refused call added anyone");
}

#[test]
fn convo_room_in_every_live_call_is_10003() {
    let srv = Server::start(&[]);
    let me = str_field(&srv.ok("GET", "/server/miniLoad", ()), "serverAlias").to_string();
    let c = srv.convo_id("alice", &["bob"]);
    let l = srv.live_id("host");
    let l2 = srv.live_id("host2");
    srv.ok("POST", &format!("/room/{l}/live/merge"), json!({"roomId": l2}));
    let calls: Vec<(&str, String, Body)> = vec![
        ("POST", format!("/room/{c}/live/member"), json!({"peerId": "bob"}).into()),
        ("GET", format!("/room/{c}/live/members"), Body::None),
        ("DELETE", format!("/room/{c}/live/member/bob"), Body::None),
        ("POST", format!("/room/{c}/live/merge"), json!({"roomId": l}).into()),
        ("POST", format!("/room/{l}/live/merge"), json!({"roomId": c}).into()),
        ("GET", format!("/room/{c}/live/merge"), Body::None),
        ("POST", format!("/room/{c}/live/master/alice/separate"), Body::None),
        ("POST", format!("/room/{c}/live/separate"), json!({"roomId": l}).into()),
        ("POST", format!("/room/{c}/live/pause/mergeTrack/t1"), Body::None),
        ("POST", format!("/room/{c}/live/mirror"), json!({"serverAlias": me}).into()),
        ("GET", format!("/room/{c}/live/mirrors"), Body::None),
    ];
    let mut soft = Soft::new();
    for (m, p, b) in calls {
        srv.soft_expect(&mut soft, m, &p, b, 10003, None);
    }
    soft.done();
    assert_eq!(srv.merge_ids(&l), vec![l2.clone()], "the merge of l and l2 is untouched");
    assert!(arr_field(&srv.room(&c), "mergeRoomIds").is_empty());
}

#[test]
fn merge_groups_are_transitive_and_separate_cleanly() {
    let alias = "rtc-7:cluster-3";
    let srv = Server::builder().alias(alias).start();
    let a = srv.live_id("ha");
    let b = srv.live_id("hb");
    let c = srv.live_id("hc");
    let d = srv.live_id("hd");
    assert!(srv.merge_ids(&a).is_empty(), "not merged: empty list");
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": c}));
    srv.ok("POST", &format!("/room/{b}/live/merge"), json!({"roomId": d}));

    let rows = srv.ok("GET", &format!("/room/{a}/live/merge"), ());
    for r in rows.as_array().expect("array") {
        assert_eq!(str_field(r, "serverAlias"), alias, "{r}");
        assert_eq!(str_field(r, "serverAddress"), srv.api, "{r}");
    }
    let all = [&a, &b, &c, &d];
    for x in all {
        let mut others: Vec<String> = all.iter().filter(|y| **y != x).map(|y| y.to_string()).collect();
        others.sort();
        assert_eq!(srv.merge_ids(x), others, "live/merge of {x}: every other room of the group");
        assert_eq!(merge_room_ids(&srv, x), others, "mergeRoomIds of {x}");
    }

    // Passive separation of B from A: A, C, D stay together, B is alone.
    srv.ok("POST", &format!("/room/{a}/live/separate"), json!({"roomId": b}));
    assert!(srv.merge_ids(&b).is_empty());
    assert!(merge_room_ids(&srv, &b).is_empty());
    let mut cd = vec![c.clone(), d.clone()];
    cd.sort();
    assert_eq!(srv.merge_ids(&a), cd);
    let mut ac = vec![a.clone(), c.clone()];
    ac.sort();
    assert_eq!(srv.merge_ids(&d), ac);
    assert_eq!(merge_room_ids(&srv, &d), ac);
    // B is not in A's group any more.
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": b}), 50010);

    // Host separation: C's host takes C out.
    srv.expect("POST", &format!("/room/{c}/live/master/hd/separate"), (), 50011);
    srv.expect("POST", &format!("/room/{c}/live/master/nobody/separate"), (), 50011);
    srv.ok("POST", &format!("/room/{c}/live/master/hc/separate"), ());
    assert!(srv.merge_ids(&c).is_empty());
    assert_eq!(srv.merge_ids(&a), vec![d.clone()]);
    assert_eq!(srv.merge_ids(&d), vec![a.clone()]);
    // C is not merged any more.
    srv.expect("POST", &format!("/room/{c}/live/master/hc/separate"), (), 50010);
    srv.expect("POST", &format!("/room/{b}/live/master/hb/separate"), (), 50010);

    // A separated room can be merged again, into another group.
    srv.ok("POST", &format!("/room/{b}/live/merge"), json!({"roomId": c}));
    assert_eq!(srv.merge_ids(&b), vec![c.clone()]);
    assert_eq!(srv.merge_ids(&a), vec![d.clone()]);
    // Merging the two groups joins all four again.
    srv.ok("POST", &format!("/room/{c}/live/merge"), json!({"roomId": d}));
    assert_eq!(srv.merge_ids(&a).len(), 3);
}

#[test]
fn merge_refusals() {
    let srv = Server::start(&[]);
    let a = srv.live_id("ha");
    let b = srv.live_id("hb");
    let c = srv.live_id("hc");
    let d = srv.live_id("hd");
    let closed = srv.live_id("hx");
    srv.ok("DELETE", &format!("/room/{closed}"), ());
    let convo = srv.convo_id("m", &[]);

    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": a}), 10003);
    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": convo}), 10003);
    srv.expect("POST", &format!("/room/{convo}/live/merge"), json!({"roomId": a}), 10003);
    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": closed}), 50010);
    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": "ZZZZZZZZZZ"}), 50010);
    srv.expect("POST", &format!("/room/{closed}/live/merge"), json!({"roomId": a}), 50001);
    for body in [json!({}), json!({"roomId": ""}), json!({"roomId": 5}), json!({"roomId": "r".repeat(129)})] {
        let env = srv.expect("POST", &format!("/room/{a}/live/merge"), body.clone(), 10002);
        assert!(str_field(&env, "msg").contains("roomId"), "{body}: {env}");
    }
    srv.expect("POST", &format!("/room/{a}/live/merge"), raw("{\"roomId\":"), 10002);
    assert!(srv.merge_ids(&a).is_empty(), "no refused merge took effect");

    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    srv.ok("POST", &format!("/room/{b}/live/merge"), json!({"roomId": c}));
    // Already in one group, directly or transitively, from either side.
    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}), 50014);
    srv.expect("POST", &format!("/room/{b}/live/merge"), json!({"roomId": a}), 50014);
    srv.expect("POST", &format!("/room/{a}/live/merge"), json!({"roomId": c}), 50014);
    srv.expect("POST", &format!("/room/{c}/live/merge"), json!({"roomId": a}), 50014);
    let mut bc = vec![b.clone(), c.clone()];
    bc.sort();
    assert_eq!(srv.merge_ids(&a), bc);
    assert!(srv.merge_ids(&d).is_empty());
}

#[test]
fn separate_refusals() {
    let srv = Server::start(&[]);
    let a = srv.live_id("ha");
    let b = srv.live_id("hb");
    let c = srv.live_id("hc");
    let d = srv.live_id("hd");
    let closed = srv.live_id("hx");
    srv.ok("DELETE", &format!("/room/{closed}"), ());
    // Not merged at all.
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": b}), 50010);
    srv.expect("POST", &format!("/room/{a}/live/master/ha/separate"), (), 50010);
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    srv.ok("POST", &format!("/room/{c}/live/merge"), json!({"roomId": d}));
    // In another group, not open, unknown.
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": c}), 50010);
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": closed}), 50010);
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": "hello"}), 50010);
    for body in [json!({}), json!({"roomId": ""}), json!({"roomId": ["x"]})] {
        let env = srv.expect("POST", &format!("/room/{a}/live/separate"), body.clone(), 10002);
        assert!(str_field(&env, "msg").contains("roomId"), "{body}: {env}");
    }
    // Not the master.
    srv.expect("POST", &format!("/room/{a}/live/master/hb/separate"), (), 50011);
    srv.expect("POST", &format!("/room/{a}/live/master/guest/separate"), (), 50011);
    assert_eq!(srv.merge_ids(&a), vec![b.clone()]);
    assert_eq!(srv.merge_ids(&c), vec![d.clone()]);
    // The group of two falls apart when one leaves.
    srv.ok("POST", &format!("/room/{b}/live/separate"), json!({"roomId": a}));
    assert!(srv.merge_ids(&a).is_empty());
    assert!(srv.merge_ids(&b).is_empty());
}

#[test]
fn merge_track_pause_and_resume() {
    let srv = Server::start(&[]);
    let a = srv.live_id("ha");
    let b = srv.live_id("hb");
    srv.expect("POST", &format!("/room/{a}/live/pause/mergeTrack/t1"), (), 50010);
    srv.expect("POST", &format!("/room/{a}/live/resume/mergeTrack/t1"), (), 50010);
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    // Nobody publishes anything: no merged room has that track.
    for action in ["pause", "resume"] {
        for t in ["t1", "audio", "房间🚀"] {
            srv.expect("POST", &format!("/room/{a}/live/{action}/mergeTrack/{}", enc(t)), (), 50016);
            srv.expect("POST", &format!("/room/{b}/live/{action}/mergeTrack/{}", enc(t)), (), 50016);
        }
    }
    for action in ["stop", "PAUSE", "mute", "x"] {
        srv.expect("POST", &format!("/room/{a}/live/{action}/mergeTrack/t1"), (), 10002);
    }
    srv.expect("POST", &format!("/room/{a}/live/pause/mergeTrack/{}", "t".repeat(129)), (), 10002);
}

#[test]
fn deleting_a_room_takes_it_out_of_its_group() {
    let srv = Server::start(&[]);
    let a = srv.live_id("ha");
    let b = srv.live_id("hb");
    let c = srv.live_id("hc");
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": b}));
    srv.ok("POST", &format!("/room/{a}/live/merge"), json!({"roomId": c}));
    srv.ok("DELETE", &format!("/room/{b}"), ());
    assert_eq!(srv.merge_ids(&a), vec![c.clone()]);
    assert_eq!(srv.merge_ids(&c), vec![a.clone()]);
    assert_eq!(merge_room_ids(&srv, &a), vec![c.clone()]);
    // Re-created with the same id, it is a fresh room, in no group.
    let d = srv.ok("POST", "/room/live", json!({"masterId": "hb", "roomId": b}));
    assert_eq!(str_field(&d, "roomId"), b);
    assert!(srv.merge_ids(&b).is_empty());
    assert_eq!(srv.merge_ids(&a), vec![c.clone()]);
    srv.expect("POST", &format!("/room/{a}/live/separate"), json!({"roomId": b}), 50010);
}

fn proc_has_thread(pid: u32, tid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

#[test]
fn cpu_load_lists_one_row_per_worker_thread() {
    let srv = Server::builder().workers(2).start();
    let rows = srv.cpu_load();
    assert_eq!(rows.len(), 2, "--workers 2: two rows: {rows:?}");
    assert_ne!(rows[0].0, rows[1].0, "distinct workPid: {rows:?}");
    for (tid, cpu) in &rows {
        assert!(proc_has_thread(srv.pid, *tid), "workPid {tid} must be a thread of uprtcd (pid {})", srv.pid);
        assert_ne!(*tid, srv.pid as u64, "a worker thread, not the main thread");
        assert!(*cpu <= 200, "cpu % of one thread over one second: {cpu}");
    }
}

#[test]
fn mirror_on_the_other_worker_then_none_left() {
    let alias = "rtc-2:cluster-1";
    let srv = Server::builder().workers(2).alias(alias).start();
    let workers: Vec<u64> = srv.cpu_load().into_iter().map(|(t, _)| t).collect();
    assert_eq!(workers.len(), 2);
    let r = srv.live_id("host");
    assert_eq!(srv.ok("GET", &format!("/room/{r}/live/mirrors"), ()), json!([]));

    srv.ok("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias}));
    let list = srv.ok("GET", &format!("/room/{r}/live/mirrors"), ());
    let rows = list.as_array().unwrap_or_else(|| panic!("mirrors must be an array: {list}"));
    assert_eq!(rows.len(), 1, "{list}");
    let m = &rows[0];
    str_field(m, "name");
    assert!(str_field(m, "serverUrl").starts_with(&srv.url_prefix()), "{m}");
    assert_eq!(str_field(m, "serverUrl6"), "", "{m}");
    assert_eq!(str_field(m, "serverAddress"), srv.api, "{m}");
    assert_eq!(str_field(m, "serverAlias"), alias, "{m}");
    let mirror_pid = u64_field(m, "workPid");
    assert!(workers.contains(&mirror_pid), "workPid {mirror_pid} must be one of /server/cpu/load {workers:?}");
    let own_pid = *workers.iter().find(|w| **w != mirror_pid).expect("the other worker");
    assert_eq!(srv.room(&r)["mirrorServers"], json!([alias]));

    // The room's own worker cannot hold a mirror, the other one already does.
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias}), 50015);
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias, "pid": mirror_pid}), 50013);
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias, "pid": own_pid}), 50013);
    // Another server's alias: this node knows no other.
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": "rtc-9:cluster-9"}), 50015);
    // Bad parameters.
    let not_a_worker = (1..).find(|p| !workers.contains(p)).expect("a number");
    let mut soft = Soft::new();
    for (body, field) in [
        (json!({"serverAlias": alias, "pid": not_a_worker}), "pid"),
        (json!({"serverAlias": alias, "pid": -1}), "pid"),
        (json!({"serverAlias": alias, "pid": "1"}), "pid"),
        (json!({}), "serverAlias"),
        (json!({"serverAlias": 5}), "serverAlias"),
    ] {
        srv.soft_expect(&mut soft, "POST", &format!("/room/{r}/live/mirror"), body, 10002, Some(field));
    }
    let huge = raw(format!(r#"{{"serverAlias": "{alias}", "pid": 1e30}}"#));
    srv.soft_expect(&mut soft, "POST", &format!("/room/{r}/live/mirror"), huge, 10002, Some("pid"));
    soft.done();
    assert_eq!(srv.ok("GET", &format!("/room/{r}/live/mirrors"), ()).as_array().map(Vec::len), Some(1));

    // Another room gets its own mirror on the worker it does not live on.
    let r2 = srv.live_id("host2");
    srv.ok("POST", &format!("/room/{r2}/live/mirror"), json!({"serverAlias": alias}));
    let m2 = srv.ok("GET", &format!("/room/{r2}/live/mirrors"), ());
    assert!(workers.contains(&u64_field(&m2[0], "workPid")), "{m2}");

    // Closing the room ends its mirrors: re-created with its id, it has none.
    srv.ok("DELETE", &format!("/room/{r}"), ());
    srv.expect("GET", &format!("/room/{r}/live/mirrors"), (), 50001);
    let d = srv.ok("POST", "/room/live", json!({"masterId": "host", "roomId": r}));
    assert_eq!(str_field(&d, "roomId"), r);
    assert_eq!(srv.ok("GET", &format!("/room/{r}/live/mirrors"), ()), json!([]));
    assert_eq!(srv.room(&r)["mirrorServers"], json!([]));
}

#[test]
fn mirror_with_one_worker_has_no_worker_left() {
    let alias = "solo";
    let srv = Server::builder().workers(1).alias(alias).start();
    let workers = srv.cpu_load();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert!(proc_has_thread(srv.pid, workers[0].0));
    let r = srv.live_id("host");
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias}), 50015);
    srv.expect("POST", &format!("/room/{r}/live/mirror"), json!({"serverAlias": alias, "pid": workers[0].0}), 50013);
    assert_eq!(srv.ok("GET", &format!("/room/{r}/live/mirrors"), ()), json!([]));
    assert_eq!(srv.room(&r)["mirrorServers"], json!([]));
}

#[test]
fn metrics_expose_every_worker_thread_without_the_secret() {
    let srv = Server::builder().workers(2).start();
    let tids: Vec<u64> = srv.cpu_load().into_iter().map(|(t, _)| t).collect();
    let r = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.content_type.as_deref().is_some_and(|c| c.starts_with("text/plain")), "{:?}", r.content_type);
    let text = r.text();
    for (worker, tid) in tids.iter().enumerate() {
        for family in ["uprtcd_worker_packets_in_total", "uprtcd_worker_cpu_percent", "uprtcd_worker_transports"] {
            let labels = format!("{family}{{worker=\"{worker}\",tid=\"{tid}\"}} ");
            assert!(text.contains(&labels), "{labels} missing from:\n{text}");
        }
        let drops = format!("uprtcd_worker_drops_total{{worker=\"{worker}\",tid=\"{tid}\",reason=\"srtp_auth\"}} 0");
        assert!(text.contains(&drops), "{drops} missing");
    }
    srv.live_id("host");
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    assert!(text.contains("\nuprtcd_rooms 1\n"), "{text}");
}
