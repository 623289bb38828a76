//! What a mirror on another node adds and costs (issue #14): one publisher on the origin
//! node; an audience of N on the origin alone, against the same N split evenly between the
//! origin and a mirror node that the origin feeds over a node link.
//!
//! Each configuration has a room of its own, opened, joined, measured and closed in turn, so
//! that no window carries another's audience, and the configurations alternate round by
//! round so that a machine that drifts weighs on both alike:
//! - `one-node`: N on the origin, no mirror (the other node idles in the cluster, and counts
//!   in the totals);
//! - `meters`: the room mirrored, only the meters watching, as many on each node: the latency
//!   a mirror adds when nothing else queues, packet for packet against the origin's meters
//!   in the same window, from the same publisher;
//! - `split`: the same room with N/2 on each node, meters included.
//!
//! A window counts, per node, the kernel's CPU time of its worker threads and of its whole
//! process, what its meters saw (loss; latency from the publisher's send to the meter's kernel
//! receive timestamp) and its workers' own packet counters; the step's own fields are the
//! totals over both nodes.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{AUDIENCE, Context, SAMPLE_INTERVAL, Stage, failures, mostly_failed};
use crate::LoadError;
use crate::media::{Delivery, Keeper, MeterStats};
use crate::proc;
use crate::report::{NodeStep, ONE_NODE, Percentiles, Progress, Run, SPLIT, Step};
use crate::sfu::{RoomKind, Sfu};
use crate::uprtcd::{Uprtcd, WorkerMetrics};

/// The phase of the mirrored room's window with only the meters watching.
const METERS: &str = "meters";
/// How long nodes may take to see each other, and a mirror node to publish the origin's
/// streams (a feeder looks every 500 ms).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a closed room and its consumers may take to go on both nodes.
const QUIET_TIMEOUT: Duration = Duration::from_secs(30);
/// A live room's host publishes an audio and a video stream.
const HOST_STREAMS: f64 = 2.0;

/// What the scenario measures.
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// Audiences N, meters included, each on the origin alone and split over the two nodes.
    pub audiences: Vec<usize>,
    /// Meters on each node (the first viewers of each node to join).
    pub meters: usize,
    /// How many times each audience's configurations are measured, alternately.
    pub rounds: usize,
    /// The cluster's Redis, whose CPU each window reports too.
    pub redis_pid: Option<u32>,
}

impl MirrorPlan {
    /// Measurement windows in all.
    pub fn windows(&self) -> usize {
        self.audiences.len() * self.rounds * 3
    }
}

/// The two nodes: `origin`, where the rooms live and their host publishes, and `mirror`.
#[derive(Debug, Clone, Copy)]
pub struct Nodes<'c, 'a> {
    pub origin: &'c Context<'a>,
    pub mirror: &'c Context<'a>,
}

/// One node in a window: who it is, which of the stage's meters watch through it, its
/// audience (meters included).
struct Side<'a> {
    server: &'a Uprtcd,
    role: &'static str,
    meters: Range<usize>,
    subscribers: usize,
}

/// A configuration's windows, and why the run should end there when most of its joins failed.
struct Measured {
    steps: Vec<Step>,
    failed: Option<String>,
}

/// The configurations, in the order each round measures them.
#[derive(Debug, Clone, Copy)]
enum Configuration {
    OneNode,
    Split,
}

/// Each configuration of `plan` in turn, on the nodes of `nodes`. A configuration that fails
/// ends the run with the steps measured so far; so does one where most joins failed.
pub fn mirror(nodes: Nodes<'_, '_>, plan: &MirrorPlan, progress: &mut Progress) -> Result<Run, LoadError> {
    let (origin, mirror) = servers(nodes)?;
    let mut run = nodes.origin.run("mirror");
    run.label = format!("{}, mirrored on {}", origin.label(), mirror.label());
    run.workers = origin.media_threads().len() + mirror.media_threads().len();
    for server in [origin, mirror] {
        wait_for(|| Ok(server.metric("uprtcd_cluster_nodes")? >= 2.0), &format!("{} sees both nodes", server.alias()))?;
    }
    run.ended = "every configuration measured".into();
    for &audience in &plan.audiences {
        for round in 1..=plan.rounds {
            for configuration in [Configuration::OneNode, Configuration::Split] {
                let what = format!("mirror ×{audience}, round {round}/{}, {configuration:?}", plan.rounds);
                let room = nodes.origin.sfu.create_room(RoomKind::Live, "host", &[])?;
                let turn = Turn { nodes, origin, mirror, room: &room, audience, plan, what: &what };
                let measured = match configuration {
                    Configuration::OneNode => turn.one_node(progress),
                    Configuration::Split => turn.split(progress),
                };
                // Its audience is gone with the stage; closing the room at the origin closes its
                // mirror. A room the server closed by itself is not an error.
                let _ = origin.call("DELETE", &format!("/room/{room}"), Value::Null);
                if let Err(e) = quiet(&[origin, mirror]) {
                    run.notes.push(format!("{what}: {e}"));
                }
                match measured {
                    Ok(Measured { steps, failed }) => {
                        run.steps.extend(steps);
                        if let Some(why) = failed {
                            run.ended = format!("{what}: {why}");
                            return Ok(run);
                        }
                    }
                    Err(e) => {
                        run.ended = format!("{what}: {e}");
                        return Ok(run);
                    }
                }
            }
        }
    }
    Ok(run)
}

