//! The results of a run: one JSON document (the machine, the raw UDP limit, every scenario's
//! steps and latency distribution), the same steps as CSV, a plain-text summary, and the
//! progress line shown while it runs.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::LoadError;
use crate::media::{JoinSample, JoinStage};
use crate::raw::RawResult;

/// Everything one invocation measured.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub started: String,
    pub machine: Machine,
    pub raw: Vec<RawResult>,
    pub runs: Vec<Run>,
    /// What was not measured, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model,
        }
    }
}

/// The time now in UTC, as `date -u +%Y-%m-%dT%H:%M:%SZ` writes it (empty if `date` fails).
pub fn utc_timestamp() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One scenario on one SFU configuration.
#[derive(Debug, Default, Serialize)]
pub struct Run {
    pub scenario: String,
    pub sfu: String,
    pub label: String,
    pub backend: Option<String>,
    pub profile: Option<String>,
    pub workers: usize,
    pub steps: Vec<Step>,
    /// (latency µs, cumulative fraction) of the heaviest step within the loss limit.
    pub latency_cdf: Vec<(f64, f64)>,
    /// Why the run ended where it did.
    pub ended: String,
    /// What went wrong on the way without ending the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One measurement window at a fixed load, or (a storm) while viewers join.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Step {
    /// Which window of a storm: `before`, `storm` or `after`.
    pub phase: Option<String>,
    pub publishers: usize,
    pub subscribers: usize,
    pub seconds: f64,
    /// Copies the publishers' packets asked for, per second.
    pub offered_pps: f64,
    /// Copies delivered per second: offered less the loss the meters saw.
    pub egress_pps: f64,
    /// CPU of the whole SFU process, 100 = one core.
    pub sfu_cpu_percent: f64,
    /// CPU of the dedicated forwarding threads, when the SFU has them.
    pub worker_cpu_percent: Option<f64>,
    pub cpu_us_per_packet: f64,
    pub worker_cpu_us_per_packet: Option<f64>,
    /// Egress a fully busy core would give at this cost per packet (worker threads where
    /// the SFU has them, else the whole process).
    pub egress_pps_per_core: f64,
    /// Copies each worker sent per second by its own counters (uprtcd).
    pub worker_pps: Vec<f64>,
    pub loss: f64,
    pub reordered: u64,
    pub decrypt_errors: u64,
    pub latency_us: Percentiles,
    pub longest_turn_us: Option<f64>,
    /// Datagrams the SFU counted as dropped in the window (uprtcd).
    pub sfu_drops: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub memory_per_subscriber_bytes: Option<f64>,
    /// Joins that failed while this step's audience connected (it is that much smaller), and
    /// why.
    pub join_failures: usize,
    pub join_failure_reasons: Vec<JoinFailures>,
    /// Timed joins at this step's load: a fan-out's probes after its window (they stay, so
    /// they count in the next step's audience), or a storm's joins during its window.
    pub join_ms: Option<JoinTimes>,
    /// Each node's share of the step, when the SFU is a cluster (the step's own fields are
    /// then the totals over the nodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStep>,
    /// CPU of the cluster's Redis, 100 = one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_percent: Option<f64>,
}

/// One cluster node in a measurement window: its audience, what its meters saw and what its
/// threads cost.
#[derive(Debug, Default, Clone, Serialize)]
pub struct NodeStep {
    pub alias: String,
    /// `origin` (the room's node, where its host publishes), `mirror`, or `idle` (a node of
    /// the cluster without the room).
    pub role: String,
    /// Its audience, meters included.
    pub subscribers: usize,
    pub meters: usize,
    /// Copies its audience asks for, per second.
    pub offered_pps: f64,
    /// Copies delivered per second: offered less the loss its meters saw.
    pub egress_pps: f64,
    pub loss: f64,
    pub reordered: u64,
    pub decrypt_errors: u64,
    /// Its meters' latency: the publisher's send to the meter's kernel receive timestamp.
    pub latency_us: Percentiles,
    /// CPU seconds per second of its worker threads, and of its whole process (1 = one core).
    pub worker_cpu_seconds_per_second: f64,
    pub process_cpu_seconds_per_second: f64,
    /// Worker CPU per delivered copy; the origin's also pays the copy to each mirror.
    pub worker_cpu_us_per_packet: f64,
    /// Datagrams each worker sent and received per second, by its own counters (published
    /// about once a second, so ±1 s of counts over a window).
    pub worker_pps: Vec<f64>,
    pub worker_pps_in: Vec<f64>,
    pub sfu_drops: u64,
    pub longest_turn_us: f64,
}

