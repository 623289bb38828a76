//! Congestion control allocates nothing per packet or per feedback once its buffers exist:
//! recording 100 arrivals, writing their transport feedback, parsing it and feeding it to
//! the estimator against the send history.
//!
//! Counted with stats_alloc as the other `*_no_alloc` tests do: `CountingAllocator` counts
//! live bytes, not allocations, so it would miss an allocation freed within the loop.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::bwe::{Estimator, EstimatorConfig, FEEDBACK_INTERVAL, FeedbackGenerator, SendHistory};
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn feedback_of_100_packets_allocates_nothing_after_warm_up() {
    let t0 = Instant::now();
    let mut history = SendHistory::new();
    let mut generator = FeedbackGenerator::new(1, 2);
    let mut estimator = Estimator::new(EstimatorConfig { start_bps: 1_000_000, min_bps: 50_000, max_bps: 5_000_000 });
    let mut now = t0;
    let mut feedback = [0u8; 1500];
    let mut round = |now: &mut Instant| {
        // 100 packets 1 ms apart, every tenth lost on the way.
        for i in 0..100u64 {
            let sent = *now + Duration::from_millis(i);
            let seq = history.on_send(sent, 1200, None);
            if i % 10 != 9 {
                generator.record(sent + Duration::from_millis(30), seq);
            }
        }
        *now += FEEDBACK_INTERVAL + Duration::from_millis(30);
        let mut len = 0;
        generator.poll(*now, |bytes| {
            feedback[..bytes.len()].copy_from_slice(bytes);
            len = bytes.len();
        });
        for packet in RtcpCompound::new_checked(&feedback[..len]).unwrap().packets() {
            if let RtcpPacket::TransportFeedback(packet) = packet {
                estimator.on_feedback(*now, &packet, &mut history);
            }
        }
        estimator.handle_timeout(*now, &history);
        black_box(estimator.estimate())
    };
    for _ in 0..50 {
        round(&mut now);
    }

    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per feedback would show in every
    // measurement, so the path is allocation-free when one of three measurements counts none.
    let mut measurements = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        for _ in 0..100 {
            round(&mut now);
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(measurements.contains(&(0, 0)), "{measurements:?}");
}
