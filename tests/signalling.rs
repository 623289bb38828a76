//! Client signalling against the real binary: WebSocket clients join at
//! `serverUrl + invitationCode` with a join token, and the conversation-room rules, the room's
//! events, the business server's messages, kicks and room deletion reach exactly the right
//! clients. The protocol is docs/signalling.md.

mod support;

use std::time::Duration;

use support::client::*;
use support::*;
use tungstenite::Message;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::Received;
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket};
use uprtcd_dataplane::wire::rtp::RtpPacket;

#[test]
fn members_join_see_each_other_and_are_counted() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut alice = join(&srv, &room, code, "alice");
    assert!(joined(&srv, &room, "alice"));
    let (mut bob, first) = connect(&srv, code, "bob", &token(&srv, &room, "bob"));
    assert_eq!(sorted(&first["peers"]), set_of(&["alice", "bob"]), "{first}");
    let event = next_event(&mut alice).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-joined"), Some("bob")));
    let info = srv.room(&room);
    assert_eq!(u64_field(&info, "total"), 2);
    assert_eq!(sorted(&info["memberIds"]), set_of(&["alice", "bob"]));

    bob.send(Message::Text(json!({"type": "leave"}).to_string().into())).unwrap();
    let event = next_event(&mut alice).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-left"), Some("bob")));
    assert!(!joined(&srv, &room, "bob"));
    assert_eq!(u64_field(&srv.room(&room), "total"), 1);
}

#[test]
fn the_conversation_room_rules_refuse_with_the_spec_codes() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "carol"], 2);
    assert_eq!(refused(&srv, code, "mallory", &token(&srv, &room, "mallory")), 50003, "not invited");
    // Alice's client answers the server's pings, as a browser does.
    let _alice = Reading::start(join(&srv, &room, code, "alice"));
    assert_eq!(refused(&srv, code, "alice", &token(&srv, &room, "alice")), 50004, "already connected");
    let _bob = join(&srv, &room, code, "bob");
    assert_eq!(refused(&srv, code, "carol", &token(&srv, &room, "carol")), 50012, "room full");
    srv.ok("POST", &format!("/room/{}/join/enbale/false", enc(&room)), ());
    drop(_bob);
    poll_until(Duration::from_secs(5), || (!joined(&srv, &room, "bob")).then_some(())).expect("bob left");
    assert_eq!(refused(&srv, code, "carol", &token(&srv, &room, "carol")), 50022, "joining disabled");
    srv.ok("POST", &format!("/room/{}/join/enbale/true", enc(&room)), ());
    let carol_token = token(&srv, &room, "carol");
    srv.ok("DELETE", "/server/block/peer/carol", ());
    assert_eq!(refused(&srv, code, "carol", &carol_token), 50000, "blocked");
}

#[test]
fn the_licensed_maximum_of_connections_counts_every_room() {
    let srv = Server::start(&["--max-connections", "2"]);
    let (first, first_code) = convo(&srv, "alice", &["bob"], 0);
    let (second, second_code) = convo(&srv, "carol", &[], 0);
    let _alice = join(&srv, &first, first_code, "alice");
    let carol = join(&srv, &second, second_code, "carol");
    assert_eq!(refused(&srv, first_code, "bob", &token(&srv, &first, "bob")), 50018, "two connected, two licensed");
    drop(carol);
    poll_until(Duration::from_secs(5), || (!joined(&srv, &second, "carol")).then_some(())).expect("carol left");
    let _bob = join(&srv, &first, first_code, "bob");
}

#[test]
fn bad_tokens_are_illegal_connections() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let (other, _) = convo(&srv, "zed", &["bob"], 0);
    assert_eq!(refused(&srv, code, "bob", "not-a-jwt"), 50000);
    assert_eq!(refused(&srv, code, "bob", &token(&srv, &other, "bob")), 50000, "a token for another room");
    assert_eq!(refused(&srv, code, "alice", &token(&srv, &room, "bob")), 50000, "a token for another peer");
    let unknown_code = if code == 999_999_999 { 100_000_000 } else { code + 1 };
    assert_eq!(refused(&srv, unknown_code, "bob", &token(&srv, &room, "bob")), 50001, "no room with that code");
}

