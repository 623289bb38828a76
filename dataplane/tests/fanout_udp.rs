//! End to end over real UDP on loopback, on both socket backends: a publishing test client
//! sends video through a worker to 50 subscribing test clients, each with its own ICE,
//! DTLS and SRTP session; every subscriber must decrypt every packet, in order. Then a
//! subscriber's PLI reaches the publisher and a NACK is answered.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::io::{BackendChoice, uring_unavailable_reason};
use uprtcd_dataplane::peer::{Received, UdpPeer, add_video_producer};
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket, write_pli};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::worker::{WorkerPlan, Workers};

const SUBSCRIBERS: usize = 50;
const PACKETS: u16 = 300;
const PUBLISHER_SSRC: u32 = 0x00C0_FFEE;
const TIMEOUT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn start_worker(backend: BackendChoice) -> Workers {
    let plan = WorkerPlan::on_loopback(1, backend);
    Workers::start(&plan).expect("worker starts")
}

fn fan_out(backend: BackendChoice) {
    let workers = start_worker(backend);
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("client connects");
    let producer = add_video_producer(worker, publisher_transport, PUBLISHER_SSRC, TIMEOUT).unwrap();
    let mut subscribers: Vec<UdpPeer> = (0..SUBSCRIBERS)
        .map(|i| {
            let (transport, client) =
                UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("client connects");
            let ssrc = 0x1000 + i as u32;
            let reply = worker.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
            assert!(matches!(reply, Reply::ConsumerAdded(_)), "{reply:?}");
            client
        })
        .collect();

    std::thread::scope(|scope| {
        let receivers: Vec<_> = subscribers
            .iter_mut()
            .enumerate()
            .map(|(i, subscriber)| {
                scope.spawn(move || {
                    let mut buf = vec![0u8; 2048];
                    let mut sequence = Vec::with_capacity(usize::from(PACKETS));
                    while sequence.len() < usize::from(PACKETS) {
                        match subscriber.receive(&mut buf, TIMEOUT) {
                            Some(Ok(Received::Rtp { len })) => {
                                let packet = RtpPacket::new_checked(&buf[..len]).expect("valid RTP");
                                assert_eq!(packet.ssrc(), 0x1000 + i as u32, "the subscriber's own SSRC");
                                assert!(packet.payload().iter().all(|&b| b == packet.timestamp() as u8));
                                sequence.push(packet.sequence_number());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => panic!("subscriber {i}: a packet did not decrypt: {e}"),
                            None => break,
                        }
                    }
                    sequence
                })
            })
            .collect();
        let mut buf = vec![0u8; 2048];
        for seq in 0..PACKETS {
            let header = RtpHeader::new(96, seq, u32::from(seq), PUBLISHER_SSRC).write(&mut buf).unwrap();
            buf[header..header + 1100].fill(seq as u8);
            publisher.send_rtp(&mut buf, header + 1100).unwrap();
            // Paced like a 1 Mbps camera (~450 packets/s): each subscriber socket buffers
            // well over 100 ms of it, so a busy machine delays the receiving threads without
            // overflowing them.
            std::thread::sleep(Duration::from_millis(2));
        }
        for (i, receiver) in receivers.into_iter().enumerate() {
            let sequence = receiver.join().expect("subscriber thread");
            assert_eq!(sequence.len(), usize::from(PACKETS), "subscriber {i} received every packet");
            assert!(sequence.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "subscriber {i}: in order");
        }
    });

    // A subscriber's keyframe request reaches the publisher as a PLI for its stream.
    let mut buf = vec![0u8; 2048];
    let len = write_pli(&mut buf, 0x1000, 0x1000).unwrap();
    subscribers[0].send_rtcp(&mut buf, len).unwrap();
    let pli = loop {
        match publisher.receive(&mut buf, TIMEOUT) {
            Some(Ok(Received::Rtcp { len })) => break RtcpCompound::new_checked(&buf[..len]).unwrap().packets().next(),
            Some(_) => continue,
            None => panic!("no PLI reached the publisher"),
        }
    };
    assert!(matches!(pli, Some(RtcpPacket::Pli(p)) if p.media_ssrc() == PUBLISHER_SSRC), "{pli:?}");

    // The worker publishes its counters about once a second.
    let expected = u64::from(PACKETS) * SUBSCRIBERS as u64;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let counters = loop {
        let counters = worker.stats().snapshot();
        if counters.packets_out >= expected || std::time::Instant::now() > deadline {
            break counters;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(counters.packets_out >= expected, "published packets out: {}", counters.packets_out);
    assert_eq!(counters.transports, 1 + SUBSCRIBERS as u64);
    workers.shutdown();
}

#[test]
fn fan_out_to_50_subscribers_over_epoll() {
    fan_out(BackendChoice::Epoll);
}

#[test]
fn fan_out_to_50_subscribers_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    fan_out(BackendChoice::Uring);
}
