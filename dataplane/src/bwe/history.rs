//! The sending end's record of transport-wide sequence numbers, for one subscriber
//! transport: which number each outgoing packet got, when it left, how big it was and
//! whether it was a probe, so that the subscriber's transport feedback can be matched.
//!
//! What it owns: the sequence number counter and a fixed ring of the last [`CAPACITY`]
//! packets sent. Nothing allocates after [`SendHistory::new`].
//!
//! Rules for callers: [`SendHistory::on_send`] for every RTP packet that leaves on the
//! transport, padding and retransmissions included, right before it is sent, writing the
//! number it returns into the packet's transport-wide sequence number extension. Feedback
//! reaches it only through [`crate::bwe::Estimator::on_feedback`].

use std::time::Instant;

use super::micros_since;
use super::probe::ProbeClusterId;

/// Packets remembered: 1 s at 1,000 packets/s (about 10 Mbit/s), seven at a 1 Mbit/s
/// subscriber's 150. Feedback comes every 50 to 250 ms, and feedback a second late is
/// treated as silence anyway; a bigger ring costs every subscriber its memory (32 bytes a
/// packet) and, at a thousand subscribers, cache misses on every copy.
pub(super) const CAPACITY: usize = 1024;
/// Unwrapped numbers start here so that unwrapping a report near the first packet never
/// goes below zero.
const UNWRAP_ORIGIN: u64 = 1 << 16;

/// What became of packets the history recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendHistoryCounters {
    /// Packets recorded.
    pub sent: u64,
    /// Packets overwritten in the ring before any feedback reported them.
    pub never_reported: u64,
}

/// How feedback has reported one packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    None,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The unwrapped sequence number; `u64::MAX` for a slot not used yet.
    seq: u64,
    /// Send time in µs after the history's epoch.
    sent_us: i64,
    size: u16,
    probe: Option<ProbeClusterId>,
    report: Report,
}

const EMPTY: Entry = Entry { seq: u64::MAX, sent_us: 0, size: 0, probe: None, report: Report::None };

/// A sent packet as feedback first reports it received, or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PacketResult {
    /// Send time in µs after the history's epoch.
    pub sent_us: i64,
    pub size: u16,
    pub probe: Option<ProbeClusterId>,
}

/// Transport-wide sequence numbers and what was sent under them, for one transport.
#[derive(Debug, Clone)]
pub struct SendHistory {
    epoch: Option<Instant>,
    ring: Box<[Entry]>,
    /// The unwrapped number the next packet gets.
    next_seq: u64,
    last_sent: Option<Instant>,
    counters: SendHistoryCounters,
}

impl Default for SendHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl SendHistory {
    /// An empty history whose first packet gets number 0.
    pub fn new() -> Self {
        Self {
            epoch: None,
            ring: vec![EMPTY; CAPACITY].into_boxed_slice(),
            next_seq: UNWRAP_ORIGIN,
            last_sent: None,
            counters: SendHistoryCounters::default(),
        }
    }

    /// Records a packet of `size` bytes (RTP header and payload) leaving at `now`, part of
    /// probe cluster `probe` if it is one, and returns its transport-wide sequence number.
    pub fn on_send(&mut self, now: Instant, size: usize, probe: Option<ProbeClusterId>) -> u16 {
        let epoch = *self.epoch.get_or_insert(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.ring[seq as usize % CAPACITY];
        if slot.seq != u64::MAX && slot.report == Report::None {
            self.counters.never_reported += 1;
        }
        *slot = Entry {
            seq,
            sent_us: micros_since(epoch, now),
            size: u16::try_from(size).unwrap_or(u16::MAX),
            probe,
            report: Report::None,
        };
        self.last_sent = Some(now);
        self.counters.sent += 1;
        seq as u16
    }

    /// When the last packet was sent.
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// What happened to the packets sent so far.
    pub fn counters(&self) -> SendHistoryCounters {
        self.counters
    }

    /// Whether a report of `count` packets from `base` names only packets sent and still
    /// remembered: the first unwrapped near the newest packet, the last not after it.
    pub(super) fn covers(&self, base: u16, count: u16) -> bool {
        let Some(first) = self.unwrap(base) else { return false };
        let last = first + u64::from(count) - 1;
        last < self.next_seq && first + CAPACITY as u64 >= self.next_seq
    }

    /// The number `seq` unwrapped next to the newest sent, if any was sent.
    fn unwrap(&self, seq: u16) -> Option<u64> {
        let newest = self.next_seq.checked_sub(1).filter(|&newest| newest >= UNWRAP_ORIGIN)?;
        let offset = i64::from(seq.wrapping_sub(newest as u16) as i16);
        Some(newest.saturating_add_signed(offset))
    }

    /// Takes a report of `seq` (`received` or lost). Returns the packet the first time it is
    /// reported, and again the first time it is reported received after being reported
    /// lost (the second report corrects the first); `None` for a packet not remembered.
    pub(super) fn report(&mut self, seq: u16, received: bool) -> Option<(PacketResult, bool)> {
        let seq = self.unwrap(seq)?;
        let entry = &mut self.ring[seq as usize % CAPACITY];
        if entry.seq != seq {
            return None;
        }
        let first = entry.report == Report::None;
        match (entry.report, received) {
            (Report::Received, _) | (Report::Lost, false) => return None,
            (_, true) => entry.report = Report::Received,
            (Report::None, false) => entry.report = Report::Lost,
        }
        Some((PacketResult { sent_us: entry.sent_us, size: entry.size, probe: entry.probe }, first))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn numbers_packets_and_matches_reports_once() {
        let t0 = Instant::now();
        let mut history = SendHistory::new();
        assert!(!history.covers(0, 1), "nothing sent");
        assert_eq!(history.on_send(t0, 1200, None), 0);
        assert_eq!(history.on_send(t0 + Duration::from_millis(1), 300, Some(ProbeClusterId(7))), 1);
        assert!(history.covers(0, 2));
        assert!(!history.covers(0, 3), "2 was not sent");
        assert!(!history.covers(0x8000, 1));
        let (first, is_first) = history.report(0, true).unwrap();
        assert_eq!((first, is_first), (PacketResult { sent_us: 0, size: 1200, probe: None }, true));
        assert_eq!(history.report(0, true), None, "reported twice");
        assert_eq!(history.report(1, false).map(|(p, first)| (p.probe, first)), Some((Some(ProbeClusterId(7)), true)));
        assert_eq!(history.report(1, false), None);
        assert_eq!(
            history.report(1, true).map(|(p, first)| (p.sent_us, first)),
            Some((1000, false)),
            "found after all"
        );
    }

    #[test]
    fn the_ring_forgets_old_packets_and_counts_those_never_reported() {
        let t0 = Instant::now();
        let mut history = SendHistory::new();
        for _ in 0..CAPACITY + 10 {
            history.on_send(t0, 100, None);
        }
        assert_eq!(history.counters().never_reported, 10);
        assert_eq!(history.report(5, true), None, "overwritten");
        assert!(!history.covers(5, 1));
        assert!(history.covers(10, 1));
        assert!(history.report(10, true).is_some());
    }
}