#[test]
fn messages_reach_exactly_the_right_clients() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "carol"], 0);
    let mut alice = join(&srv, &room, code, "alice");
    let mut bob = join(&srv, &room, code, "bob");
    let mut carol = join(&srv, &room, code, "carol");
    // Drain the peer-joined events.
    for _ in 0..2 {
        next_event(&mut alice).unwrap();
    }
    next_event(&mut bob).unwrap();

    srv.ok("POST", &format!("/room/{}/message", enc(&room)), json!({"hello": "everyone"}));
    for client in [&mut alice, &mut bob, &mut carol] {
        let event = next_event(client).unwrap();
        assert_eq!((event["type"].as_str(), &event["data"]), (Some("message"), &json!({"hello": "everyone"})));
    }
    srv.ok("POST", &format!("/room/{}/peers/message/", enc(&room)), json!({"msg": [1, 2], "peers": ["carol"]}));
    srv.ok("POST", &format!("/room/{}/message", enc(&room)), json!("second"));
    let event = next_event(&mut carol).unwrap();
    assert_eq!(event["data"], json!([1, 2]), "carol gets the peer message first");
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_event(client).unwrap()["data"], json!("second"), "alice and bob never saw the peer message");
    }
}

#[test]
fn a_live_audience_hears_of_the_hosts_but_not_of_each_other() {
    let srv = Server::start(&[]);
    let room = str_field(&srv.ok("POST", "/room/live", json!({"masterId": "host"})), "roomId").to_owned();
    let code = u64_field(&srv.ok("GET", &format!("/room/{}", enc(&room)), Body::None), "invitationCode");
    srv.ok("POST", &format!("/room/{}/live/member", enc(&room)), json!({"peerId": "cohost", "kind": "audio"}));
    let mut host = join(&srv, &room, code, "host");
    let (mut viewer, first) = connect(&srv, code, "viewer", &token(&srv, &room, "viewer"));
    assert_eq!(sorted(&first["peers"]), set_of(&["host", "viewer"]), "the audience is told of the stage: {first}");
    let (second, first) = connect(&srv, code, "second", &token(&srv, &room, "second"));
    assert_eq!(sorted(&first["peers"]), set_of(&["host", "second"]), "and itself, not the rest: {first}");
    let mut cohost = join(&srv, &room, code, "cohost");
    for peer in ["viewer", "second", "cohost"] {
        let event = next_event(&mut host).unwrap();
        assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-joined"), Some(peer)));
    }
    drop(second);
    let event = next_event(&mut host).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-left"), Some("second")));
    let event = next_event(&mut cohost).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-left"), Some("second")));

    // A message to everyone is the viewer's next event: it heard of the co-host but not of
    // the other viewer's coming and going.
    srv.ok("POST", &format!("/room/{}/message", enc(&room)), json!("to everyone"));
    let event = next_event(&mut viewer).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-joined"), Some("cohost")));
    assert_eq!(next_event(&mut viewer).unwrap()["data"], json!("to everyone"), "no presence of the audience");
    assert_eq!(u64_field(&srv.room(&room), "total"), 3, "the audience is still counted");
}

#[test]
fn kick_and_room_deletion_disconnect_the_right_clients() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut alice = join(&srv, &room, code, "alice");
    let mut bob = join(&srv, &room, code, "bob");
    next_event(&mut alice).unwrap();

    srv.ok("DELETE", &format!("/room/{}/peer/bob", enc(&room)), ());
    assert!(!joined(&srv, &room, "bob"), "kicked at once");
    assert_eq!(next_event(&mut bob).unwrap()["type"], "kicked");
    assert!(next_event(&mut bob).is_none(), "and disconnected");
    let event = next_event(&mut alice).unwrap();
    assert_eq!((event["type"].as_str(), event["peer"].as_str()), (Some("peer-left"), Some("bob")));
    expect_code(&srv.call("DELETE", &format!("/room/{}/peer/bob", enc(&room)), ()), 50011, "kick twice");

    srv.ok("DELETE", &format!("/room/{}", enc(&room)), ());
    assert_eq!(next_event(&mut alice).unwrap()["type"], "room-closed");
    assert!(next_event(&mut alice).is_none());
}

