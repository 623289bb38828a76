//! The rate halves of the estimator: what the receiver acknowledged per second (the
//! throughput), and the AIMD rate control that turns the delay detector's signal into the
//! delay-based estimate.
//!
//! What it owns: a short window of acknowledged bytes by arrival time; the delay-based rate,
//! its state (increase, hold, decrease) and the link capacity seen at past decreases.

use std::time::{Duration, Instant};

use super::delay::Usage;

/// The throughput window: long enough to smooth one frame's burst, short enough to follow
/// a drop within a feedback interval or two (libwebrtc's 500 ms).
const ACKED_BUCKET_US: i64 = 50_000;
const ACKED_BUCKETS: usize = 10;
/// Less than this much of a window is no measurement yet.
const MIN_ACKED_SPAN_US: i64 = 150_000;

/// Multiplicative increase per second, far from the link capacity (draft §5.5: 8 %).
const MULTIPLICATIVE_INCREASE_PER_SECOND: f64 = 1.08;
/// On overuse the rate falls to this share of the acknowledged rate (draft §5.5: 0.85).
const DECREASE_FACTOR: f64 = 0.85;
/// Near the link capacity the rate grows by about one packet per response time.
const PACKET_BITS: f64 = 1200.0 * 8.0;
/// A round trip plus the feedback interval, assumed: the engine does not pass the RTT, and
/// subscribers' browsers report over paths of well under 200 ms.
const RESPONSE_TIME_SECONDS: f64 = 0.3;
const MIN_ADDITIVE_INCREASE_BPS: f64 = 4_000.0;
/// Increases stop at this multiple of the throughput (plus the margin below): the estimate
/// must not run away from what the path has shown it carries; probes lift it faster.
const MAX_THROUGHPUT_MULTIPLE: f64 = 1.5;
const THROUGHPUT_MARGIN_BPS: f64 = 10_000.0;
/// Link capacity smoothing at each decrease, and the bounds of its normalised variance.
const CAPACITY_SMOOTHING: f64 = 0.05;
const MIN_CAPACITY_VARIANCE: f64 = 0.4;
const MAX_CAPACITY_VARIANCE: f64 = 2.5;
/// Longest time step one increase covers, so a gap in feedback does not compound.
const MAX_INCREASE_STEP: Duration = Duration::from_secs(1);

/// Acknowledged bytes per arrival-time bucket over the last half second.
#[derive(Debug, Clone)]
pub(super) struct AckedBitrate {
    buckets: [u64; ACKED_BUCKETS],
    /// The bucket number (arrival / bucket width) of the newest bucket.
    newest: Option<i64>,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

impl Default for AckedBitrate {
    fn default() -> Self {
        Self { buckets: [0; ACKED_BUCKETS], newest: None, first_arrival_us: 0, last_arrival_us: 0 }
    }
}

impl AckedBitrate {
    pub fn on_acked(&mut self, arrival_us: i64, size: u16) {
        let bucket = arrival_us.div_euclid(ACKED_BUCKET_US);
        let newest = match self.newest {
            None => {
                self.first_arrival_us = arrival_us;
                bucket
            }
            Some(newest) if bucket > newest => {
                let stale = (bucket - newest).min(ACKED_BUCKETS as i64);
                for step in 1..=stale {
                    self.buckets[(newest + step).rem_euclid(ACKED_BUCKETS as i64) as usize] = 0;
                }
                bucket
            }
            Some(newest) if newest - bucket >= ACKED_BUCKETS as i64 => return,
            Some(newest) => newest,
        };
        self.newest = Some(newest);
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
        self.buckets[bucket.rem_euclid(ACKED_BUCKETS as i64) as usize] += u64::from(size);
    }