/// Timed joins: each stage's end in milliseconds from a join's start, over the joins that
/// reached it, and the failures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct JoinTimes {
    pub joins: usize,
    pub failed: usize,
    pub failures: Vec<JoinFailures>,
    /// Joined the room (join token, control session).
    pub signalled: JoinPercentiles,
    /// Subscribed (offer, answer).
    pub negotiated: JoinPercentiles,
    /// The SFU answered a connectivity check.
    pub ice: JoinPercentiles,
    /// ICE and DTLS done.
    pub connected: JoinPercentiles,
    /// The first RTP packet decrypted.
    pub first_media: JoinPercentiles,
    /// How late joins started against their schedule: large values mean the joining threads
    /// could not keep it.
    pub late: JoinPercentiles,
    /// Every join, in schedule order.
    pub samples: Vec<JoinSample>,
}

impl JoinTimes {
    pub fn of(samples: Vec<JoinSample>) -> Self {
        let of =
            |stage: fn(&JoinSample) -> Option<f64>| JoinPercentiles::of(samples.iter().filter_map(stage).collect());
        Self {
            joins: samples.len(),
            failed: samples.iter().filter(|s| s.failed.is_some()).count(),
            failures: JoinFailures::of(&samples),
            signalled: of(|s| s.signalled_ms),
            negotiated: of(|s| s.negotiated_ms),
            ice: of(|s| s.ice_ms),
            connected: of(|s| s.connected_ms),
            first_media: of(|s| s.first_media_ms),
            late: of(|s| Some(s.late_ms)),
            samples,
        }
    }
}

/// Milliseconds, by nearest rank.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct JoinPercentiles {
    pub samples: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl JoinPercentiles {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_unstable_by(f64::total_cmp);
        let at = |q| nearest_rank(&ms, q).unwrap_or_default();
        Self { samples: ms.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
    }
}

/// The joins that failed at one stage, with a few of their errors.
#[derive(Debug, Clone, Serialize)]
pub struct JoinFailures {
    pub stage: JoinStage,
    pub count: usize,
    /// Up to three distinct errors.
    pub examples: Vec<String>,
}

impl JoinFailures {
    pub fn of(samples: &[JoinSample]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for sample in samples {
            let Some(stage) = sample.failed else { continue };
            let at = match out.iter().position(|f| f.stage == stage) {
                Some(at) => at,
                None => {
                    out.push(Self { stage, count: 0, examples: Vec::new() });
                    out.len() - 1
                }
            };
            let failures = &mut out[at];
            failures.count += 1;
            let error = sample.error.clone().unwrap_or_default();
            if failures.examples.len() < 3 && !failures.examples.contains(&error) {
                failures.examples.push(error);
            }
        }
        out.sort_by_key(|f| f.stage);
        out
    }

    /// `ice ×3 (e.g. …), media ×1 (e.g. …)`.
    pub fn describe(all: &[Self]) -> String {
        let one = |f: &Self| format!("{:?} ×{} (e.g. {})", f.stage, f.count, f.examples.first().map_or("", |e| e));
        all.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `latencies_ns`, which it sorts, in µs.
    pub fn of(latencies_ns: &mut [u32]) -> Self {
        latencies_ns.sort_unstable();
        let at = |q| nearest_rank(latencies_ns, q).map_or(0.0, |ns| f64::from(ns) / 1e3);
        Self { samples: latencies_ns.len(), p50: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1.0) }
    }
}

/// The value at quantile `q` of `sorted`: the smallest with at least `q` of the values at or
/// below it.
fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied()
}

/// A CDF of sorted `latencies_ns` at log-spaced points: (µs, fraction at or below).
pub fn cdf(sorted_ns: &[u32]) -> Vec<(f64, f64)> {
    let (Some(&low), Some(&high)) = (sorted_ns.first(), sorted_ns.last()) else { return Vec::new() };
    let (low, high) = (f64::from(low.max(1)).ln(), f64::from(high.max(2)).ln());
    (0..=200)
        .map(|i| {
            // The last point is the maximum itself, which rounding through ln/exp can miss.
            let x = if i == 200 { high.exp().ceil() } else { (low + (high - low) * f64::from(i) / 200.0).exp() };
            let below = sorted_ns.partition_point(|&v| f64::from(v) <= x);
            (x / 1e3, below as f64 / sorted_ns.len() as f64)
        })
        .collect()
}

