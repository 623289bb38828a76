//! The scenarios: 1 → N fan-out grown step by step until the meters see loss, an N × N
//! conference, and a live room whose audience spans every worker. Each step is a
//! measurement window at a steady load: the kernel's CPU accounting of the SFU's process and
//! worker threads, the meters' loss, reordering and latency, the SFU's resident memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::LoadError;
use crate::media::{
    self, ClientDtls, Delivery, Keeper, MeterHandle, Publisher, SentCounters, Sink, StreamProfile, Transport,
};
use crate::proc;
use crate::report::{self, Percentiles, Progress, Run, Step};
use crate::sfu::{Member, RoomKind, Sfu};
use crate::uprtcd::{Uprtcd, WorkerMetrics};

/// Threads that connect subscribers at once: a connect mostly waits (on round trips, and on
/// Janus for a DTLS retransmission, about 1 s), so many overlap; the CPU they use is the
/// handshakes', whatever the count.
const CONNECT_THREADS: usize = 16;
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

    /// Connects subscribers `peers` of `room` as sinks, from a few threads.
    fn connect_sinks(&self, room: &str, peers: std::ops::Range<usize>, keeper: &Keeper) -> Result<(), LoadError> {
        let first_error = Mutex::new(None);
        std::thread::scope(|scope| {
            for thread in 0..CONNECT_THREADS {
                let (first_error, peers) = (&first_error, peers.clone());
                scope.spawn(move || {
                    for i in peers.skip(thread).step_by(CONNECT_THREADS) {
                        let connected = self.sfu.join(room, &format!("s{i}")).and_then(|mut member| {
                            let peer =
                                Transport::bind(self.sfu.client_ip())?.subscribe(&mut *member, &self.identity)?;
                            Sink::new(peer, member)
                        });
                        match connected {
                            Ok(sink) => keeper.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink),
                            Err(e) => {
                                first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        first_error.into_inner().unwrap_or_else(|e| e.into_inner()).map_or(Ok(()), Err)
    }
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
    stage.meters.iter().for_each(|m| drop(m.take()));
    let start = Sample::take(ctx, stage);
    let mut longest_turn = Duration::ZERO;
    while start.at.elapsed() < ctx.window {
        progress.show(&format!("{what}: measuring {}/{} s", start.at.elapsed().as_secs(), ctx.window.as_secs()));
        std::thread::sleep(SAMPLE_INTERVAL);
        if let Some(metrics) = ctx.uprtcd.and_then(|u| u.metrics().ok()) {
            longest_turn = metrics.iter().map(|m| m.longest_turn).fold(longest_turn, Duration::max);
        }
    }
    let end = Sample::take(ctx, stage);
    let mut delivery = Delivery::default();
    let mut latencies = Vec::new();
    for meter in &stage.meters {
        let stats = meter.take();
        stats.add_to(&mut delivery);
        latencies.extend_from_slice(&stats.latencies_ns);
    }
    let seconds = (end.at - start.at).as_secs_f64();
    let offered: u64 = end.sent.iter().zip(&start.sent).zip(&stage.fanout).map(|((e, s), f)| (e - s) * f).sum();
    let offered_pps = offered as f64 / seconds;
    let egress_pps = offered_pps * (1.0 - delivery.loss());
    let delivered = (egress_pps * seconds).max(1.0);
    let process = (end.process - start.process).as_secs_f64();
    let workers = (end.workers - start.workers).as_secs_f64();
    let has_workers = !ctx.sfu.media_threads().is_empty();
    let forwarding_cpu = if has_workers { workers } else { process };
    let rss = proc::rss_bytes(ctx.sfu.pid());
    let subscribers = stage.subscribers;
    let latency_us = Percentiles::of(&mut latencies);
    let worker_pps =
        end.metrics.iter().zip(&start.metrics).map(|(e, s)| (e.packets_out - s.packets_out) as f64 / seconds).collect();
    let sfu_drops = ctx
        .uprtcd
        .map(|_| end.metrics.iter().map(|m| m.drops).sum::<u64>() - start.metrics.iter().map(|m| m.drops).sum::<u64>());
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
        longest_turn_us: ctx.uprtcd.map(|_| longest_turn.as_secs_f64() * 1e6),
        sfu_drops,
        rss_bytes: rss,
        memory_per_subscriber_bytes: rss
            .zip(baseline_rss)
            .filter(|_| subscribers > 0)
            .map(|(now, before)| (now as f64 - before as f64) / subscribers as f64),
    };
    (step, report::cdf(&latencies))
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
}

/// One publisher in a live room, its audience grown step by step until the meters see more
/// than `ctx.loss_limit` loss or the steps run out.
pub fn fanout(ctx: &Context<'_>, plan: &FanoutPlan, progress: &mut Progress) -> Result<Run, LoadError> {
    let scenario = if plan.across_workers { "live-across-workers" } else { "fanout" };
    let mut run = ctx.run(scenario);
    let what = format!("{scenario} {}", run.label);
    progress.show(&format!("{what}: publisher"));
    let room = ctx.sfu.create_room(RoomKind::Live, "host", &[])?;
    if plan.across_workers {
        let uprtcd = ctx.uprtcd.ok_or_else(|| LoadError::Setup("mirrors are uprtcd's".into()))?;
        for &worker in ctx.sfu.media_threads().iter().skip(1) {
            uprtcd.mirror(&room, worker)?;
        }
    }
    let (host, publisher) = ctx.publisher(&room, "host", 0)?;
    let keeper = Arc::new(Keeper::default());
    keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(host);
    let mut stage = Stage::start(ctx, vec![publisher], &keeper);
    let baseline_rss = proc::rss_bytes(ctx.sfu.pid());
    let mut connected = 0;
    let mut heaviest_cdf = Vec::new();
    run.ended = "every step measured".into();
    for &target in &plan.steps {
        progress.show(&format!("{what}: connecting {target} subscribers"));
        let meters_wanted = plan.meters.min(target);
        while connected < meters_wanted {
            let mut member = ctx.sfu.join(&room, &format!("m{connected}"))?;
            let peer = Transport::bind(ctx.sfu.client_ip())?.subscribe(&mut *member, &ctx.identity)?;
            keeper.members.lock().unwrap_or_else(|e| e.into_inner()).push(member);
            stage.add_meter(peer)?;
            connected += 1;
        }
        if target > connected
            && let Err(e) = ctx.connect_sinks(&room, connected..target, &keeper)
        {
            run.ended = format!("connecting subscribers {connected}..{target} failed: {e}");
            break;
        }
        connected = target.max(connected);
        stage.fanout[0] = connected as u64;
        stage.subscribers = connected;
        let (step, cdf) = measure(ctx, &stage, baseline_rss, progress, &format!("{what} ×{target}"));
        progress.advance();
        let lost = step.loss > ctx.loss_limit;
        if !lost {
            heaviest_cdf = cdf;
        }
        run.steps.push(step);
        if lost {
            run.ended = format!("loss above {:.1} % at {target} subscribers", ctx.loss_limit * 100.0);
            break;
        }
    }
    run.latency_cdf = heaviest_cdf;
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