/// One configuration of one audience in one round, in a room of its own.
struct Turn<'t, 'a> {
    nodes: Nodes<'t, 'a>,
    origin: &'a Uprtcd,
    mirror: &'a Uprtcd,
    room: &'t str,
    audience: usize,
    plan: &'t MirrorPlan,
    /// For the progress line and the run's notes.
    what: &'t str,
}

impl Turn<'_, '_> {
    /// The audience on the origin alone, in a room that is not mirrored.
    fn one_node(&self, progress: &mut Progress) -> Result<Measured, LoadError> {
        let (keeper, mut stage) = self.hosted()?;
        let meters = self.plan.meters.min(self.audience);
        progress.show(&format!("{}: meters", self.what));
        self.nodes.origin.add_meters(self.room, meters, &mut stage, &keeper)?;
        let wanted = self.audience - meters;
        let joins = self.nodes.origin.join_viewers(self.room, 0..wanted, AUDIENCE, &keeper, &mut |ended| {
            progress.show(&format!("{}: {ended}/{wanted} joins", self.what));
        });
        let subscribers = stage.live_audience(&keeper);
        stage.set_live_audience(subscribers);
        let sides = [
            Side { server: self.origin, role: "origin", meters: 0..stage.meters.len(), subscribers },
            Side { server: self.mirror, role: "idle", meters: 0..0, subscribers: 0 },
        ];
        let mut step = self.measure(&sides, &stage, progress, ONE_NODE);
        (step.join_failures, step.join_failure_reasons) = failures(&joins);
        Ok(Measured { steps: vec![step], failed: mostly_failed(&joins, wanted, "of the audience on one node") })
    }

    /// The room mirrored on the other node: a window with the meters alone, then one with the
    /// audience split evenly over the nodes.
    fn split(&self, progress: &mut Progress) -> Result<Measured, LoadError> {
        let (origin, mirror) = (self.nodes.origin, self.nodes.mirror);
        let (keeper, mut stage) = self.hosted()?;
        self.origin.mirror_on_node(self.room, self.mirror.alias())?;
        let half = self.audience / 2;
        let meters = self.plan.meters.min(half);
        progress.show(&format!("{}: meters", self.what));
        origin.add_meters(self.room, meters, &mut stage, &keeper)?;
        wait_for(
            || Ok(self.mirror.metric("uprtcd_worker_producers")? >= HOST_STREAMS),
            &format!("{} publishes the origin's streams", self.mirror.alias()),
        )?;
        mirror.add_meters(self.room, 2 * meters, &mut stage, &keeper)?;
        let mut sides = [
            Side { server: self.origin, role: "origin", meters: 0..meters, subscribers: meters },
            Side { server: self.mirror, role: "mirror", meters: meters..2 * meters, subscribers: meters },
        ];
        stage.set_live_audience(stage.live_audience(&keeper));
        let idle = self.measure(&sides, &stage, progress, METERS);
        if idle.nodes.iter().any(|n| n.latency_us.samples == 0) {
            return Err(LoadError::Setup(format!(
                "a node's meters received nothing (origin {}, mirror {} packets)",
                idle.nodes[0].latency_us.samples, idle.nodes[1].latency_us.samples
            )));
        }

        let (to_origin, to_mirror) = (half - meters, self.audience - half - meters);
        let mut joins = origin.join_viewers(self.room, 0..to_origin, AUDIENCE, &keeper, &mut |ended| {
            progress.show(&format!("{}: {ended}/{to_origin} joins at the origin", self.what));
        });
        let on_origin = keeper.sinks.lock().unwrap_or_else(|e| e.into_inner()).len();
        let names = to_origin..to_origin + to_mirror;
        joins.extend(mirror.join_viewers(self.room, names, AUDIENCE, &keeper, &mut |ended| {
            progress.show(&format!("{}: {ended}/{to_mirror} joins at the mirror", self.what));
        }));
        let subscribers = stage.live_audience(&keeper);
        stage.set_live_audience(subscribers);
        sides[0].subscribers = meters + on_origin;
        sides[1].subscribers = subscribers - sides[0].subscribers;
        let mut step = self.measure(&sides, &stage, progress, SPLIT);
        (step.join_failures, step.join_failure_reasons) = failures(&joins);
        let failed = mostly_failed(&joins, to_origin + to_mirror, "of the audience split over two nodes");
        Ok(Measured { steps: vec![idle, step], failed })
    }

