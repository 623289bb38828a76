//! What the through-the-worker no-allocation tests share: bursts of SRTP video from a test
//! publisher to a test subscriber, and the rule for counting allocations around them.
//!
//! The counting allocator sees every thread of the process: the workers' (what is measured)
//! and the harness's, which may allocate now and then. An allocation per packet would show in
//! every measurement, so one of five that counts none proves the path free of them.

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc};
use uprtcd_dataplane::peer::{PeerError, Received};
use uprtcd_dataplane::wire::rtp::RtpHeader;

/// Bursts before counting: per-SSRC SRTP state, retransmission caches, pools and the
/// keyframe request a new consumer sends settle in these.
const WARM_UP_ROUNDS: usize = 5;
const COUNTED_ROUNDS: usize = 5;

/// Sends `count` video packets of `ssrc` (1,100-byte payloads, sequence numbers going on
/// from `seq`) with `send`, then receives with `receive` until all of them arrived. Receiving
/// runs on the calling thread, so that the count sees no thread being started.
pub fn burst(
    mut send: impl FnMut(&mut [u8], usize) -> Result<(), PeerError>,
    mut receive: impl FnMut(&mut [u8], Duration) -> Option<Result<Received, PeerError>>,
    ssrc: u32,
    seq: &mut u16,
    count: u16,
    buffers: &mut (Vec<u8>, Vec<u8>),
) {
    let (outgoing, incoming) = buffers;
    for _ in 0..count {
        let header = RtpHeader::new(96, *seq, u32::from(*seq) * 3000, ssrc).write(outgoing).unwrap();
        outgoing[header..header + 1100].fill(0x5A);
        send(outgoing, header + 1100).unwrap();
        *seq = seq.wrapping_add(1);
    }
    let mut received = 0;
    while received < count {
        match receive(incoming, Duration::from_secs(10)) {
            Some(Ok(Received::Rtp { .. })) => received += 1,
            Some(Ok(_)) => {}
            other => panic!("after {received} packets: {other:?}"),
        }
    }
}

/// Warms up with `round`, then counts allocations around each of five more rounds; panics
/// (naming `what`) unless one of them made none.
pub fn assert_rounds_allocate_nothing(global: &'static StatsAlloc<System>, what: &str, mut round: impl FnMut()) {
    for _ in 0..WARM_UP_ROUNDS {
        round();
    }
    let mut measurements = Vec::new();
    for _ in 0..COUNTED_ROUNDS {
        let region = Region::new(global);
        round();
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(measurements.contains(&(0, 0)), "allocations while {what}: {measurements:?}");
}