#[test]
fn malformed_client_messages_get_an_error_and_the_session_goes_on() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &[], 0);
    let mut alice = join(&srv, &room, code, "alice");
    alice.send(Message::Text("{not json".into())).unwrap();
    let event = next_event(&mut alice).unwrap();
    assert_eq!((event["type"].as_str(), event["code"].as_u64()), (Some("error"), Some(10002)));
    alice.send(Message::Text(json!({"type": "teleport"}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut alice).unwrap()["code"], 10003);
    alice.send(Message::Text(json!({"type": "ping"}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut alice).unwrap()["type"], "pong");
    assert!(joined(&srv, &room, "alice"));
}

#[test]
fn a_member_publishes_and_its_media_reaches_the_worker() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &[], 0);
    let mut alice = join(&srv, &room, code, "alice");
    let mut client = publish_video(&mut alice, 0xCAFE);
    let before = metric(&srv, "uprtcd_worker_packets_in_total{worker=\"0\",");
    send_video(&mut client, 0xCAFE, 50);
    // Counters are published about once a second.
    poll_until(Duration::from_secs(5), || {
        (metric(&srv, "uprtcd_worker_packets_in_total{worker=\"0\",") >= before + 50).then_some(())
    })
    .expect("the worker received the media");
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    let drops = "uprtcd_worker_drops_total{worker=\"0\",";
    for reason in ["unknown_ssrc", "srtp_auth", "not_connected", "unknown_source"] {
        let line = text.lines().find(|l| l.starts_with(drops) && l.contains(&format!("reason=\"{reason}\""))).unwrap();
        assert!(line.ends_with(" 0"), "media was dropped: {line}");
    }
}

