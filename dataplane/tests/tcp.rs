//! ICE-TCP end to end on loopback, on both socket backends: test clients that reach a worker
//! only over its TCP listener (RFC 6544 passive candidate, RFC 4571 framing) do ICE, DTLS and
//! SRTP over the stream. Media published over UDP is received over TCP and the other way
//! round, every packet decrypted and in order; sender reports cross the same way. A stream
//! that breaks the framing loses its connection and no one else's. A connection that no
//! authenticated ICE check claims in time is closed, and one address gets only its share.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::ice::client::build_binding_request;
use uprtcd_dataplane::io::{BackendChoice, DEFAULT_MAX_CONNECTIONS_PER_IP, uring_unavailable_reason};
use uprtcd_dataplane::peer::{PeerError, Received, TcpPeer, UdpPeer, add_video_producer};
use uprtcd_dataplane::router::{ProducerId, TransportId};
use uprtcd_dataplane::stats::{DropReason, WorkerCounters};
use uprtcd_dataplane::wire::framing::{PREFIX_LEN, encode};
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket, SenderInfo, write_sender_report};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};

const PACKETS: u16 = 300;
const UDP_PUBLISHER_SSRC: u32 = 0x0000_AAAA;
const TCP_PUBLISHER_SSRC: u32 = 0x0000_BBBB;
const TIMEOUT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// How long the deadline tests give a connection to be claimed: short, so that they wait
/// little; ICE over loopback takes milliseconds.
const AUTH_TIMEOUT: Duration = Duration::from_millis(500);

fn start_worker(backend: BackendChoice) -> Workers {
    let plan = WorkerPlan::on_loopback(1, backend);
    Workers::start(&plan).expect("worker starts")
}

fn add_consumer(worker: &WorkerHandle, producer: ProducerId, transport: TransportId, ssrc: u32) {
    let reply = worker.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
    assert!(matches!(reply, Reply::ConsumerAdded(_)), "{reply:?}");
}

/// A test client on either transport.
enum Client {
    Udp(UdpPeer),
    Tcp(TcpPeer),
}

impl Client {
    fn send_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        match self {
            Self::Udp(peer) => peer.send_rtp(buf, len),
            Self::Tcp(peer) => peer.send_rtp(buf, len),
        }
    }

    fn send_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        match self {
            Self::Udp(peer) => peer.send_rtcp(buf, len),
            Self::Tcp(peer) => peer.send_rtcp(buf, len),
        }
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> Option<Result<Received, PeerError>> {
        match self {
            Self::Udp(peer) => peer.receive(buf, timeout),
            Self::Tcp(peer) => peer.receive(buf, timeout),
        }
    }
}

fn udp_client(worker: &WorkerHandle, identity: &DtlsIdentity) -> (TransportId, Client) {
    let (transport, peer) =
        UdpPeer::connect_to_worker(worker, identity, LOOPBACK, TIMEOUT).expect("UDP client connects");
    (transport, Client::Udp(peer))
}

fn tcp_client(worker: &WorkerHandle, identity: &DtlsIdentity) -> (TransportId, Client) {
    let (transport, peer) = TcpPeer::connect_to_worker(worker, identity, TIMEOUT).expect("TCP client connects");
    (transport, Client::Tcp(peer))
}

fn payload_byte(seq: u16, ssrc: u32) -> u8 {
    (seq as u8) ^ (ssrc as u8)
}

/// Receives RTP until `PACKETS` came (or a wait runs out): the sequence numbers, after
/// checking each packet's SSRC and payload.
fn receive_stream(client: &mut Client, ssrc: u32, publisher_ssrc: u32, name: &str) -> Vec<u16> {
    let mut buf = vec![0u8; 2048];
    let mut sequence = Vec::with_capacity(usize::from(PACKETS));
    while sequence.len() < usize::from(PACKETS) {
        match client.receive(&mut buf, TIMEOUT) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = RtpPacket::new_checked(&buf[..len]).expect("valid RTP");
                assert_eq!(packet.ssrc(), ssrc, "{name}: the subscriber's own SSRC");
                let input = packet.timestamp() as u16;
                assert_eq!(packet.payload().len(), 1000, "{name}");
                assert!(packet.payload().iter().all(|&b| b == payload_byte(input, publisher_ssrc)), "{name}: payload");
                sequence.push(packet.sequence_number());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{name}: a packet did not arrive whole: {e}"),
            None => break,
        }
    }
    sequence
}

