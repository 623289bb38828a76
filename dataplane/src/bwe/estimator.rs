//! The send-side bandwidth estimate toward one subscriber, from the transport feedback its
//! browser sends (GCC as draft-ietf-rmcat-gcc-02 and libwebrtc's goog_cc describe it):
//! the smaller of a delay-based rate (AIMD driven by the trend of the queueing delay) and a
//! loss-based cap, lifted by probe results, within the configured bounds.
//!
//! What it owns: the unwrapped reference time of the feedback, the delay detector, the
//! AIMD rate, the throughput window, the loss window and cap, and the measurements of the
//! last few probe clusters. Nothing allocates after [`Estimator::new`].
//!
//! Rules for callers: [`Estimator::on_feedback`] with every transport feedback packet the
//! subscriber sends, and the transport's [`SendHistory`]; [`Estimator::handle_timeout`] at
//! or after [`Estimator::poll_timeout`], so that silence while sending backs the estimate
//! off; [`Estimator::estimate`] whenever the allocator wants the budget.

use std::time::{Duration, Instant};

use super::delay::{DelayDetector, InterArrival, Usage};
use super::history::{PacketResult, SendHistory};
use super::micros_since;
use super::probe::ProbeClusterId;
use super::rate::{AckedBitrate, AimdRateControl};
use crate::wire::rtcp::{REFERENCE_TICK_US, TransportFeedback};

/// Bounds and start of one subscriber's estimate, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimatorConfig {
    /// Where the estimate starts, before any feedback.
    pub start_bps: u64,
    /// The estimate never goes below this.
    pub min_bps: u64,
    /// The estimate never goes above this (the room's maximum bitrate).
    pub max_bps: u64,
}

/// What the estimator ignored, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EstimatorCounters {
    /// Feedback packets used.
    pub feedback: u64,
    /// Feedback ignored because its reference time jumped back or far ahead.
    pub absurd_reference_time: u64,
    /// Feedback ignored because it named packets never sent or long forgotten.
    pub absurd_sequence: u64,
    /// Reports of packets no longer in the history, or reported already.
    pub unmatched_reports: u64,
    /// Received packets whose arrival went back in time, left out of the delay trend.
    pub reordered: u64,
    /// Decreases of the loss-based cap.
    pub loss_decreases: u64,
    /// Back-off steps taken for feedback that stopped while packets were sent.
    pub feedback_timeouts: u64,
}

/// The reference time may go back by this much between feedback packets (reordered
/// feedback); more is a receiver that restarted its clock, or garbage.
const MAX_REFERENCE_BACK_US: i64 = 1_000_000;
/// ... and go ahead by this much more than our own clock did in the meantime.
const MAX_REFERENCE_AHEAD_US: i64 = 5_000_000;
/// After this many absurd reference times in a row, the receiver's clock really changed:
/// the estimator starts measuring delay afresh from it.
const REANCHOR_AFTER: u32 = 3;
const REFERENCE_TIME_MASK: i64 = (1 << 24) - 1;

/// Loss is judged over this many reported packets at least (about a second at 300 kbit/s):
/// fewer make the fraction too coarse.
const LOSS_WINDOW_PACKETS: u32 = 30;
/// Above this loss the cap falls, to `1 − loss / 2` of the estimate (libwebrtc's rule).
const HIGH_LOSS: f64 = 0.10;
/// Below this loss the cap may rise; in between it holds.
const LOW_LOSS: f64 = 0.02;
/// The cap falls at most this often: one decrease needs a round trip to show.
const LOSS_DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// The cap rises by this much per second while loss is low, as the delay-based rate does
/// far from the capacity.
const LOSS_INCREASE_PER_SECOND: f64 = 1.08;

/// Probe packets a cluster needs acknowledged for its rate to count: 80 % of the
/// controller's minimum of five.
const MIN_PROBE_PACKETS_ACKED: u32 = 4;
/// Probe measurements kept at once: the initial probes send two clusters back to back.
const PROBE_SLOTS: usize = 4;
/// A cluster spread over more than this on either end measured something else.
const MAX_PROBE_INTERVAL_US: i64 = 1_000_000;
/// A receive rate below this share of the send rate means the probe saturated the path:
/// its receive rate is the capacity.
const SATURATED_RATIO: f64 = 0.9;
/// Of a saturating probe's receive rate, this much is taken, leaving room for the queue
/// it built to drain.
const SATURATED_UTILISATION: f64 = 0.95;

