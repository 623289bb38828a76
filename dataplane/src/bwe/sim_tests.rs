//! The four parts together over a simulated bottleneck, in virtual time: a sender paced at
//! the estimate (plus probe clusters), a link of fixed rate and base delay with a drop-tail
//! queue and optional seeded random loss, a receiver whose [`FeedbackGenerator`] writes the
//! feedback, which goes back through the RTCP parser to the [`Estimator`]. Also replays two
//! recorded traces of this simulator (`traces/*.txt`; simulator output, not browser
//! captures) through the receive and estimate path.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

const MEDIA_PACKET: usize = 1200;
/// Probe padding packets: as large as libwebrtc's padding-only packets get.
const PROBE_PACKET: usize = 250;
const STEP: Duration = Duration::from_micros(250);
const MBPS: u64 = 1_000_000;
const KBPS: u64 = 1_000;

/// A 64-bit xorshift: the seeded loss of the link, the same on every run.
#[derive(Debug, Clone)]
struct Xorshift(u64);

impl Xorshift {
    fn chance(&mut self, probability: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 <= probability
    }
}

/// A bottleneck: packets leave one after another at `rate_bps`, wait in a drop-tail queue
/// of `queue_bytes`, and arrive `base_delay` after leaving.
#[derive(Debug)]
struct Link {
    rate_bps: u64,
    base_delay: Duration,
    queue_bytes: u64,
    loss: f64,
    rng: Xorshift,
    /// When the last packet queued finishes leaving.
    busy_until: Instant,
    in_flight: VecDeque<(Instant, u16)>,
}

impl Link {
    fn new(t0: Instant, rate_bps: u64) -> Self {
        Self {
            rate_bps,
            base_delay: Duration::from_millis(40),
            queue_bytes: 60_000,
            loss: 0.0,
            rng: Xorshift(0x9e37_79b9_7f4a_7c15),
            busy_until: t0,
            in_flight: VecDeque::new(),
        }
    }

    /// Queues a packet at `now`; returns when it arrives, or `None` if it is dropped.
    fn send(&mut self, now: Instant, seq: u16, size: usize) -> Option<Instant> {
        let backlog = self.busy_until.saturating_duration_since(now);
        let backlog_bytes = backlog.as_secs_f64() * self.rate_bps as f64 / 8.0;
        if backlog_bytes + size as f64 > self.queue_bytes as f64 || self.rng.chance(self.loss) {
            return None;
        }
        let leaves = self.busy_until.max(now) + Duration::from_secs_f64(size as f64 * 8.0 / self.rate_bps as f64);
        self.busy_until = leaves;
        let arrives = leaves + self.base_delay;
        self.in_flight.push_back((arrives, seq));
        Some(arrives)
    }
}

/// One packet of a trace: when it was sent (µs), how big, which probe cluster, and when it
/// arrived (µs) or that it was lost.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TraceRow {
    sent_us: i64,
    size: usize,
    probe: Option<u32>,
    arrival_us: Option<i64>,
}

/// Sender, link and receiver in virtual time.
struct Sim {
    t0: Instant,
    now: Instant,
    link: Link,
    history: SendHistory,
    estimator: Estimator,
    probes: ProbeController,
    generator: FeedbackGenerator,
    /// What the allocator would like to send: more than any link here, so it asks for
    /// probes while the estimate is below it.
    wanted_bps: u64,
    next_media: Instant,
    /// Probe packets to send: `(when, size, cluster)`.
    probe_queue: VecDeque<(Instant, usize, ProbeClusterId)>,
    /// Feedback on its way back: `(when it arrives, bytes)`.
    feedback: VecDeque<(Instant, Vec<u8>)>,
    trace: Vec<TraceRow>,
    max_seen: u64,
}

