//! Dominant speaker detection allocates nothing per packet or per decision once its streams
//! are known: parsing the audio level, recording it, and polling.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::speaker::{DominantSpeaker, MAX_STREAMS};
use uprtcd_dataplane::wire::audio_level::AudioLevel;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn recording_and_polling_allocate_nothing() {
    let start = Instant::now();
    let mut detector = DominantSpeaker::new();
    let mut frame = 0u64;
    let mut changes = 0u32;
    // One second of 20 ms frames from every stream the detector takes: the first round
    // makes them known (which may allocate), the later ones are counted. A talker moves
    // through the room so that the role changes hands.
    let mut round = || {
        for _ in 0..50 {
            let now = start + Duration::from_millis(20 * frame);
            let talker = (frame / 100) as usize % MAX_STREAMS;
            for key in 0..MAX_STREAMS {
                let byte = if key == talker { 0x80 | 30 } else { 0x7F };
                let level = AudioLevel::parse(black_box(&[byte])).unwrap();
                detector.record(now, key, level);
            }
            changes += u32::from(detector.poll(now).is_some());
            frame += 1;
        }
    };
    round();

    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per packet would show in every
    // measurement, so the path is allocation-free when one of three measurements counts none.
    let mut measurements = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        for _ in 0..4 {
            round();
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(changes >= 6, "the role changed hands {changes} times");
    assert!(measurements.contains(&(0, 0)), "{measurements:?}");
}
