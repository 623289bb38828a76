//! The delay-based half of the estimator: whether the path's queue is growing. Packets are
//! grouped into send bursts, the change of one-way delay between consecutive groups is
//! smoothed and its trend fitted over a window (the trendline filter), and an overuse
//! detector with an adaptive threshold turns the trend into a signal for the rate control.
//!
//! What it owns: the last two groups, the trendline's window and the detector's threshold
//! and hysteresis. Times are µs on two clocks: send times on ours, arrival times on the
//! receiver's; only differences within each clock are taken.

/// Packets sent within this of a group's first packet belong to the group: a pacer burst,
/// or one video frame.
const BURST_SEND_US: i64 = 5_000;
/// A packet arriving within this of the group's last one, with less delay than it, arrived
/// in the same burst even if sent later: a queue released them together.
const BURST_ARRIVAL_US: i64 = 5_000;
/// A group never spans more than this, so that a burst cannot absorb a whole interval.
const MAX_BURST_US: i64 = 100_000;
/// A change of delay beyond this between two groups is a clock jump or a reset on the
/// receiver, not queueing.
const MAX_ARRIVAL_JUMP_US: i64 = 3_000_000;

/// Deltas the trend is fitted over (libwebrtc's trendline window).
const TRENDLINE_WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay before fitting.
const TRENDLINE_SMOOTHING: f64 = 0.9;
/// Scales the fitted slope so the threshold applies (libwebrtc's threshold gain).
const TRENDLINE_GAIN: f64 = 4.0;
/// The trend counts for at most this many deltas: early on, a steep slope from few points
/// must not look like overuse.
const MAX_DELTAS_WEIGHT: f64 = 60.0;

/// The adaptive threshold's bounds and start, in ms of modified trend.
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
const INITIAL_THRESHOLD: f64 = 12.5;
/// Threshold gains per ms (draft-ietf-rmcat-gcc-02 §5.4): up fast, so that the delay noise
/// of a competing flow does not keep signalling overuse, down slowly, so that the
/// threshold stays sensitive after a spike.
const K_UP: f64 = 0.01;
const K_DOWN: f64 = 0.000_18;
/// Trends this far above the threshold are spikes that must not drag it up.
const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Longest time step the threshold adapts over at once.
const MAX_ADAPT_STEP_MS: f64 = 100.0;
/// Overuse is signalled once the trend stayed above the threshold this long.
const OVERUSE_TIME_MS: f64 = 10.0;

/// One group of packets sent together.
#[derive(Debug, Clone, Copy)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

/// How two consecutive groups were spaced on each end.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupDelta {
    /// Arrival of the later group's last packet.
    pub arrival_us: i64,
    pub send_delta_us: i64,
    pub arrival_delta_us: i64,
}

/// Groups packets into send bursts and yields the spacing of each completed group from the
/// one before it.
#[derive(Debug, Clone, Default)]
pub(super) struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

impl InterArrival {
    /// Adds a received packet; returns the delta when it starts a new group. `Err(())` for
    /// a packet that arrived so out of order or so late that it means nothing here (the
    /// caller counts it).
    pub fn on_packet(&mut self, send_us: i64, arrival_us: i64) -> Result<Option<GroupDelta>, ()> {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send_us: send_us,
                last_send_us: send_us,
                first_arrival_us: arrival_us,
                last_arrival_us: arrival_us,
            });
            return Ok(None);
        };
        if send_us < current.first_send_us {
            return Err(());
        }
        let same_send_burst = send_us - current.first_send_us <= BURST_SEND_US;
        let arrival_delta = arrival_us - current.last_arrival_us;
        let propagation_delta = arrival_delta - (send_us - current.last_send_us);
        let same_arrival_burst = arrival_delta <= BURST_ARRIVAL_US
            && propagation_delta < 0
            && arrival_us - current.first_arrival_us < MAX_BURST_US;
        if same_send_burst || same_arrival_burst {
            current.last_send_us = current.last_send_us.max(send_us);
            current.last_arrival_us = current.last_arrival_us.max(arrival_us);
            return Ok(None);
        }
        let completed = *current;
        *current = Group {
            first_send_us: send_us,
            last_send_us: send_us,
            first_arrival_us: arrival_us,
            last_arrival_us: arrival_us,
        };
        let delta = self.previous.map(|previous| GroupDelta {
            arrival_us: completed.last_arrival_us,
            send_delta_us: completed.last_send_us - previous.last_send_us,
            arrival_delta_us: completed.last_arrival_us - previous.last_arrival_us,
        });
        self.previous = Some(completed);
        match delta {
            Some(delta) if delta.arrival_delta_us < 0 => Err(()),
            Some(delta) if (delta.arrival_delta_us - delta.send_delta_us).abs() > MAX_ARRIVAL_JUMP_US => {
                self.reset();
                Err(())
            }
            delta => Ok(delta),
        }
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// What the detector concludes about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Usage {
    Normal,
    /// The queue grows: send less.
    Overusing,
    /// The queue drains: hold, let it empty.
    Underusing,
}

