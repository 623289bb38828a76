//! CPU time of individual threads, read from the kernel's own accounting.
//!
//! `/server/cpu/load` and the benches report worker cost from these numbers, never from
//! the loop's self-measurement, so a worker that is descheduled or stalls in the kernel is
//! still charged correctly. `schedstat` gives nanoseconds; where the kernel lacks it the
//! tick-granular `stat` fields are used.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::time::{Duration, Instant};

use crate::sys;

/// Total CPU time (user + system) the thread `tid` of this process has consumed.
pub fn thread_cpu_time(tid: i32) -> io::Result<Duration> {
    task_cpu_time(&format!("/proc/self/task/{tid}"))
}

/// Total CPU time (user + system) the thread `tid` of process `pid` has consumed: what the
/// benches' load generator reads of the SFU it measures.
pub fn process_thread_cpu_time(pid: u32, tid: u32) -> io::Result<Duration> {
    task_cpu_time(&format!("/proc/{pid}/task/{tid}"))
}

/// CPU time of the task whose `/proc` directory is `base`.
fn task_cpu_time(base: &str) -> io::Result<Duration> {
    match fs::read_to_string(format!("{base}/schedstat")) {
        Ok(text) => parse_schedstat(&text),
        Err(_) => parse_stat(&fs::read_to_string(format!("{base}/stat"))?, sys::clock_ticks_per_second()),
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// `schedstat` is "<ns on cpu> <ns waiting> <timeslices>".
fn parse_schedstat(text: &str) -> io::Result<Duration> {
    let ns = text
        .split_ascii_whitespace()
        .next()
        .and_then(|field| field.parse::<u64>().ok())
        .ok_or_else(|| invalid("malformed schedstat"))?;
    Ok(Duration::from_nanos(ns))
}

/// `stat` fields 14 and 15 (utime, stime) in clock ticks. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last ')'.
fn parse_stat(text: &str, ticks_per_second: u64) -> io::Result<Duration> {
    let after_name = text.rfind(')').map(|i| &text[i + 1..]).ok_or_else(|| invalid("malformed stat"))?;
    // After the name, field 3 (state) comes first, so utime (14) is the 12th token.
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let mut next_ticks = || fields.next().and_then(|f| f.parse::<u64>().ok()).ok_or_else(|| invalid("malformed stat"));
    let ticks = next_ticks()? + next_ticks()?;
    Ok(Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_second))
}

/// Turns successive CPU-time readings of one thread into a utilisation percentage
/// (100 = one full core) over the interval between readings.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    tid: i32,
    last: Option<(Instant, Duration)>,
}

impl CpuMeter {
    pub fn new(tid: i32) -> Self {
        Self { tid, last: None }
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Reads the thread's CPU time at `now` and returns its utilisation since the previous
    /// sample, or `None` on the first sample.
    pub fn sample(&mut self, now: Instant) -> io::Result<Option<f64>> {
        let used = thread_cpu_time(self.tid)?;
        Ok(self.record(now, used))
    }

    fn record(&mut self, now: Instant, used: Duration) -> Option<f64> {
        let previous = self.last.replace((now, used));
        let (then, used_then) = previous?;
        let wall = now.checked_duration_since(then)?.as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let busy = used.saturating_sub(used_then).as_secs_f64();
        Some((busy / wall * 100.0).clamp(0.0, 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat_nanoseconds() {
        assert_eq!(parse_schedstat("123456789 42 7\n").unwrap(), Duration::from_nanos(123_456_789));
        assert!(parse_schedstat("").is_err());
    }

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let line = "4242 (uprtcd (w) 1) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 99 0 0";
        assert_eq!(parse_stat(line, 100).unwrap(), Duration::from_secs(4));
        assert!(parse_stat("4242 (x) S 1", 100).is_err());
    }

    #[test]
    fn meter_reports_share_of_wall_time() {
        let mut meter = CpuMeter::new(0);
        let t0 = Instant::now();
        assert_eq!(meter.record(t0, Duration::from_millis(100)), None);
        let pct = meter.record(t0 + Duration::from_secs(2), Duration::from_millis(600)).unwrap();
        assert!((pct - 25.0).abs() < 1e-9, "{pct}");
    }

    #[test]
    fn busy_thread_is_charged_by_the_kernel() {
        let tid = sys::current_thread_id();
        let before = thread_cpu_time(tid).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = thread_cpu_time(tid).unwrap();
        assert!(after > before, "spinning for 50 ms charged no CPU time");
    }
}
