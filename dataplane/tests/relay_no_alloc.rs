//! Steady-state relaying allocates nothing: with a counting global allocator, SRTP video
//! published on one worker and relayed to subscribers on another (unprotect, route, one
//! copy into a pooled buffer, the link, rewrite, protect, queue on the destination) makes
//! zero allocations per packet once the streams are running — in virtual time with two
//! linked engines, and through real workers on both socket backends.

mod common;

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::engine::EngineConfig;
use uprtcd_dataplane::io::{BackendChoice, uring_unavailable_reason};
use uprtcd_dataplane::peer::{UdpPeer, add_video_producer, relay_video};
use uprtcd_dataplane::relay::{RelayConfig, WorkerIndex, mesh};
use uprtcd_dataplane::router::{MediaKind, ProducerSpec};
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::worker::{WorkerPlan, Workers};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SSRC: u32 = 0xABCD;
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn relaying_between_engines_allocates_nothing_per_packet() {
    const SUBSCRIBERS: usize = 10;
    let mut links = mesh(2, RelayConfig::default()).into_iter();
    let mut origin = Net::new(EngineConfig::default());
    origin.engine.attach_links(links.next().unwrap());
    let mut destination = Net::new(EngineConfig::default());
    destination.engine.attach_links(links.next().unwrap());
    origin.add_clients(2);
    assert_eq!(origin.connect_all(), 2);
    destination.add_clients(SUBSCRIBERS);
    assert_eq!(destination.connect_all(), SUBSCRIBERS);
    let spec =
        ProducerSpec { transport: origin.clients[0].transport, ssrc: SSRC, kind: MediaKind::Video, clock_rate: 90_000 };
    let producer = origin.engine.add_producer(spec).unwrap();
    origin.engine.add_consumer(producer, origin.clients[1].transport, 0x100).unwrap();
    let stream = origin.engine.export_producer(producer, WorkerIndex(1)).unwrap();
    let imported = destination.engine.import_producer(WorkerIndex(0), stream, MediaKind::Video, 90_000).unwrap();
    for i in 0..SUBSCRIBERS {
        destination.engine.add_consumer(imported, destination.clients[i].transport, 0x200 + i as u32).unwrap();
    }
    let payload = vec![0x5A; 1100];
    let mut packets: Vec<Vec<u8>> =
        (0..3000u16).map(|seq| origin.protect_rtp(0, SSRC, seq, u32::from(seq) * 3000, &payload)).collect();
    let publisher = origin.clients[0].addr;
    let handshake_packets = destination.engine.counters().packets_out;
    let now = origin.now;
    let later = destination.now;
    let mut relay_one = |packet: &mut Vec<u8>| {
        origin.engine.handle_datagram(now, publisher, packet, &mut origin.outbox);
        origin.outbox.0.clear();
        destination.engine.handle_relay(later, &mut destination.outbox);
        destination.outbox.0.clear();
    };
    // Warm-up: per-SSRC SRTP state, the retransmission caches, the relay pool's buffers.
    for packet in &mut packets[..1000] {
        relay_one(packet);
    }
    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per packet would show in every
    // measurement, so the path is allocation-free when one of four measurements counts none.
    let mut measurements = Vec::new();
    for chunk in packets[1000..].chunks_mut(500) {
        let region = Region::new(GLOBAL);
        for packet in chunk.iter_mut() {
            relay_one(packet);
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert_eq!(origin.engine.counters().relayed_out, 3000, "every packet was relayed");
    assert_eq!(destination.engine.counters().relayed_in, 3000);
    let forwarded = destination.engine.counters().packets_out - handshake_packets;
    assert_eq!(forwarded, 3000 * SUBSCRIBERS as u64, "to every subscriber");
    assert!(
        measurements.contains(&(0, 0)),
        "allocations while relaying 500 packets to {SUBSCRIBERS} subscribers: {measurements:?}"
    );
}

fn relaying_through_workers_allocates_nothing(backend: BackendChoice) {
    const ROUND: u16 = 100;
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let plan = WorkerPlan::on_loopback(2, backend);
    let workers = Workers::start(&plan).expect("workers start");
    let (origin, destination) = (&workers.handles()[0], &workers.handles()[1]);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (transport, mut publisher) = UdpPeer::connect_to_worker(origin, &identity, LOOPBACK, TIMEOUT).unwrap();
    let producer = add_video_producer(origin, transport, SSRC, TIMEOUT).expect("producer added");
    let imported = relay_video(origin, destination, producer, TIMEOUT).expect("relayed to worker 1");
    let (transport, mut subscriber) = UdpPeer::connect_to_worker(destination, &identity, LOOPBACK, TIMEOUT).unwrap();
    let reply = destination.request(Command::add_consumer_as_published(imported, transport, 0x100), TIMEOUT).unwrap();
    assert!(matches!(reply, Reply::ConsumerAdded(_)), "{reply:?}");

    let (mut seq, mut buffers) = (0u16, (vec![0u8; 2048], vec![0u8; 2048]));
    let round = || {
        let send = |buf: &mut [u8], len| publisher.send_rtp(buf, len);
        common::burst(send, |buf, wait| subscriber.receive(buf, wait), SSRC, &mut seq, ROUND, &mut buffers);
    };
    common::assert_rounds_allocate_nothing(GLOBAL, &format!("relaying {ROUND} packets"), round);
    workers.shutdown();
}

#[test]
fn relaying_through_workers_allocates_nothing_per_packet_over_epoll() {
    relaying_through_workers_allocates_nothing(BackendChoice::Epoll);
}

#[test]
fn relaying_through_workers_allocates_nothing_per_packet_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    relaying_through_workers_allocates_nothing(BackendChoice::Uring);
}