    /// Bits per second over the window, once it spans enough time.
    pub fn bitrate(&self) -> Option<f64> {
        let newest = self.newest?;
        let window_start_us = ((newest + 1 - ACKED_BUCKETS as i64) * ACKED_BUCKET_US).max(self.first_arrival_us);
        let span_us = self.last_arrival_us - window_start_us;
        if span_us < MIN_ACKED_SPAN_US {
            return None;
        }
        let bytes: u64 = self.buckets.iter().sum();
        Some(bytes as f64 * 8.0 * 1e6 / span_us as f64)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Increase,
    Hold,
    Decrease,
}

/// The acknowledged rates seen at decreases: where the link's capacity probably is.
#[derive(Debug, Clone, Copy)]
struct LinkCapacity {
    mean_bps: f64,
    variance: f64,
}

impl LinkCapacity {
    /// Three deviations either side of the mean. The variance is normalised by the mean in
    /// kbit/s (as libwebrtc keeps it), so the deviation is in kbit/s too.
    fn bounds(&self) -> (f64, f64) {
        let deviation_bps = (self.variance * self.mean_bps / 1000.0).sqrt() * 1000.0;
        ((self.mean_bps - 3.0 * deviation_bps).max(0.0), self.mean_bps + 3.0 * deviation_bps)
    }
}

/// AIMD control of the delay-based rate (draft-ietf-rmcat-gcc-02 §5.5).
#[derive(Debug, Clone)]
pub(super) struct AimdRateControl {
    rate_bps: f64,
    state: State,
    capacity: Option<LinkCapacity>,
    last_update: Option<Instant>,
}

impl AimdRateControl {
    pub fn new(start_bps: f64) -> Self {
        Self { rate_bps: start_bps, state: State::Hold, capacity: None, last_update: None }
    }

    pub fn rate_bps(&self) -> f64 {
        self.rate_bps
    }

    /// Sets the rate outright (a probe result, a back-off, the bounds).
    pub fn set_rate(&mut self, rate_bps: f64) {
        self.rate_bps = rate_bps;
    }

    /// Holds the rate until the detector next says the path is fine.
    pub fn hold(&mut self) {
        self.state = State::Hold;
    }

    /// Applies the detector's `usage` at `now`, given the acknowledged rate.
    pub fn update(&mut self, now: Instant, usage: Usage, acked_bps: Option<f64>) {
        let elapsed = self.last_update.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.last_update = Some(now);
        self.state = match (usage, self.state) {
            (Usage::Overusing, _) => State::Decrease,
            (Usage::Underusing, _) => State::Hold,
            (Usage::Normal, State::Hold) => State::Increase,
            (Usage::Normal, state) => state,
        };
        match self.state {
            State::Hold => {}
            State::Increase => self.increase(elapsed.min(MAX_INCREASE_STEP).as_secs_f64(), acked_bps),
            State::Decrease => self.decrease(acked_bps),
        }
    }

    fn increase(&mut self, seconds: f64, acked_bps: Option<f64>) {
        if let (Some(acked), Some(capacity)) = (acked_bps, self.capacity)
            && acked > capacity.bounds().1
        {
            // Far above where past decreases happened: the link changed; search anew.
            self.capacity = None;
        }
        let increase = if self.capacity.is_some() {
            (PACKET_BITS / RESPONSE_TIME_SECONDS).max(MIN_ADDITIVE_INCREASE_BPS) * seconds
        } else {
            (self.rate_bps * (MULTIPLICATIVE_INCREASE_PER_SECOND.powf(seconds) - 1.0)).max(1000.0 * seconds)
        };
        let mut rate = self.rate_bps + increase;
        if let Some(acked) = acked_bps {
            let limit = MAX_THROUGHPUT_MULTIPLE * acked + THROUGHPUT_MARGIN_BPS;
            rate = rate.min(limit.max(self.rate_bps));
        }
        self.rate_bps = rate;
    }

    fn decrease(&mut self, acked_bps: Option<f64>) {
        if let Some(acked) = acked_bps {
            let mut decreased = DECREASE_FACTOR * acked;
            if let Some(capacity) = self.capacity {
                if decreased > self.rate_bps {
                    decreased = DECREASE_FACTOR * capacity.mean_bps;
                }
                if acked < capacity.bounds().0 {
                    // Far below the past capacity: the link changed.
                    self.capacity = None;
                }
            }
            if decreased < self.rate_bps {
                self.rate_bps = decreased;
            }
            self.sample_capacity(acked);
        }
        // One decrease per overuse signal; the queue draining shows as underuse next.
        self.state = State::Hold;
    }

    fn sample_capacity(&mut self, acked_bps: f64) {
        let capacity =
            self.capacity.get_or_insert(LinkCapacity { mean_bps: acked_bps, variance: MIN_CAPACITY_VARIANCE });
        capacity.mean_bps = (1.0 - CAPACITY_SMOOTHING) * capacity.mean_bps + CAPACITY_SMOOTHING * acked_bps;
        let error_kbps = (capacity.mean_bps - acked_bps) / 1000.0;
        capacity.variance = ((1.0 - CAPACITY_SMOOTHING) * capacity.variance
            + CAPACITY_SMOOTHING * error_kbps * error_kbps / (capacity.mean_bps / 1000.0).max(1.0))
        .clamp(MIN_CAPACITY_VARIANCE, MAX_CAPACITY_VARIANCE);
    }
}
