//! The server's resources every few seconds, and the verdict on them: its memory, descriptors
//! and threads (from `/proc`), what `/metrics` says it holds (transports, producers,
//! consumers, rooms, connections), and its store's size. Each sample is one CSV line, written
//! at once, so that a run that dies leaves what it measured.
//!
//! The verdict compares the end of the drain with the baseline (the end of the settling after
//! warm-up). Descriptors and what the server holds must be back exactly: anything else is a
//! leak. The memory the server holds allocated (its live heap, counted by its allocator) must
//! be within a stated tolerance, for caches that keep their capacity. Resident memory is
//! shown, with its trend through the churn, but not judged: it also holds what the allocator
//! keeps mapped for reuse after the program freed it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Count, Tally};
use crate::LoadError;
use crate::uprtcd::{Uprtcd, metric, parse_metrics};

/// Where the run stands when a sample is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The server just started.
    Start,
    /// Churn, to warm the server up.
    Warmup,
    /// After the warm-up, while the server's timeouts run out; its last sample is the
    /// baseline.
    Settle,
    Churn,
    /// After the churn; its last sample is the end.
    Drain,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Warmup => "warmup",
            Phase::Settle => "settle",
            Phase::Churn => "churn",
            Phase::Drain => "drain",
        }
    }
}

/// What a column reads.
#[derive(Debug, Clone, Copy)]
enum Source {
    RssKb,
    /// `uprtcd_heap_live_bytes`, in KiB: what the program holds allocated.
    HeapKb,
    Fds,
    Sockets,
    Threads,
    StoreKb,
    /// A series of `/metrics`, or a family summed over its labels.
    Metric(&'static str),
}

/// How a column is judged at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Back to the baseline exactly, or the run fails.
    Exact,
    /// Within the run's heap tolerance of the baseline.
    Memory,
    /// Shown, not judged.
    Shown,
}

/// One CSV column of what the server holds.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    source: Source,
    pub check: Check,
}

const fn column(name: &'static str, source: Source, check: Check) -> Column {
    Column { name, source, check }
}

pub const COLUMNS: [Column; 15] = [
    column("rss_kb", Source::RssKb, Check::Shown),
    column("heap_live_kb", Source::HeapKb, Check::Memory),
    column("fds", Source::Fds, Check::Exact),
    column("fd_sockets", Source::Sockets, Check::Exact),
    column("threads", Source::Threads, Check::Shown),
    column("transports_owned", Source::Metric("uprtcd_transports_owned"), Check::Exact),
    column("transports_pending", Source::Metric("uprtcd_transports_pending"), Check::Exact),
    column("worker_transports", Source::Metric("uprtcd_worker_transports"), Check::Exact),
    column("worker_producers", Source::Metric("uprtcd_worker_producers"), Check::Exact),
    column("worker_consumers", Source::Metric("uprtcd_worker_consumers"), Check::Exact),
    column("rooms", Source::Metric("uprtcd_rooms"), Check::Exact),
    column("demo_rooms", Source::Metric("uprtcd_demo_rooms"), Check::Exact),
    column("http_api", Source::Metric("uprtcd_http_connections{listener=\"api\"}"), Check::Exact),
    column("http_client", Source::Metric("uprtcd_http_connections{listener=\"client\"}"), Check::Exact),
    column("store_kb", Source::StoreKb, Check::Shown),
];

/// One reading.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    pub phase: Phase,
    /// In the order of [`COLUMNS`]; `None` where it could not be read.
    pub values: Vec<Option<u64>>,
    /// The churn's counts so far, in the order of [`Count::ALL`].
    pub churn: Vec<u64>,
    /// Every series of `/metrics`.
    pub metrics: BTreeMap<String, f64>,
}

/// Reads the server and keeps what it read.
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    metrics_url: String,
    store: PathBuf,
    /// Without pooled connections: each reading opens and closes its own, so that the
    /// sampler holds nothing open on the server between readings.
    agent: ureq::Agent,
    started: Instant,
    csv: File,
    pub samples: Vec<Sample>,
}

impl Sampler {
    /// Samples `server`, writing `csv`.
    pub fn new(server: &Uprtcd, pid: u32, csv: &Path) -> Result<Self, LoadError> {
        let mut file = File::create(csv).map_err(LoadError::io(format!("create {}", csv.display())))?;
        let header: Vec<&str> = ["elapsed_s", "phase"]
            .into_iter()
            .chain(COLUMNS.iter().map(|c| c.name))
            .chain(Count::ALL.iter().map(|c| c.name()))
            .collect();
        writeln!(file, "{}", header.join(",")).map_err(LoadError::io("write the CSV"))?;
        let agent = ureq::Agent::config_builder()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Ok(Self {
            pid,
            metrics_url: format!("http://{}/metrics", server.api_address()),
            store: server.data_dir().join("uprtcd.redb"),
            agent,
            started: Instant::now(),
            csv: file,
            samples: Vec::new(),
        })
    }

