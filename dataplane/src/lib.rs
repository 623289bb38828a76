//! The uprtcd dataplane: pinned thread-per-core worker loops that own their sockets,
//! transports and routers, and the sans-IO protocol cores they drive.
//!
//! Layering (callers keep to it):
//! - `wire`, `ice`, `srtp`, `bwe` and `speaker` (dominant speaker detection) are sans-IO: they
//!   own no socket, thread or clock; time is an argument and bad input is an error value,
//!   never a panic.
//! - `worker` runs the loops; `sys` is the one module allowed `unsafe` (kernel calls). `io`
//!   drives `sys`; what both move (send queues, poll outcomes) lives in `batch`, which
//!   depends on neither.
//! - `peer` (a client transport: controlling ICE, DTLS client, SRTP), `ice::client` and
//!   `testnet` (an engine and its clients in virtual time) exist with the `test-support`
//!   feature only: tests, examples, benches and the load generator play clients with them;
//!   the product does not carry them.
//! - The control plane talks to workers only through `command` queues; workers talk to each
//!   other only through `relay` links (bounded queues of relayed packets and feedback).
#![deny(unsafe_code)]

mod batch;
pub mod bwe;
pub mod command;
pub mod cpu;
pub mod dtls;
pub mod engine;
pub mod ice;
pub mod io;
#[cfg(any(test, feature = "test-support"))]
pub mod peer;
pub mod relay;
pub mod router;
pub mod speaker;
pub mod srtp;
pub mod stats;
#[allow(unsafe_code)]
mod sys;
#[cfg(any(test, feature = "test-support"))]
pub mod testnet;
pub mod wire;
pub mod worker;

pub use sys::heap::{CountingAllocator, live_heap_bytes};

/// Raises the process's soft limit of open files to its hard limit (every client connection
/// and media socket is a descriptor; a login shell's soft limit of 1,024 would refuse clients
/// long before the configured caps). Returns the soft limit before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    sys::raise_open_files_limit()
}

/// Errors of the dataplane's setup and control paths. Per-packet failures are not errors
/// of this kind: they are counted drop reasons.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("worker command queue is full")]
    QueueFull,
    #[error("worker has stopped")]
    WorkerGone,
    #[error("cannot create a worker wake-up fd: {0}")]
    Wakeup(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("worker socket I/O: {0}")]
    Io(std::io::Error),
    /// `protocol` is "UDP" or "TCP": a worker's TCP listener takes its UDP socket's port.
    #[error("cannot bind the {protocol} media socket {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, protocol: &'static str, source: std::io::Error },
    #[error("cannot create the DTLS certificate: {0}")]
    Identity(String),
    #[error("the worker did not answer in time")]
    ReplyTimeout,
}
