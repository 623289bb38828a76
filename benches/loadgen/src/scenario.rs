//! The scenarios: 1 → N fan-out grown step by step until the meters see loss, a join storm
//! on a standing audience, an N × N conference, a live room whose audience spans every
//! worker, and one mirrored on another node of a cluster ([`mirror`]). Each step is a measurement window at a steady load (a storm's is while viewers
//! join): the kernel's CPU accounting of the SFU's process and worker threads, the meters'
//! loss, reordering and latency, the SFU's resident memory. Viewers join through
//! `Context::join_viewers`, which times each join and counts the ones that fail instead of
//! ending the scenario.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::LoadError;
use crate::media::{
    self, ClientDtls, Delivery, JoinSample, Keeper, MeterHandle, Publisher, SentCounters, StreamProfile, Transport,
    Viewers,
};
use crate::proc;
use crate::report::{self, JoinFailures, JoinTimes, Percentiles, Progress, Run, Step};
use crate::sfu::{Member, RoomKind, Sfu};
use crate::uprtcd::{Uprtcd, WorkerMetrics};

pub mod mirror;

/// Threads that connect an audience at once: a connect mostly waits (on round trips, and on
/// Janus for a DTLS retransmission, about 1 s), so many overlap; the CPU they use is the
/// handshakes', whatever the count.
const CONNECT_THREADS: usize = 16;
/// How an audience connects: as fast as [`CONNECT_THREADS`] go, untimed past connecting,
/// given up once most joins fail.
const AUDIENCE: Pace = Pace { interval: Duration::ZERO, threads: CONNECT_THREADS, first_media: false, give_up: true };
/// How often the SFU's counters are read during a window, for the longest loop turn (the
/// workers publish the longest turn of each second).
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// What every scenario shares: the SFU, how long to measure, the media each publisher sends.
pub struct Context<'a> {
    pub sfu: &'a dyn Sfu,
    /// The same SFU when it is uprtcd: its worker counters and mirrors.
    pub uprtcd: Option<&'a Uprtcd>,
    pub stream: StreamProfile,
    pub settle: Duration,
    pub window: Duration,
    /// The loss above which a fan-out stops growing.
    pub loss_limit: f64,
    pub identity: ClientDtls,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("sfu", &self.sfu.label()).field("window", &self.window).finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    pub fn new(
        sfu: &'a dyn Sfu,
        uprtcd: Option<&'a Uprtcd>,
        stream: StreamProfile,
        identity: ClientDtls,
        window: Duration,
    ) -> Result<Self, LoadError> {
        Ok(Self { sfu, uprtcd, stream, settle: Duration::from_secs(1), window, loss_limit: 0.001, identity })
    }

    fn run(&self, scenario: &str) -> Run {
        let label = match self.identity {
            ClientDtls::AesCmOnly(_) => format!("{} AES-CM", self.sfu.label()),
            ClientDtls::Browserlike(_) => self.sfu.label(),
        };
        let backend = self.uprtcd.map(|uprtcd| uprtcd.backend().to_owned());
        Run {
            scenario: scenario.to_owned(),
            sfu: if self.uprtcd.is_some() { "uprtcd" } else { "janus" }.to_owned(),
            label,
            backend,
            workers: self.sfu.media_threads().len().max(1),
            profile: Some(self.identity.profile().to_owned()),
            ..Run::default()
        }
    }

    /// Joins `peer` and publishes as publisher number `index`.
    fn publisher(&self, room: &str, peer: &str, index: u16) -> Result<(Box<dyn Member>, Publisher), LoadError> {
        let mut member = self.sfu.join(room, peer)?;
        let (audio_ssrc, video_ssrc) = (1000 + 2 * u32::from(index), 1001 + 2 * u32::from(index));
        let media =
            Transport::bind(self.sfu.client_ip())?.publish(&mut *member, &self.identity, audio_ssrc, video_ssrc)?;
        Ok((member, Publisher::new(index, media, audio_ssrc, video_ssrc)))
    }

    /// Viewers `s{i}` for `i` in `names` join `room` from `pace.threads` threads: viewer `i`
    /// starts at `start + i × pace.interval`, or as soon as a thread is free after that (its
    /// sample says how late). Those that connected stay in `keeper` as sinks; failures do not
    /// stop the others. `tick` runs on the calling thread every [`SAMPLE_INTERVAL`] until
    /// every join has ended, with the count of joins ended. Returns each join's sample, in
    /// schedule order.
    fn join_viewers(
        &self,
        room: &str,
        names: Range<usize>,
        pace: Pace,
        keeper: &Keeper,
        tick: &mut dyn FnMut(usize),
    ) -> Vec<JoinSample> {
        let viewers = Viewers { sfu: self.sfu, room, identity: &self.identity, first_media: pace.first_media };
        let count = names.len();
        let (next, ended, failed) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let given_up = AtomicBool::new(false);
        let samples = Mutex::new(Vec::with_capacity(count));
        let start = Instant::now();
        // Each thread takes the next join in schedule order until none is left.
        let run_joins = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || given_up.load(Ordering::Relaxed) {
                    break;
                }
                let due = start + pace.interval * i as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let late = Instant::now().saturating_duration_since(due);
                let mut joined = viewers.join(&format!("s{}", names.start + i));
                joined.sample.late_ms = late.as_secs_f64() * 1e3;
                if let Some(sink) = joined.sink {
                    keeper.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
                }
                let this_failed = usize::from(joined.sample.failed.is_some());
                let failures = failed.fetch_add(this_failed, Ordering::Relaxed) + this_failed;
                let done = ended.fetch_add(1, Ordering::Relaxed) + 1;
                if pace.give_up && done >= 2 * pace.threads && failures * 2 > done {
                    given_up.store(true, Ordering::Relaxed);
                }
                samples.lock().unwrap_or_else(|e| e.into_inner()).push((i, joined.sample));
            }
        };
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..pace.threads.min(count)).map(|_| scope.spawn(run_joins)).collect();
            while threads.iter().any(|t| !t.is_finished()) {
                tick(ended.load(Ordering::Relaxed));
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        });
        let mut samples = samples.into_inner().unwrap_or_else(|e| e.into_inner());
        samples.sort_unstable_by_key(|&(i, _)| i);
        samples.into_iter().map(|(_, sample)| sample).collect()
    }

    /// Connects meters `m{i}` until the stage has `count`.
    fn add_meters(&self, room: &str, count: usize, stage: &mut Stage, keeper: &Keeper) -> Result<(), LoadError> {
        while stage.meters.len() < count {
            let mut member = self.sfu.join(room, &format!("m{}", stage.meters.len()))?;
            let peer = Transport::bind(self.sfu.client_ip())?.subscribe(&mut *member, &self.identity)?;
            keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(member);
            stage.add_meter(peer)?;
        }
        Ok(())
    }

    /// A live room hosted by one publisher, mirrored onto every other worker when
    /// `across_workers`; its media runs, nobody watches yet.
    fn live_room(&self, across_workers: bool) -> Result<(String, Arc<Keeper>, Stage), LoadError> {
        let room = self.sfu.create_room(RoomKind::Live, "host", &[])?;
        if across_workers {
            let uprtcd = self.uprtcd.ok_or_else(|| LoadError::Setup("mirrors are uprtcd's".into()))?;
            for &worker in self.sfu.media_threads().iter().skip(1) {
                uprtcd.mirror(&room, worker)?;
            }
        }
        let (host, publisher) = self.publisher(&room, "host", 0)?;
        let keeper = Arc::new(Keeper::default());
        keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(host);
        let stage = Stage::start(self, vec![publisher], &keeper);
        Ok((room, keeper, stage))
    }
}