#[test]
fn a_subscriber_is_offered_the_room_and_decrypts_the_publishers_media() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob"], 0);
    let mut alice = join(&srv, &room, code, "alice");
    let mut publisher = publish_video(&mut alice, 0xCAFE);
    let mut bob = join(&srv, &room, code, "bob");
    bob.send(Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    let offer = next_event(&mut bob).unwrap();
    assert_eq!(offer["type"], "offer", "{offer}");
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    assert!(sdp.contains("a=sendonly") && sdp.contains("a=setup:actpass") && sdp.contains("VP8/90000"), "{sdp}");
    let offered_ssrc: u32 = attribute(&sdp, "ssrc").split_whitespace().next().unwrap().parse().unwrap();

    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let answer = [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{}", ice.ufrag()),
        &format!("a=ice-pwd:{}", ice.pwd()),
        &format!("a=fingerprint:sha-256 {}", identity.fingerprint()),
        "a=setup:active",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
    .join("\r\n");
    bob.send(Message::Text(json!({"type": "answer", "sdp": answer}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut bob).unwrap()["type"], "subscribed");
    let mut subscriber = connect_media(&sdp, ice, &identity);

    assert_forwarded_in_order(&mut publisher, 0xCAFE, |buf, wait| subscriber.receive(buf, wait), offered_ssrc);
}

#[test]
fn publishers_whose_payload_types_clash_reach_one_subscriber_each_under_its_own_number() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "carol"], 0);
    // Both publishers call their video 96: alice's is VP8, carol's H.264.
    let mut alice = join(&srv, &room, code, "alice");
    let mut alice_media = publish_video(&mut alice, 0xA1);
    let mut carol = join(&srv, &room, code, "carol");
    let mut carol_media = publish_video_offer(&mut carol, 0xC1, |offer| {
        offer.replace(
            "a=rtpmap:96 VP8/90000\r\n",
            "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n",
        )
    });
    let mut bob = join(&srv, &room, code, "bob");
    bob.send(Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    // The subscription may start with one of the two tracks, then add the other.
    let offer = loop {
        let event = next_room_event(&mut bob);
        if event["type"] == "offer" && event["tracks"].as_array().is_some_and(|t| t.len() == 2) {
            break event;
        }
        if event["type"] == "offer" {
            answer_offer(&mut bob, &event, &ice, &identity);
        }
    };
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    // Each section's SSRC and the payload type its rtpmap gives the codec.
    let numbered = |codec: &str| -> (u32, u8) {
        let section = sdp.split("\r\nm=").find(|s| s.contains(&format!(" {codec}/90000"))).expect("a section");
        let ssrc = section.lines().find_map(|l| l.strip_prefix("a=ssrc:")).unwrap();
        let rtpmap = section.lines().find(|l| l.ends_with(&format!(" {codec}/90000"))).unwrap();
        let pt = rtpmap.trim_start_matches("a=rtpmap:").split(' ').next().unwrap();
        (ssrc.split(' ').next().unwrap().parse().unwrap(), pt.parse().unwrap())
    };
    let ((vp8_ssrc, vp8_pt), (h264_ssrc, h264_pt)) = (numbered("VP8"), numbered("H264"));
    assert_ne!(vp8_pt, h264_pt, "one meaning per number in a bundle:\n{sdp}");
    answer_offer(&mut bob, &offer, &ice, &identity);
    let mut subscriber = connect_media(&sdp, ice, &identity);

    let (mut arrived, mut packets) = (std::collections::BTreeMap::<u32, std::collections::BTreeSet<u8>>::new(), 0);
    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut alice_media, 0xA1, 50));
        scope.spawn(|| send_video(&mut carol_media, 0xC1, 50));
        let mut buf = vec![0u8; 2048];
        while packets < 100 {
            match subscriber.receive(&mut buf, Duration::from_secs(5)) {
                Some(Ok(Received::Rtp { len })) => {
                    let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
                    arrived.entry(packet.ssrc()).or_default().insert(packet.payload_type());
                    packets += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    let expected = [(vp8_ssrc, [vp8_pt].into()), (h264_ssrc, [h264_pt].into())].into();
    assert_eq!(packets, 100, "every packet of both publishers arrived");
    assert_eq!(arrived, expected, "each stream under the number bob's session gave its codec");
}

#[test]
fn the_audience_of_a_live_room_may_not_publish() {
    let srv = Server::start(&[]);
    let data = srv.ok("POST", "/room/live", json!({"masterId": "host"}));
    let (room, code) = (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"));
    let mut viewer = join(&srv, &room, code, "viewer");
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &["AB"; 32].join(":"), 1);
    viewer.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut viewer).unwrap()["code"], 50009);
    viewer.send(Message::Text(json!({"type": "publish", "sdp": "not sdp"}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut viewer).unwrap()["code"], 10002);
}

#[test]
fn subscribers_renegotiate_as_tracks_come_and_go() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "carol"], 0);
    let mut bob = join(&srv, &room, code, "bob");
    bob.send(Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    bob.send(Message::Text(json!({"type": "ping"}).to_string().into())).unwrap();
    assert_eq!(next_event(&mut bob).unwrap()["type"], "pong", "subscribing to an empty room waits quietly");

    let mut alice = join(&srv, &room, code, "alice");
    let _alice_media = publish_video(&mut alice, 0xA1);
    let added = next_room_event(&mut bob);
    assert_eq!(
        (added["type"].as_str(), added["peer"].as_str(), added["kind"].as_str()),
        (Some("track-added"), Some("alice"), Some("video"))
    );
    let alice_track = added["trackId"].as_str().unwrap().to_owned();
    let offer = next_room_event(&mut bob);
    let offered = &offer["tracks"][0];
    assert_eq!((&offered["mid"], &offered["peer"], &offered["kind"]), (&json!("0"), &json!("alice"), &json!("video")));
    assert_eq!(offered["trackId"], alice_track.as_str());
    assert!(offered["ssrc"].is_u64(), "{offer}");
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    answer_offer(&mut bob, &offer, &ice, &identity);
    let mut subscriber = connect_media(offer["sdp"].as_str().unwrap(), ice.clone(), &identity);

    let (mut carol, joined) = connect(&srv, code, "carol", &token(&srv, &room, "carol"));
    assert_eq!(joined["tracks"], json!([{"peer": "alice", "trackId": alice_track, "kind": "video"}]), "{joined}");
    let mut carol_media = publish_video(&mut carol, 0xC1);
    assert_eq!(next_room_event(&mut bob)["type"], "track-added");
    let offer = next_room_event(&mut bob);
    let sdp = offer["sdp"].as_str().unwrap();
    assert_eq!(offer["tracks"].as_array().unwrap().len(), 2, "{offer}");
    assert_eq!(offer["tracks"][1]["mid"], "1");
    assert_eq!(sdp.matches("\r\nm=video ").count(), 2, "a section added behind the first:\n{sdp}");
    let carol_ssrc: u32 = sdp
        .split("a=mid:1")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("a=ssrc:")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    answer_offer(&mut bob, &offer, &ice, &identity);

    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut carol_media, 0xC1, 50));
        let arrived = receive_video(|buf, wait| subscriber.receive(buf, wait), Some(carol_ssrc), 50);
        assert_eq!(arrived.len(), 50, "carol's media reaches bob over the renegotiated transport");
    });

    alice.send(Message::Text(json!({"type": "leave"}).to_string().into())).unwrap();
    let removed = next_room_event(&mut bob);
    assert_eq!(
        (removed["type"].as_str(), removed["trackId"].as_str()),
        (Some("track-removed"), Some(alice_track.as_str()))
    );
    let offer = next_room_event(&mut bob);
    let sdp = offer["sdp"].as_str().unwrap();
    let first = sdp.split("\r\nm=").nth(1).expect("the first section");
    assert!(first.contains("a=mid:0") && first.contains("a=inactive"), "alice's section idles in place:\n{sdp}");
    assert!(!first.starts_with("video 0 "), "the first section keeps the bundle's transport:\n{sdp}");
    assert_eq!(offer["tracks"].as_array().unwrap().len(), 1);
    answer_offer(&mut bob, &offer, &ice, &identity);
}

