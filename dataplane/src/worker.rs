//! Worker threads: one per dataplane core, each pinned to its core from start-up and owning
//! everything it runs. The control plane holds only a [`WorkerHandle`] per worker: the
//! queue to send it commands and the facts it reports (kernel thread id, core).
//!
//! Rules: a worker shares nothing with other workers; it learns of work only through its
//! command queue; `Workers::shutdown` (or drop) stops and joins every thread.
#![forbid(unsafe_code)]

use std::thread::JoinHandle;

use crate::Error;
use crate::command::{Command, CommandReceiver, CommandSender, command_queue};
use crate::io::{BackendChoice, Io};
use crate::sys;

/// Commands a worker may have outstanding before senders are told it is busy.
const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// Where and how many workers to run.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// The CPU core of each worker, in worker order; its length is the worker count.
    pub cores: Vec<usize>,
    /// The socket backend every worker asks for.
    pub backend: BackendChoice,
}

impl WorkerPlan {
    /// `count` workers on the highest-numbered cores of `available`, leaving the lowest
    /// ones to the control plane and the kernel; wraps around when there are more workers
    /// than cores.
    pub fn spread(count: usize, available: &[usize], backend: BackendChoice) -> Self {
        let mut sorted = available.to_vec();
        sorted.sort_unstable();
        let cores = if sorted.is_empty() {
            Vec::new()
        } else {
            let first = sorted.len().saturating_sub(count).min(sorted.len() - 1);
            (0..count).map(|i| sorted[first + (i % (sorted.len() - first))]).collect()
        };
        Self { cores, backend }
    }

    /// The cores no worker is pinned to; the whole set when every core has a worker.
    pub fn spare_cores(&self, available: &[usize]) -> Vec<usize> {
        let spare: Vec<usize> = available.iter().copied().filter(|c| !self.cores.contains(c)).collect();
        if spare.is_empty() { available.to_vec() } else { spare }
    }
}

/// The control plane's view of one running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    index: usize,
    thread_id: i32,
    core: usize,
    pinned: bool,
    backend: &'static str,
    commands: CommandSender,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The kernel thread id (`workPid` in the REST API).
    pub fn thread_id(&self) -> i32 {
        self.thread_id
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// Whether the kernel accepted the pinning (a restricted cpuset may refuse it).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The socket backend the worker runs ("uring" or "epoll").
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn commands(&self) -> &CommandSender {
        &self.commands
    }
}

/// Every worker of this process.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<WorkerHandle>,
}

struct Started {
    thread_id: i32,
    pinned: bool,
    backend: Result<&'static str, std::io::Error>,
}

impl Workers {
    /// Spawns one pinned worker per entry of `plan.cores` and waits until each has pinned
    /// itself and reported its thread id.
    pub fn start(plan: &WorkerPlan) -> Result<Self, Error> {
        let mut workers = Self { handles: Vec::with_capacity(plan.cores.len()) };
        for (index, &core) in plan.cores.iter().enumerate() {
            let (commands, inbox) = command_queue(COMMAND_QUEUE_CAPACITY)?;
            let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
            let backend = plan.backend;
            let thread = std::thread::Builder::new()
                .name(format!("uprtcd-w{index}"))
                .spawn(move || {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    let thread_id = sys::current_thread_id();
                    match Io::new(Vec::new(), inbox.wake_fd(), backend) {
                        Ok(mut io) => {
                            let started = Started { thread_id, pinned, backend: Ok(io.backend_name()) };
                            // The receiver waits for this message; if it is gone, start-up
                            // failed already and this worker just ends.
                            if started_tx.send(started).is_ok() {
                                run(index, &inbox, &mut io);
                            }
                        }
                        Err(e) => {
                            let _ = started_tx.send(Started { thread_id, pinned, backend: Err(e) });
                        }
                    }
                })
                .map_err(Error::Spawn)?;
            let started = started_rx.recv().map_err(|_| Error::WorkerGone)?;
            let backend = started.backend.map_err(Error::Io)?;
            if !started.pinned {
                tracing::warn!(worker = index, core, "could not pin worker to its core; it runs unpinned");
            }
            workers.handles.push(WorkerHandle {
                index,
                thread_id: started.thread_id,
                core,
                pinned: started.pinned,
                backend,
                commands,
                thread: Some(thread),
            });
        }
        Ok(workers)
    }

    pub fn handles(&self) -> &[WorkerHandle] {
        &self.handles
    }

    /// Asks every worker to stop and waits for their threads to end.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    /// Stops the workers still running; `shutdown` followed by drop stops them once.
    fn stop_all(&mut self) {
        for handle in self.handles.iter().filter(|h| h.thread.is_some()) {
            if let Err(e) = handle.commands.send(Command::Shutdown) {
                tracing::warn!(worker = handle.index, error = %e, "worker did not take the shutdown command");
            }
        }
        for handle in &mut self.handles {
            if let Some(thread) = handle.thread.take()
                && thread.join().is_err()
            {
                tracing::error!(worker = handle.index, "worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The worker loop: apply queued commands, then wait in the backend until woken.
fn run(index: usize, inbox: &CommandReceiver, io: &mut Io) {
    tracing::debug!(worker = index, backend = io.backend_name(), "worker running");
    loop {
        match inbox.try_next() {
            Some(Command::Shutdown) => {
                tracing::debug!(worker = index, "worker stopping");
                return;
            }
            None => {
                if let Err(e) = io.poll(None, 0, |_, _, _, _| {}) {
                    tracing::error!(worker = index, error = %e, "worker cannot wait for work; stopping");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_leaves_the_lowest_core_to_the_control_plane() {
        let plan = WorkerPlan::spread(1, &[0, 1], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![1]);
        assert_eq!(plan.spare_cores(&[0, 1]), vec![0]);
        let plan = WorkerPlan::spread(3, &[0, 1, 2, 3], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![1, 2, 3]);
    }

    #[test]
    fn spread_wraps_when_workers_outnumber_cores() {
        let plan = WorkerPlan::spread(3, &[0, 1], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![0, 1, 0]);
        assert_eq!(plan.spare_cores(&[0, 1]), vec![0, 1]);
        assert!(WorkerPlan::spread(2, &[], BackendChoice::Auto).cores.is_empty());
    }

    #[test]
    fn workers_report_distinct_thread_ids_and_stop() {
        let available: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
        let plan = WorkerPlan::spread(2, &available, BackendChoice::Epoll);
        let workers = Workers::start(&plan).unwrap();
        let ids: Vec<i32> = workers.handles().iter().map(WorkerHandle::thread_id).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        for id in &ids {
            assert!(std::path::Path::new(&format!("/proc/self/task/{id}")).exists());
        }
        workers.shutdown();
        for id in &ids {
            assert!(!std::path::Path::new(&format!("/proc/self/task/{id}")).exists());
        }
    }
}