/// How a batch of viewers joins ([`Context::join_viewers`]).
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Between two joins' scheduled starts; zero starts each as soon as a thread is free.
    interval: Duration,
    threads: usize,
    /// Each join waits for its first media packet.
    first_media: bool,
    /// Start no more joins once more than half of at least `2 × threads` have failed.
    give_up: bool,
}

/// Joins that failed among `samples`: how many, and why.
fn failures(samples: &[JoinSample]) -> (usize, Vec<JoinFailures>) {
    (samples.iter().filter(|s| s.failed.is_some()).count(), JoinFailures::of(samples))
}

/// Why a scenario stops after `samples`, the joins of `wanted` that were attempted, if more
/// than half of them failed or the pool gave up before attempting them all.
fn mostly_failed(samples: &[JoinSample], wanted: usize, what: &str) -> Option<String> {
    let (failed, reasons) = failures(samples);
    let gave_up = if samples.len() < wanted { format!(" (gave up; {wanted} were to join)") } else { String::new() };
    (failed * 2 > samples.len() || samples.len() < wanted).then(|| {
        format!("{failed} of {} joins {what} failed{gave_up}: {}", samples.len(), JoinFailures::describe(&reasons))
    })
}

/// Media running through the SFU: the publishers' thread, the meters, the kept sinks.
struct Stage {
    stop: Arc<AtomicBool>,
    sent: Arc<SentCounters>,
    publishers: Option<JoinHandle<Vec<Publisher>>>,
    meters: Vec<MeterHandle>,
    keeper_thread: Option<JoinHandle<()>>,
    /// How many subscribers receive each publisher's streams.
    fanout: Vec<u64>,
    /// Members that watch.
    subscribers: usize,
}

