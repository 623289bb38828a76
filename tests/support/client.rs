//! A signalling and media test client of the real binary: WebSocket sessions at
//! `serverUrl + invitationCode`, browser-like SDP offers and answers, and test peers that
//! connect to the worker a description names (over UDP or ICE-TCP) and check what arrives.

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};
use uprtcd_dataplane::dtls::{CertificateFingerprint, DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::{ClientPeer, PeerError, Received, TcpPeer, UdpPeer};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};

use super::*;

pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A room's id and invitation code.
pub fn convo(srv: &Server, master: &str, members: &[&str], max: u32) -> (String, u64) {
    let data = srv.ok("POST", "/room/convo", json!({"masterId": master, "memberIds": members, "maxMemberNum": max}));
    (str_field(&data, "roomId").to_owned(), u64_field(&data, "invitationCode"))
}

pub fn token(srv: &Server, room: &str, peer: &str) -> String {
    let data = srv.ok("POST", &format!("/room/{}/token", enc(room)), json!({"peerId": peer}));
    str_field(&data, "token").to_owned()
}

/// Opens a signalling connection and returns it with its first event.
pub fn connect(srv: &Server, code: u64, peer: &str, token: &str) -> (Client, Value) {
    let url = format!("ws://{}/{code}?peer={}&token={token}", srv.client, enc(peer));
    let (mut socket, _) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    }
    let first = next_event(&mut socket).expect("a first event");
    (socket, first)
}

/// What one wait for the next message gave.
enum Read {
    Event(Value),
    /// The server closed the connection.
    Closed,
    /// Nothing within the socket's read timeout.
    Quiet,
}

/// Waits for the next text message (pings and pongs are answered by the library while it
/// reads). Any stream: a plain socket, or TLS (tests/tls.rs).
fn read_message<S: std::io::Read + std::io::Write>(socket: &mut WebSocket<S>) -> Read {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Read::Event(serde_json::from_str(&text).expect("events are JSON")),
            Ok(Message::Close(_)) => return Read::Closed,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Read::Closed,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Read::Quiet;
            }
            Err(e) => panic!("signalling read failed: {e}"),
        }
    }
}

/// The next JSON event, or `None` once the server closed the connection; a socket quiet for
/// its whole read timeout fails the test.
pub fn next_event<S: std::io::Read + std::io::Write>(socket: &mut WebSocket<S>) -> Option<Value> {
    match read_message(socket) {
        Read::Event(event) => Some(event),
        Read::Closed => None,
        Read::Quiet => panic!("no signalling event within the read timeout"),
    }
}

/// Reads events until one of `kind` arrives; `None` when the connection ends first.
pub fn event_of<S: std::io::Read + std::io::Write>(socket: &mut WebSocket<S>, kind: &str) -> Option<Value> {
    loop {
        let event = next_event(socket)?;
        if event["type"] == kind {
            return Some(event);
        }
    }
}

/// [`event_of`] for a wait longer than the client's read timeout: a quiet minute is no error.
pub fn patient_event_of(socket: &mut Client, kind: &str, within: Duration) -> Option<Value> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        match read_message(socket) {
            Read::Event(event) if event["type"] == kind => return Some(event),
            Read::Event(_) | Read::Quiet => {}
            Read::Closed => return None,
        }
    }
    None
}

/// A signalling client kept reading on a thread, as a browser's network stack does whatever
/// the page does: it answers the server's pings, so the server takes it for alive.
pub struct Reading {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Client>,
}

impl Reading {
    pub fn start(mut socket: Client) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        }
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match socket.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
                stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
            }
            socket
        });
        Reading { stop, thread }
    }

    /// Stops reading and hands the client back (what it read is dropped).
    pub fn stop(self) -> Client {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the reading thread")
    }
}

pub fn join(srv: &Server, room: &str, code: u64, peer: &str) -> Client {
    let (socket, first) = connect(srv, code, peer, &token(srv, room, peer));
    assert_eq!(first["type"], "joined", "{first}");
    assert_eq!(first["v"], 1);
    assert_eq!(first["peer"], peer);
    socket
}

