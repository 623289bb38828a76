//! Live rooms with real media through the binary: the host and co-hosts publish within their
//! rights and caps, the audience only watches, removing a co-host stops its media at once,
//! and merged rooms' audiences receive every host of the group; a simulcast host's top layer
//! is paused while no viewer on either worker wants it (dynacast).

mod support;

use std::time::Duration;

use support::client::*;
use support::*;
use tungstenite::Message;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::{Received, UdpPeer};
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket};

fn live_room(srv: &Server, host: &str) -> (String, u64) {
    let data = srv.ok("POST", "/room/live", json!({"masterId": host}));
    let room = str_field(&data, "roomId").to_owned();
    let code = u64_field(&srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None), "invitationCode");
    (room, code)
}

/// Publishes audio and video from `peer`; returns the answer and the connected media client.
fn publish_av(signalling: &mut Client, audio_ssrc: u32, video_ssrc: u32) -> (String, UdpPeer) {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = audio_video_offer(&ice, &identity.fingerprint().to_string(), audio_ssrc, video_ssrc);
    let answer = publish_offer(signalling, &offer);
    let media = connect_media(&answer, ice, &identity);
    (answer, media)
}

/// The direction the answer gives the section with `mid`.
fn direction(answer: &str, mid: &str) -> &'static str {
    let section = answer.split(&format!("a=mid:{mid}\r\n")).nth(1).expect("the section");
    ["recvonly", "inactive", "sendonly", "sendrecv"]
        .into_iter()
        .find(|d| section.split("\r\nm=").next().is_some_and(|s| s.contains(&format!("a={d}"))))
        .expect("a direction")
}

/// The REMB bitrate the worker tells `publisher`, waiting up to 5 s while it sends video.
fn remb_of(publisher: &mut UdpPeer, ssrc: u32) -> Option<u64> {
    send_video(publisher, ssrc, 20);
    let mut buf = vec![0u8; 2048];
    poll_until(Duration::from_secs(5), || match publisher.receive(&mut buf, Duration::from_millis(200)) {
        Some(Ok(Received::Rtcp { len })) => {
            RtcpCompound::new_checked(&buf[..len]).ok()?.packets().find_map(|p| match p {
                RtcpPacket::Remb(remb) => Some(remb.bitrate()),
                _ => None,
            })
        }
        _ => None,
    })
}

#[test]
fn co_hosts_publish_their_kind_within_their_cap_and_stop_when_removed() {
    let srv = Server::start(&[]);
    let (room, code) = live_room(&srv, "host");
    srv.ok("POST", &format!("/room/{}/live/member", enc(&room)), json!({"peerId": "voice", "kind": "audio"}));
    let cap = json!({"peerId": "guest", "kind": "video", "maxBitrate": 500_000});
    srv.ok("POST", &format!("/room/{}/live/member", enc(&room)), cap);

    let mut viewer = Viewer::join(&srv, &room, code, "viewer");
    let mut host = join(&srv, &room, code, "host");
    let (answer, _host_media) = publish_av(&mut host, 0xA0, 0xB0);
    assert_eq!((direction(&answer, "0"), direction(&answer, "1")), ("recvonly", "recvonly"), "the host publishes both");

    let mut voice = join(&srv, &room, code, "voice");
    let (answer, _voice_media) = publish_av(&mut voice, 0xA1, 0xB1);
    assert_eq!(
        (direction(&answer, "0"), direction(&answer, "1")),
        ("recvonly", "inactive"),
        "an audio co-host: audio only"
    );

    let mut guest = join(&srv, &room, code, "guest");
    let (answer, mut guest_media) = publish_av(&mut guest, 0xA2, 0xB2);
    assert!(answer.contains("b=AS:500\r\n"), "the co-host's own cap, below the room's:\n{answer}");
    assert_eq!(remb_of(&mut guest_media, 0xB2), Some(500_000));

    let tracks = loop {
        let tracks = viewer.renegotiate();
        if tracks.len() == 5 {
            break tracks;
        }
    };
    let peers: Vec<&str> = tracks.iter().filter_map(|t| t["peer"].as_str()).collect();
    assert_eq!(peers.iter().filter(|p| **p == "voice").count(), 1, "{tracks:?}");

    let mut audience = join(&srv, &room, code, "audience");
    let ice = IceCredentials::generate().unwrap();
    let refused = publish_offer_error(&mut audience, &audio_video_offer(&ice, &["AB"; 32].join(":"), 1, 2));
    assert_eq!(refused, 50009, "the audience may not publish");
    let total = u64_field(&srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None), "total");
    assert_eq!(total, 5, "host, two co-hosts and two of the audience are counted");

    srv.ok("DELETE", &format!("/room/{}/live/member/guest", enc(&room)), Body::None);
    assert_eq!(next_room_event(&mut guest)["type"], "unpublished", "the co-host is told");
    let tracks = viewer.renegotiate();
    assert!(tracks.iter().all(|t| t["peer"] != "guest"), "the co-host's tracks left every offer: {tracks:?}");
    let stats = srv.ok("GET", &format!("/room/{}/peer/guest", enc(&room)), Body::None);
    assert_eq!(stats["joined"], true, "the former co-host stays, in the audience");
    let before = received_from(viewer.media.as_mut().unwrap(), Duration::from_millis(300));
    send_video(&mut guest_media, 0xB2, 30);
    let after = received_from(viewer.media.as_mut().unwrap(), Duration::from_millis(500));
    assert_eq!((before, after), (0, 0), "no packet of the removed co-host reaches the audience");
}