fn assert_complete(sequence: &[u16], name: &str) {
    assert_eq!(sequence.len(), usize::from(PACKETS), "{name} received every packet");
    assert!(sequence.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{name}: in order");
}

/// Waits for a sender report about `ssrc` (the subscriber's numbering).
fn receive_sender_report(client: &mut Client, ssrc: u32) -> SenderInfo {
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let Some(Ok(Received::Rtcp { len })) = client.receive(&mut buf, TIMEOUT) else { continue };
        let Ok(compound) = RtcpCompound::new_checked(&buf[..len]) else { continue };
        for packet in compound.packets() {
            if let RtcpPacket::SenderReport(report) = packet
                && report.info().ssrc == ssrc
            {
                return report.info();
            }
        }
    }
    panic!("no sender report for {ssrc:#x}");
}

fn send_sender_report(client: &mut Client, ssrc: u32) {
    let info = SenderInfo {
        ssrc,
        ntp_timestamp: 0xE000_0000_8000_0000,
        rtp_timestamp: u32::from(PACKETS - 1),
        packet_count: u32::from(PACKETS),
        octet_count: u32::from(PACKETS) * 1000,
    };
    let mut buf = vec![0u8; 2048];
    let len = write_sender_report(&mut buf, &info, &[]).unwrap();
    client.send_rtcp(&mut buf, len).unwrap();
}

