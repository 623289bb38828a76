//! The results of a run: one JSON document (the machine, the raw UDP limit, every scenario's
//! steps and latency distribution), the same steps as CSV, a plain-text summary, and the
//! progress line shown while it runs.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::LoadError;
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
}

/// One measurement window at a fixed load.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Step {
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
        let at = |q: f64| {
            if latencies_ns.is_empty() {
                return 0.0;
            }
            let i = ((latencies_ns.len() as f64 * q).ceil() as usize).clamp(1, latencies_ns.len()) - 1;
            f64::from(latencies_ns[i]) / 1e3
        };
        Self { samples: latencies_ns.len(), p50: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1.0) }
    }
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
             latency_p50_us,latency_p99_us,latency_p999_us,longest_turn_us,rss_bytes,memory_per_subscriber_bytes\n",
        );
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        for run in &self.runs {
            for s in &run.steps {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{:.0},{:.0},{:.1},{},{:.3},{},{:.0},{:.6},{},{:.1},{:.1},{:.1},{},{},{}\n",
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
            out.push_str("  pubs  subs    egress/s  cpu%  µs/pkt  per-core/s   loss%   p50µs   p99µs  p99.9µs\n");
            for s in &run.steps {
                out.push_str(&format!(
                    "  {:>4} {:>5} {:>11.0} {:>5.0} {:>7.2} {:>11.0} {:>7.3} {:>7.0} {:>7.0} {:>8.0}\n",
                    s.publishers,
                    s.subscribers,
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
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
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
}