#[test]
fn whip_publishes_and_whep_plays_without_our_signalling() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &["bob"], 0);
    let (published, mut publisher) = whip_publish(&srv, &room, "alice", 0xCAFE);
    assert_eq!(published.header("content-type"), Some("application/sdp"));
    let location = published.header("location").expect("a Location").to_owned();
    assert!(location.starts_with(&format!("/whip/{}/", enc(&room))), "{location}");
    assert!(joined(&srv, &room, "alice"), "a WHIP publisher is a room member");

    let player_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let player_ice = IceCredentials::generate().unwrap();
    let offer = player_offer(&player_ice, &player_identity.fingerprint().to_string());
    let played = whip_post(&srv, "whep", &room, &token(&srv, &room, "bob"), &offer);
    assert_eq!(played.status, 201, "{}", played.text());
    let answer = played.text();
    assert!(answer.contains("a=sendonly") && answer.contains("a=setup:passive"), "{answer}");
    let ssrc: u32 = attribute(&answer, "ssrc").split_whitespace().next().unwrap().parse().unwrap();
    let mut player = connect_media(&answer, player_ice, &player_identity);

    assert_forwarded_in_order(&mut publisher, 0xCAFE, |buf, wait| player.receive(buf, wait), ssrc);

    let preflight = srv.client_request(
        "OPTIONS",
        &format!("/whip/{}", enc(&room)),
        &[("origin", "http://elsewhere.example"), ("access-control-request-method", "POST")],
        Body::None,
    );
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(srv.client_request("DELETE", &location, &[], Body::None).status, 200);
    poll_until(Duration::from_secs(5), || (!joined(&srv, &room, "alice")).then_some(())).expect("DELETE ends it");
    assert_eq!(srv.client_request("DELETE", &location, &[], Body::None).status, 404, "already ended");
}