/// Publishes `offer` where it must be refused; returns the code.
fn publish_offer_error(signalling: &mut Client, offer: &str) -> u64 {
    signalling.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let refused = next_room_event(signalling);
    assert_eq!(refused["type"], "error", "{refused}");
    refused["code"].as_u64().unwrap()
}

/// RTP packets that reach `media` within `wait`.
fn received_from(media: &mut UdpPeer, wait: Duration) -> usize {
    let deadline = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    let mut count = 0;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match media.receive(&mut buf, left) {
            Some(Ok(Received::Rtp { .. })) => count += 1,
            Some(_) => {}
            None => break,
        }
    }
    count
}

#[test]
fn merged_rooms_audiences_see_every_host_of_the_group_until_separated() {
    let srv = Server::start(&[]);
    let rooms: Vec<(String, u64)> = ["anna", "ben", "cleo"].iter().map(|h| live_room(&srv, h)).collect();
    let mut hosts = Vec::new();
    for ((room, code), (host, ssrc)) in rooms.iter().zip([("anna", 0xA0u32), ("ben", 0xB0), ("cleo", 0xC0)]) {
        let mut signalling = join(&srv, room, *code, host);
        let media = publish_video(&mut signalling, ssrc);
        hosts.push((signalling, media, ssrc));
    }
    let (first, first_code) = rooms[0].clone();
    let mut viewer = Viewer::join(&srv, &first, first_code, "viewer");
    let only_anna = viewer.renegotiate();
    assert_eq!(only_anna.len(), 1, "before merging, only the room's own host: {only_anna:?}");

    let merge = |a: usize, b: usize| {
        srv.ok("POST", &format!("/room/{}/live/merge", enc(&rooms[a].0)), json!({"roomId": rooms[b].0}))
    };
    merge(0, 1);
    merge(1, 2);
    let everyone = loop {
        let tracks = viewer.renegotiate();
        if tracks.len() == 3 {
            break tracks;
        }
    };
    let mut peers: Vec<&str> = everyone.iter().filter_map(|t| t["peer"].as_str()).collect();
    peers.sort_unstable();
    assert_eq!(peers, ["anna", "ben", "cleo"], "A+B and B+C: the audience of A sees all three hosts");
    let merged = srv.ok("GET", &format!("/room/{}/live/merge", enc(&first)), Body::None);
    assert_eq!(merged.as_array().map(Vec::len), Some(2), "{merged}");

    let cleo_ssrc = sent_ssrc_of(&everyone, "cleo");
    std::thread::scope(|scope| {
        let (_, cleo_media, ssrc) = &mut hosts[2];
        scope.spawn(|| send_video(cleo_media, *ssrc, 40));
        let media = viewer.media.as_mut().unwrap();
        let arrived = receive_video(|buf, wait| media.receive(buf, wait), Some(cleo_ssrc), 40);
        assert_eq!(arrived.len(), 40, "the merged host's media reaches room A's audience");
    });

    srv.ok("POST", &format!("/room/{}/live/separate", enc(&rooms[1].0)), json!({"roomId": rooms[2].0}));
    let after = loop {
        let tracks = viewer.renegotiate();
        if tracks.len() == 2 {
            break tracks;
        }
    };
    assert!(after.iter().all(|t| t["peer"] != "cleo"), "separated: cleo's track left A's offer: {after:?}");
    let (_, cleo_media, ssrc) = &mut hosts[2];
    send_video_from(cleo_media, *ssrc, 40, 30);
    let media = viewer.media.as_mut().unwrap();
    assert!(receive_video_within(media, cleo_ssrc, Duration::from_millis(300)).is_empty(), "nor do its packets");
}

