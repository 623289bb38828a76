//! The uprtcd dataplane: pinned thread-per-core worker loops that own their sockets,
//! transports and routers, and the sans-IO protocol cores they drive.
//!
//! Layering (callers keep to it):
//! - `wire`, `ice`, `srtp` are sans-IO: they own no socket, thread or clock; time is an
//!   argument and bad input is an error value, never a panic.
//! - `worker` runs the loops; `sys` is the one module allowed `unsafe` (kernel calls).
//! - The control plane talks to workers only through `command` queues.
#![deny(unsafe_code)]

pub mod command;
pub mod cpu;
pub mod ice;
pub mod srtp;
#[allow(unsafe_code)]
mod sys;
pub mod wire;
pub mod worker;
