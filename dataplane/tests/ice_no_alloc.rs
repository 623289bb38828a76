//! `local_ufrag_of` and every refusal by `IceLiteAgent::handle_stun` allocate nothing.

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::ice::client::build_binding_request;
use uprtcd_dataplane::ice::{IceCredentials, IceError, IceLiteAgent, MAX_RESPONSE_LEN, local_ufrag_of};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn routing_and_refusals_allocate_nothing() {
    let sfu = IceCredentials::new("SfuUfrag", "SfuPassword0123456789+/").unwrap();
    let browser = IceCredentials::new("BrowserUfrag", "BrowserPassword0123456789").unwrap();
    let other_sfu = IceCredentials::new("SfuUfrag", "NotTheSfuPassword012345").unwrap();
    let stranger = IceCredentials::new("Stranger", "StrangerPassword0123456").unwrap();
    let now = Instant::now();
    let mut agent = IceLiteAgent::new(sfu.clone(), browser.clone(), now);

    let mut valid = [0; 256];
    let len = build_binding_request(&browser, &sfu, true, 7, *b"transaction1", &mut valid).unwrap();
    let valid = &valid[..len];
    let mut wrong_pwd = [0; 256];
    let len = build_binding_request(&browser, &other_sfu, true, 7, *b"transaction1", &mut wrong_pwd).unwrap();
    let wrong_pwd = &wrong_pwd[..len];
    let mut wrong_ufrag = [0; 256];
    let len = build_binding_request(&stranger, &sfu, true, 7, *b"transaction1", &mut wrong_ufrag).unwrap();
    let wrong_ufrag = &wrong_ufrag[..len];
    let mut bad_fingerprint = valid.to_vec();
    *bad_fingerprint.last_mut().unwrap() ^= 1;
    let from = "203.0.113.7:50000".parse().unwrap();
    let mut response = [0; MAX_RESPONSE_LEN];

    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per packet would show in every
    // measurement, so the path is allocation-free when one of three measurements counts none.
    let mut measurements = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        for _ in 0..1000 {
            black_box(local_ufrag_of(black_box(valid)));
            assert_eq!(agent.handle_stun(wrong_pwd, from, now, &mut response), Err(IceError::BadIntegrity));
            assert_eq!(agent.handle_stun(wrong_ufrag, from, now, &mut response), Err(IceError::UnknownUfrag));
            assert_eq!(agent.handle_stun(&bad_fingerprint, from, now, &mut response), Err(IceError::BadFingerprint));
            assert_eq!(agent.handle_stun(&valid[..len - 1], from, now, &mut response), Err(IceError::Malformed));
        }
        let change = region.change();
        measurements.push((change.allocations, change.reallocations));
    }
    assert!(measurements.contains(&(0, 0)), "{measurements:?}");

    let region = Region::new(GLOBAL);
    agent.handle_stun(valid, from, now, &mut response).unwrap();
    println!("an accepted check: {:?}", region.change());
}