impl Stage {
    fn start(ctx: &Context<'_>, publishers: Vec<Publisher>, keeper: &Arc<Keeper>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let fanout = vec![0; publishers.len()];
        let (sent, thread) = media::spawn_publishers(publishers, ctx.stream, Arc::clone(&stop));
        let keeper_thread = keeper.spawn(Arc::clone(&stop));
        Self {
            stop,
            sent,
            publishers: Some(thread),
            meters: Vec::new(),
            keeper_thread: Some(keeper_thread),
            fanout,
            subscribers: 0,
        }
    }

    fn add_meter(&mut self, peer: uprtcd_dataplane::peer::UdpPeer) -> Result<(), LoadError> {
        self.meters.push(media::spawn_meter(peer, Arc::clone(&self.stop))?);
        Ok(())
    }

    /// Everyone who watches the one publisher of a live room: the meters and the sinks that
    /// connected.
    fn live_audience(&self, keeper: &Keeper) -> usize {
        self.meters.len() + keeper.sinks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Sets the audience of a live room's one publisher.
    fn set_live_audience(&mut self, subscribers: usize) {
        self.fanout[0] = subscribers as u64;
        self.subscribers = subscribers;
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.publishers.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.keeper_thread.take() {
            let _ = thread.join();
        }
        self.meters.drain(..).for_each(MeterHandle::join);
    }
}

/// The counters a window starts and ends with.
struct Sample {
    at: Instant,
    process: Duration,
    workers: Duration,
    sent: Vec<u64>,
    metrics: Vec<WorkerMetrics>,
}

impl Sample {
    fn take(ctx: &Context<'_>, stage: &Stage) -> Self {
        let pid = ctx.sfu.pid();
        Self {
            at: Instant::now(),
            process: proc::process_cpu(pid),
            workers: proc::threads_cpu(pid, &ctx.sfu.media_threads()),
            sent: stage.sent.snapshot(),
            metrics: ctx.uprtcd.and_then(|u| u.metrics().ok()).unwrap_or_default(),
        }
    }
}

/// A measurement window under way: the counters it started with, the copies offered so far
/// (summed as it goes, since a storm's audience grows within it) and the longest loop turn.
struct Window {
    start: Sample,
    sent: Vec<u64>,
    offered: f64,
    longest_turn: Duration,
}

impl Window {
    /// Starts a window now; the meters start counting afresh.
    fn open(ctx: &Context<'_>, stage: &Stage) -> Self {
        stage.meters.iter().for_each(|m| drop(m.take()));
        let start = Sample::take(ctx, stage);
        Self { sent: start.sent.clone(), start, offered: 0.0, longest_turn: Duration::ZERO }
    }

    fn elapsed(&self) -> Duration {
        self.start.at.elapsed()
    }

    /// Reads the SFU's longest loop turn, and counts the copies of what was sent since the last
    /// call at the stage's audience now.
    fn sample(&mut self, ctx: &Context<'_>, stage: &Stage) {
        if let Some(metrics) = ctx.uprtcd.and_then(|u| u.metrics().ok()) {
            self.longest_turn = metrics.iter().map(|m| m.longest_turn).fold(self.longest_turn, Duration::max);
        }
        self.count_offered(stage.sent.snapshot(), &stage.fanout);
    }