impl Sim {
    fn new(start_bps: u64, link_bps: u64, max_bps: u64) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            link: Link::new(t0, link_bps),
            history: SendHistory::new(),
            estimator: Estimator::new(EstimatorConfig { start_bps, min_bps: 50 * KBPS, max_bps }),
            probes: ProbeController::new(max_bps),
            generator: FeedbackGenerator::new(1, 2),
            wanted_bps: 3 * MBPS,
            next_media: t0,
            probe_queue: VecDeque::new(),
            feedback: VecDeque::new(),
            trace: Vec::new(),
            max_seen: 0,
        }
    }

    fn micros(&self, at: Instant) -> i64 {
        at.duration_since(self.t0).as_micros() as i64
    }

    fn send(&mut self, size: usize, probe: Option<ProbeClusterId>) {
        let seq = self.history.on_send(self.now, size, probe);
        let arrival = self.link.send(self.now, seq, size);
        self.trace.push(TraceRow {
            sent_us: self.micros(self.now),
            size,
            probe: probe.map(|id| id.0),
            arrival_us: arrival.map(|at| self.micros(at)),
        });
    }

    fn step(&mut self) {
        let now = self.now;
        let estimate = self.estimator.estimate();
        self.probes.request(self.wanted_bps);
        while let Some(cluster) = self.probes.poll(now, estimate, false) {
            let count = (cluster.bytes() / PROBE_PACKET).max(cluster.min_packets as usize);
            let size = (cluster.bytes() / count).max(1);
            let interval = Duration::from_secs_f64(size as f64 * 8.0 / cluster.bitrate_bps as f64);
            let start = self.probe_queue.back().map_or(now, |&(at, _, _)| at.max(now));
            for i in 0..count {
                self.probe_queue.push_back((start + interval * i as u32, size, cluster.id));
            }
        }
        while self.probe_queue.front().is_some_and(|&(at, _, _)| at <= now) {
            let (_, size, id) = self.probe_queue.pop_front().unwrap();
            self.send(size, Some(id));
        }
        if self.next_media <= now {
            self.send(MEDIA_PACKET, None);
            let interval = Duration::from_secs_f64(MEDIA_PACKET as f64 * 8.0 / estimate as f64);
            self.next_media = self.next_media.max(now - STEP) + interval;
        }
        while self.link.in_flight.front().is_some_and(|&(at, _)| at <= now) {
            let (at, seq) = self.link.in_flight.pop_front().unwrap();
            self.generator.record(at, seq);
        }
        if self.generator.poll_timeout().is_some_and(|due| due <= now) {
            let arrives = now + self.link.base_delay;
            let feedback = &mut self.feedback;
            self.generator.poll(now, |bytes| feedback.push_back((arrives, bytes.to_vec())));
        }
        while self.feedback.front().is_some_and(|(at, _)| *at <= now) {
            let (_, bytes) = self.feedback.pop_front().unwrap();
            for packet in RtcpCompound::new_checked(&bytes).unwrap().packets() {
                let RtcpPacket::TransportFeedback(feedback) = packet else { panic!("{packet:?}") };
                self.estimator.on_feedback(now, &feedback, &mut self.history);
            }
        }
        self.estimator.handle_timeout(now, &self.history);
        self.max_seen = self.max_seen.max(self.estimator.estimate());
        self.now += STEP;
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds for the estimate, for at most `limit`; returns how long.
    fn run_until(&mut self, limit: Duration, done: impl Fn(u64) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now < start + limit {
            if done(self.estimator.estimate()) {
                return Some(self.now - start);
            }
            self.step();
        }
        None
    }
}