#[test]
fn a_whep_player_gets_the_stream_under_its_own_payload_type() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &["bob"], 0);
    let (_, mut publisher) = whip_publish(&srv, &room, "alice", 0xCAFE);

    // The publisher's VP8 is 96; this player calls H.264 96 and VP8 120.
    let player_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let player_ice = IceCredentials::generate().unwrap();
    let offer = player_offer(&player_ice, &player_identity.fingerprint().to_string())
        .replace("SAVPF 96\r\n", "SAVPF 96 120\r\n")
        .replace(
            "a=rtpmap:96 VP8/90000\r\n",
            "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:120 VP8/90000\r\na=rtcp-fb:120 nack\r\n",
        );
    let played = whip_post(&srv, "whep", &room, &token(&srv, &room, "bob"), &offer);
    assert_eq!(played.status, 201, "{}", played.text());
    let answer = played.text();
    let m_line = answer.lines().find(|l| l.starts_with("m=video")).unwrap();
    assert!(m_line.ends_with("SAVPF 120 96"), "VP8 as the player numbers it, first: {answer}");
    let ssrc: u32 = attribute(&answer, "ssrc").split_whitespace().next().unwrap().parse().unwrap();
    let mut player = connect_media(&answer, player_ice, &player_identity);

    let mut payload_types = std::collections::BTreeSet::new();
    assert_forwarded_in_order(
        &mut publisher,
        0xCAFE,
        |buf, wait| {
            let received = player.receive(buf, wait);
            if let Some(Ok(Received::Rtp { len })) = received {
                payload_types.insert(RtpPacket::new_checked(&buf[..len]).unwrap().payload_type());
            }
            received
        },
        ssrc,
    );
    assert_eq!(payload_types.into_iter().collect::<Vec<_>>(), [120], "every packet in the player's numbering");
}

#[test]
fn a_whep_player_started_before_the_publisher_plays_it_and_again_after_it_reconnects() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &["bob"], 0);
    let player_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let player_ice = IceCredentials::generate().unwrap();
    let offer = player_offer(&player_ice, &player_identity.fingerprint().to_string());
    let played = whip_post(&srv, "whep", &room, &token(&srv, &room, "bob"), &offer);
    assert_eq!(played.status, 201, "nothing is published yet, and the player is admitted: {}", played.text());
    let answer = played.text();
    let ssrc: u32 = attribute(&answer, "ssrc").split_whitespace().next().unwrap().parse().unwrap();
    let mut player = connect_media(&answer, player_ice, &player_identity);

    let (published, mut publisher) = whip_publish(&srv, &room, "alice", 0xCAFE);
    assert_forwarded_in_order(&mut publisher, 0xCAFE, |buf, wait| player.receive(buf, wait), ssrc);

    // The publisher goes and comes back in a new WHIP session, as another stream.
    let location = published.header("location").unwrap().to_owned();
    assert_eq!(srv.client_request("DELETE", &location, &[], Body::None).status, 200);
    let (_, mut publisher) = whip_publish(&srv, &room, "alice", 0xBEEF);
    let mut arrived = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| send_video(&mut publisher, 0xBEEF, 100));
        let mut buf = vec![0u8; 2048];
        while arrived.len() < 100 {
            match player.receive(&mut buf, Duration::from_secs(5)) {
                Some(Ok(Received::Rtp { len })) => {
                    let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
                    arrived.push((packet.ssrc(), packet.sequence_number(), packet.payload()[0]));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("a packet did not decrypt (an SRTP replay?): {e}"),
                None => break,
            }
        }
    });
    // The new stream numbers 0..100 again; the player's numbering goes on from 100.
    let expected: Vec<(u32, u16, u8)> = (0..100u16).map(|seq| (ssrc, 100 + seq, seq as u8)).collect();
    assert_eq!(arrived, expected, "the new stream plays on, under the SSRC of the first answer");
    assert!(joined(&srv, &room, "bob"), "one WHEP session throughout");
}

