//! When to probe a subscriber's path: short bursts (clusters) of padding at a rate above
//! the estimate, whose acknowledged rate tells the [`crate::bwe::Estimator`] how much more
//! the path carries without waiting for the media to grow into it.
//!
//! What it owns: the clusters decided and not yet handed out, the cluster id counter, and
//! what the last probe aimed at. Nothing allocates.
//!
//! Rules for callers: [`ProbeController::poll`] at or after
//! [`ProbeController::poll_timeout`] (and whenever the estimate or the application-limited
//! state changed) with the current estimate; each cluster it returns is realised by the
//! engine as padding-only RTP packets sent at the cluster's bitrate for its duration, at
//! least [`ProbeCluster::min_packets`] of them, each recorded with
//! [`crate::bwe::SendHistory::on_send`] under the cluster's id. [`ProbeController::request`]
//! when the allocator wants more than the estimate.

use std::time::{Duration, Instant};

/// The id that tags a probe cluster's packets in the [`crate::bwe::SendHistory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeClusterId(pub(super) u32);

/// A burst of padding to send at `bitrate_bps` for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCluster {
    pub id: ProbeClusterId,
    pub bitrate_bps: u64,
    pub duration: Duration,
    /// Packets the cluster needs at least, so that its rate can be measured at all.
    pub min_packets: u32,
}

impl ProbeCluster {
    /// Bytes the cluster sends: its bitrate over its duration.
    pub fn bytes(&self) -> usize {
        usize::try_from(u128::from(self.bitrate_bps) * self.duration.as_micros() / 8_000_000).unwrap_or(usize::MAX)
    }
}

/// libwebrtc's initial probes: three and six times the start bitrate, so that two quick
/// measurements bracket a path much faster than the start.
const INITIAL_PROBE_FACTORS: [u64; 2] = [3, 6];
/// A probe long enough to span a few packets at any rate and short enough that its burst
/// does not fill a queue: libwebrtc's minimum probe duration.
const PROBE_DURATION: Duration = Duration::from_millis(15);
/// Packets below which a cluster's rate is not measurable (libwebrtc's minimum).
const MIN_PROBE_PACKETS: u32 = 5;
/// An estimate reaching this share of the last probe's rate means the path carried it, so
/// the next probe aims higher.
const PROBE_FURTHER_PERCENT: u64 = 70;
/// Each further probe doubles the estimate that the last one reached.
const FURTHER_PROBE_FACTOR: u64 = 2;
/// How long a probe's result is waited for before further probing gives up.
const PROBE_RESULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes the allocator asks for come at most this often, so a path at its limit is not
/// flooded with padding.
const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// While the sender is application-limited below the cap, the path is probed this often:
/// the media alone will never show whether it grew.
const ALR_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Decides the probe clusters of one subscriber transport.
#[derive(Debug, Clone)]
pub struct ProbeController {
    max_bps: u64,
    started: bool,
    next_id: u32,
    /// Clusters decided, handed out one per poll (in order).
    queued: [Option<u64>; INITIAL_PROBE_FACTORS.len()],
    /// The highest rate the last probing aimed at, and until when its result counts.
    waiting: Option<(u64, Instant)>,
    /// A rate the allocator asked for and not probed yet.
    requested: Option<u64>,
    last_probe: Option<Instant>,
}

impl ProbeController {
    /// A controller that probes up to `max_bps` (the room's maximum bitrate).
    pub fn new(max_bps: u64) -> Self {
        Self {
            max_bps,
            started: false,
            next_id: 0,
            queued: [None; INITIAL_PROBE_FACTORS.len()],
            waiting: None,
            requested: None,
            last_probe: None,
        }
    }

    /// Changes the highest rate probed for.
    pub fn set_max_bitrate(&mut self, max_bps: u64) {
        self.max_bps = max_bps;
    }

    /// The allocator wants `wanted_bps` for the subscriber's layers: probe for it (capped at
    /// the maximum) if the estimate is below it, at most once per `MIN_REQUEST_INTERVAL`.
    pub fn request(&mut self, wanted_bps: u64) {
        self.requested = Some(wanted_bps.min(self.max_bps));
    }

    /// The next cluster to send at `now`, given the current estimate and whether the
    /// sender is application-limited (sending less than the estimate because the media
    /// needs less). Call until it returns `None`.
    pub fn poll(&mut self, now: Instant, estimate_bps: u64, application_limited: bool) -> Option<ProbeCluster> {
        if !self.started {
            self.started = true;
            for (slot, factor) in self.queued.iter_mut().zip(INITIAL_PROBE_FACTORS) {
                *slot = Some(estimate_bps.saturating_mul(factor));
            }
        }
        if let Some(index) = self.queued.iter().position(Option::is_some) {
            let rate = self.queued[index].take().unwrap_or(estimate_bps);
            return self.cluster(now, rate, estimate_bps);
        }
        if let Some((target, until)) = self.waiting {
            if now > until {
                self.waiting = None;
            } else if estimate_bps.saturating_mul(PROBE_FURTHER_PERCENT) >= target.saturating_mul(100) {
                return self.cluster(now, estimate_bps.saturating_mul(FURTHER_PROBE_FACTOR), estimate_bps);
            } else {
                return None;
            }
        }
        let since_last = self.last_probe.map_or(Duration::MAX, |last| now.saturating_duration_since(last));
        if let Some(wanted) = self.requested.take_if(|&mut wanted| wanted > estimate_bps)
            && since_last >= MIN_REQUEST_INTERVAL
        {
            return self.cluster(now, wanted, estimate_bps);
        }
        if application_limited && since_last >= ALR_PROBE_INTERVAL {
            return self.cluster(now, estimate_bps.saturating_mul(FURTHER_PROBE_FACTOR), estimate_bps);
        }
        None
    }

    /// A cluster at `rate_bps` (capped at the maximum), or none if the estimate already
    /// reaches it.
    fn cluster(&mut self, now: Instant, rate_bps: u64, estimate_bps: u64) -> Option<ProbeCluster> {
        let rate_bps = rate_bps.min(self.max_bps);
        if rate_bps <= estimate_bps {
            self.waiting = None;
            return None;
        }
        let id = ProbeClusterId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.last_probe = Some(now);
        // A probe at the maximum is the last: there is nothing further to find.
        self.waiting = (rate_bps < self.max_bps).then_some((rate_bps, now + PROBE_RESULT_TIMEOUT));
        Some(ProbeCluster { id, bitrate_bps: rate_bps, duration: PROBE_DURATION, min_packets: MIN_PROBE_PACKETS })
    }

    /// When a probe may next be due; a request or a new estimate may make one due sooner.
    /// `None` before the first [`ProbeController::poll`], which the engine makes once the
    /// transport can send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.queued.iter().any(Option::is_some) {
            // Set when the first of them was handed out: due now.
            return self.last_probe;
        }
        let periodic = self.last_probe.map(|last| last + ALR_PROBE_INTERVAL);
        match (self.waiting, periodic) {
            (Some((_, until)), Some(periodic)) => Some(until.min(periodic)),
            (waiting, periodic) => waiting.map(|(_, until)| until).or(periodic),
        }
    }
}