/// The SSRC the audience receives `host`'s track as, from the offer's `tracks`.
fn sent_ssrc_of(tracks: &[Value], host: &str) -> u32 {
    let track = tracks.iter().find(|t| t["peer"] == host).expect("the host's track");
    track["ssrc"].as_u64().expect("offers name each track's SSRC") as u32
}

/// The first value of a Prometheus line starting with `start`, summed over workers.
fn metric_sum(srv: &Server, start: &str) -> u64 {
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    text.lines().filter(|l| l.starts_with(start)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>()
        as u64
}

#[test]
fn an_audience_spread_over_two_workers_and_a_merged_host_on_the_other_one_can_be_paused() {
    let srv = Server::builder().workers(2).start();
    let (main, main_code) = live_room(&srv, "anna");
    let (other, other_code) = live_room(&srv, "ben");
    let mut anna = join(&srv, &main, main_code, "anna");
    let mut anna_media = publish_video(&mut anna, 0xA0);
    let mut ben = join(&srv, &other, other_code, "ben");
    let mut ben_media = publish_video(&mut ben, 0xB0);

    let alias = str_field(&srv.ok("GET", &format!("/room/{}", enc(&main)), Body::None), "serverAlias").to_owned();
    srv.ok("POST", &format!("/room/{}/live/mirror", enc(&main)), json!({"serverAlias": alias}));
    let mirrors = srv.ok("GET", &format!("/room/{}/live/mirrors", enc(&main)), Body::None);
    assert_eq!(mirrors.as_array().map(Vec::len), Some(1), "{mirrors}");

    let mut viewers: Vec<Viewer> =
        (0..4).map(|i| Viewer::join(&srv, &main, main_code, &format!("viewer{i}"))).collect();
    for viewer in &mut viewers {
        assert_eq!(viewer.renegotiate().len(), 1, "anna's track");
    }
    let relayed_before = metric_sum(&srv, "uprtcd_worker_relayed_packets_out_total");
    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut anna_media, 0xA0, 60));
        for viewer in &mut viewers {
            let media = viewer.media.as_mut().unwrap();
            let arrived = receive_video(|buf, wait| media.receive(buf, wait), None, 60);
            assert_eq!(sequence(&arrived), (0..60).collect::<Vec<u16>>(), "every packet, in order, on either worker");
        }
    });
    // Counters are published about once a second.
    let relayed = poll_until(Duration::from_secs(5), || {
        let relayed = metric_sum(&srv, "uprtcd_worker_relayed_packets_out_total") - relayed_before;
        (relayed >= 60).then_some(relayed)
    });
    assert!(relayed.is_some(), "half the audience is on the mirror's worker, fed by relayed packets");

    srv.ok("POST", &format!("/room/{}/live/merge", enc(&main)), json!({"roomId": other}));
    let mut tracks = Vec::new();
    for viewer in &mut viewers {
        tracks = loop {
            let tracks = viewer.renegotiate();
            if tracks.len() == 2 {
                break tracks;
            }
        };
    }
    let ben_track =
        tracks.iter().find(|t| t["peer"] == "ben").expect("ben's track")["trackId"].as_str().unwrap().to_owned();
    let ben_ssrc = sent_ssrc_of(&tracks, "ben");
    let watch = |viewers: &mut Vec<Viewer>, ben_media: &mut UdpPeer, first: u16, packets: u16| {
        std::thread::scope(|scope| {
            scope.spawn(|| send_video_from(ben_media, 0xB0, first, packets));
            viewers
                .iter_mut()
                .map(|v| {
                    let media = v.media.as_mut().unwrap();
                    receive_video(|buf, wait| media.receive(buf, wait), Some(ben_ssrc), usize::from(packets)).len()
                })
                .collect::<Vec<usize>>()
        })
    };
    assert_eq!(
        watch(&mut viewers, &mut ben_media, 0, 40),
        [40; 4],
        "the merged host from the other worker reaches all"
    );

    let pause = format!("/room/{}/live/pause/mergeTrack/{ben_track}", enc(&main));
    srv.ok("POST", &pause, Body::None);
    send_video_from(&mut ben_media, 0xB0, 40, 30);
    for viewer in &mut viewers {
        let media = viewer.media.as_mut().unwrap();
        assert!(
            receive_video_within(media, ben_ssrc, Duration::from_millis(300)).is_empty(),
            "paused for this audience"
        );
    }
    srv.ok("POST", &format!("/room/{}/live/resume/mergeTrack/{ben_track}", enc(&main)), Body::None);
    std::thread::scope(|scope| {
        scope.spawn(|| send_video_from(&mut ben_media, 0xB0, 70, 40));
        for viewer in &mut viewers {
            let resumed = receive_renumbered(viewer.media.as_mut().unwrap(), ben_ssrc, 40);
            assert_eq!(resumed, (40..80).collect::<Vec<u16>>(), "resumed, numbered on from where the pause left it");
        }
    });
    let (status, refused) = srv.call("POST", &format!("/room/{}/live/pause/mergeTrack/t999", enc(&main)), Body::None);
    assert_eq!((status, refused["code"].as_u64()), (200, Some(50016)), "a track no merged room publishes");
}