/// Feedback missing this long: the first that comes again holds the rate.
const FEEDBACK_HOLD_AFTER: Duration = Duration::from_secs(1);
/// Missing this long: the path may be gone; back off step by step.
const FEEDBACK_BACKOFF_AFTER: Duration = Duration::from_secs(2);
const BACKOFF_INTERVAL: Duration = Duration::from_millis(500);
const BACKOFF_FACTOR: f64 = 0.8;

/// The acknowledgements of one probe cluster so far.
#[derive(Debug, Clone, Copy)]
struct ProbeStats {
    id: ProbeClusterId,
    packets: u32,
    bytes: u64,
    first_send_us: i64,
    last_send_us: i64,
    last_send_size: u16,
    first_arrival_us: i64,
    first_arrival_size: u16,
    last_arrival_us: i64,
    /// Feedback counter value when it last grew, to pick the slot to reuse.
    touched: u64,
}

impl ProbeStats {
    fn new(id: ProbeClusterId, touched: u64, sent_us: i64, arrival_us: i64, size: u16) -> Self {
        Self {
            id,
            packets: 1,
            bytes: u64::from(size),
            first_send_us: sent_us,
            last_send_us: sent_us,
            last_send_size: size,
            first_arrival_us: arrival_us,
            first_arrival_size: size,
            last_arrival_us: arrival_us,
            touched,
        }
    }

    fn add(&mut self, touched: u64, sent_us: i64, arrival_us: i64, size: u16) {
        self.packets += 1;
        self.bytes += u64::from(size);
        self.touched = touched;
        if sent_us < self.first_send_us {
            self.first_send_us = sent_us;
        }
        if sent_us >= self.last_send_us {
            self.last_send_us = sent_us;
            self.last_send_size = size;
        }
        if arrival_us < self.first_arrival_us {
            self.first_arrival_us = arrival_us;
            self.first_arrival_size = size;
        }
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
    }

    /// The rate the path carried the cluster at, once enough of it is acknowledged. The
    /// send rate leaves out the last packet sent and the receive rate the first received:
    /// each interval spans the packets between.
    fn bitrate(&self) -> Option<f64> {
        let send_us = self.last_send_us - self.first_send_us;
        let receive_us = self.last_arrival_us - self.first_arrival_us;
        if self.packets < MIN_PROBE_PACKETS_ACKED
            || !(1..=MAX_PROBE_INTERVAL_US).contains(&send_us)
            || !(1..=MAX_PROBE_INTERVAL_US).contains(&receive_us)
        {
            return None;
        }
        let send_bps = (self.bytes - u64::from(self.last_send_size)) as f64 * 8e6 / send_us as f64;
        let receive_bps = (self.bytes - u64::from(self.first_arrival_size)) as f64 * 8e6 / receive_us as f64;
        Some(if receive_bps < SATURATED_RATIO * send_bps {
            SATURATED_UTILISATION * receive_bps
        } else {
            send_bps.min(receive_bps)
        })
    }
}

/// The loss-based cap on the estimate.
#[derive(Debug, Clone, Copy, Default)]
struct LossControl {
    lost: u32,
    reported: u32,
    /// The last loss fraction judged.
    fraction: f64,
    last_judged: Option<Instant>,
    last_decrease: Option<Instant>,
    /// `None` while loss does not limit the estimate.
    cap_bps: Option<f64>,
}

impl LossControl {
    /// Judges the loss once enough packets were reported.
    fn update(&mut self, now: Instant, estimate_bps: f64, delay_bps: f64) -> bool {
        if self.reported < LOSS_WINDOW_PACKETS {
            return false;
        }
        self.fraction = f64::from(self.lost) / f64::from(self.reported);
        (self.lost, self.reported) = (0, 0);
        let seconds = self.last_judged.map_or(0.0, |last| now.saturating_duration_since(last).as_secs_f64().min(1.0));
        self.last_judged = Some(now);
        let mut decreased = false;
        if self.fraction > HIGH_LOSS {
            if self.last_decrease.is_none_or(|last| now.saturating_duration_since(last) >= LOSS_DECREASE_INTERVAL) {
                self.cap_bps = Some(estimate_bps * (1.0 - 0.5 * self.fraction));
                self.last_decrease = Some(now);
                decreased = true;
            }
        } else if self.fraction < LOW_LOSS {
            self.cap_bps = self
                .cap_bps
                .map(|cap| cap * LOSS_INCREASE_PER_SECOND.powf(seconds) + 1000.0 * seconds)
                .filter(|&cap| cap < delay_bps);
        } else {
            self.cap_bps = Some(self.cap_bps.map_or(estimate_bps, |cap| cap.min(estimate_bps)));
        }
        decreased
    }
}

/// The receiver's reference time, unwrapped, and when we last accepted it.
#[derive(Debug, Clone, Copy)]
struct ReferenceClock {
    ticks: i64,
    at: Instant,
}

