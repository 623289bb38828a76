//! Steady-state forwarding allocates nothing: with a counting global allocator, 1→10 fan-out
//! of SRTP video (unprotect, route, rewrite, protect, queue) makes zero allocations per
//! packet once the streams are running; so does forwarding simulcast layers to subscribers
//! choosing among them (VP8 picture ids rewritten).

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::engine::EngineConfig;
use uprtcd_dataplane::io::SLOT_SIZE;
use uprtcd_dataplane::router::{MediaKind, ProducerSpec, Rid};
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_dataplane::wire::video::VideoFormat;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn fan_out_allocates_nothing_per_packet() {
    const SUBSCRIBERS: usize = 10;
    const SSRC: u32 = 0xABCD;
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1 + SUBSCRIBERS);
    assert_eq!(net.connect_all(), 1 + SUBSCRIBERS);
    let spec =
        ProducerSpec { transport: net.clients[0].transport, ssrc: SSRC, kind: MediaKind::Video, clock_rate: 90_000 };
    let producer = net.engine.add_producer(spec).unwrap();
    for i in 1..=SUBSCRIBERS {
        net.engine.add_consumer(producer, net.clients[i].transport, 0x100 + i as u32).unwrap();
    }
    let payload = vec![0x5A; 1100];
    let mut packets: Vec<Vec<u8>> =
        (0..3000u16).map(|seq| net.protect_rtp(0, SSRC, seq, u32::from(seq) * 3000, &payload)).collect();
    assert_forwards_without_allocating(&mut net, &mut packets, SUBSCRIBERS);
}

/// Hands `packets` from client 0 to the engine: the first third warms up (per-SSRC SRTP
/// state, the retransmission cache), then the rest in chunks of 500, each measured; the
/// path is allocation-free when one measurement counts none (the counting allocator sees
/// every thread of the process, and the test harness's own threads may allocate now and
/// then, while an allocation per packet would show in every measurement). Each packet must
/// reach `copies` subscribers.
fn assert_forwards_without_allocating(net: &mut Net, packets: &mut [Vec<u8>], copies: usize) {
    let publisher = net.clients[0].addr;
    let now = net.now;
    let (warm_up, measured) = packets.split_at_mut(packets.len() / 3);
    for packet in warm_up {
        net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
        net.outbox.0.clear();
    }
    let mut measurements = Vec::new();
    for chunk in measured.chunks_mut(500) {
        let forwarded_before = net.engine.counters().packets_out;
        let region = Region::new(GLOBAL);
        for packet in chunk.iter_mut() {
            net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
            net.outbox.0.clear();
        }
        let stats = region.change();
        let forwarded = net.engine.counters().packets_out - forwarded_before;
        assert_eq!(forwarded, (chunk.len() * copies) as u64, "every packet went to every subscriber");
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(measurements.contains(&(0, 0)), "allocations while forwarding 500 packets to {copies}: {measurements:?}");
}

#[test]
fn simulcast_forwarding_allocates_nothing_per_packet() {
    const SUBSCRIBERS: usize = 10;
    const RID_EXTENSION: u8 = 10;
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1 + SUBSCRIBERS);
    assert_eq!(net.connect_all(), 1 + SUBSCRIBERS);
    let publisher = net.clients[0].transport;
    let mut layers = Vec::new();
    for rid in ["q", "f"] {
        let rid = (RID_EXTENSION, Rid::new(rid).unwrap());
        layers.push(net.engine.add_layer_producer(publisher, rid, MediaKind::Video, 90_000).unwrap());
    }
    // Half the subscribers want the low layer, half the high one.
    for i in 1..=SUBSCRIBERS {
        let consumer = net.engine.add_consumer(layers[1], net.clients[i].transport, 0x100 + i as u32).unwrap();
        net.engine.set_layers(net.now, consumer, &layers, VideoFormat::Vp8).unwrap();
        net.engine.prefer_layer(net.now, consumer, i % 2, false).unwrap();
    }
    // The two layers interleaved, each with a key frame every 60 of its packets.
    let mut packets: Vec<Vec<u8>> = (0..6000u16)
        .map(|n| {
            let (rid, ssrc, seq) = if n % 2 == 0 { ("q", 0xA, n / 2) } else { ("f", 0xB, n / 2) };
            let mut buf = vec![0u8; SLOT_SIZE];
            let elements: [(u8, &[u8]); 1] = [(RID_EXTENSION, rid.as_bytes())];
            let header = RtpHeader::new(96, seq, u32::from(seq / 3) * 3000, ssrc).extensions(&elements);
            let len = header.write(&mut buf).unwrap();
            let [high, low] = (seq / 3).to_be_bytes();
            let descriptor = [0x90, 0x80, 0x80 | (high & 0x7F), low, u8::from(seq % 60 != 0)];
            buf[len..len + descriptor.len()].copy_from_slice(&descriptor);
            buf[len + descriptor.len()..len + 1100].fill(0x5A);
            let len = net.clients[0].peer.protect_rtp(&mut buf, len + 1100).unwrap();
            buf.truncate(len);
            buf
        })
        .collect();
    // Each packet reaches the half of the subscribers on its layer.
    assert_forwards_without_allocating(&mut net, &mut packets, SUBSCRIBERS / 2);
}
