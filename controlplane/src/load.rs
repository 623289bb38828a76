//! CPU load of the dataplane workers, sampled once a second from the kernel's accounting
//! of each worker thread (never from the loop's self-measurement), for `/server/cpu/load`
//! and for placement decisions.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uprtcd_dataplane::cpu::CpuMeter;
use uprtcd_dataplane::stats::SharedStats;

/// How often worker CPU time is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One worker as the control plane knows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Kernel thread id (`workPid`).
    pub thread_id: i32,
    pub core: usize,
    /// The counters the worker publishes about once a second.
    pub stats: Arc<SharedStats>,
}

/// The latest CPU % of every worker, by worker index.
#[derive(Debug)]
pub struct WorkerLoads {
    workers: Vec<WorkerInfo>,
    cpu: Mutex<Vec<f64>>,
}

impl WorkerLoads {
    pub fn new(workers: Vec<WorkerInfo>) -> Self {
        let cpu = Mutex::new(vec![0.0; workers.len()]);
        Self { workers, cpu }
    }

    pub fn workers(&self) -> &[WorkerInfo] {
        &self.workers
    }

    /// CPU % (100 = one core) of each worker over the last sample interval.
    pub fn cpu(&self) -> Vec<f64> {
        self.cpu.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The index of the worker with kernel thread id `thread_id`.
    pub fn index_of(&self, thread_id: i64) -> Option<usize> {
        self.workers.iter().position(|w| i64::from(w.thread_id) == thread_id)
    }

    /// Samples every worker each [`SAMPLE_INTERVAL`] until the runtime ends.
    pub fn spawn_sampler(self: &Arc<Self>) {
        let loads = Arc::clone(self);
        tokio::spawn(async move {
            let mut meters: Vec<CpuMeter> = loads.workers.iter().map(|w| CpuMeter::new(w.thread_id)).collect();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let samples: Vec<Option<f64>> = meters.iter_mut().map(|m| m.sample(now).ok().flatten()).collect();
                let mut cpu = loads.cpu.lock().unwrap_or_else(PoisonError::into_inner);
                for (slot, sample) in cpu.iter_mut().zip(samples) {
                    if let Some(pct) = sample {
                        *slot = pct;
                    }
                }
            }
        });
    }
}
