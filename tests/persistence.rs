//! Persistence: every change is on disk before its answer, so a SIGKILL right after the last
//! answer loses nothing; a restarted server answers every GET as before and still knows its
//! own room ids. The contract is docs/rest-api.md, "Persistence" and "Room ids".

mod support;

use support::tmpfs::Tmpfs;
use support::*;

/// Everything the API tells about one room, with the address fields (which follow the ports
/// of the running process) taken out and checked separately.
#[derive(Debug, PartialEq)]
struct Snapshot {
    room: Value,
    live_members: Option<Value>,
    merge: Option<Vec<String>>,
    mirror_aliases: Option<Vec<String>>,
    record_status: u64,
}

fn snapshot(srv: &Server, id: &str) -> Snapshot {
    let mut room = srv.room(id);
    assert!(str_field(&room, "serverUrl").starts_with(&srv.url_prefix()), "{room}");
    assert_eq!(str_field(&room, "serverAddress"), srv.api, "{room}");
    let obj = room.as_object_mut().expect("room object");
    obj.remove("serverUrl");
    obj.remove("serverUrl6");
    obj.remove("serverAddress");
    // Order within these lists is not part of the contract; compare as sets.
    for k in ["invitedUserIds", "mergeRoomIds", "mirrorServers"] {
        if let Some(v) = obj.get(k).cloned() {
            obj.insert(k.to_string(), json!(sorted(&v)));
        }
    }
    let is_live = str_field(&room, "type") == "live";
    let (live_members, merge, mirror_aliases) = if is_live {
        let workers: Vec<u64> = srv.cpu_load().into_iter().map(|(t, _)| t).collect();
        let mirrors = srv.ok("GET", &format!("/room/{id}/live/mirrors"), ());
        let mut aliases: Vec<String> = mirrors
            .as_array()
            .expect("mirrors array")
            .iter()
            .map(|m| {
                assert_eq!(str_field(m, "serverAddress"), srv.api, "{m}");
                assert!(str_field(m, "serverUrl").starts_with(&srv.url_prefix()), "{m}");
                let w = u64_field(m, "workPid");
                assert!(workers.contains(&w), "mirror workPid {w} must be a worker of this process {workers:?}");
                str_field(m, "serverAlias").to_string()
            })
            .collect();
        aliases.sort();
        (Some(srv.ok("GET", &format!("/room/{id}/live/members"), ())), Some(srv.merge_ids(id)), Some(aliases))
    } else {
        (None, None, None)
    };
    let record_status = u64_field(&srv.ok("GET", &format!("/room/{id}/record/status"), ()), "status");
    Snapshot { room, live_members, merge, mirror_aliases, record_status }
}