#[test]
fn ramps_up_to_the_link_then_follows_it_down_and_up() {
    let mut sim = Sim::new(300 * KBPS, 5 * MBPS / 2, 5 * MBPS);
    let ramp = sim.run_until(Duration::from_secs(10), |bps| bps >= 1_750 * KBPS);
    assert!(ramp.is_some(), "estimate {} after 10 s", sim.estimator.estimate());
    sim.run_for(Duration::from_secs(10));
    let settled = sim.estimator.estimate();
    assert!((1_500 * KBPS..=3 * MBPS).contains(&settled), "settled at {settled}");

    sim.link.rate_bps = 400 * KBPS;
    let drop = sim.run_until(Duration::from_secs(2), |bps| bps <= 500 * KBPS);
    assert!(drop.is_some(), "estimate {} 2 s after the drop", sim.estimator.estimate());
    sim.run_for(Duration::from_secs(5));
    assert!(sim.estimator.estimate() <= 600 * KBPS, "stays down: {}", sim.estimator.estimate());

    sim.link.rate_bps = 5 * MBPS / 2;
    let recovery = sim.run_until(Duration::from_secs(10), |bps| bps >= 1_500 * KBPS);
    assert!(recovery.is_some(), "estimate {} 10 s after recovery", sim.estimator.estimate());
    assert_eq!(sim.estimator.counters().absurd_reference_time, 0);
    assert_eq!(sim.estimator.counters().absurd_sequence, 0);
}

#[test]
fn random_loss_of_five_percent_does_not_collapse_the_estimate() {
    let mut sim = Sim::new(300 * KBPS, 5 * MBPS / 2, 5 * MBPS);
    sim.run_for(Duration::from_secs(10));
    let before = sim.estimator.estimate();
    sim.link.loss = 0.05;
    let mut lowest = u64::MAX;
    for _ in 0..40 {
        sim.run_for(Duration::from_millis(250));
        lowest = lowest.min(sim.estimator.estimate());
    }
    assert!(lowest as f64 >= 0.6 * before as f64, "fell from {before} to {lowest}");
}

#[test]
fn the_estimate_never_exceeds_the_maximum() {
    let mut sim = Sim::new(300 * KBPS, 5 * MBPS, 1_200 * KBPS);
    sim.run_for(Duration::from_secs(10));
    assert!(sim.max_seen <= 1_200 * KBPS, "{}", sim.max_seen);
    assert!(sim.estimator.estimate() >= 1_000 * KBPS, "reaches it: {}", sim.estimator.estimate());
}

#[test]
fn silence_while_sending_backs_off() {
    let mut sim = Sim::new(300 * KBPS, 5 * MBPS / 2, 5 * MBPS);
    sim.run_for(Duration::from_secs(5));
    let before = sim.estimator.estimate();
    // The path back is cut: packets keep going out, no feedback comes.
    sim.link.base_delay = Duration::from_secs(3600);
    sim.run_for(Duration::from_secs(4));
    assert!(sim.estimator.counters().feedback_timeouts >= 3, "{:?}", sim.estimator.counters());
    assert!(sim.estimator.estimate() < before / 2, "{} from {before}", sim.estimator.estimate());
}

/// Feedback for the packets `history` sent, as the given `(seq, arrival µs)` pairs.
fn feedback_bytes(reference_time: i32, base: u16, arrivals: &[Option<i64>]) -> Vec<u8> {
    let mut buf = [0; 1200];
    let written =
        crate::wire::rtcp::write_transport_feedback(&mut buf, 1, 2, base, 0, reference_time, arrivals).unwrap();
    buf[..written.len].to_vec()
}

fn feed(estimator: &mut Estimator, now: Instant, history: &mut SendHistory, bytes: &[u8]) {
    let compound = RtcpCompound::new_checked(bytes).unwrap();
    let Some(RtcpPacket::TransportFeedback(feedback)) = compound.packets().next() else { panic!() };
    estimator.on_feedback(now, &feedback, history);
}

