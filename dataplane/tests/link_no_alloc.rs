//! Carrying a stream over a node link allocates nothing per packet: with a counting global
//! allocator, SRTP video published on engine A, rewritten and protected for the link,
//! unprotected on engine B and protected again for B's subscriber — and every 25th packet
//! lost on the link, NACKed by B and resent by A — makes zero allocations once running.

mod nodes;

use std::alloc::System;
use std::net::SocketAddr;
use std::time::Duration;

use nodes::{LinkedNodes, NODE_A, NODE_B, PUBLISHER_SSRC};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::io::SLOT_SIZE;
use uprtcd_dataplane::testnet::{Net, QueueOutbox};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Hands each datagram `from` queued to `destination` to `to` (which sees it come from
/// `source`) through one reused buffer, then empties `from`; returns how many datagrams it
/// held for others.
fn carry(
    from: &mut QueueOutbox,
    destination: SocketAddr,
    to: &mut Net,
    source: SocketAddr,
    buf: &mut [u8; SLOT_SIZE],
) -> u64 {
    let mut others = 0;
    for index in 0..from.0.len() {
        let Some((_, address, bytes)) = from.0.get(index) else { break };
        if address != destination {
            others += 1;
            continue;
        }
        let len = bytes.len();
        buf[..len].copy_from_slice(bytes);
        to.engine.handle_datagram(to.now, source, &mut buf[..len], &mut to.outbox);
    }
    from.0.clear();
    others
}

#[test]
fn a_stream_over_a_node_link_with_its_repairs_allocates_nothing_per_packet() {
    let LinkedNodes { mut a, mut b, .. } = nodes::linked(None);
    let payload = vec![0x5A; 1100];
    let mut packets: Vec<Vec<u8>> =
        (0..4000u16).map(|seq| a.protect_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload)).collect();
    let publisher = a.clients[0].addr;
    let mut buf = Box::new([0u8; SLOT_SIZE]);
    let mut to_subscriber = 0u64;
    let mut step = |seq: usize, packet: &mut Vec<u8>| {
        a.now += Duration::from_millis(2);
        b.now += Duration::from_millis(2);
        a.engine.handle_datagram(a.now, publisher, packet, &mut a.outbox);
        if seq.is_multiple_of(25) {
            a.outbox.0.clear();
        } else {
            carry(&mut a.outbox, NODE_B, &mut b, NODE_A, &mut buf);
        }
        // B's turn ends with its timers: the NACK for a gap it noticed, which A answers at
        // once with the packet, which B forwards.
        b.engine.handle_timeouts(b.now, &mut b.outbox);
        to_subscriber += carry(&mut b.outbox, NODE_A, &mut a, NODE_B, &mut buf);
        carry(&mut a.outbox, NODE_B, &mut b, NODE_A, &mut buf);
        to_subscriber += b.outbox.0.len() as u64;
        b.outbox.0.clear();
    };
    for (seq, packet) in packets[..1000].iter_mut().enumerate() {
        step(seq, packet);
    }
    let mut measurements = Vec::new();
    for (chunk, packets) in packets[1000..].chunks_mut(1000).enumerate() {
        let region = Region::new(GLOBAL);
        for (i, packet) in packets.iter_mut().enumerate() {
            step(1000 + chunk * 1000 + i, packet);
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert_eq!(to_subscriber, 3999, "every packet but the first reached the subscriber, the lost ones repaired");
    assert!(measurements.contains(&(0, 0)), "allocations while carrying 1,000 packets: {measurements:?}");
}