impl Results {
    /// Writes `results.json`, `results.csv` and `summary.txt` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), LoadError> {
        std::fs::create_dir_all(dir).map_err(LoadError::io(format!("create {}", dir.display())))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| LoadError::Setup(e.to_string()))?;
        write_file(&dir.join("results.json"), json.as_bytes())?;
        write_file(&dir.join("results.csv"), self.csv().as_bytes())?;
        write_file(&dir.join("summary.txt"), self.summary().as_bytes())
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "scenario,label,backend,workers,publishers,subscribers,offered_pps,egress_pps,sfu_cpu_percent,\
             worker_cpu_percent,cpu_us_per_packet,worker_cpu_us_per_packet,egress_pps_per_core,loss,reordered,\
             latency_p50_us,latency_p99_us,latency_p999_us,longest_turn_us,rss_bytes,memory_per_subscriber_bytes,\
             phase,join_failures,joins,joins_failed,connected_p50_ms,connected_p90_ms,connected_p99_ms,\
             connected_max_ms,first_media_p50_ms,first_media_p90_ms,first_media_p99_ms,first_media_max_ms\n",
        );
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        for run in &self.runs {
            for s in &run.steps {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{:.0},{:.0},{:.1},{},{:.3},{},{:.0},{:.6},{},{:.1},{:.1},{:.1},{},{},{},{},{},{}\n",
                    run.scenario,
                    run.label,
                    run.backend.as_deref().unwrap_or(""),
                    run.workers,
                    s.publishers,
                    s.subscribers,
                    s.offered_pps,
                    s.egress_pps,
                    s.sfu_cpu_percent,
                    opt(s.worker_cpu_percent),
                    s.cpu_us_per_packet,
                    opt(s.worker_cpu_us_per_packet),
                    s.egress_pps_per_core,
                    s.loss,
                    s.reordered,
                    s.latency_us.p50,
                    s.latency_us.p99,
                    s.latency_us.p999,
                    opt(s.longest_turn_us),
                    s.rss_bytes.map(|v| v.to_string()).unwrap_or_default(),
                    opt(s.memory_per_subscriber_bytes),
                    s.phase.as_deref().unwrap_or(""),
                    s.join_failures,
                    join_columns(s.join_ms.as_ref()),
                ));
            }
        }
        out
    }

    /// A table per run, for a terminal.
    pub fn summary(&self) -> String {
        let mut out =
            format!("uprtcd-load, {} ({} CPUs, {})\n", self.started, self.machine.cpus, self.machine.cpu_model);
        for raw in &self.raw {
            out.push_str(&format!(
                "raw {:?}: {:.0} packets/s, {:.0} per core-second ({} B to {} destinations)\n",
                raw.mode, raw.packets_per_second, raw.packets_per_core_second, raw.packet_bytes, raw.destinations
            ));
        }
        for run in &self.runs {
            out.push_str(&format!("\n{} — {} ({})\n", run.scenario, run.label, run.ended));
            if run.steps.iter().any(|s| !s.nodes.is_empty()) {
                nodes_table(&mut out, run);
            } else if run.steps.iter().any(|s| s.phase.is_some()) {
                storm_table(&mut out, run);
            } else {
                steps_table(&mut out, run);
            }
        }
        for note in self.runs.iter().flat_map(|r| &r.notes).chain(&self.notes) {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

/// The CSV columns of a step's timed joins (empty without them).
fn join_columns(joins: Option<&JoinTimes>) -> String {
    let Some(j) = joins else { return ",".repeat(9) };
    let (c, m) = (&j.connected, &j.first_media);
    format!(
        "{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
        j.joins, j.failed, c.p50, c.p90, c.p99, c.max, m.p50, m.p90, m.p99, m.max
    )
}

/// One line a step, then the probes' join times where the steps have them.
fn steps_table(out: &mut String, run: &Run) {
    out.push_str("  pubs  subs fail    egress/s  cpu%  µs/pkt  per-core/s   loss%   p50µs   p99µs  p99.9µs\n");
    for s in &run.steps {
        out.push_str(&format!(
            "  {:>4} {:>5} {:>4} {:>11.0} {:>5.0} {:>7.2} {:>11.0} {:>7.3} {:>7.0} {:>7.0} {:>8.0}\n",
            s.publishers,
            s.subscribers,
            s.join_failures,
            s.egress_pps,
            s.worker_cpu_percent.unwrap_or(s.sfu_cpu_percent),
            s.worker_cpu_us_per_packet.unwrap_or(s.cpu_us_per_packet),
            s.egress_pps_per_core,
            s.loss * 100.0,
            s.latency_us.p50,
            s.latency_us.p99,
            s.latency_us.p999,
        ));
    }
    for s in run.steps.iter().filter(|s| !s.join_failure_reasons.is_empty()) {
        out.push_str(&format!(
            "  at {} subscribers: {}\n",
            s.subscribers,
            JoinFailures::describe(&s.join_failure_reasons)
        ));
    }
    if !run.steps.iter().any(|s| s.join_ms.is_some()) {
        return;
    }
    out.push_str("  join probes after each window, ms from a join's start to connected | to first media:\n");
    out.push_str("   subs joins fail     p50     p90     p99     max |     p50     p90     p99     max\n");
    for s in &run.steps {
        let Some(j) = &s.join_ms else { continue };
        let (c, m) = (&j.connected, &j.first_media);
        out.push_str(&format!(
            "  {:>5} {:>5} {:>4} {:>7.1} {:>7.1} {:>7.1} {:>7.1} | {:>7.1} {:>7.1} {:>7.1} {:>7.1}\n",
            s.subscribers, j.joins, j.failed, c.p50, c.p90, c.p99, c.max, m.p50, m.p90, m.p99, m.max
        ));
    }
    for s in run.steps.iter().filter_map(|s| Some((s.subscribers, s.join_ms.as_ref()?))) {
        if !s.1.failures.is_empty() {
            out.push_str(&format!("  probes at {}: {}\n", s.0, JoinFailures::describe(&s.1.failures)));
        }
    }
}

/// The phase of a cluster's window with the whole audience on the origin node.
pub const ONE_NODE: &str = "one-node";
/// The phase of a cluster's window with the audience split between the origin and a mirror.
pub const SPLIT: &str = "split";

/// A cluster's windows node by node, with their totals, the latency the mirror node adds to
/// what the origin's own meters saw in the same window, and each window's CPU beside the
/// window before it of the same audience on one node.
fn nodes_table(out: &mut String, run: &Run) {
    out.push_str(
        "  phase     node            subs fail   egress/s worker s/s proc s/s µs/copy   loss%   \
         p50µs   p99µs p99.9µs  turn ms\n",
    );
    let mut one_node: Option<&Step> = None;
    for s in &run.steps {
        let phase = s.phase.as_deref().unwrap_or("");
        let total = NodeStep {
            alias: "total".into(),
            subscribers: s.subscribers,
            egress_pps: s.egress_pps,
            worker_cpu_seconds_per_second: s.worker_cpu_percent.unwrap_or_default() / 100.0,
            process_cpu_seconds_per_second: s.sfu_cpu_percent / 100.0,
            worker_cpu_us_per_packet: s.worker_cpu_us_per_packet.unwrap_or_default(),
            loss: s.loss,
            latency_us: s.latency_us,
            longest_turn_us: s.longest_turn_us.unwrap_or_default(),
            ..NodeStep::default()
        };
        for (i, n) in s.nodes.iter().chain([&total]).enumerate() {
            let (name, fail) = if n.role.is_empty() {
                (n.alias.clone(), s.join_failures.to_string())
            } else {
                (format!("{} ({})", n.alias, n.role), String::new())
            };
            out.push_str(&format!(
                "  {:<9} {name:<15} {:>4} {fail:>4} {:>10.0} {:>10.3} {:>8.3} {:>7.2} {:>7.3} {:>7.0} {:>7.0} {:>7.0} {:>8.1}\n",
                if i == 0 { phase } else { "" },
                n.subscribers,
                n.egress_pps,
                n.worker_cpu_seconds_per_second,
                n.process_cpu_seconds_per_second,
                n.worker_cpu_us_per_packet,
                n.loss * 100.0,
                n.latency_us.p50,
                n.latency_us.p99,
                n.latency_us.p999,
                n.longest_turn_us / 1e3,
            ));
        }
        let workers = total.worker_cpu_seconds_per_second;
        let origin = s.nodes.iter().find(|n| n.role == "origin");
        for mirror in s.nodes.iter().filter(|n| n.role == "mirror" && n.latency_us.samples > 0) {
            let Some(origin) = origin.filter(|o| o.latency_us.samples > 0) else { continue };
            let (o, m) = (&origin.latency_us, &mirror.latency_us);
            out.push_str(&format!(
                "  {:<9} the mirror adds p50 {:+.0} µs, p99 {:+.0} µs, p99.9 {:+.0} µs to the origin's meters\n",
                "",
                m.p50 - o.p50,
                m.p99 - o.p99,
                m.p999 - o.p999
            ));
        }
        if s.phase.as_deref() == Some(ONE_NODE) {
            one_node = Some(s);
        } else if let Some(one) =
            one_node.filter(|o| o.subscribers == s.subscribers && s.phase.as_deref() == Some(SPLIT))
        {
            let alone = one.worker_cpu_percent.unwrap_or_default() / 100.0;
            if alone > 0.0 {
                out.push_str(&format!(
                    "  {:<9} workers {:.3} s/s over two nodes against {:.3} on one: {:.2}×\n",
                    "",
                    workers,
                    alone,
                    workers / alone
                ));
            }
        }
    }
    for s in run.steps.iter().filter(|s| !s.join_failure_reasons.is_empty()) {
        out.push_str(&format!(
            "  {} at {} subscribers: {}\n",
            s.phase.as_deref().unwrap_or(""),
            s.subscribers,
            JoinFailures::describe(&s.join_failure_reasons)
        ));
    }
    if let Some(redis) = run.steps.iter().filter_map(|s| s.redis_cpu_percent).reduce(f64::max) {
        out.push_str(&format!("  Redis: at most {:.4} CPU s/s in any window\n", redis / 100.0));
    }
}

/// A storm's windows, then its joins stage by stage.
fn storm_table(out: &mut String, run: &Run) {
    out.push_str("  phase   subs fail seconds   egress/s worker%  sfu%  turn ms   loss%   p50µs   p99µs\n");
    for s in &run.steps {
        out.push_str(&format!(
            "  {:<6} {:>5} {:>4} {:>7.1} {:>10.0} {:>7.0} {:>5.0} {:>8.1} {:>7.3} {:>7.0} {:>7.0}\n",
            s.phase.as_deref().unwrap_or(""),
            s.subscribers,
            s.join_failures,
            s.seconds,
            s.egress_pps,
            s.worker_cpu_percent.unwrap_or_default(),
            s.sfu_cpu_percent,
            s.longest_turn_us.unwrap_or_default() / 1e3,
            s.loss * 100.0,
            s.latency_us.p50,
            s.latency_us.p99,
        ));
    }
    for s in &run.steps {
        let Some(j) = &s.join_ms else { continue };
        out.push_str(&format!(
            "  {} joins during the {} window, {} failed; ms from a join's start:\n",
            j.joins,
            s.phase.as_deref().unwrap_or(""),
            j.failed
        ));
        out.push_str("                 joins     p50     p90     p99     max\n");
        let stages = [
            ("joined", &j.signalled),
            ("subscribed", &j.negotiated),
            ("ICE answered", &j.ice),
            ("connected", &j.connected),
            ("first media", &j.first_media),
            ("started late", &j.late),
        ];
        for (name, p) in stages {
            out.push_str(&format!(
                "  {name:<13} {:>6} {:>7.1} {:>7.1} {:>7.1} {:>7.1}\n",
                p.samples, p.p50, p.p90, p.p99, p.max
            ));
        }
        if !j.failures.is_empty() {
            out.push_str(&format!("  failed: {}\n", JoinFailures::describe(&j.failures)));
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(LoadError::io(format!("write {}", path.display())))
}

/// One line on stderr, redrawn in place: what runs, a bar of the planned work done, and
/// elapsed time.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    total: usize,
    done: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self { started: Instant::now(), total: total.max(1), done: 0 }
    }

    /// Marks one unit of planned work done.
    pub fn advance(&mut self) {
        self.done = (self.done + 1).min(self.total);
    }

    pub fn show(&self, what: &str) {
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:>3}% {:>4}s  {what}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            100 * self.done / self.total,
            self.started.elapsed().as_secs()
        );
        let _ = err.flush();
    }

    /// Ends the progress line so that the next output starts on a line of its own.
    pub fn finish(&self) {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).rev().map(|v| v * 1000).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.samples, p.p50, p.p99, p.p999, p.max), (1000, 500.0, 990.0, 999.0, 1000.0));
        let curve = cdf(&samples);
        assert_eq!(curve.last().map(|&(_, f)| f), Some(1.0));
        assert!(curve.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn join_times_count_each_stage_over_the_joins_that_reached_it() {
        let joined = |ms: f64| JoinSample {
            signalled_ms: Some(ms / 4.0),
            negotiated_ms: Some(ms / 2.0),
            ice_ms: Some(ms / 2.0),
            connected_ms: Some(ms),
            first_media_ms: Some(ms + 20.0),
            ..JoinSample::default()
        };
        let failed = |stage, error: &str, ice_ms| JoinSample {
            signalled_ms: Some(1.0),
            negotiated_ms: Some(2.0),
            ice_ms,
            failed: Some(stage),
            error: Some(error.to_owned()),
            ..JoinSample::default()
        };
        let mut samples: Vec<JoinSample> = (1..=8).map(|i| joined(f64::from(i) * 10.0)).collect();
        samples.push(failed(JoinStage::Dtls, "not connected yet", Some(3.0)));
        samples.push(failed(JoinStage::Ice, "not connected yet", None));
        samples.push(failed(JoinStage::Dtls, "not connected yet", Some(4.0)));
        let times = JoinTimes::of(samples);
        assert_eq!((times.joins, times.failed), (11, 3));
        let c = times.connected;
        assert_eq!((c.samples, c.p50, c.p90, c.max), (8, 40.0, 80.0, 80.0));
        assert_eq!((times.first_media.samples, times.first_media.p50), (8, 60.0));
        assert_eq!((times.ice.samples, times.signalled.samples), (10, 11));
        let stages: Vec<_> = times.failures.iter().map(|f| (f.stage, f.count, f.examples.len())).collect();
        assert_eq!(stages, [(JoinStage::Ice, 1, 1), (JoinStage::Dtls, 2, 1)]);
        assert_eq!(JoinPercentiles::of(Vec::new()).max, 0.0);
    }

    #[test]
    fn a_cluster_run_shows_each_node_the_mirror_latency_and_the_cpu_beside_one_node() {
        let node = |alias: &str, role: &str, subscribers, cpu, p50| NodeStep {
            alias: alias.into(),
            role: role.into(),
            subscribers,
            worker_cpu_seconds_per_second: cpu,
            latency_us: Percentiles {
                samples: usize::from(subscribers > 0) * 100,
                p50,
                p99: 2.0 * p50,
                ..Percentiles::default()
            },
            ..NodeStep::default()
        };
        let step = |phase: &str, workers: f64, nodes| Step {
            phase: Some(phase.into()),
            subscribers: 600,
            worker_cpu_percent: Some(workers * 100.0),
            nodes,
            redis_cpu_percent: Some(0.2),
            ..Step::default()
        };
        let run = Run {
            scenario: "mirror".into(),
            steps: vec![
                step(ONE_NODE, 0.5, vec![node("rtc-1", "origin", 600, 0.5, 300.0), node("rtc-2", "idle", 0, 0.0, 0.0)]),
                step(
                    SPLIT,
                    0.55,
                    vec![node("rtc-1", "origin", 300, 0.3, 250.0), node("rtc-2", "mirror", 300, 0.25, 400.0)],
                ),
            ],
            ..Run::default()
        };
        let summary = Results { runs: vec![run], ..Results::default() }.summary();
        assert!(summary.contains("rtc-2 (mirror)") && summary.contains("rtc-2 (idle)"), "{summary}");
        assert!(summary.contains("the mirror adds p50 +150 µs, p99 +300 µs"), "{summary}");
        assert_eq!(summary.matches("the mirror adds").count(), 1, "not for the idle node: {summary}");
        assert!(summary.contains("workers 0.550 s/s over two nodes against 0.500 on one: 1.10×"), "{summary}");
        assert!(summary.contains("Redis: at most 0.0020 CPU s/s"), "{summary}");
        let json = serde_json::to_string(&Results::default()).unwrap();
        assert!(!json.contains("nodes"), "a run of one server writes no nodes: {json}");
    }
}