#[test]
fn whip_refuses_what_it_cannot_take_with_the_spec_codes() {
    let srv = Server::start(&[]);
    let (room, _) = convo(&srv, "alice", &[], 0);
    let (other, _) = convo(&srv, "zed", &[], 0);
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &["AB"; 32].join(":"), 7);
    let alice = token(&srv, &room, "alice");
    let code = |r: &ClientResp| r.json("a refusal")["code"].as_u64().unwrap_or(0);

    let path = format!("/whip/{}", enc(&room));
    let text = srv.client_request("POST", &path, &[("content-type", "text/plain")], raw(&offer));
    assert_eq!(text.status, 415);
    let anonymous = srv.client_request("POST", &path, &[("content-type", "application/sdp")], raw(&offer));
    assert_eq!((anonymous.status, code(&anonymous)), (401, 50000));
    let elsewhere = whip_post(&srv, "whip", &other, &alice, &offer);
    assert_eq!((elsewhere.status, code(&elsewhere)), (401, 50000), "the token names another room");
    let missing = whip_post(&srv, "whip", "nosuchroom", &alice, &offer);
    assert_eq!((missing.status, code(&missing)), (404, 50001));
    let uninvited = whip_post(&srv, "whip", &room, &token(&srv, &room, "mallory"), &offer);
    assert_eq!((uninvited.status, code(&uninvited)), (403, 50003));
    let garbage = whip_post(&srv, "whip", &room, &alice, "not sdp at all");
    assert_eq!((garbage.status, code(&garbage)), (400, 10002));
    let av1 = whip_post(&srv, "whip", &room, &alice, &offer.replace("VP8/90000", "AV1/90000"));
    assert_eq!((av1.status, code(&av1)), (400, 10002), "no format in common");
    assert!(av1.text().contains("AV1/90000") && av1.text().contains("VP8"), "names both sides: {}", av1.text());
    let twice = whip_post(&srv, "whip", &room, &alice, &offer.replace("SAVPF 96", "SAVPF 96 96"));
    assert_eq!((twice.status, code(&twice)), (400, 10002), "a payload type listed twice: {}", twice.text());
    assert!(!joined(&srv, &room, "alice"), "a refused offer leaves no presence behind");
    let no_format = player_offer(&ice, &["AB"; 32].join(":")).replace("VP8/90000", "AV2/90000");
    let unplayable = whip_post(&srv, "whep", &room, &alice, &no_format);
    assert_eq!((unplayable.status, code(&unplayable)), (400, 10002), "no format the SFU forwards");
    assert!(unplayable.text().contains("VP8"), "the refusal names what would do: {}", unplayable.text());

    let published = whip_post(&srv, "whip", &room, &alice, &offer);
    assert_eq!(published.status, 201, "{}", published.text());
    let again = whip_post(&srv, "whip", &room, &alice, &offer);
    assert_eq!((again.status, code(&again)), (409, 50004), "one connection per peer");
    srv.ok("DELETE", &format!("/room/{}/peer/alice", enc(&room)), Body::None);
    poll_until(Duration::from_secs(5), || (!joined(&srv, &room, "alice")).then_some(())).expect("a kick ends WHIP");
    let location = published.header("location").unwrap();
    assert_eq!(srv.client_request("DELETE", location, &[], Body::None).status, 404, "the kick ended the session");
}