#[test]
fn absurd_feedback_is_ignored_and_counted() {
    let t0 = Instant::now();
    let mut history = SendHistory::new();
    let mut estimator =
        Estimator::new(EstimatorConfig { start_bps: 500 * KBPS, min_bps: 50 * KBPS, max_bps: 5 * MBPS });
    for i in 0..100u32 {
        history.on_send(t0 + Duration::from_millis(u64::from(i)), 1200, None);
    }
    let now = t0 + Duration::from_millis(150);
    let arrivals: Vec<Option<i64>> = (0..50).map(|i| Some(20 * REFERENCE_TICK + i * 1000)).collect();
    feed(&mut estimator, now, &mut history, &feedback_bytes(20, 0, &arrivals));
    assert_eq!(estimator.counters().feedback, 1);
    // Numbers never sent, and far away.
    feed(&mut estimator, now, &mut history, &feedback_bytes(21, 30_000, &arrivals));
    feed(&mut estimator, now, &mut history, &feedback_bytes(21, 90, &arrivals[..20]));
    assert_eq!(estimator.counters().absurd_sequence, 2);
    // The reference time jumps back 10 s, then 2 minutes ahead.
    let back: Vec<Option<i64>> = (0..10).map(|i| Some(i * 1000)).collect();
    feed(&mut estimator, now, &mut history, &feedback_bytes(0, 50, &back));
    let ahead: Vec<Option<i64>> = (0..10).map(|i| Some(2_000 * REFERENCE_TICK + i * 1000)).collect();
    feed(&mut estimator, now, &mut history, &feedback_bytes(2_000, 50, &ahead));
    assert_eq!(estimator.counters().absurd_reference_time, 2);
    assert_eq!(estimator.counters().feedback, 1);
    // The same packets reported again count as unmatched, not as new.
    feed(&mut estimator, now, &mut history, &feedback_bytes(20, 0, &arrivals));
    assert_eq!(estimator.counters().unmatched_reports, 50);
    assert!((50 * KBPS..=5 * MBPS).contains(&estimator.estimate()));
}

const REFERENCE_TICK: i64 = crate::wire::rtcp::REFERENCE_TICK_US;

/// The trace format: one packet a line, `sent_us size probe arrival_us`, with `-` for no
/// probe and for a lost packet.
fn write_trace(rows: &[TraceRow]) -> String {
    let dash = |value: Option<i64>| value.map_or("-".to_owned(), |v| v.to_string());
    rows.iter()
        .map(|row| {
            format!("{} {} {} {}\n", row.sent_us, row.size, dash(row.probe.map(i64::from)), dash(row.arrival_us))
        })
        .collect()
}

fn read_trace(text: &str) -> Vec<TraceRow> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let optional = |field: &str| (field != "-").then(|| field.parse::<i64>().unwrap());
            TraceRow {
                sent_us: fields[0].parse().unwrap(),
                size: fields[1].parse().unwrap(),
                probe: optional(fields[2]).map(|id| id as u32),
                arrival_us: optional(fields[3]),
            }
        })
        .collect()
}

/// Replays `rows` through a history, a receiver's generator and an estimator, the feedback
/// taking `return_delay` back; returns the estimate every 500 ms.
fn replay(rows: &[TraceRow], start_bps: u64, return_delay: Duration) -> Vec<u64> {
    let t0 = Instant::now();
    let at = |us: i64| t0 + Duration::from_micros(us as u64);
    let mut history = SendHistory::new();
    let mut generator = FeedbackGenerator::new(1, 2);
    let mut estimator = Estimator::new(EstimatorConfig { start_bps, min_bps: 50 * KBPS, max_bps: 5 * MBPS });
    // Arrivals in arrival order, with the sequence number each packet got.
    let mut arrivals: Vec<(i64, u16)> = Vec::new();
    let end_us = rows.iter().map(|row| row.sent_us).max().unwrap_or(0);
    let mut next_row = 0;
    let mut feedback: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut estimates = Vec::new();
    let mut now_us = 0;
    while now_us <= end_us + 500_000 {
        let now = at(now_us);
        while let Some(row) = rows.get(next_row).filter(|row| row.sent_us <= now_us) {
            let probe = row.probe.map(ProbeClusterId);
            let seq = history.on_send(at(row.sent_us), row.size, probe);
            if let Some(arrival_us) = row.arrival_us {
                let index = arrivals.partition_point(|&(us, _)| us <= arrival_us);
                arrivals.insert(index, (arrival_us, seq));
            }
            next_row += 1;
        }
        let arrived = arrivals.partition_point(|&(us, _)| us <= now_us);
        for (arrival_us, seq) in arrivals.drain(..arrived) {
            generator.record(at(arrival_us), seq);
        }
        if generator.poll_timeout().is_some_and(|due| due <= now) {
            generator.poll(now, |bytes| feedback.push_back((now + return_delay, bytes.to_vec())));
        }
        while feedback.front().is_some_and(|(when, _)| *when <= now) {
            let (_, bytes) = feedback.pop_front().unwrap();
            feed(&mut estimator, now, &mut history, &bytes);
        }
        estimator.handle_timeout(now, &history);
        if now_us % 500_000 == 0 {
            estimates.push(estimator.estimate());
        }
        now_us += 1000;
    }
    estimates
}