#[test]
fn everything_survives_sigkill_right_after_the_last_answer() {
    let alias = "persist-1:cluster-1";
    let mut srv = Server::builder().workers(2).alias(alias).start();

    // Conversation rooms: parameters, invitations, join switch.
    let c1 = str_field(
        &srv.ok(
            "POST",
            "/room/convo",
            json!({"masterId": "alice", "memberIds": ["bob", "carol"], "maxMemberNum": 5, "protocol": 1,
                   "minBitrate": 100000, "maxBitrate": 2000000}),
        ),
        "roomId",
    )
    .to_string();
    srv.ok("POST", &format!("/room/{c1}/convo/members"), json!({"memberIds": ["dave", "房间🚀"]}));
    srv.ok("POST", &format!("/room/{c1}/join/enbale/false"), ());
    let c2 = srv.convo_id("erin", &[]);
    let closed = srv.convo_id("frank", &["gina"]);
    srv.ok("DELETE", &format!("/room/{closed}"), ());

    // Live rooms: co-hosts, a merge group with a separation, a mirror.
    let l1 = str_field(&srv.ok("POST", "/room/live", json!({"masterId": "h1", "protocol": 2})), "roomId").to_string();
    srv.ok("POST", &format!("/room/{l1}/live/member"), json!({"peerId": "m1", "kind": "video"}));
    srv.ok("POST", &format!("/room/{l1}/live/member"), json!({"peerId": "m2"}));
    srv.ok("POST", &format!("/room/{l1}/live/member"), json!({"peerId": "m3", "kind": "video", "maxBitrate": 500000}));
    srv.ok("POST", &format!("/room/{l1}/live/member"), json!({"peerId": "m1", "kind": "audio"}));
    srv.ok("DELETE", &format!("/room/{l1}/live/member/m2"), ());
    let l2 = srv.live_id("h2");
    let l3 = srv.live_id("h3");
    let l4 = srv.live_id("h4");
    let l5 = srv.live_id("h5");
    srv.ok("POST", &format!("/room/{l1}/live/merge"), json!({"roomId": l2}));
    srv.ok("POST", &format!("/room/{l1}/live/merge"), json!({"roomId": l3}));
    srv.ok("POST", &format!("/room/{l2}/live/merge"), json!({"roomId": l4}));
    srv.ok("POST", &format!("/room/{l1}/live/separate"), json!({"roomId": l3}));
    srv.ok("POST", &format!("/room/{l5}/live/mirror"), json!({"serverAlias": alias}));

    // A recording and a blocked user.
    let bytes = media_file("webm", 1);
    let rid = str_field(&expect_ok(&srv.upload("file", "keep.webm", &bytes), "upload"), "recordId").to_string();

    let open = [&c1, &c2, &l1, &l2, &l3, &l4, &l5];
    let before: Vec<Snapshot> = open.iter().map(|id| snapshot(&srv, id)).collect();
    let num_before = u64_field(&srv.ok("GET", "/server/room/num", ()), "num");
    assert_eq!(num_before, 7);
    assert_eq!(before[2].live_members, Some(json!(["m1", "m3"])));
    assert_eq!(before[2].merge.as_ref().map(Vec::len), Some(2));
    assert_eq!(before[6].mirror_aliases, Some(vec![alias.to_string()]));
    let codes: Vec<u64> = before.iter().map(|s| u64_field(&s.room, "invitationCode")).collect();

    // The last change, then SIGKILL at once.
    srv.ok("DELETE", "/server/block/peer/mallory", ());
    srv.kill9();
    srv.restart();

    // Every GET answers as before.
    for (id, snap) in open.iter().zip(&before) {
        let after = snapshot(&srv, id);
        assert_eq!(&after, snap, "room {id} after SIGKILL + restart");
    }
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), num_before);
    for id in open {
        assert!(bool_field(&srv.ok("GET", &format!("/room/{id}/exist"), ()), "exist"));
    }
    srv.expect("GET", &format!("/room/{closed}"), (), 50001);
    assert!(!bool_field(&srv.ok("GET", &format!("/room/{closed}/exist"), ()), "exist"));

    // The recording and the block.
    assert_eq!(u64_field(&srv.ok("GET", &format!("/record/{}/status", enc(&rid)), ()), "status"), 6);
    let r = srv.request(&Auth::Key, "GET", &format!("{PREFIX}/record/download/{}", enc(&rid)), &[], Body::None);
    assert_eq!(r.status, 200);
    assert!(r.body == bytes, "the recording comes back byte for byte ({} vs {} bytes)", r.body.len(), bytes.len());
    srv.expect("POST", "/room/convo", json!({"masterId": "mallory", "memberIds": []}), 10003);
    srv.expect("POST", "/room/live", json!({"masterId": "mallory"}), 10003);

    // The restored rooms are open for the roomId rules, and their codes stay taken.
    srv.expect("POST", "/room/convo", json!({"masterId": "alice", "memberIds": [], "roomId": c1}), 50002);
    srv.expect("POST", "/room/live", json!({"masterId": "h1", "roomId": l1}), 50002);
    srv.expect("POST", &format!("/room/{l1}/live/merge"), json!({"roomId": l4}), 50014);
    srv.expect("POST", &format!("/room/{l1}/live/separate"), json!({"roomId": l3}), 50010);
    srv.expect("POST", &format!("/room/{l5}/live/mirror"), json!({"serverAlias": alias}), 50015);
    for i in 0..10 {
        let d = srv.create_convo(&format!("new{i}"), &[]);
        let code = u64_field(&d, "invitationCode");
        assert!(!codes.contains(&code), "new room got invitation code {code} of a restored room: {codes:?}");
    }

    // A restarted server still recognises its own ids.
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "someone", "memberIds": [], "roomId": closed}));
    assert_eq!(str_field(&d, "roomId"), closed, "closed before the crash, re-created with its id");
    srv.ok("DELETE", &format!("/room/{c2}"), ());
    let d = srv.ok("POST", "/room/live", json!({"masterId": "other", "roomId": c2}));
    assert_eq!(str_field(&d, "roomId"), c2, "closed after the restart, re-created with its id");
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "zed", "memberIds": [], "roomId": l2}));
    assert_ne!(str_field(&d, "roomId"), l2, "open with another master: a new id");
}

