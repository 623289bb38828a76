//! Steady-state forwarding allocates nothing: with a counting global allocator, 1→10 fan-out
//! of SRTP video (unprotect, route, rewrite, protect, queue) makes zero allocations per
//! packet once the streams are running; so does forwarding simulcast layers to subscribers
//! choosing among them (VP8 picture ids rewritten), one of them sent only the base temporal
//! layer (the frames of the others left out of its numbering).

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::engine::EngineConfig;
use uprtcd_dataplane::io::SLOT_SIZE;
use uprtcd_dataplane::router::{MediaKind, ProducerSpec, Rid};
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_dataplane::wire::video::{TemporalId, VideoFormat};

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
    let copies = vec![SUBSCRIBERS; packets.len()];
    assert_forwards_without_allocating(&mut net, &mut packets, &copies);
}

/// Hands `packets` from client 0 to the engine: the first third warms up (per-SSRC SRTP
/// state, the retransmission cache), then the rest in chunks of 500, each measured; the
/// path is allocation-free when one measurement counts none (the counting allocator sees
/// every thread of the process, and the test harness's own threads may allocate now and
/// then, while an allocation per packet would show in every measurement). Each packet must
/// reach as many subscribers as `copies` says for it.
fn assert_forwards_without_allocating(net: &mut Net, packets: &mut [Vec<u8>], copies: &[usize]) {
    let publisher = net.clients[0].addr;
    let now = net.now;
    let (warm_up, measured) = packets.split_at_mut(packets.len() / 3);
    let copies = &copies[warm_up.len()..];
    for packet in warm_up {
        net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
        net.outbox.0.clear();
    }
    let mut measurements = Vec::new();
    for (chunk, copies) in measured.chunks_mut(500).zip(copies.chunks(500)) {
        let forwarded_before = net.engine.counters().packets_out;
        let region = Region::new(GLOBAL);
        for packet in chunk.iter_mut() {
            net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
            net.outbox.0.clear();
        }
        let stats = region.change();
        let forwarded = net.engine.counters().packets_out - forwarded_before;
        assert_eq!(forwarded, copies.iter().sum::<usize>() as u64, "every packet went to every subscriber");
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(measurements.contains(&(0, 0)), "allocations while forwarding 500 packets: {measurements:?}");
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
    // Half the subscribers want the low layer, half the high one; one of the low layer's is
    // sent its TID 0 frames only.
    const CAPPED: usize = 2;
    for i in 1..=SUBSCRIBERS {
        let consumer = net.engine.add_consumer(layers[1], net.clients[i].transport, 0x100 + i as u32).unwrap();
        net.engine.set_layers(net.now, consumer, &layers, VideoFormat::Vp8).unwrap();
        net.engine.prefer_layer(net.now, consumer, i % 2, false).unwrap();
        if i == CAPPED {
            net.engine.limit_temporal_layer(consumer, TemporalId::BASE).unwrap();
        }
    }
    // The two layers interleaved, three packets a picture, in three temporal layers (L1T3:
    // TIDs 0, 2, 1, 2; Y on the first TID 2 and 1 frames of eight), each with a key frame
    // every 60 of its packets.
    let mut copies = Vec::new();
    let mut packets: Vec<Vec<u8>> = (0..6000u16)
        .map(|n| {
            let (rid, ssrc, seq) = if n % 2 == 0 { ("q", 0xA, n / 2) } else { ("f", 0xB, n / 2) };
            let mut buf = vec![0u8; SLOT_SIZE];
            let elements: [(u8, &[u8]); 1] = [(RID_EXTENSION, rid.as_bytes())];
            let picture = seq / 3;
            let header = RtpHeader::new(96, seq, u32::from(picture) * 3000, ssrc).extensions(&elements);
            let len = header.write(&mut buf).unwrap();
            let [high, low] = picture.to_be_bytes();
            let tid = [0, 2, 1, 2][usize::from(picture % 4)];
            let sync = matches!(picture % 8, 1 | 2);
            let start = if seq % 3 == 0 { 0x10 } else { 0 };
            let tl0picidx = (picture / 4) as u8;
            let descriptor = [0x80 | start, 0xE0, 0x80 | (high & 0x7F), low, tl0picidx, tid << 6 | u8::from(sync) << 5];
            buf[len..len + descriptor.len()].copy_from_slice(&descriptor);
            buf[len + descriptor.len()] = u8::from(seq % 60 != 0);
            buf[len + descriptor.len() + 1..len + 1100].fill(0x5A);
            let len = net.clients[0].peer.protect_rtp(&mut buf, len + 1100).unwrap();
            buf.truncate(len);
            // Each packet reaches the half of the subscribers on its layer, the capped one
            // only with a TID 0 frame.
            copies.push(SUBSCRIBERS / 2 - usize::from(n % 2 == 0 && tid > 0));
            buf
        })
        .collect();
    assert_forwards_without_allocating(&mut net, &mut packets, &copies);
}