/// Waits until the published counters satisfy `done`; they are published about once a second.
fn published(worker: &WorkerHandle, done: impl Fn(&WorkerCounters) -> bool) -> WorkerCounters {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let counters = worker.stats().snapshot();
        if done(&counters) || Instant::now() > deadline {
            return counters;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_stream(publisher: &mut Client, ssrc: u32, seq: u16, buf: &mut [u8]) {
    let header = RtpHeader::new(96, seq, u32::from(seq), ssrc).write(buf).unwrap();
    buf[header..header + 1000].fill(payload_byte(seq, ssrc));
    publisher.send_rtp(buf, header + 1000).unwrap();
}

fn media_crosses_between_udp_and_tcp(backend: BackendChoice) {
    let workers = start_worker(backend);
    let worker = &workers.handles()[0];
    let tcp = worker.tcp_address().expect("the worker listens for ICE-TCP");
    assert_eq!(Some(tcp), worker.udp_address(), "the TCP candidate shares the UDP one's address and port");
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();

    // UDP publisher → TCP subscriber; TCP publisher → UDP subscriber and TCP subscriber.
    let (transport, mut udp_publisher) = udp_client(worker, &identity);
    let from_udp = add_video_producer(worker, transport, UDP_PUBLISHER_SSRC, TIMEOUT).unwrap();
    let (transport, mut tcp_publisher) = tcp_client(worker, &identity);
    let from_tcp = add_video_producer(worker, transport, TCP_PUBLISHER_SSRC, TIMEOUT).unwrap();
    let (transport, mut tcp_subscriber) = tcp_client(worker, &identity);
    add_consumer(worker, from_udp, transport, 0x1000);
    let (transport, mut udp_subscriber) = udp_client(worker, &identity);
    add_consumer(worker, from_tcp, transport, 0x2000);
    let (transport, mut tcp_subscriber_2) = tcp_client(worker, &identity);
    add_consumer(worker, from_tcp, transport, 0x3000);

    std::thread::scope(|scope| {
        let receivers = [
            (&mut tcp_subscriber, 0x1000, UDP_PUBLISHER_SSRC, "UDP → TCP"),
            (&mut udp_subscriber, 0x2000, TCP_PUBLISHER_SSRC, "TCP → UDP"),
            (&mut tcp_subscriber_2, 0x3000, TCP_PUBLISHER_SSRC, "TCP → TCP"),
        ]
        .map(|(client, ssrc, publisher, name)| {
            (name, scope.spawn(move || receive_stream(client, ssrc, publisher, name)))
        });
        let mut buf = vec![0u8; 2048];
        for seq in 0..PACKETS {
            send_stream(&mut udp_publisher, UDP_PUBLISHER_SSRC, seq, &mut buf);
            send_stream(&mut tcp_publisher, TCP_PUBLISHER_SSRC, seq, &mut buf);
            // Paced like a 1 Mbps camera, so a busy machine delays the receiving threads
            // without overflowing the UDP subscriber's socket buffer.
            std::thread::sleep(Duration::from_millis(2));
        }
        for (name, receiver) in receivers {
            assert_complete(&receiver.join().expect("subscriber thread"), name);
        }
    });

    // SRTCP crosses too: each publisher's sender report reaches its subscribers.
    send_sender_report(&mut udp_publisher, UDP_PUBLISHER_SSRC);
    assert_eq!(receive_sender_report(&mut tcp_subscriber, 0x1000).packet_count, u32::from(PACKETS));
    send_sender_report(&mut tcp_publisher, TCP_PUBLISHER_SSRC);
    assert_eq!(receive_sender_report(&mut udp_subscriber, 0x2000).packet_count, u32::from(PACKETS));
    assert_eq!(receive_sender_report(&mut tcp_subscriber_2, 0x3000).packet_count, u32::from(PACKETS));

    let counters = published(worker, |c| c.tcp_connections == 3 && c.packets_out >= 3 * u64::from(PACKETS));
    assert_eq!(counters.tcp_connections, 3);
    assert!(counters.packets_out >= 3 * u64::from(PACKETS), "published packets out: {}", counters.packets_out);
    for reason in [
        DropReason::TcpWrite,
        DropReason::TcpBadFrame,
        DropReason::TcpOverLimit,
        DropReason::TcpPerIpLimit,
        DropReason::TcpUnauthenticated,
    ] {
        assert_eq!(counters.drops_of(reason), 0, "{}", reason.name());
    }
    drop((tcp_publisher, tcp_subscriber, tcp_subscriber_2));
    assert_eq!(published(worker, |c| c.tcp_connections == 0).tcp_connections, 0, "closed connections are removed");
    workers.shutdown();
}

fn a_malformed_frame_closes_only_its_connection(backend: BackendChoice) {
    let workers = start_worker(backend);
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (transport, mut publisher) = tcp_client(worker, &identity);
    let producer = add_video_producer(worker, transport, TCP_PUBLISHER_SSRC, TIMEOUT).unwrap();
    let (transport, mut subscriber) = tcp_client(worker, &identity);
    add_consumer(worker, producer, transport, 0x1000);
    let (transport, mut victim) = TcpPeer::connect_to_worker(worker, &identity, TIMEOUT).expect("TCP client connects");
    add_consumer(worker, producer, transport, 0x2000);

    // A connected client whose stream then carries a zero-length frame, and a bare
    // connection that announces a frame longer than any packet.
    victim.send_unframed(&[0x00, 0x00, 0x80, 0x60]).unwrap();
    let mut stranger = TcpStream::connect(worker.tcp_address().unwrap()).unwrap();
    stranger.write_all(&[0xFF, 0xFF, 0x00, 0x01, 0x00, 0x00]).unwrap();
    assert_closed_by_worker(&mut victim, "the victim's connection");
    let counters = published(worker, |c| c.drops_of(DropReason::TcpBadFrame) == 2 && c.tcp_connections == 2);
    assert_eq!(counters.drops_of(DropReason::TcpBadFrame), 2);
    assert_eq!(counters.tcp_connections, 2, "the publisher's and the subscriber's connections stay");

    stream_arrives_whole(&mut publisher, &mut subscriber);
    workers.shutdown();
}

/// Reads what `client` still receives until the worker closes its connection.
fn assert_closed_by_worker(client: &mut TcpPeer, what: &str) {
    let mut buf = vec![0u8; 2048];
    let closed = loop {
        match client.receive(&mut buf, TIMEOUT) {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(closed, Some(Err(PeerError::ConnectionClosed))), "{what} closed: {closed:?}");
}

/// The TCP publisher's stream reaches the subscriber of consumer SSRC 0x1000 whole, in order.
fn stream_arrives_whole(publisher: &mut Client, subscriber: &mut Client) {
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive_stream(subscriber, 0x1000, TCP_PUBLISHER_SSRC, "subscriber"));
        let mut buf = vec![0u8; 2048];
        for seq in 0..PACKETS {
            send_stream(publisher, TCP_PUBLISHER_SSRC, seq, &mut buf);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_complete(&receiver.join().expect("subscriber thread"), "subscriber");
    });
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0; PREFIX_LEN + packet.len()];
    encode(packet, &mut out).unwrap();
    out
}

