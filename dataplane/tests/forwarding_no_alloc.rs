//! Steady-state forwarding allocates nothing: with a counting global allocator, 1→10 fan-out
//! of SRTP video (unprotect, route, rewrite, protect, queue) makes zero allocations per
//! packet once the streams are running.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::engine::EngineConfig;
use uprtcd_dataplane::router::{MediaKind, ProducerSpec};
use uprtcd_dataplane::testnet::Net;

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
    let publisher = net.clients[0].addr;
    let now = net.now;
    // Warm-up: the first packets create per-SSRC SRTP state and fill the retransmission cache.
    for packet in &mut packets[..1000] {
        net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
        net.outbox.0.clear();
    }
    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per packet would show in every
    // measurement, so the path is allocation-free when one of three measurements counts none.
    let mut measurements = Vec::new();
    for chunk in packets[1000..].chunks_mut(500) {
        let forwarded_before = net.engine.counters().packets_out;
        let region = Region::new(GLOBAL);
        for packet in chunk.iter_mut() {
            net.engine.handle_datagram(now, publisher, packet, &mut net.outbox);
            net.outbox.0.clear();
        }
        let stats = region.change();
        let forwarded = net.engine.counters().packets_out - forwarded_before;
        assert_eq!(forwarded, 500 * SUBSCRIBERS as u64, "every packet went to every subscriber");
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(
        measurements.contains(&(0, 0)),
        "allocations while forwarding 500 packets to {SUBSCRIBERS}: {measurements:?}"
    );
}