    fn count_offered(&mut self, sent: Vec<u64>, fanout: &[u64]) {
        self.offered += sent.iter().zip(&self.sent).zip(fanout).map(|((e, s), f)| ((e - s) * f) as f64).sum::<f64>();
        self.sent = sent;
    }

    /// Ends the window. `baseline_rss` is the SFU's memory before any subscriber joined.
    /// Returns the step and the CDF of its latencies.
    fn close(mut self, ctx: &Context<'_>, stage: &Stage, baseline_rss: Option<u64>) -> (Step, Vec<(f64, f64)>) {
        let end = Sample::take(ctx, stage);
        self.count_offered(end.sent.clone(), &stage.fanout);
        let start = &self.start;
        let mut delivery = Delivery::default();
        let mut latencies = Vec::new();
        for meter in &stage.meters {
            let stats = meter.take();
            stats.add_to(&mut delivery);
            latencies.extend_from_slice(&stats.latencies_ns);
        }
        let seconds = (end.at - start.at).as_secs_f64();
        let offered_pps = self.offered / seconds;
        let egress_pps = offered_pps * (1.0 - delivery.loss());
        let delivered = (egress_pps * seconds).max(1.0);
        let process = (end.process - start.process).as_secs_f64();
        let workers = (end.workers - start.workers).as_secs_f64();
        let has_workers = !ctx.sfu.media_threads().is_empty();
        let forwarding_cpu = if has_workers { workers } else { process };
        let rss = proc::rss_bytes(ctx.sfu.pid());
        let subscribers = stage.subscribers;
        let latency_us = Percentiles::of(&mut latencies);
        let worker_pps = end
            .metrics
            .iter()
            .zip(&start.metrics)
            .map(|(e, s)| (e.packets_out - s.packets_out) as f64 / seconds)
            .collect();
        let sfu_drops = ctx.uprtcd.map(|_| {
            end.metrics.iter().map(|m| m.drops).sum::<u64>() - start.metrics.iter().map(|m| m.drops).sum::<u64>()
        });
        let step = Step {
            publishers: stage.fanout.len(),
            subscribers,
            seconds,
            offered_pps,
            egress_pps,
            sfu_cpu_percent: process / seconds * 100.0,
            worker_cpu_percent: has_workers.then(|| workers / seconds * 100.0),
            cpu_us_per_packet: process * 1e6 / delivered,
            worker_cpu_us_per_packet: has_workers.then(|| workers * 1e6 / delivered),
            egress_pps_per_core: if forwarding_cpu > 0.0 { egress_pps / (forwarding_cpu / seconds) } else { 0.0 },
            worker_pps,
            loss: delivery.loss(),
            reordered: delivery.reordered,
            decrypt_errors: delivery.decrypt_errors,
            latency_us,
            longest_turn_us: ctx.uprtcd.map(|_| self.longest_turn.as_secs_f64() * 1e6),
            sfu_drops,
            rss_bytes: rss,
            memory_per_subscriber_bytes: rss
                .zip(baseline_rss)
                .filter(|_| subscribers > 0)
                .map(|(now, before)| (now as f64 - before as f64) / subscribers as f64),
            ..Step::default()
        };
        (step, report::cdf(&latencies))
    }
}

/// Measures one window of `ctx.window` after `ctx.settle` at the stage's current load.
/// `baseline_rss` is the SFU's memory before any subscriber joined.
/// Returns the step and the CDF of its latencies.
fn measure(
    ctx: &Context<'_>,
    stage: &Stage,
    baseline_rss: Option<u64>,
    progress: &Progress,
    what: &str,
) -> (Step, Vec<(f64, f64)>) {
    std::thread::sleep(ctx.settle);
    let mut window = Window::open(ctx, stage);
    while window.elapsed() < ctx.window {
        progress.show(&format!("{what}: measuring {}/{} s", window.elapsed().as_secs(), ctx.window.as_secs()));
        std::thread::sleep(SAMPLE_INTERVAL);
        window.sample(ctx, stage);
    }
    window.close(ctx, stage, baseline_rss)
}

/// How a fan-out grows.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// Total subscribers at each step, ascending; the first `meters` are meters.
    pub steps: Vec<usize>,
    pub meters: usize,
    /// Mirror the live room onto every other worker before the audience joins, so that it
    /// spans all workers (uprtcd only).
    pub across_workers: bool,
    /// Viewers that join one after another after each step's window, timed to their first
    /// media packet; they stay and count in the next step's audience.
    pub probes: usize,
    /// Between two probes' starts.
    pub probe_interval: Duration,
}