    /// Takes one sample. Fails when the server is gone.
    pub fn take(&mut self, phase: Phase, tally: &Tally) -> Result<&Sample, LoadError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| -> Option<u64> {
            status.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
        };
        let (rss_kb, threads) = (field("VmRSS:"), field("Threads:"));
        if rss_kb.is_none() {
            return Err(LoadError::Setup(format!("uprtcd (pid {}) is gone", self.pid)));
        }
        // The descriptors first: the metrics request below opens one of its own.
        let (fds, sockets) = self.descriptors();
        let metrics = self
            .agent
            .get(&self.metrics_url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map(|text| parse_metrics(&text))
            .unwrap_or_default();
        let store_kb = std::fs::metadata(&self.store).ok().map(|m| m.len() / 1024);
        let values = COLUMNS
            .iter()
            .map(|column| match column.source {
                Source::RssKb => rss_kb,
                Source::HeapKb => metric(&metrics, "uprtcd_heap_live_bytes").map(|v| v as u64 / 1024),
                Source::Fds => fds,
                Source::Sockets => sockets,
                Source::Threads => threads,
                Source::StoreKb => store_kb,
                Source::Metric(series) => metric(&metrics, series).map(|v| v as u64),
            })
            .collect();
        let sample = Sample {
            at: self.started.elapsed(),
            phase,
            values,
            churn: Count::ALL.iter().map(|&c| tally.get(c)).collect(),
            metrics,
        };
        let line: Vec<String> = [format!("{:.1}", sample.at.as_secs_f64()), phase.name().to_owned()]
            .into_iter()
            .chain(sample.values.iter().map(|v| v.map(|v| v.to_string()).unwrap_or_default()))
            .chain(sample.churn.iter().map(u64::to_string))
            .collect();
        writeln!(self.csv, "{}", line.join(",")).map_err(LoadError::io("write the CSV"))?;
        self.samples.push(sample);
        Ok(self.samples.last().expect("just pushed"))
    }

    /// Open descriptors, and how many of them are sockets.
    fn descriptors(&self) -> (Option<u64>, Option<u64>) {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else { return (None, None) };
        let (mut fds, mut sockets) = (0, 0);
        for entry in entries.flatten() {
            fds += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            sockets += u64::from(target.to_string_lossy().starts_with("socket:"));
        }
        (Some(fds), Some(sockets))
    }
}

/// The judgement of a run.
#[derive(Debug)]
pub struct Verdict {
    /// The summary's tables.
    pub text: String,
    /// Every exact column back to its baseline.
    pub passed: bool,
    /// The live heap within the tolerance of its baseline.
    pub memory_within: bool,
}

/// Judges `samples`: the baseline is the last of the settling, the end the last of the
/// drain; `heap_tolerance` is the live heap's growth (a fraction of the baseline) still taken
/// as caches.
pub fn judge(samples: &[Sample], tally: &Tally, heap_tolerance: f64) -> Verdict {
    let last_of = |phase| samples.iter().rev().find(|s| s.phase == phase);
    let (Some(start), Some(baseline), Some(end)) = (samples.first(), last_of(Phase::Settle), last_of(Phase::Drain))
    else {
        let text = "no baseline or no end sample: the run did not finish\n".into();
        return Verdict { text, passed: false, memory_within: false };
    };
    let churn_end = samples.iter().rev().find(|s| s.phase == Phase::Churn).map_or(end.at, |s| s.at);
    let mut text = String::new();
    let (mut passed, mut memory_within) = (true, true);
    text.push_str(&format!(
        "{:<20} {:>9} {:>9} {:>9} {:>14} {:>9} {:>9}  verdict\n",
        "", "start", "baseline", "peak", "(peak at)", "end", "end-base"
    ));
    for (i, column) in COLUMNS.iter().enumerate() {
        let value = |s: &Sample| s.values[i];
        let peak = samples.iter().filter(|s| value(s).is_some()).max_by_key(|s| value(s));
        let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let (base, last) = (value(baseline), value(end));
        let delta = match (base, last) {
            (Some(b), Some(e)) => format!("{:+}", e as i64 - b as i64),
            _ => "-".into(),
        };
        let verdict = match column.check {
            Check::Exact => {
                let back = base.is_some() && base == last;
                passed &= back;
                if back {
                    // When it came back for good, counted from the churn's end.
                    let since = samples
                        .iter()
                        .rev()
                        .take_while(|s| s.phase == Phase::Drain && value(s) == base)
                        .last()
                        .map(|s| s.at.saturating_sub(churn_end).as_secs());
                    format!("back exactly{}", since.map(|s| format!(" ({s} s into the drain)")).unwrap_or_default())
                } else {
                    "NOT BACK".to_owned()
                }
            }
            Check::Memory => match (base, last) {
                (Some(b), Some(e)) => {
                    let growth = (e as f64 - b as f64) / b as f64;
                    let within = growth <= heap_tolerance;
                    memory_within &= within;
                    format!(
                        "{:+.1} % ({} the {:.0} % tolerance)",
                        growth * 100.0,
                        if within { "within" } else { "ABOVE" },
                        heap_tolerance * 100.0
                    )
                }
                _ => {
                    memory_within = false;
                    "unread".into()
                }
            },
            Check::Shown => String::new(),
        };
        let peak_at = peak.map_or(String::new(), |s| format!("{} {:.0} s", s.phase.name(), s.at.as_secs_f64()));
        text.push_str(&format!(
            "{:<20} {:>9} {:>9} {:>9} {:>14} {:>9} {:>9}  {verdict}\n",
            column.name,
            show(value(start)),
            show(base),
            show(peak.and_then(value)),
            peak_at,
            show(last),
            delta
        ));
    }
    text.push_str(&memory_trend(samples));
    text.push_str("\nwhat the churn did (counted by the soak, warm-up excluded):\n");
    for (i, count) in Count::ALL.iter().enumerate() {
        text.push_str(&format!("  {:<28} {}\n", count.name(), end.churn[i].saturating_sub(baseline.churn[i])));
    }
    text.push_str("\nwhat the server counted from the baseline to the end (its *_total series, non-zero):\n");
    for (series, value) in &end.metrics {
        let before = baseline.metrics.get(series).copied().unwrap_or(0.0);
        if series.split('{').next().is_some_and(|name| name.ends_with("_total")) && value - before > 0.0 {
            text.push_str(&format!("  {series} {}\n", value - before));
        }
    }
    let failures = tally.failures();
    let failed = failures.values().map(|(n, _)| n).sum::<u64>();
    text.push_str(&format!("\nclient-side failures (warm-up included): {failed}\n"));
    for (what, (n, quoted)) in failures {
        text.push_str(&format!("  {what}: {n}\n"));
        for quote in quoted {
            text.push_str(&format!("    e.g. {}\n", quote.chars().take(300).collect::<String>()));
        }
    }
    Verdict { text, passed, memory_within }
}

