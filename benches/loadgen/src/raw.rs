//! (placeholder until the raw sender lands)
use std::net::IpAddr;
use std::time::Duration;

use crate::LoadError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RawMode {
    Sendmmsg,
    Gso,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RawResult {
    pub mode: RawMode,
    pub packet_bytes: usize,
    pub destinations: usize,
    pub batch: usize,
    pub packets: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub packets_per_second: f64,
    pub packets_per_core_second: f64,
    pub receiver_drops: u64,
}

pub fn measure(
    _mode: RawMode,
    _packet_bytes: usize,
    _destinations: usize,
    _ip: IpAddr,
    _duration: Duration,
    _core: Option<usize>,
) -> Result<RawResult, LoadError> {
    Err(LoadError::Setup("not yet".into()))
}