/// The sequence numbers of the first `count` packets of `ssrc` that reach `media` (none
/// coming for 5 s ends the wait).
fn receive_renumbered(media: &mut UdpPeer, ssrc: u32, count: usize) -> Vec<u16> {
    let mut buf = vec![0u8; 2048];
    let mut seen = Vec::new();
    while seen.len() < count {
        match media.receive(&mut buf, Duration::from_secs(5)) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = uprtcd_dataplane::wire::rtp::RtpPacket::new_checked(&buf[..len]).unwrap();
                if packet.ssrc() == ssrc {
                    seen.push(packet.sequence_number());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("a packet did not decrypt: {e}"),
            None => break,
        }
    }
    seen
}

/// The sequence numbers of `ssrc`'s packets that reach `media` within `wait`.
fn receive_video_within(media: &mut UdpPeer, ssrc: u32, wait: Duration) -> Vec<u16> {
    let deadline = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match media.receive(&mut buf, left) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = uprtcd_dataplane::wire::rtp::RtpPacket::new_checked(&buf[..len]).unwrap();
                if packet.ssrc() == ssrc {
                    seen.push(packet.sequence_number());
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    seen
}

/// [`video_offer`] as a simulcast publisher writes it: layers `q` and `f` by rid, with the
/// RtpStreamId extension, and no SSRC announced.
fn simulcast_offer(offer: String) -> String {
    let layers = "a=rtcp-mux\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
                  a=rid:q send\r\na=rid:f send\r\na=simulcast:send q;f\r\n";
    let lines: Vec<&str> = offer.split("\r\n").filter(|l| !l.starts_with("a=ssrc:")).collect();
    lines.join("\r\n").replace("a=rtcp-mux\r\n", layers)
}

#[test]
fn a_simulcast_hosts_top_layer_is_paused_until_a_viewer_on_either_worker_wants_it() {
    let srv = Server::builder().workers(2).start();
    let (room, code) = live_room(&srv, "anna");
    let mut anna = join(&srv, &room, code, "anna");
    let _anna_media = publish_video_offer(&mut anna, 0xA0, simulcast_offer);
    let alias = str_field(&srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None), "serverAlias").to_owned();
    srv.ok("POST", &format!("/room/{}/live/mirror", enc(&room)), json!({"serverAlias": alias}));

    // Two viewers, one on each worker: the second one's layers are imported to the mirror's.
    let mut viewers: Vec<Viewer> = (0..2).map(|i| Viewer::join(&srv, &room, code, &format!("viewer{i}"))).collect();
    let mut track_id = Value::Null;
    for viewer in &mut viewers {
        let tracks = viewer.renegotiate();
        assert_eq!(tracks.len(), 1, "anna's one simulcast track: {tracks:?}");
        track_id = tracks[0]["trackId"].clone();
    }
    let spread = poll_until(Duration::from_secs(5), || {
        let on = |w: u32| metric(&srv, &format!("uprtcd_worker_consumers{{worker=\"{w}\","));
        (on(0) >= 1 && on(1) >= 1).then_some(())
    });
    assert!(spread.is_some(), "a viewer on each worker");

    let quality = |viewer: &mut Viewer, quality: &str| {
        let message = json!({"type": "video-quality", "trackId": track_id, "quality": quality});
        viewer.signalling.send(Message::Text(message.to_string().into())).unwrap();
    };
    let mut layers_told = |within_secs| {
        let event = patient_event_of(&mut anna, "layers", Duration::from_secs(within_secs)).expect("a layers message");
        assert_eq!(event["mid"], "0", "{event}");
        event["active"].clone()
    };
    for viewer in &mut viewers {
        quality(viewer, "low");
    }
    assert_eq!(layers_told(10), json!(["q"]), "nobody wants the top layer: paused after the hold");
    for (i, viewer) in viewers.iter_mut().enumerate() {
        quality(viewer, "high");
        assert_eq!(layers_told(2), json!(["q", "f"]), "viewer{i} wants it: resumed at once");
        quality(viewer, "low");
        assert_eq!(layers_told(10), json!(["q"]), "viewer{i} no longer wants it");
    }
    let updates = poll_until(Duration::from_secs(3), || {
        let updates = metric(&srv, "uprtcd_layer_updates_total");
        (updates >= 5).then_some(updates)
    });
    assert_eq!(updates, Some(5), "every layers message counted");
}