/// How resident memory and the live heap moved through the churn: from the first to the last
/// sample, and the least-squares slope over its second half (a leak keeps climbing; an
/// allocator levels off).
fn memory_trend(samples: &[Sample]) -> String {
    let mut text = String::new();
    for name in ["rss_kb", "heap_live_kb"] {
        let column = COLUMNS.iter().position(|c| c.name == name).expect("a memory column");
        let churn: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.phase == Phase::Churn)
            .filter_map(|s| Some((s.at.as_secs_f64() / 60.0, s.values[column]? as f64)))
            .collect();
        let (Some(first), Some(last)) = (churn.first(), churn.last()) else { continue };
        let half = &churn[churn.len() / 2..];
        text.push_str(&format!(
            "{name} through the churn: {:.0} → {:.0}; slope over its second half {:+.0} KB/min ({} samples)\n",
            first.1,
            last.1,
            slope(half),
            half.len()
        ));
    }
    text
}

/// The least-squares slope of `points` (0 for fewer than two).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let covariance: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if variance == 0.0 { 0.0 } else { covariance / variance }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, phase: Phase, fds: u64, heap: u64) -> Sample {
        let mut values = vec![Some(0); COLUMNS.len()];
        let column = |name| COLUMNS.iter().position(|c| c.name == name).expect("a column of that name");
        values[column("heap_live_kb")] = Some(heap);
        values[column("fds")] = Some(fds);
        Sample {
            at: Duration::from_secs(at),
            phase,
            values,
            churn: vec![0; Count::ALL.len()],
            metrics: BTreeMap::new(),
        }
    }

    #[test]
    fn a_descriptor_not_back_fails_the_run_and_memory_only_shows() {
        let tally = Tally::default();
        let run = |end_fds, end_heap| {
            let samples = [
                sample(0, Phase::Start, 20, 10_000),
                sample(60, Phase::Settle, 25, 20_000),
                sample(120, Phase::Churn, 90, 40_000),
                sample(180, Phase::Drain, end_fds, end_heap),
            ];
            judge(&samples, &tally, 0.25)
        };
        let back = run(25, 24_000);
        assert!(back.passed && back.memory_within, "{}", back.text);
        assert!(back.text.contains("+20.0 % (within the 25 % tolerance)"), "{}", back.text);
        let leaked = run(26, 30_000);
        assert!(!leaked.passed && !leaked.memory_within);
        assert!(leaked.text.contains("NOT BACK") && leaked.text.contains("ABOVE"), "{}", leaked.text);
    }

    #[test]
    fn the_slope_of_a_line_is_its_slope() {
        let points: Vec<(f64, f64)> = (0..10).map(|x| (f64::from(x), 3.0 * f64::from(x) + 1.0)).collect();
        assert!((slope(&points) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&points[..1]), 0.0);
    }
}
