//! The load client's AES-CM path against a real dataplane worker over loopback UDP: a
//! publisher and a subscriber, both on the rtc-dtls client offering only AES-CM, connect
//! through ICE and DTLS; every packet the publisher sends must reach the subscriber and
//! decrypt. The profile is read off the wire: AES-CM adds a 10-byte tag to each SRTP
//! packet, AES-GCM 16, and the same run on the dataplane's own client shows the difference.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::io::BackendChoice;
use uprtcd_dataplane::peer::{ClientPeer, Received, UdpPeer, add_video_producer};
use uprtcd_dataplane::router::TransportId;
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};
use uprtcd_loadgen::cm::{RtcDtlsIdentity, aes_cm_client_peer};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_secs(10);
const PACKETS: u16 = 50;
const PAYLOAD_LEN: usize = 500;
const PUBLISHER_SSRC: u32 = 0x00C0_FFEE;
const SUBSCRIBER_SSRC: u32 = 0x1000;

/// The SRTP tag of `AES_CM_128_HMAC_SHA1_80` (RFC 3711 §4.2: HMAC-SHA1 cut to 80 bits).
const AES_CM_TAG_LEN: usize = 10;
/// The tag of either AEAD profile (RFC 7714 §7.2).
const GCM_TAG_LEN: usize = 16;

/// Which DTLS client a test client runs.
#[derive(Clone, Copy)]
enum Stack<'a> {
    RtcDtlsAesCm(&'a RtcDtlsIdentity),
    Dimpl(&'a DtlsIdentity),
}

/// Asks `worker` for a transport as signalling would (the client's ICE credentials and the
/// fingerprint of the certificate its stack presents), then connects a client to it.
fn connect(worker: &WorkerHandle, stack: Stack<'_>) -> (TransportId, UdpPeer) {
    let local_ice = IceCredentials::generate().expect("the CSPRNG is available");
    let remote_fingerprint = match stack {
        Stack::RtcDtlsAesCm(identity) => identity.fingerprint(),
        Stack::Dimpl(identity) => identity.fingerprint(),
    };
    let remote_ice = local_ice.clone();
    let reply = worker
        .request(Command::CreateTransport { local_ice: None, remote_ice, remote_fingerprint }, TIMEOUT)
        .expect("the worker answers");
    let Reply::TransportCreated { created, address } = reply else { panic!("transport refused: {reply:?}") };
    let now = Instant::now();
    let peer = match stack {
        Stack::RtcDtlsAesCm(identity) => {
            aes_cm_client_peer(identity, local_ice, created.local_ice, created.fingerprint, now)
                .expect("the rtc-dtls client starts")
        }
        Stack::Dimpl(identity) => ClientPeer::new(identity, local_ice, created.local_ice, created.fingerprint, now),
    };
    let mut client = UdpPeer::bind(peer, LOOPBACK, address).expect("binds on loopback");
    client.connect(TIMEOUT).expect("ICE and DTLS complete");
    (created.transport, client)
}

/// Sends [`PACKETS`] from a publisher to a subscriber, both on `stack`, through one worker;
/// every packet must arrive and decrypt. Returns the SRTP overhead each packet had on the way
/// in (publisher to worker) and on the way out (worker to subscriber).
fn forward_and_measure_tags(stack: Stack<'_>) -> (Vec<usize>, Vec<usize>) {
    let workers = Workers::start(&WorkerPlan::on_loopback(1, BackendChoice::Epoll)).expect("worker starts");
    let worker = &workers.handles()[0];
    let (publisher_transport, mut publisher) = connect(worker, stack);
    let producer = add_video_producer(worker, publisher_transport, PUBLISHER_SSRC, TIMEOUT).expect("producer added");
    let (subscriber_transport, mut subscriber) = connect(worker, stack);
    let reply = worker
        .request(Command::add_consumer_as_published(producer, subscriber_transport, SUBSCRIBER_SSRC), TIMEOUT)
        .expect("the worker answers");
    assert!(matches!(reply, Reply::ConsumerAdded(_)), "{reply:?}");

    let mut inbound_tags = Vec::new();
    let mut buf = vec![0u8; 2048];
    for seq in 0..PACKETS {
        let header = RtpHeader::new(96, seq, u32::from(seq), PUBLISHER_SSRC).write(&mut buf).expect("2 KiB holds it");
        buf[header..header + PAYLOAD_LEN].fill(seq as u8);
        // Protected here rather than by `send_rtp` so that the SRTP length can be seen.
        let len = publisher.peer.protect_rtp(&mut buf, header + PAYLOAD_LEN).expect("connected");
        inbound_tags.push(len - header - PAYLOAD_LEN);
        publisher.socket().send_to(&buf[..len], publisher.server()).expect("loopback send");
        // Well under what the subscriber's socket buffers, however late its reads come.
        std::thread::sleep(Duration::from_millis(2));
    }

    // Read raw datagrams, not through `UdpPeer::receive`, to see each one's length before
    // it is decrypted.
    let socket = subscriber.socket().try_clone().expect("a second handle on the socket");
    let server = subscriber.server();
    socket.set_read_timeout(Some(TIMEOUT)).expect("a non-zero timeout");
    // The worker's own connectivity checks are answered, as `UdpPeer::receive` would.
    let mut send = |bytes: &[u8]| {
        let _ = socket.send_to(bytes, server);
    };
    let mut outbound_tags = Vec::new();
    let mut sequence = Vec::new();
    while sequence.len() < usize::from(PACKETS) {
        let Ok((datagram_len, from)) = socket.recv_from(&mut buf) else { break };
        if from != server {
            continue;
        }
        let received = subscriber.peer.handle_datagram(Instant::now(), from, &mut buf[..datagram_len], &mut send);
        match received {
            Ok(Received::Rtp { len }) => {
                outbound_tags.push(datagram_len - len);
                let packet = RtpPacket::new_checked(&buf[..len]).expect("valid RTP");
                assert_eq!(packet.ssrc(), SUBSCRIBER_SSRC, "sent as the consumer's SSRC");
                assert_eq!(packet.payload().len(), PAYLOAD_LEN);
                assert!(packet.payload().iter().all(|&b| b == packet.timestamp() as u8), "the payload sent");
                sequence.push(packet.timestamp() as u16);
            }
            // The worker's sender reports and consent answers are not media.
            Ok(Received::Rtcp { .. } | Received::Control) => {}
            Err(e) => panic!("a packet did not decrypt: {e}"),
        }
    }
    assert_eq!(sequence, (0..PACKETS).collect::<Vec<_>>(), "every packet, in order");
    workers.shutdown();
    (inbound_tags, outbound_tags)
}

#[test]
fn aes_cm_client_gets_aes_cm_from_the_worker_and_every_packet_decrypts() {
    let identity = RtcDtlsIdentity::generate().expect("rcgen makes a certificate");
    let (inbound, outbound) = forward_and_measure_tags(Stack::RtcDtlsAesCm(&identity));
    assert_eq!(inbound, [AES_CM_TAG_LEN; PACKETS as usize], "the publisher protects with AES-CM");
    assert_eq!(outbound, [AES_CM_TAG_LEN; PACKETS as usize], "the worker protects with AES-CM");
}

#[test]
fn dimpl_client_gets_gcm_from_the_worker() {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("a P-256 identity");
    let (inbound, outbound) = forward_and_measure_tags(Stack::Dimpl(&identity));
    assert_eq!(inbound, [GCM_TAG_LEN; PACKETS as usize]);
    assert_eq!(outbound, [GCM_TAG_LEN; PACKETS as usize]);
}