#[test]
fn simulcast_in_the_ssrc_group_form_is_one_track_of_layers() {
    let srv = Server::builder().start();
    let (room, code) = live_room(&srv, "anna");
    let mut anna = join(&srv, &room, code, "anna");
    // libwebrtc's older form: the layers' SSRCs in a SIM group, lowest first.
    let sim = |offer: String| {
        offer.replace("a=ssrc:160 cname", "a=ssrc-group:SIM 160 161\r\na=ssrc:161 cname:publisher\r\na=ssrc:160 cname")
    };
    let mut anna_media = publish_video_offer(&mut anna, 160, sim);
    let mut viewer = Viewer::join(&srv, &room, code, "viewer");
    let tracks = viewer.renegotiate();
    assert_eq!(tracks.len(), 1, "one track, not one per layer: {tracks:?}");
    let ssrc = sent_ssrc_of(&tracks, "anna");
    // The viewer receives the highest layer as the track's SSRC, and nothing of the lowest
    // while the highest sends.
    let media = viewer.media.as_mut().unwrap();
    assert_forwarded_in_order(&mut anna_media, 161, |buf, wait| media.receive(buf, wait), ssrc);
    send_video(&mut anna_media, 160, 30);
    let mut buf = vec![0u8; 2048];
    let low = std::iter::from_fn(|| media.receive(&mut buf, Duration::from_millis(300)))
        .filter(|r| matches!(r, Ok(Received::Rtp { .. })))
        .count();
    assert_eq!(low, 0, "the lowest layer is not sent beside the highest");
}
