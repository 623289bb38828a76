//! The load generator (benches/loadgen) against the real binary, at a load any machine takes:
//! its clients join through REST and signalling, publish and watch, and its meters decrypt
//! every packet, and joins are timed to their first media (fan-out probes, a join storm) — so
//! `benches/run` keeps working as the server and the generator change.
//! Numbers are not checked here (they belong to the benchmarks); what arrived is.

use std::path::PathBuf;
use std::time::Duration;

use uprtcd_loadgen::media::{ClientDtls, StreamProfile};
use uprtcd_loadgen::report::{Progress, Run, Step};
use uprtcd_loadgen::scenario::{self, Context, FanoutPlan, StormPlan};
use uprtcd_loadgen::uprtcd::{Uprtcd, UprtcdOptions};

fn server(workers: usize) -> Uprtcd {
    let backend = std::env::var("UPRTCD_TEST_IO_BACKEND").unwrap_or_else(|_| "auto".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Uprtcd::start(UprtcdOptions {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_uprtcd")),
        workers,
        backend,
        media_ip: "127.0.0.1".parse().unwrap(),
        cores: (0..cores).collect(),
    })
    .expect("uprtcd starts")
}

/// Measuring `srv` with clients that offer what Chromium offers, one-second windows.
fn browserlike(srv: &Uprtcd) -> Context<'_> {
    let identity = ClientDtls::browserlike().unwrap();
    Context::new(srv, Some(srv), StreamProfile::default(), identity, Duration::from_secs(1)).unwrap()
}

/// Every one of `joins` timed joins connected and received media.
fn assert_joined(step: &Step, joins: usize) {
    let times = step.join_ms.as_ref().unwrap_or_else(|| panic!("joins were timed: {step:?}"));
    assert_eq!((times.joins, times.failed), (joins, 0), "{:?}", times.failures);
    assert_eq!(times.first_media.samples, joins, "each timed join got media");
}

/// Every step measured, every meter's packets decrypted and none lost.
fn assert_delivered(run: &Run, steps: usize) {
    assert_eq!(run.steps.len(), steps, "{}: {}", run.label, run.ended);
    for step in &run.steps {
        assert!(step.latency_us.samples > 0, "the meters received media: {step:?}");
        assert_eq!((step.loss, step.decrypt_errors), (0.0, 0), "{step:?}");
        assert!(step.worker_cpu_percent.is_some_and(|cpu| cpu > 0.0), "{step:?}");
    }
}

#[test]
fn a_fan_out_and_a_conference_arrive_whole_at_the_meters() {
    let srv = server(1);
    let ctx = browserlike(&srv);
    let mut progress = Progress::new(3);
    let plan = FanoutPlan {
        steps: vec![3, 8],
        meters: 3,
        across_workers: false,
        probes: 2,
        probe_interval: Duration::from_millis(50),
    };
    let run = scenario::fanout(&ctx, &plan, &mut progress).expect("fan-out");
    assert_delivered(&run, 2);
    assert_eq!((run.steps[1].subscribers, run.steps[1].publishers), (8, 1));
    run.steps.iter().for_each(|step| assert_joined(step, 2));
    let run = scenario::conference(&ctx, &[3], &mut progress).expect("conference");
    assert_delivered(&run, 1);
}

#[test]
fn an_audience_across_two_workers_and_aes_cm_clients_arrive_whole() {
    let srv = server(2);
    let cm = ClientDtls::aes_cm_only().unwrap();
    // Two seconds: the workers publish their counters once a second, and each must show
    // copies sent within the window.
    let ctx = Context::new(&srv, Some(&srv), StreamProfile::default(), cm, Duration::from_secs(2)).unwrap();
    let plan =
        FanoutPlan { steps: vec![6], meters: 4, across_workers: true, probes: 0, probe_interval: Duration::ZERO };
    let run = scenario::fanout(&ctx, &plan, &mut Progress::new(1)).expect("live room across workers");
    assert_delivered(&run, 1);
    assert_eq!(run.profile.as_deref(), Some("AES-CM-128-HMAC-SHA1-80"));
    let per_worker = &run.steps[0].worker_pps;
    assert!(per_worker.len() == 2 && per_worker.iter().all(|&pps| pps > 0.0), "both workers forward: {per_worker:?}");
}

#[test]
fn a_join_storm_is_timed_and_the_audience_keeps_its_media() {
    let srv = server(1);
    let ctx = browserlike(&srv);
    let plan = StormPlan { base: 4, meters: 2, joins: 8, spread: Duration::from_secs(1), threads: 4 };
    let run = scenario::storm(&ctx, &plan, &mut Progress::new(3)).expect("storm");
    assert_delivered(&run, 3);
    let phases: Vec<_> = run.steps.iter().map(|s| s.phase.as_deref()).collect();
    assert_eq!(phases, [Some("before"), Some("storm"), Some("after")]);
    assert_joined(&run.steps[1], 8);
}