    /// The room's host publishing from the origin, its media running, nobody watching yet.
    fn hosted(&self) -> Result<(Arc<Keeper>, Stage), LoadError> {
        let (host, publisher) = self.nodes.origin.publisher(self.room, "host", 0)?;
        let keeper = Arc::new(Keeper::default());
        keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(host);
        let stage = Stage::start(self.nodes.origin, vec![publisher], &keeper);
        Ok((keeper, stage))
    }

    /// Measures the window of `phase` and counts it done.
    fn measure(&self, sides: &[Side<'_>], stage: &Stage, progress: &mut Progress, phase: &str) -> Step {
        let what = format!("{}, {phase}", self.what);
        let mut step = measure(self.nodes.origin, sides, stage, self.plan.redis_pid, progress, &what);
        progress.advance();
        step.phase = Some(phase.into());
        step
    }
}

fn servers<'a>(nodes: Nodes<'_, 'a>) -> Result<(&'a Uprtcd, &'a Uprtcd), LoadError> {
    nodes.origin.uprtcd.zip(nodes.mirror.uprtcd).ok_or_else(|| LoadError::Setup("mirrors are uprtcd's".into()))
}

/// Waits until no node holds a room or a consumer, so that the next configuration starts
/// from nothing.
fn quiet(servers: &[&Uprtcd]) -> Result<(), LoadError> {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    loop {
        let mut left = Vec::new();
        for server in servers {
            let (rooms, consumers) = (server.metric("uprtcd_rooms")?, server.metric("uprtcd_worker_consumers")?);
            if rooms > 0.0 || consumers > 0.0 {
                left.push(format!("{}: {rooms} rooms, {consumers} consumers", server.alias()));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LoadError::Setup(format!(
                "{} s after a room closed, {}",
                QUIET_TIMEOUT.as_secs(),
                left.join("; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `done` every 100 ms until it holds, for at most [`READY_TIMEOUT`].
fn wait_for(mut done: impl FnMut() -> Result<bool, LoadError>, what: &str) -> Result<(), LoadError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !done()? {
        if Instant::now() >= deadline {
            return Err(LoadError::Setup(format!("not within {} s: {what}", READY_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// What one node's counters read at a moment.
struct NodeCounters {
    at: Instant,
    process: Duration,
    workers: Duration,
    metrics: Vec<WorkerMetrics>,
}

impl NodeCounters {
    fn take(server: &Uprtcd) -> Self {
        Self {
            at: Instant::now(),
            process: proc::process_cpu(server.pid()),
            workers: proc::threads_cpu(server.pid(), &server.media_threads()),
            metrics: server.metrics().unwrap_or_default(),
        }
    }
}

/// One window of `ctx.window` after `ctx.settle` at the stage's current load, node by node.
fn measure(
    ctx: &Context<'_>,
    sides: &[Side<'_>],
    stage: &Stage,
    redis_pid: Option<u32>,
    progress: &Progress,
    what: &str,
) -> Step {
    std::thread::sleep(ctx.settle);
    stage.meters.iter().for_each(|m| drop(m.take()));
    let sent_before: u64 = stage.sent.snapshot().iter().sum();
    let redis_before = redis_pid.map(proc::process_cpu);
    let before: Vec<NodeCounters> = sides.iter().map(|side| NodeCounters::take(side.server)).collect();
    let opened = Instant::now();
    let mut longest = vec![Duration::ZERO; sides.len()];
    while opened.elapsed() < ctx.window {
        progress.show(&format!("{what}: measuring {}/{} s", opened.elapsed().as_secs(), ctx.window.as_secs()));
        std::thread::sleep(SAMPLE_INTERVAL);
        for (side, longest) in sides.iter().zip(&mut longest) {
            if let Ok(metrics) = side.server.metrics() {
                *longest = metrics.iter().map(|m| m.longest_turn).fold(*longest, Duration::max);
            }
        }
    }
    let seconds = opened.elapsed().as_secs_f64();
    let seen: Vec<MeterStats> = stage.meters.iter().map(|m| m.take()).collect();
    let sent = stage.sent.snapshot().iter().sum::<u64>() - sent_before;
    let after: Vec<NodeCounters> = sides.iter().map(|side| NodeCounters::take(side.server)).collect();
    let redis_cpu_percent = redis_pid
        .zip(redis_before)
        .map(|(pid, before)| proc::process_cpu(pid).saturating_sub(before).as_secs_f64() / seconds * 100.0);

    let nodes: Vec<NodeStep> = sides
        .iter()
        .zip(before.iter().zip(&after))
        .zip(&longest)
        .map(|((side, (b, a)), longest)| node_step(side, &seen[side.meters.clone()], sent, seconds, b, a, *longest))
        .collect();
    let (delivery, latency_us) = summed(&seen);
    let egress_pps: f64 = nodes.iter().map(|n| n.egress_pps).sum();
    let workers: f64 = nodes.iter().map(|n| n.worker_cpu_seconds_per_second).sum();
    let process: f64 = nodes.iter().map(|n| n.process_cpu_seconds_per_second).sum();
    let per_packet = |cpu: f64| if egress_pps > 0.0 { cpu * 1e6 / egress_pps } else { 0.0 };
    Step {
        publishers: stage.fanout.len(),
        subscribers: nodes.iter().map(|n| n.subscribers).sum(),
        seconds,
        offered_pps: nodes.iter().map(|n| n.offered_pps).sum(),
        egress_pps,
        sfu_cpu_percent: process * 100.0,
        worker_cpu_percent: Some(workers * 100.0),
        cpu_us_per_packet: per_packet(process),
        worker_cpu_us_per_packet: Some(per_packet(workers)),
        egress_pps_per_core: if workers > 0.0 { egress_pps / workers } else { 0.0 },
        worker_pps: nodes.iter().flat_map(|n| n.worker_pps.iter().copied()).collect(),
        loss: delivery.loss(),
        reordered: delivery.reordered,
        decrypt_errors: delivery.decrypt_errors,
        latency_us,
        longest_turn_us: nodes.iter().map(|n| n.longest_turn_us).reduce(f64::max),
        sfu_drops: Some(nodes.iter().map(|n| n.sfu_drops).sum()),
        nodes,
        redis_cpu_percent,
        ..Step::default()
    }
}

/// One node's share of a window: `seen` is what its meters saw, `sent` the publisher's
/// packets in the window of `seconds`, `before` and `after` its counters.
fn node_step(
    side: &Side<'_>,
    seen: &[MeterStats],
    sent: u64,
    seconds: f64,
    before: &NodeCounters,
    after: &NodeCounters,
    longest_turn: Duration,
) -> NodeStep {
    let (delivery, latency_us) = summed(seen);
    let own_seconds = (after.at - before.at).as_secs_f64();
    let offered_pps = sent as f64 * side.subscribers as f64 / seconds;
    let egress_pps = offered_pps * (1.0 - delivery.loss());
    let workers = after.workers.saturating_sub(before.workers).as_secs_f64() / own_seconds;
    let process = after.process.saturating_sub(before.process).as_secs_f64() / own_seconds;
    let rate = |count: fn(&WorkerMetrics) -> u64| -> Vec<f64> {
        after
            .metrics
            .iter()
            .zip(&before.metrics)
            .map(|(a, b)| count(a).saturating_sub(count(b)) as f64 / own_seconds)
            .collect()
    };
    NodeStep {
        alias: side.server.alias().to_owned(),
        role: side.role.to_owned(),
        subscribers: side.subscribers,
        meters: side.meters.len(),
        offered_pps,
        egress_pps,
        loss: delivery.loss(),
        reordered: delivery.reordered,
        decrypt_errors: delivery.decrypt_errors,
        latency_us,
        worker_cpu_seconds_per_second: workers,
        process_cpu_seconds_per_second: process,
        worker_cpu_us_per_packet: if egress_pps > 0.0 { workers * 1e6 / egress_pps } else { 0.0 },
        worker_pps: rate(|m| m.packets_out),
        worker_pps_in: rate(|m| m.packets_in),
        sfu_drops: after
            .metrics
            .iter()
            .map(|m| m.drops)
            .sum::<u64>()
            .saturating_sub(before.metrics.iter().map(|m| m.drops).sum()),
        longest_turn_us: longest_turn.as_secs_f64() * 1e6,
    }
}

/// What `meters` saw, over all of them: deliveries and latency.
fn summed(meters: &[MeterStats]) -> (Delivery, Percentiles) {
    let (mut delivery, mut latencies) = (Delivery::default(), Vec::new());
    for stats in meters {
        stats.add_to(&mut delivery);
        latencies.extend_from_slice(&stats.latencies_ns);
    }
    (delivery, Percentiles::of(&mut latencies))
}