/// A 1 Mbit/s link from a start at 300 kbit/s, 6 s.
const RAMP_TRACE: &str = include_str!("traces/ramp_1mbps.txt");
/// A 1 Mbit/s link that drops to 300 kbit/s at 3 s, 6 s.
const DROP_TRACE: &str = include_str!("traces/drop_1mbps_to_300kbps.txt");

/// Records the traces above from the simulator. Run by hand after changing the estimator
/// on purpose (`cargo test -p uprtcd-dataplane --lib record_traces -- --ignored`), then
/// check the replay bounds still say what they should.
#[test]
#[ignore = "rewrites the trace fixtures"]
fn record_traces() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bwe/traces/");
    let mut sim = Sim::new(300 * KBPS, MBPS, 5 * MBPS);
    sim.link.queue_bytes = 20_000;
    sim.run_for(Duration::from_secs(6));
    let header = "# uprtcd bwe simulator trace: 1 Mbit/s link, 40 ms base delay, start 300 kbit/s\n# sent_us size probe arrival_us\n";
    std::fs::write(format!("{dir}ramp_1mbps.txt"), format!("{header}{}", write_trace(&sim.trace))).unwrap();
    let mut sim = Sim::new(300 * KBPS, MBPS, 5 * MBPS);
    sim.link.queue_bytes = 20_000;
    sim.run_for(Duration::from_secs(3));
    sim.link.rate_bps = 300 * KBPS;
    sim.run_for(Duration::from_secs(3));
    let header = "# uprtcd bwe simulator trace: 1 Mbit/s link dropping to 300 kbit/s at 3 s, 40 ms base delay\n# sent_us size probe arrival_us\n";
    std::fs::write(format!("{dir}drop_1mbps_to_300kbps.txt"), format!("{header}{}", write_trace(&sim.trace))).unwrap();
}

#[test]
fn traces_parse_back_as_written() {
    let rows = read_trace(RAMP_TRACE);
    assert!(rows.len() > 300);
    let text: String =
        RAMP_TRACE.lines().filter(|line| !line.starts_with('#')).map(|line| format!("{line}\n")).collect();
    assert_eq!(write_trace(&rows), text);
}

#[test]
fn replayed_ramp_trace_climbs_toward_the_link() {
    let estimates = replay(&read_trace(RAMP_TRACE), 300 * KBPS, Duration::from_millis(40));
    let after_3s = &estimates[6..];
    assert!(after_3s.iter().all(|&bps| (600 * KBPS..=1_500 * KBPS).contains(&bps)), "{estimates:?}");
    assert!(*estimates.last().unwrap() >= 700 * KBPS, "{estimates:?}");
}

#[test]
fn replayed_drop_trace_follows_the_drop() {
    let estimates = replay(&read_trace(DROP_TRACE), 300 * KBPS, Duration::from_millis(40));
    // Up toward 1 Mbit/s before the drop at 3 s, below 450 kbit/s 2 s after it.
    assert!(estimates[5] >= 600 * KBPS, "{estimates:?}");
    assert!(estimates[10..].iter().all(|&bps| bps <= 450 * KBPS), "{estimates:?}");
}