pub fn refused(srv: &Server, code: u64, peer: &str, token: &str) -> u64 {
    let (mut socket, first) = connect(srv, code, peer, token);
    assert_eq!(first["type"], "error", "{first}");
    assert!(next_event(&mut socket).is_none(), "a refused client is closed");
    first["code"].as_u64().expect("an error carries the spec's code")
}

pub fn joined(srv: &Server, room: &str, peer: &str) -> bool {
    bool_field(&srv.ok("GET", &format!("/room/{}/peer/{}", enc(room), enc(peer)), ()), "joined")
}

/// A browser-like offer to publish one VP8 stream as `ssrc`.
pub fn video_offer(ice: &IceCredentials, fingerprint: &str, ssrc: u32) -> String {
    let (ufrag, pwd) = (ice.ufrag(), ice.pwd());
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS stream",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{ufrag}"),
        &format!("a=ice-pwd:{pwd}"),
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=msid:stream track",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        &format!("a=ssrc:{ssrc} cname:publisher"),
        &format!("a=ssrc:{ssrc} msid:stream track"),
        "",
    ]
    .join("\r\n")
}

/// The value of the first `a=<name>:` line of `sdp`.
pub fn attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    let prefix = format!("a={name}:");
    sdp.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no a={name} in:\n{sdp}")).trim()
}

/// A worker's counter from `/metrics`.
pub fn metric(srv: &Server, line_start: &str) -> u64 {
    let text = srv.request(&Auth::Missing, "GET", "/metrics", &[], Body::None).text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{line_start} missing from:\n{text}")) as u64
}

/// Connects a test client to the worker a description (our answer or offer) names, as the
/// client with `ice` and `identity`.
pub fn connect_media(sdp: &str, ice: IceCredentials, identity: &DtlsIdentity) -> UdpPeer {
    let mut client = media_client(sdp, ice, identity);
    client.connect(Duration::from_secs(10)).expect("ICE and DTLS with the worker the description names");
    client
}

/// A media client for the worker `sdp` names, not connected yet.
pub fn media_client(sdp: &str, ice: IceCredentials, identity: &DtlsIdentity) -> UdpPeer {
    let candidate: Vec<&str> = attribute(sdp, "candidate").split_whitespace().collect();
    let server: std::net::SocketAddr = format!("{}:{}", candidate[4], candidate[5]).parse().unwrap();
    let server_ice = IceCredentials::new(attribute(sdp, "ice-ufrag"), attribute(sdp, "ice-pwd")).unwrap();
    let fingerprint = CertificateFingerprint::parse_sdp(attribute(sdp, "fingerprint")).unwrap();
    let peer = ClientPeer::new(identity, ice, server_ice, fingerprint, std::time::Instant::now());
    UdpPeer::bind(peer, server.ip(), server).unwrap()
}

/// Publishes one VP8 stream as `ssrc` over `signalling`; returns the connected media client.
pub fn publish_video(signalling: &mut Client, ssrc: u32) -> UdpPeer {
    publish_video_offer(signalling, ssrc, |offer| offer)
}

/// [`publish_video`] with [`video_offer`] changed by `edit` first.
pub fn publish_video_offer(signalling: &mut Client, ssrc: u32, edit: impl FnOnce(String) -> String) -> UdpPeer {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = edit(video_offer(&ice, &identity.fingerprint().to_string(), ssrc));
    signalling.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let answer = next_event(signalling).unwrap();
    assert_eq!(answer["type"], "answer", "{answer}");
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=ice-lite") && sdp.contains("a=setup:passive") && sdp.contains("a=recvonly"), "{sdp}");
    connect_media(sdp, ice, &identity)
}

pub fn send_video(client: &mut UdpPeer, ssrc: u32, packets: u16) {
    send_video_from(client, ssrc, 0, packets);
}

/// [`send_video`] with sequence numbers `first..first + packets` (a stream that goes on:
/// SRTP refuses a sequence number it has seen as a replay).
pub fn send_video_from(client: &mut UdpPeer, ssrc: u32, first: u16, packets: u16) {
    send_video_with(|buf, len| client.send_rtp(buf, len), ssrc, first, packets);
}