/// One publisher in a live room, its audience grown step by step until the meters see more
/// than `ctx.loss_limit` loss, more than half of a step's joins fail, or the steps run out.
/// After each step's window, `plan.probes` viewers join at that load, timed.
pub fn fanout(ctx: &Context<'_>, plan: &FanoutPlan, progress: &mut Progress) -> Result<Run, LoadError> {
    let scenario = if plan.across_workers { "live-across-workers" } else { "fanout" };
    let mut run = ctx.run(scenario);
    let what = format!("{scenario} {}", run.label);
    progress.show(&format!("{what}: publisher"));
    let (room, keeper, mut stage) = ctx.live_room(plan.across_workers)?;
    let baseline_rss = proc::rss_bytes(ctx.sfu.pid());
    // Viewers are named in the order they were asked to join, failed or not.
    let mut named = 0;
    let mut heaviest_cdf = Vec::new();
    run.ended = "every step measured".into();
    for &target in &plan.steps {
        progress.show(&format!("{what}: connecting {target} subscribers"));
        ctx.add_meters(&room, plan.meters.min(target), &mut stage, &keeper)?;
        let wanted = target.saturating_sub(stage.live_audience(&keeper));
        let joins = ctx.join_viewers(&room, named..named + wanted, AUDIENCE, &keeper, &mut |ended| {
            progress.show(&format!("{what}: connecting {target} subscribers, {ended}/{wanted} joins"));
        });
        named += wanted;
        stage.set_live_audience(stage.live_audience(&keeper));
        let (mut step, cdf) = measure(ctx, &stage, baseline_rss, progress, &format!("{what} ×{target}"));
        progress.advance();
        (step.join_failures, step.join_failure_reasons) = failures(&joins);
        if plan.probes > 0 {
            let pace = Pace { interval: plan.probe_interval, threads: plan.probes, first_media: true, give_up: false };
            let probes = ctx.join_viewers(&room, named..named + plan.probes, pace, &keeper, &mut |ended| {
                progress.show(&format!("{what} ×{target}: join probes {ended}/{}", plan.probes));
            });
            named += plan.probes;
            step.join_ms = Some(JoinTimes::of(probes));
            stage.set_live_audience(stage.live_audience(&keeper));
        }
        let lost = step.loss > ctx.loss_limit;
        if !lost {
            heaviest_cdf = cdf;
        }
        let subscribers = step.subscribers;
        run.steps.push(step);
        if lost {
            run.ended = format!("loss above {:.1} % at {subscribers} subscribers", ctx.loss_limit * 100.0);
            break;
        }
        if let Some(why) = mostly_failed(&joins, wanted, &format!("towards {target} subscribers")) {
            run.ended = why;
            break;
        }
    }
    run.latency_cdf = heaviest_cdf;
    drop(stage);
    Ok(run)
}

/// How a join storm goes.
#[derive(Debug, Clone)]
pub struct StormPlan {
    /// Sinks watching before the storm (besides the meters).
    pub base: usize,
    pub meters: usize,
    /// Viewers that join in the storm, their starts spread evenly over `spread`.
    pub joins: usize,
    pub spread: Duration,
    /// Threads the storm's joins run on: enough that slow joins do not delay later ones.
    pub threads: usize,
}