/// The trendline filter and overuse detector.
#[derive(Debug, Clone)]
pub(super) struct DelayDetector {
    /// `(arrival ms since the first delta, smoothed accumulated delay ms)`, a ring.
    window: [(f64, f64); TRENDLINE_WINDOW],
    len: usize,
    head: usize,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    deltas: u32,
    previous_trend: f64,
    threshold: f64,
    last_adapt_ms: Option<f64>,
    /// Time the trend has stayed above the threshold, once it went above.
    overusing_ms: Option<f64>,
    overuse_count: u32,
    usage: Usage,
}

impl Default for DelayDetector {
    fn default() -> Self {
        Self {
            window: [(0.0, 0.0); TRENDLINE_WINDOW],
            len: 0,
            head: 0,
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            deltas: 0,
            previous_trend: 0.0,
            threshold: INITIAL_THRESHOLD,
            last_adapt_ms: None,
            overusing_ms: None,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }
}

impl DelayDetector {
    /// Takes the spacing of one more pair of groups; returns the path's usage.
    pub fn update(&mut self, delta: GroupDelta) -> Usage {
        let send_delta_ms = delta.send_delta_us as f64 / 1000.0;
        let delay_change_ms = (delta.arrival_delta_us - delta.send_delta_us) as f64 / 1000.0;
        let first_arrival_us = *self.first_arrival_us.get_or_insert(delta.arrival_us);
        let arrival_ms = (delta.arrival_us - first_arrival_us) as f64 / 1000.0;
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated_ms += delay_change_ms;
        self.smoothed_ms = TRENDLINE_SMOOTHING * self.smoothed_ms + (1.0 - TRENDLINE_SMOOTHING) * self.accumulated_ms;
        self.window[self.head] = (arrival_ms, self.smoothed_ms);
        self.head = (self.head + 1) % TRENDLINE_WINDOW;
        self.len = (self.len + 1).min(TRENDLINE_WINDOW);
        let trend = if self.len == TRENDLINE_WINDOW {
            self.slope().unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        self.detect(trend, send_delta_ms, arrival_ms);
        self.usage
    }

    /// Least-squares slope of the window's delay over arrival time.
    fn slope(&self) -> Option<f64> {
        let points = &self.window[..self.len];
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let (numerator, denominator) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
            (num + (x - mean_x) * (y - mean_y), den + (x - mean_x) * (x - mean_x))
        });
        (denominator != 0.0).then(|| numerator / denominator)
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.previous_trend = trend;
            return;
        }
        let modified = f64::from(self.deltas).min(MAX_DELTAS_WEIGHT) * trend * TRENDLINE_GAIN;
        if modified > self.threshold {
            let overusing = self.overusing_ms.map_or(send_delta_ms / 2.0, |ms| ms + send_delta_ms);
            self.overusing_ms = Some(overusing);
            self.overuse_count += 1;
            if overusing > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.previous_trend {
                self.overusing_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.overusing_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.overusing_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.adapt_threshold(modified, now_ms);
    }

    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_adapt_ms.get_or_insert(now_ms);
        self.last_adapt_ms = Some(now_ms);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let gain = if modified.abs() < self.threshold { K_DOWN } else { K_UP };
        let step_ms = (now_ms - last).clamp(0.0, MAX_ADAPT_STEP_MS);
        self.threshold =
            (self.threshold + gain * (modified.abs() - self.threshold) * step_ms).clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