/// The bandwidth estimate toward one subscriber.
#[derive(Debug, Clone)]
pub struct Estimator {
    config: EstimatorConfig,
    reference: Option<ReferenceClock>,
    absurd_streak: u32,
    inter_arrival: InterArrival,
    detector: DelayDetector,
    usage: Usage,
    rate: AimdRateControl,
    acked: AckedBitrate,
    loss: LossControl,
    probes: [Option<ProbeStats>; PROBE_SLOTS],
    /// When feedback last came, or when the estimator was first driven.
    last_feedback: Option<Instant>,
    last_backoff: Option<Instant>,
    estimate_bps: u64,
    counters: EstimatorCounters,
}

impl Estimator {
    pub fn new(config: EstimatorConfig) -> Self {
        let start = config.start_bps.clamp(config.min_bps, config.max_bps.max(config.min_bps));
        Self {
            config,
            reference: None,
            absurd_streak: 0,
            inter_arrival: InterArrival::default(),
            detector: DelayDetector::default(),
            usage: Usage::Normal,
            rate: AimdRateControl::new(start as f64),
            acked: AckedBitrate::default(),
            loss: LossControl::default(),
            probes: [None; PROBE_SLOTS],
            last_feedback: None,
            last_backoff: None,
            estimate_bps: start,
            counters: EstimatorCounters::default(),
        }
    }

    /// The estimate, in bits per second, within the configured bounds.
    pub fn estimate(&self) -> u64 {
        self.estimate_bps
    }

    /// Changes the bounds (the room's maximum bitrate changed); the estimate moves into them.
    pub fn set_bounds(&mut self, min_bps: u64, max_bps: u64) {
        self.config.min_bps = min_bps;
        self.config.max_bps = max_bps.max(min_bps);
        self.refresh_estimate();
    }

    /// What was ignored so far.
    pub fn counters(&self) -> EstimatorCounters {
        self.counters
    }

    /// Takes one transport feedback packet the subscriber sent, received at `now`.
    pub fn on_feedback(&mut self, now: Instant, feedback: &TransportFeedback<'_>, history: &mut SendHistory) {
        let Some(reference_ticks) = self.accept_reference_time(now, feedback.reference_time()) else { return };
        if !history.covers(feedback.base_sequence_number(), feedback.packet_status_count()) {
            self.counters.absurd_sequence += 1;
            return;
        }
        self.counters.feedback += 1;
        // The first feedback after a silence holds the rate: what it reports is old news.
        let after_silence =
            self.last_feedback.is_some_and(|last| now.saturating_duration_since(last) >= FEEDBACK_HOLD_AFTER);
        self.last_feedback = Some(now);
        self.last_backoff = None;
        let reference_us = reference_ticks * REFERENCE_TICK_US;
        let mut any_received = false;
        let mut probed = false;
        for (seq, arrival) in feedback.packets() {
            let Some((packet, first_report)) = history.report(seq, arrival.is_some()) else {
                self.counters.unmatched_reports += 1;
                continue;
            };
            match (first_report, arrival) {
                (true, None) => {
                    self.loss.lost += 1;
                    self.loss.reported += 1;
                }
                (true, Some(_)) => self.loss.reported += 1,
                (false, _) => self.loss.lost = self.loss.lost.saturating_sub(1),
            }
            if let Some(arrival) = arrival {
                any_received = true;
                probed |= self.on_received(packet, reference_us + arrival);
            }
        }
        if after_silence {
            self.rate.hold();
        } else if any_received {
            self.rate.update(now, self.usage, self.acked.bitrate());
        }
        if probed {
            self.apply_probe_results();
        }
        let delay_bps = self.rate.rate_bps();
        if self.loss.update(now, self.estimate_bps as f64, delay_bps) {
            self.counters.loss_decreases += 1;
        }
        self.refresh_estimate();
    }