#[test]
fn own_ids_are_recognised_across_crashes_and_deletes_stay_deleted() {
    let mut srv = Server::start(&[]);
    let a = srv.convo_id("alice", &[]);
    let b = srv.live_id("host");
    srv.ok("DELETE", &format!("/room/{a}"), ());
    srv.kill9();
    srv.restart();
    srv.expect("GET", &format!("/room/{a}"), (), 50001);
    assert_eq!(str_field(&srv.room(&b), "masterId"), "host");
    let d = srv.ok("POST", "/room/live", json!({"masterId": "bob", "roomId": a}));
    assert_eq!(str_field(&d, "roomId"), a);
    srv.ok("DELETE", &format!("/room/{b}"), ());
    srv.kill9();
    srv.restart();
    assert_eq!(str_field(&srv.room(&a), "masterId"), "bob");
    assert_eq!(str_field(&srv.room(&a), "type"), "live");
    srv.expect("GET", &format!("/room/{b}"), (), 50001);
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "carol", "memberIds": [], "roomId": b}));
    assert_eq!(str_field(&d, "roomId"), b);
    // Arbitrary strings are still not taken.
    let d = srv.ok("POST", "/room/convo", json!({"masterId": "carol", "memberIds": [], "roomId": "hello"}));
    assert_ne!(str_field(&d, "roomId"), "hello");
}

#[test]
fn each_answer_is_durable_on_its_own() {
    // Kill right after single changes of different kinds, one at a time.
    let mut srv = Server::start(&[]);
    let l = srv.live_id("host");
    srv.kill9();
    srv.restart();
    assert_eq!(str_field(&srv.room(&l), "masterId"), "host", "creation");

    srv.ok("POST", &format!("/room/{l}/live/member"), json!({"peerId": "p1", "kind": "video"}));
    srv.kill9();
    srv.restart();
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!(["p1"]), "live member");

    let l2 = srv.live_id("host2");
    srv.ok("POST", &format!("/room/{l}/live/merge"), json!({"roomId": l2}));
    srv.kill9();
    srv.restart();
    assert_eq!(srv.merge_ids(&l), vec![l2.clone()], "merge");

    srv.ok("POST", &format!("/room/{l}/join/enbale/false"), ());
    srv.kill9();
    srv.restart();
    assert!(!bool_field(&srv.room(&l), "joinEnabled"), "join switch");

    srv.ok("POST", &format!("/room/{l}/live/master/host/separate"), ());
    srv.kill9();
    srv.restart();
    assert!(srv.merge_ids(&l).is_empty(), "separation");
    assert!(srv.merge_ids(&l2).is_empty(), "separation");

    srv.ok("DELETE", &format!("/room/{l}/live/member/p1"), ());
    srv.kill9();
    srv.restart();
    assert_eq!(srv.ok("GET", &format!("/room/{l}/live/members"), ()), json!([]), "live member removal");

    // And a graceful stop keeps everything too.
    let st = srv.stop();
    assert!(st.success(), "SIGTERM exits 0: {st:?}");
    srv.restart();
    assert_eq!(str_field(&srv.room(&l2), "masterId"), "host2");
    assert!(!bool_field(&srv.room(&l), "joinEnabled"));
}

#[test]
fn a_full_disk_answers_10000_and_changes_are_stored_again_once_space_is_freed() {
    // Declared first, so that it is unmounted after the server has stopped.
    let Some(fs) = Tmpfs::mount(4 * 1024 * 1024) else { return };
    let mut srv = Server::builder().data_dir(fs.path()).start();
    let mut acknowledged: Vec<String> = (0..10).map(|i| srv.live_id(&format!("before{i}"))).collect();

    let filler = fs.fill();
    // Pages that earlier commits freed take a few more rooms; new rooms soon need new ones.
    let refused = (0..10_000).find_map(|i| {
        let (status, env) = srv.call("POST", "/room/live", json!({"masterId": format!("full{i}")}));
        assert_eq!(status, 200, "{env}");
        match u64_field(&env, "code") {
            0 => {
                acknowledged.push(str_field(&env["data"], "roomId").to_string());
                None
            }
            code => Some((code, env)),
        }
    });
    let (code, env) = refused.expect("a room creation is refused on the full disk");
    assert_eq!(code, 10000, "{env}");
    // The refused room is not in the registry either: it was reloaded from the store.
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), acknowledged.len() as u64);

    std::fs::remove_file(filler).expect("remove filler");
    acknowledged.push(srv.live_id("after"));
    let closed = acknowledged.remove(0);
    srv.ok("DELETE", &format!("/room/{closed}"), ());
    let metrics = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    assert!(!metrics.contains("\nuprtcd_store_io_errors_total 0\n"), "{metrics}");

    srv.kill9();
    srv.restart();
    assert_eq!(u64_field(&srv.ok("GET", "/server/room/num", ()), "num"), acknowledged.len() as u64);
    for id in &acknowledged {
        assert!(bool_field(&srv.ok("GET", &format!("/room/{id}/exist"), ()), "exist"), "room {id}");
    }
    srv.expect("GET", &format!("/room/{closed}"), (), 50001);
}
