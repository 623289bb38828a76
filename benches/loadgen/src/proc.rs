//! What the kernel accounts for a process under test: CPU time of each thread and of the
//! whole process (from `/proc/<pid>/task/<tid>/schedstat`, nanoseconds on CPU, system calls
//! included) and resident memory.

use std::time::Duration;

/// Time thread `tid` of `pid` has spent on a CPU; `None` once it is gone.
pub fn thread_cpu(pid: u32, tid: u32) -> Option<Duration> {
    uprtcd_dataplane::cpu::process_thread_cpu_time(pid, tid).ok()
}

/// Time all of `pid`'s live threads have spent on a CPU. Threads that ended are not
/// counted; the SFUs measured keep theirs for the process's life.
pub fn process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter_map(|tid| thread_cpu(pid, tid)).sum()
}

/// CPU time of `tids` of `pid`, summed.
pub fn threads_cpu(pid: u32, tids: &[u32]) -> Duration {
    tids.iter().filter_map(|&tid| thread_cpu(pid, tid)).sum()
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_its_cpu_time() {
        let pid = std::process::id();
        // This thread's own id: other tests' threads come and go in the same process, and the
        // process's sum counts only the live ones, so it is checked against this thread's.
        let tid: u32 = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|link| link.file_name()?.to_str()?.parse().ok())
            .expect("/proc/thread-self names this thread");
        let before = thread_cpu(pid, tid).expect("this thread is alive");
        // Spin for 30 ms of this thread's CPU time by the other clock (CLOCK_THREAD_CPUTIME_ID),
        // however long a loaded machine takes to grant it.
        let start = crate::sys::thread_cpu_ns();
        let mut x = 0u64;
        while crate::sys::thread_cpu_ns() - start < 30_000_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = thread_cpu(pid, tid).expect("this thread is alive") - before;
        assert!(spent >= Duration::from_millis(25), "{spent:?} ({x})");
        assert!(process_cpu(pid) >= thread_cpu(pid, tid).expect("alive"), "the process counts its live threads");
        assert!(threads_cpu(pid, &[tid]) >= spent);
        assert!(rss_bytes(pid).is_some_and(|rss| rss > 1 << 20));
    }
}