/// [`send_video_from`] through any client's `send_rtp` (UDP or ICE-TCP).
pub fn send_video_with(
    mut send_rtp: impl FnMut(&mut [u8], usize) -> Result<(), PeerError>,
    ssrc: u32,
    first: u16,
    packets: u16,
) {
    let mut buf = vec![0u8; 2048];
    for seq in first..first + packets {
        let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, ssrc).write(&mut buf).unwrap();
        buf[header..header + 500].fill(seq as u8);
        send_rtp(&mut buf, header + 500).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends 100 packets with [`send_video`] from `publisher` (as `publisher_ssrc`) while
/// `receive` takes them: every one must arrive, in order, as `ssrc`.
pub fn assert_forwarded_in_order(
    publisher: &mut UdpPeer,
    publisher_ssrc: u32,
    receive: impl FnMut(&mut [u8], Duration) -> Option<Result<Received, PeerError>>,
    ssrc: u32,
) {
    std::thread::scope(|scope| {
        scope.spawn(|| send_video(publisher, publisher_ssrc, 100));
        let arrived = receive_video(receive, None, 100);
        assert!(arrived.iter().all(|&(sent_as, _)| sent_as == ssrc), "sent as the SSRC the description announced");
        assert_eq!(sequence(&arrived), (0..100).collect::<Vec<u16>>(), "every packet, in order");
    });
}

/// A subscriber's answer to `offer`: every live section received (`recvonly`), closed ones
/// answered closed, as a browser answers.
pub fn answer_to(offer: &str, ice: &IceCredentials, identity: &DtlsIdentity) -> String {
    let sections: Vec<&str> = offer.split("\r\nm=").skip(1).collect();
    let mut live_mids = Vec::new();
    let mut media = Vec::new();
    for section in sections {
        let lines: Vec<&str> = section.lines().collect();
        let m_line = lines[0];
        let closed = m_line.split_whitespace().nth(1) == Some("0");
        let idle = lines.contains(&"a=inactive");
        let mid = lines.iter().find_map(|l| l.strip_prefix("a=mid:")).expect("every section has a mid");
        media.push(format!("m={m_line}"));
        media.push("c=IN IP4 0.0.0.0".into());
        media.push(format!("a=mid:{mid}"));
        if closed {
            media.push("a=inactive".into());
            continue;
        }
        live_mids.push(mid.to_owned());
        media.push(format!("a=ice-ufrag:{}", ice.ufrag()));
        media.push(format!("a=ice-pwd:{}", ice.pwd()));
        media.push(format!("a=fingerprint:sha-256 {}", identity.fingerprint()));
        media.push("a=setup:active".into());
        media.push(if idle { "a=inactive" } else { "a=recvonly" }.into());
        media.push("a=rtcp-mux".into());
        media.extend(
            lines.iter().filter(|l| l.starts_with("a=rtpmap:") || l.starts_with("a=fmtp:")).map(|l| l.to_string()),
        );
    }
    let mut answer = vec!["v=0".to_owned(), "o=- 1 2 IN IP4 127.0.0.1".into(), "s=-".into(), "t=0 0".into()];
    answer.push(format!("a=group:BUNDLE {}", live_mids.join(" ")));
    answer.extend(media);
    answer.push(String::new());
    answer.join("\r\n")
}

/// The next event of `socket` that is not presence (`peer-joined`, `peer-left`).
pub fn next_room_event(socket: &mut Client) -> Value {
    loop {
        let event = next_event(socket).expect("an event");
        if !matches!(event["type"].as_str(), Some("peer-joined" | "peer-left")) {
            return event;
        }
    }
}

/// Answers the offer `event` carries and expects `subscribed`.
pub fn answer_offer(socket: &mut Client, offer: &Value, ice: &IceCredentials, identity: &DtlsIdentity) {
    assert_eq!(offer["type"], "offer", "{offer}");
    let answer = answer_to(offer["sdp"].as_str().unwrap(), ice, identity);
    socket.send(Message::Text(json!({"type": "answer", "sdp": answer}).to_string().into())).unwrap();
    // Room events may come first; the answer's confirmation comes before any new offer.
    let confirmed = loop {
        let event = next_room_event(socket);
        if !matches!(event["type"].as_str(), Some("track-added" | "track-removed" | "merge-changed")) {
            break event;
        }
    };
    assert_eq!(confirmed["type"], "subscribed", "{confirmed}");
}

/// `POST /whip|whep/{room}` with an SDP offer and a join token.
pub fn whip_post(srv: &Server, kind: &str, room: &str, token: &str, offer: &str) -> ClientResp {
    let bearer = format!("Bearer {token}");
    let headers = [("content-type", "application/sdp"), ("authorization", bearer.as_str())];
    srv.client_request("POST", &format!("/{kind}/{}", enc(room)), &headers, raw(offer))
}

/// `peer` publishes [`video_offer`] as `ssrc` over WHIP into `room` and connects its media:
/// the `201` response and the publisher.
pub fn whip_publish(srv: &Server, room: &str, peer: &str, ssrc: u32) -> (ClientResp, UdpPeer) {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let offer = video_offer(&ice, &identity.fingerprint().to_string(), ssrc);
    let published = whip_post(srv, "whip", room, &token(srv, room, peer), &offer);
    assert_eq!(published.status, 201, "{}", published.text());
    let publisher = connect_media(&published.text(), ice, &identity);
    (published, publisher)
}

/// A player's offer for one VP8 stream: receive-only, no SSRCs.
pub fn player_offer(ice: &IceCredentials, fingerprint: &str) -> String {
    video_offer(ice, fingerprint, 1)
        .replace("a=sendonly", "a=recvonly")
        .lines()
        .filter(|l| !l.starts_with("a=ssrc"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// The candidates of a description as (transport, address, priority).
pub fn candidates(sdp: &str) -> Vec<(String, std::net::SocketAddr, u32)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (f[2].to_ascii_lowercase(), format!("{}:{}", f[4], f[5]).parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// Connects a test client over ICE-TCP to the `tcp` candidate of `sdp`.
pub fn connect_media_tcp(sdp: &str, ice: IceCredentials, identity: &DtlsIdentity) -> TcpPeer {
    let (_, server, _) = candidates(sdp).into_iter().find(|(t, _, _)| t == "tcp").expect("a tcp candidate");
    let server_ice = IceCredentials::new(attribute(sdp, "ice-ufrag"), attribute(sdp, "ice-pwd")).unwrap();
    let fingerprint = CertificateFingerprint::parse_sdp(attribute(sdp, "fingerprint")).unwrap();
    let peer = ClientPeer::new(identity, ice, server_ice, fingerprint, std::time::Instant::now());
    let mut client = TcpPeer::open(peer, server, Duration::from_secs(10)).unwrap();
    client.connect(Duration::from_secs(10)).expect("ICE and DTLS over TCP with the worker");
    client
}

/// Receives with `receive` until `count` RTP packets (of `ssrc`, when given) arrived or none
/// came for 5 s. Every datagram must decrypt, and every packet carry what [`send_video`]
/// sends (its sequence number's low byte, repeated). Returns the (SSRC, sequence number) of
/// each packet counted, in arrival order.
pub fn receive_video(
    mut receive: impl FnMut(&mut [u8], Duration) -> Option<Result<Received, PeerError>>,
    ssrc: Option<u32>,
    count: usize,
) -> Vec<(u32, u16)> {
    let mut buf = vec![0u8; 2048];
    let mut arrived = Vec::new();
    while arrived.len() < count {
        match receive(&mut buf, Duration::from_secs(5)) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = RtpPacket::new_checked(&buf[..len]).expect("forwarded RTP parses");
                if ssrc.is_some_and(|wanted| wanted != packet.ssrc()) {
                    continue;
                }
                let seq = packet.sequence_number();
                assert!(packet.payload().iter().all(|&b| b == seq as u8), "payload of {seq} changed");
                arrived.push((packet.ssrc(), seq));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("a packet did not decrypt: {e}"),
            None => break,
        }
    }
    arrived
}

/// The sequence numbers `receive_video` counted.
pub fn sequence(arrived: &[(u32, u16)]) -> Vec<u16> {
    arrived.iter().map(|&(_, seq)| seq).collect()
}

/// A browser-like offer to publish Opus as `audio_ssrc` (mid 0) and VP8 as `video_ssrc`
/// (mid 1).
pub fn audio_video_offer(ice: &IceCredentials, fingerprint: &str, audio_ssrc: u32, video_ssrc: u32) -> String {
    let video = video_offer(ice, fingerprint, video_ssrc);
    let (session, video_section) = video.split_once("m=video").expect("a video section");
    let session = session.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1");
    let video_section = format!("m=video{video_section}").replace("a=mid:0", "a=mid:1");
    format!("{session}{}{video_section}", audio_section(ice, fingerprint, audio_ssrc, &[]))
}

/// An offer of audio alone, with `extmaps` (`<id> <uri>`).
pub fn audio_offer(ice: &IceCredentials, fingerprint: &str, ssrc: u32, extmaps: &[&str]) -> String {
    let video = video_offer(ice, fingerprint, ssrc);
    let (session, _) = video.split_once("m=video").expect("a video section");
    format!("{session}{}", audio_section(ice, fingerprint, ssrc, extmaps))
}

/// A sending Opus section, mid 0.
fn audio_section(ice: &IceCredentials, fingerprint: &str, ssrc: u32, extmaps: &[&str]) -> String {
    let head = [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".to_owned(),
        "c=IN IP4 0.0.0.0".to_owned(),
        format!("a=ice-ufrag:{}", ice.ufrag()),
        format!("a=ice-pwd:{}", ice.pwd()),
        format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass".to_owned(),
        "a=mid:0".to_owned(),
        "a=sendonly".to_owned(),
        "a=msid:stream audio".to_owned(),
        "a=rtcp-mux".to_owned(),
    ];
    let extmaps = extmaps.iter().map(|e| format!("a=extmap:{e}"));
    let tail = ["a=rtpmap:111 opus/48000/2".to_owned(), format!("a=ssrc:{ssrc} cname:publisher"), String::new()];
    head.into_iter().chain(extmaps).chain(tail).collect::<Vec<_>>().join("\r\n")
}

/// Publishes `offer` as the client with `ice` and `identity`; returns the answer's SDP.
pub fn publish_offer(signalling: &mut Client, offer: &str) -> String {
    signalling.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    let answer = next_room_event(signalling);
    assert_eq!(answer["type"], "answer", "{answer}");
    answer["sdp"].as_str().unwrap().to_owned()
}

/// A subscriber's media side: its credentials, and the peer once connected.
pub struct Viewer {
    pub signalling: Client,
    pub ice: IceCredentials,
    pub identity: DtlsIdentity,
    pub media: Option<UdpPeer>,
}

impl Viewer {
    /// Joins `room` as `peer` and subscribes.
    pub fn join(srv: &Server, room: &str, code: u64, peer: &str) -> Self {
        let mut signalling = join(srv, room, code, peer);
        signalling.send(Message::Text(json!({"type": "subscribe"}).to_string().into())).unwrap();
        let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
        Viewer { signalling, ice: IceCredentials::generate().unwrap(), identity, media: None }
    }

    /// Waits for the next offer (skipping other events), answers it and connects media on
    /// the first; returns the offer's `tracks`.
    pub fn renegotiate(&mut self) -> Vec<Value> {
        let offer = loop {
            let event = next_room_event(&mut self.signalling);
            if event["type"] == "offer" {
                break event;
            }
        };
        answer_offer(&mut self.signalling, &offer, &self.ice, &self.identity);
        if self.media.is_none() {
            self.media = Some(connect_media(offer["sdp"].as_str().unwrap(), self.ice.clone(), &self.identity));
        }
        offer["tracks"].as_array().cloned().unwrap_or_default()
    }
}