    /// Unwraps the feedback's 24-bit reference time against the last accepted one; `None`
    /// (counted) when it jumped absurdly and too few in a row did so to believe it.
    fn accept_reference_time(&mut self, now: Instant, wire: i32) -> Option<i64> {
        let wire = i64::from(wire) & REFERENCE_TIME_MASK;
        let Some(last) = self.reference else {
            self.reference = Some(ReferenceClock { ticks: wire, at: now });
            return Some(wire);
        };
        // The 24-bit difference, sign-extended: the nearest unwrapped value.
        let step = ((wire - last.ticks) & REFERENCE_TIME_MASK) << 40 >> 40;
        let ticks = last.ticks + step;
        let jump_us = step * REFERENCE_TICK_US;
        let elapsed_us = micros_since(last.at, now);
        if jump_us < -MAX_REFERENCE_BACK_US || jump_us > elapsed_us.saturating_add(MAX_REFERENCE_AHEAD_US) {
            self.counters.absurd_reference_time += 1;
            self.absurd_streak += 1;
            if self.absurd_streak < REANCHOR_AFTER {
                return None;
            }
            // The receiver's clock really changed: delays measured across the change mean
            // nothing, so measuring starts afresh on the new clock.
            self.inter_arrival.reset();
            self.detector.reset();
            self.acked.reset();
            self.probes = [None; PROBE_SLOTS];
            self.usage = Usage::Normal;
            self.absurd_streak = 0;
            self.reference = Some(ReferenceClock { ticks, at: now });
            return Some(ticks);
        }
        self.absurd_streak = 0;
        if step >= 0 {
            self.reference = Some(ReferenceClock { ticks, at: now });
        }
        Some(ticks)
    }

    /// Feeds one received packet to the delay, throughput and probe measurements. Returns
    /// whether it was a probe.
    fn on_received(&mut self, packet: PacketResult, arrival_us: i64) -> bool {
        self.acked.on_acked(arrival_us, packet.size);
        match self.inter_arrival.on_packet(packet.sent_us, arrival_us) {
            Ok(Some(delta)) => self.usage = self.detector.update(delta),
            Ok(None) => {}
            Err(()) => self.counters.reordered += 1,
        }
        let Some(id) = packet.probe else { return false };
        let touched = self.counters.feedback;
        if let Some(stats) = self.probes.iter_mut().flatten().find(|stats| stats.id == id) {
            stats.add(touched, packet.sent_us, arrival_us, packet.size);
        } else {
            let slot = self
                .probes
                .iter_mut()
                .min_by_key(|slot| slot.map_or(0, |stats| stats.touched + 1))
                .expect("PROBE_SLOTS is not zero");
            *slot = Some(ProbeStats::new(id, touched, packet.sent_us, arrival_us, packet.size));
        }
        true
    }

    /// Lifts the delay-based rate (and a loss cap, while loss is low) to what probes showed.
    fn apply_probe_results(&mut self) {
        let touched = self.counters.feedback;
        let best = self
            .probes
            .iter()
            .flatten()
            .filter(|stats| stats.touched == touched)
            .filter_map(ProbeStats::bitrate)
            .fold(0.0, f64::max);
        let best = best.min(self.config.max_bps as f64);
        if best > self.rate.rate_bps() {
            self.rate.set_rate(best);
        }
        if self.loss.fraction < LOW_LOSS {
            self.loss.cap_bps = self.loss.cap_bps.map(|cap| cap.max(best));
        }
    }

    /// Applies silence at `now`: while packets go out and no feedback comes, the rate
    /// backs off step by step (and [`Estimator::on_feedback`] holds it when feedback
    /// resumes).
    pub fn handle_timeout(&mut self, now: Instant, history: &SendHistory) {
        let last_feedback = *self.last_feedback.get_or_insert(now);
        let sending = history.last_sent().is_some_and(|sent| sent > last_feedback);
        if !sending
            || now.saturating_duration_since(last_feedback) < FEEDBACK_BACKOFF_AFTER
            || self.last_backoff.is_some_and(|last| now.saturating_duration_since(last) < BACKOFF_INTERVAL)
        {
            return;
        }
        self.last_backoff = Some(now);
        self.counters.feedback_timeouts += 1;
        self.rate.set_rate(self.estimate_bps as f64 * BACKOFF_FACTOR);
        self.loss.cap_bps = self.loss.cap_bps.map(|cap| cap * BACKOFF_FACTOR);
        self.refresh_estimate();
    }

    /// When [`Estimator::handle_timeout`] next may act; `None` until it or
    /// [`Estimator::on_feedback`] was first called, which the engine does when the
    /// transport starts sending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last_feedback = self.last_feedback?;
        Some(match self.last_backoff {
            Some(last) => last + BACKOFF_INTERVAL,
            None => last_feedback + FEEDBACK_BACKOFF_AFTER,
        })
    }

    fn refresh_estimate(&mut self) {
        let (min, max) = (self.config.min_bps as f64, self.config.max_bps as f64);
        let delay_bps = self.rate.rate_bps().clamp(min, max);
        self.rate.set_rate(delay_bps);
        let estimate = self.loss.cap_bps.map_or(delay_bps, |cap| cap.min(delay_bps)).clamp(min, max);
        // Within u64 by the clamp.
        self.estimate_bps = estimate as u64;
    }
}