/// Whether the worker ends `stream` (its end or a reset) within the wait.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// A client connection to `server` from `ip` (any of 127.0.0.0/8 is on loopback).
fn connect_from(ip: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// A Binding request for a transport that exists, signed with a password it does not have.
fn check_with_a_wrong_password(worker: &WorkerHandle, identity: &DtlsIdentity) -> Vec<u8> {
    let mine = IceCredentials::generate().unwrap();
    let create = Command::CreateTransport {
        local_ice: None,
        remote_ice: mine.clone(),
        remote_fingerprint: identity.fingerprint(),
    };
    let Ok(Reply::TransportCreated { created, .. }) = worker.request(create, TIMEOUT) else { panic!("no transport") };
    let guessed = IceCredentials::new(created.local_ice.ufrag(), "notthepasswordnotthepassword").unwrap();
    let mut buf = vec![0u8; 512];
    let len = build_binding_request(&mine, &guessed, true, 1, [7; 12], &mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// Connections that send nothing, a frame of no protocol, or a Binding request under a wrong
/// password are closed once the deadline passed, and counted; the clients that did ICE over
/// their connections stay past it and carry media.
fn strangers_are_closed_at_the_deadline_and_ice_clients_stay(backend: BackendChoice) {
    let mut plan = WorkerPlan::on_loopback(1, backend);
    plan.tcp.auth_timeout = AUTH_TIMEOUT;
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let server = worker.tcp_address().unwrap();
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (transport, mut publisher) = tcp_client(worker, &identity);
    let producer = add_video_producer(worker, transport, TCP_PUBLISHER_SSRC, TIMEOUT).unwrap();
    let (transport, mut subscriber) = tcp_client(worker, &identity);
    add_consumer(worker, producer, transport, 0x1000);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(server).unwrap();
    let mut garbage = TcpStream::connect(server).unwrap();
    garbage.write_all(&framed(&[0xFF; 100])).unwrap();
    let mut guesser = TcpStream::connect(server).unwrap();
    guesser.write_all(&framed(&check_with_a_wrong_password(worker, &identity))).unwrap();
    for (name, stream) in [("silent", &mut silent), ("garbage", &mut garbage), ("wrong password", &mut guesser)] {
        assert!(closed_by_server(stream), "{name}: the worker closed the connection");
    }
    // A connection's deadline runs from its accept, which came after `opened`.
    assert!(opened.elapsed() >= AUTH_TIMEOUT, "closed before the deadline: {:?}", opened.elapsed());

    let counters = published(worker, |c| c.drops_of(DropReason::TcpUnauthenticated) == 3 && c.tcp_connections == 2);
    assert_eq!(counters.drops_of(DropReason::TcpUnauthenticated), 3);
    assert_eq!(counters.tcp_connections, 2, "the ICE clients' connections stay");
    assert!(counters.drops_of(DropReason::Malformed) >= 1, "the garbage frame reached the engine");
    assert!(counters.drops_of(DropReason::StunBadIntegrity) >= 1, "the wrong password was refused");
    stream_arrives_whole(&mut publisher, &mut subscriber);
    assert_eq!(published(worker, |c| c.tcp_connections == 2).drops_of(DropReason::TcpUnauthenticated), 3);
    workers.shutdown();
}

/// A claimed connection goes with its transport: closed once the transport is, and counted;
/// the other client's connection stays.
fn a_connection_goes_with_its_transport(backend: BackendChoice) {
    let mut plan = WorkerPlan::on_loopback(1, backend);
    plan.tcp.auth_timeout = AUTH_TIMEOUT;
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (closing, mut client) = TcpPeer::connect_to_worker(worker, &identity, TIMEOUT).expect("TCP client connects");
    let (_, other) = TcpPeer::connect_to_worker(worker, &identity, TIMEOUT).expect("TCP client connects");
    // Past the deadline, both connections are claimed.
    std::thread::sleep(3 * AUTH_TIMEOUT);
    assert_eq!(published(worker, |c| c.tcp_connections == 2).drops_of(DropReason::TcpUnauthenticated), 0);

    let reply = worker.request(Command::CloseTransport { transport: closing }, TIMEOUT).unwrap();
    assert!(matches!(reply, Reply::Done), "{reply:?}");
    assert_closed_by_worker(&mut client, "the connection of the closed transport");
    let counters = published(worker, |c| c.drops_of(DropReason::TcpTransportGone) == 1 && c.tcp_connections == 1);
    assert_eq!(counters.drops_of(DropReason::TcpTransportGone), 1);
    assert_eq!(counters.tcp_connections, 1, "the other client's connection stays");
    drop(other);
    workers.shutdown();
}

/// One address gets its share of connections; the next one from it is closed at once and
/// counted, while another address still connects.
fn one_address_gets_its_share_of_connections(backend: BackendChoice) {
    let mut plan = WorkerPlan::on_loopback(1, backend);
    // Long enough that no connection of this test meets its deadline.
    plan.tcp.auth_timeout = Duration::from_secs(120);
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let server = worker.tcp_address().unwrap();
    let crowded = Ipv4Addr::new(127, 0, 0, 3);
    let _share: Vec<TcpStream> = (0..DEFAULT_MAX_CONNECTIONS_PER_IP).map(|_| connect_from(crowded, server)).collect();
    let mut one_too_many = connect_from(crowded, server);
    assert!(closed_by_server(&mut one_too_many), "the connection past the share is closed at once");
    let _elsewhere = connect_from(Ipv4Addr::new(127, 0, 0, 4), server);
    let expected = DEFAULT_MAX_CONNECTIONS_PER_IP as u64 + 1;
    let counters = published(worker, |c| c.drops_of(DropReason::TcpPerIpLimit) == 1 && c.tcp_connections == expected);
    assert_eq!(counters.drops_of(DropReason::TcpPerIpLimit), 1);
    assert_eq!(counters.tcp_connections, expected, "the share and the other address's connection");
    assert_eq!(counters.drops_of(DropReason::TcpOverLimit), 0);
    workers.shutdown();
}

#[test]
fn media_crosses_between_udp_and_tcp_over_epoll() {
    media_crosses_between_udp_and_tcp(BackendChoice::Epoll);
}

#[test]
fn media_crosses_between_udp_and_tcp_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    media_crosses_between_udp_and_tcp(BackendChoice::Uring);
}

#[test]
fn a_malformed_frame_closes_only_its_connection_over_epoll() {
    a_malformed_frame_closes_only_its_connection(BackendChoice::Epoll);
}

#[test]
fn a_malformed_frame_closes_only_its_connection_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    a_malformed_frame_closes_only_its_connection(BackendChoice::Uring);
}

#[test]
fn strangers_are_closed_at_the_deadline_and_ice_clients_stay_over_epoll() {
    strangers_are_closed_at_the_deadline_and_ice_clients_stay(BackendChoice::Epoll);
}

#[test]
fn strangers_are_closed_at_the_deadline_and_ice_clients_stay_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    strangers_are_closed_at_the_deadline_and_ice_clients_stay(BackendChoice::Uring);
}

#[test]
fn one_address_gets_its_share_of_connections_over_epoll() {
    one_address_gets_its_share_of_connections(BackendChoice::Epoll);
}

#[test]
fn one_address_gets_its_share_of_connections_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    one_address_gets_its_share_of_connections(BackendChoice::Uring);
}

#[test]
fn a_connection_goes_with_its_transport_over_epoll() {
    a_connection_goes_with_its_transport(BackendChoice::Epoll);
}

#[test]
fn a_connection_goes_with_its_transport_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    a_connection_goes_with_its_transport(BackendChoice::Uring);
}