/// One publisher in a live room with a standing audience: a window before, a window while
/// `plan.joins` viewers join (each timed to its first media packet), and a window after with
/// everyone.
pub fn storm(ctx: &Context<'_>, plan: &StormPlan, progress: &mut Progress) -> Result<Run, LoadError> {
    let mut run = ctx.run("storm");
    let what = format!("storm {}", run.label);
    progress.show(&format!("{what}: publisher"));
    let (room, keeper, mut stage) = ctx.live_room(false)?;
    let baseline_rss = proc::rss_bytes(ctx.sfu.pid());
    ctx.add_meters(&room, plan.meters, &mut stage, &keeper)?;
    let audience = ctx.join_viewers(&room, 0..plan.base, AUDIENCE, &keeper, &mut |ended| {
        progress.show(&format!("{what}: connecting the audience, {ended}/{} joins", plan.base));
    });
    stage.set_live_audience(stage.live_audience(&keeper));
    let (mut before, _) = measure(ctx, &stage, baseline_rss, progress, &format!("{what}: before"));
    progress.advance();
    before.phase = Some("before".into());
    (before.join_failures, before.join_failure_reasons) = failures(&audience);
    run.steps.push(before);
    if let Some(why) = mostly_failed(&audience, plan.base, "of the standing audience") {
        run.ended = why;
        return Ok(run);
    }

    let pace = Pace {
        interval: plan.spread / plan.joins.max(1) as u32,
        threads: plan.threads,
        first_media: true,
        give_up: false,
    };
    let mut window = Window::open(ctx, &stage);
    let joins = ctx.join_viewers(&room, plan.base..plan.base + plan.joins, pace, &keeper, &mut |ended| {
        progress.show(&format!("{what}: {ended}/{} joined or failed", plan.joins));
        stage.set_live_audience(stage.live_audience(&keeper));
        window.sample(ctx, &stage);
    });
    stage.set_live_audience(stage.live_audience(&keeper));
    let (mut during, cdf) = window.close(ctx, &stage, baseline_rss);
    progress.advance();
    during.phase = Some("storm".into());
    (during.join_failures, _) = failures(&joins);
    let failed = mostly_failed(&joins, plan.joins, "of the storm");
    during.join_ms = Some(JoinTimes::of(joins));
    run.steps.push(during);
    run.latency_cdf = cdf;

    let (mut after, _) = measure(ctx, &stage, baseline_rss, progress, &format!("{what}: after"));
    progress.advance();
    after.phase = Some("after".into());
    run.steps.push(after);
    run.ended = failed.unwrap_or_else(|| "every window measured".into());
    drop(stage);
    Ok(run)
}

/// N members in one conversation room, each publishing and watching everyone else; a
/// fresh room for each size in `sizes`.
pub fn conference(ctx: &Context<'_>, sizes: &[usize], progress: &mut Progress) -> Result<Run, LoadError> {
    let mut run = ctx.run("conference");
    let what = format!("conference {}", run.label);
    run.ended = "every size measured".into();
    let mut heaviest_cdf = Vec::new();
    for &size in sizes {
        progress.show(&format!("{what}: {size} members publish"));
        let invited: Vec<String> = (1..size).map(|i| format!("p{i}")).collect();
        let room = ctx.sfu.create_room(RoomKind::Conversation { max_members: size as u32 }, "p0", &invited)?;
        let mut members = Vec::with_capacity(size);
        let mut publishers = Vec::with_capacity(size);
        for i in 0..size {
            let (member, publisher) = ctx.publisher(&room, &format!("p{i}"), i as u16)?;
            members.push(member);
            publishers.push(publisher);
        }
        let keeper = Arc::new(Keeper::default());
        let mut stage = Stage::start(ctx, publishers, &keeper);
        let baseline_rss = proc::rss_bytes(ctx.sfu.pid());
        progress.show(&format!("{what}: {size} members subscribe"));
        for mut member in members {
            let peer = Transport::subscribe(Transport::bind(ctx.sfu.client_ip())?, &mut *member, &ctx.identity)?;
            stage.add_meter(peer)?;
            keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(member);
        }
        stage.fanout = vec![size as u64 - 1; size];
        stage.subscribers = size;
        let (step, cdf) = measure(ctx, &stage, baseline_rss, progress, &format!("{what} {size}×{size}"));
        progress.advance();
        if step.loss <= ctx.loss_limit {
            heaviest_cdf = cdf;
        }
        run.steps.push(step);
    }
    run.latency_cdf = heaviest_cdf;
    Ok(run)
}