#[test]
fn the_rooms_protocol_decides_the_candidates_and_tcp_carries_media() {
    let srv = Server::start(&[]);
    let tcp_room = |protocol: u8| {
        let data =
            srv.ok("POST", "/room/convo", json!({"masterId": "alice", "memberIds": ["bob"], "protocol": protocol}));
        (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"))
    };
    let offer_in = |room: &str, code: u64| {
        let mut alice = join(&srv, room, code, "alice");
        let ice = IceCredentials::generate().unwrap();
        let offer = video_offer(&ice, &["AB"; 32].join(":"), 5);
        alice.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
        let answer = next_event(&mut alice).unwrap();
        candidates(answer["sdp"].as_str().unwrap())
    };
    let kinds = |c: &[(String, std::net::SocketAddr, u32)]| c.iter().map(|(t, _, _)| t.clone()).collect::<Vec<_>>();
    let (udp_room, code) = tcp_room(0);
    assert_eq!(kinds(&offer_in(&udp_room, code)), ["udp"]);
    let (preferred, code) = tcp_room(3);
    let both = offer_in(&preferred, code);
    assert_eq!(kinds(&both), ["tcp", "udp"]);
    assert!(both[0].2 > both[1].2 && both[0].1 == both[1].1, "TCP preferred, same port: {both:?}");
    let (udp_first, code) = tcp_room(2);
    let both = offer_in(&udp_first, code);
    assert!(both.iter().find(|c| c.0 == "udp").unwrap().2 > both.iter().find(|c| c.0 == "tcp").unwrap().2);

    let (room, code) = tcp_room(1);
    let mut alice = join(&srv, &room, code, "alice");
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), 0xCAFE);
    alice.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let answer = next_event(&mut alice).unwrap();
    let answer = answer["sdp"].as_str().unwrap();
    assert_eq!(kinds(&candidates(answer)), ["tcp"]);
    let mut publisher = connect_media_tcp(answer, ice, &identity);

    let mut bob = join(&srv, &room, code, "bob");
    bob.send(Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
    let offer = next_room_event(&mut bob);
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    let (bob_identity, bob_ice) =
        (DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap(), IceCredentials::generate().unwrap());
    answer_offer(&mut bob, &offer, &bob_ice, &bob_identity);
    let mut subscriber = connect_media_tcp(&sdp, bob_ice, &bob_identity);

    std::thread::scope(|scope| {
        scope.spawn(|| send_video_with(|buf, len| publisher.send_rtp(buf, len), 0xCAFE, 0, 100));
        let arrived = receive_video(|buf, wait| subscriber.receive(buf, wait), None, 100);
        assert_eq!(sequence(&arrived), (0..100).collect::<Vec<u16>>(), "every packet over TCP, in order");
    });
}

#[test]
fn the_rooms_max_bitrate_reaches_the_publisher_in_the_answer_and_by_remb() {
    let srv = Server::start(&[]);
    let data = srv.ok("POST", "/room/convo", json!({"masterId": "alice", "memberIds": [], "maxBitrate": 1_000_000}));
    let (room, code) = (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"));
    let mut alice = join(&srv, &room, code, "alice");
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), 0xCAFE);
    alice.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let answer = next_event(&mut alice).unwrap();
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("b=AS:1000") && sdp.contains("b=TIAS:1000000"), "{sdp}");
    let mut publisher = connect_media(sdp, ice, &identity);
    send_video(&mut publisher, 0xCAFE, 20);
    let mut buf = vec![0u8; 2048];
    let remb = poll_until(Duration::from_secs(5), || match publisher.receive(&mut buf, Duration::from_millis(200)) {
        Some(Ok(Received::Rtcp { len })) => {
            RtcpCompound::new_checked(&buf[..len]).unwrap().packets().find_map(|p| match p {
                RtcpPacket::Remb(remb) => Some((remb.bitrate(), remb.ssrcs().collect::<Vec<_>>())),
                _ => None,
            })
        }
        _ => None,
    });
    assert_eq!(remb, Some((1_000_000, vec![0xCAFE])), "the worker caps the publisher by REMB");
}
