//! The receiving end of transport-wide congestion control, for one publisher transport:
//! records when each packet with a transport-wide sequence number arrived and writes the
//! transport feedback that reports it, so that the publisher's browser estimates its
//! bandwidth toward us with its own send-side estimator.
//!
//! What it owns: a fixed window of arrival times indexed by the unwrapped sequence number,
//! from the first packet not yet reported to the newest one seen, and a buffer one feedback
//! packet is written into. Nothing allocates after [`FeedbackGenerator::new`].
//!
//! Rules for callers: [`FeedbackGenerator::record`] for every packet that carries the
//! extension, in arrival order; [`FeedbackGenerator::poll`] at or after
//! [`FeedbackGenerator::poll_timeout`], sending each packet it emits as RTCP (SRTCP-protected)
//! to the publisher. A packet that arrives after its number was reported is not reported
//! again (counted as late): the sender has already taken it for lost.

use std::time::{Duration, Instant};

use super::micros_since;
use crate::wire::rtcp::{REFERENCE_TICK_US, write_transport_feedback};

/// How often feedback is sent while packets arrive: libwebrtc's default, about 5 % of a
/// 300 kbit/s stream and far less of a faster one.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
/// Packets awaiting report that make feedback due before the interval: so that one packet
/// stays small and a fast stream's sender learns of queueing sooner.
const SEND_AFTER_PACKETS: usize = 100;
/// Sequence numbers the window spans at most: 2 s at 1000 packets/s, twenty feedback
/// intervals. When a gap stretches it further, the oldest numbers go unreported.
const WINDOW: usize = 2048;
/// A jump by more than this (ahead or back) is the sender restarting its numbering, not
/// loss or reordering: the window starts afresh rather than reporting thousands lost.
const MAX_JUMP: u64 = 0x4000;
/// Room for one feedback packet: within any path MTU after SRTCP's overhead.
const MAX_FEEDBACK_LEN: usize = 1200;
/// Feedback packets one poll writes at most, so one turn of the loop does bounded work;
/// the rest goes at the next poll.
const MAX_FEEDBACK_PER_POLL: usize = 4;
/// Unwrapped numbers start here so that a packet reordered back past the first one never
/// unwraps below zero.
const UNWRAP_ORIGIN: u64 = 1 << 16;

/// What [`FeedbackGenerator`] ignored or gave up, and what it sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackCounters {
    /// Feedback packets written.
    pub feedback_sent: u64,
    /// Packets recorded twice (the first arrival counts).
    pub duplicates: u64,
    /// Packets that arrived after their number was reported.
    pub late: u64,
    /// Jumps past `MAX_JUMP` that restarted the window.
    pub resets: u64,
    /// Numbers dropped unreported because the window was full.
    pub overflowed: u64,
}

/// Transport feedback for the packets of one publisher transport.
#[derive(Debug, Clone)]
pub struct FeedbackGenerator {
    sender_ssrc: u32,
    media_ssrc: u32,
    /// The clock arrival times count from: the first packet's arrival.
    epoch: Option<Instant>,
    /// Arrival in µs after `epoch` of the unwrapped number `n`, at `n % WINDOW`; `None`
    /// for numbers not (yet) received and for every slot outside the window.
    arrivals: Box<[Option<i64>]>,
    /// The first number not reported yet.
    start: u64,
    /// One past the newest number received: the window is `start..end`.
    end: u64,
    /// Received packets in the window.
    pending: usize,
    /// When the next periodic feedback is due.
    next_due: Option<Instant>,
    /// When enough packets were pending to send without waiting for the interval.
    urgent_since: Option<Instant>,
    feedback_count: u8,
    buf: [u8; MAX_FEEDBACK_LEN],
    counters: FeedbackCounters,
}

impl FeedbackGenerator {
    /// A generator whose feedback names us as `sender_ssrc` and the publisher's
    /// `media_ssrc` (any of its streams: the field only addresses the transport).
    pub fn new(sender_ssrc: u32, media_ssrc: u32) -> Self {
        Self {
            sender_ssrc,
            media_ssrc,
            epoch: None,
            arrivals: vec![None; WINDOW].into_boxed_slice(),
            start: 0,
            end: 0,
            pending: 0,
            next_due: None,
            urgent_since: None,
            feedback_count: 0,
            buf: [0; MAX_FEEDBACK_LEN],
            counters: FeedbackCounters::default(),
        }
    }

    /// Names `ssrc` as the media stream of the feedback from now on, unless one is named
    /// already. Browsers drop transport feedback whose media SSRC is none of their streams
    /// (libwebrtc's RTCP receiver checks it), so the field, though about the transport, must
    /// name one of the publisher's.
    pub fn name_media(&mut self, ssrc: u32) {
        if self.media_ssrc == 0 {
            self.media_ssrc = ssrc;
        }
    }

    /// Records that the packet with transport-wide sequence number `seq` arrived at `now`.
    pub fn record(&mut self, now: Instant, seq: u16) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_us = micros_since(epoch, now);
        let seq = if self.end == 0 {
            self.restart(UNWRAP_ORIGIN + u64::from(seq));
            UNWRAP_ORIGIN + u64::from(seq)
        } else {
            let newest = self.end - 1;
            // The unwrapped number nearest to the newest: at most 2^15 either side of it.
            let offset = i64::from(seq.wrapping_sub(newest as u16) as i16);
            newest.saturating_add_signed(offset)
        };
        if seq >= self.end {
            if seq - (self.end - 1) > MAX_JUMP {
                self.counters.resets += 1;
                self.restart(seq);
            }
            self.extend_to(seq);
        } else if seq < self.start {
            if self.start - seq > MAX_JUMP {
                self.counters.resets += 1;
                self.restart(seq);
                self.extend_to(seq);
            } else {
                self.counters.late += 1;
                return;
            }
        }
        let slot = &mut self.arrivals[seq as usize % WINDOW];
        if slot.is_some() {
            self.counters.duplicates += 1;
            return;
        }
        *slot = Some(arrival_us);
        self.pending += 1;
        self.next_due.get_or_insert(now + FEEDBACK_INTERVAL);
        if self.pending >= SEND_AFTER_PACKETS {
            self.urgent_since.get_or_insert(now);
        }
    }

    /// Forgets the window; the next number is `seq`.
    fn restart(&mut self, seq: u64) {
        self.arrivals.fill(None);
        self.pending = 0;
        self.start = seq;
        self.end = seq;
    }

    /// Makes the window end after `seq`, dropping the oldest numbers if it would span more
    /// than [`WINDOW`].
    fn extend_to(&mut self, seq: u64) {
        let new_start = (seq + 1).saturating_sub(WINDOW as u64).max(self.start);
        // Slots from `end` on are empty already; only the window's part needs clearing.
        for dropped in self.start..new_start.min(self.end) {
            if self.arrivals[dropped as usize % WINDOW].take().is_some() {
                self.pending -= 1;
            }
        }
        self.counters.overflowed += new_start - self.start;
        self.start = new_start;
        self.end = seq + 1;
    }

    /// Writes the feedback due at `now`, handing each packet to `emit`.
    pub fn poll(&mut self, now: Instant, mut emit: impl FnMut(&[u8])) {
        let due = self.next_due.is_some_and(|due| due <= now) || self.urgent_since.is_some();
        if self.pending == 0 || !due {
            return;
        }
        for _ in 0..MAX_FEEDBACK_PER_POLL {
            if self.pending == 0 {
                break;
            }
            // The window as one slice of the ring: where it wraps, the part up to the ring's
            // end goes in one packet and the rest in the next.
            let from = self.start as usize % WINDOW;
            let len = ((self.end - self.start) as usize).min(WINDOW - from);
            let arrivals = &self.arrivals[from..from + len];
            // The window ends with a received packet, and a part that wraps holds one too
            // unless it is all lost, which is then reported against any reference time.
            let first_arrival = arrivals.iter().flatten().next().copied().unwrap_or(0);
            // Under 2^31 reference ticks until 4 000 years after the epoch.
            let reference_time = first_arrival.div_euclid(REFERENCE_TICK_US) as i32;
            let written = write_transport_feedback(
                &mut self.buf,
                self.sender_ssrc,
                self.media_ssrc,
                self.start as u16,
                self.feedback_count,
                reference_time,
                arrivals,
            );
            let covered = match written {
                Ok(written) => {
                    emit(&self.buf[..written.len]);
                    self.feedback_count = self.feedback_count.wrapping_add(1);
                    self.counters.feedback_sent += 1;
                    written.covered
                }
                // The buffer holds any first packet, whose delta from a reference time taken
                // from its own arrival fits: neither error can occur. Dropping what cannot be
                // written keeps the window moving if one ever did.
                Err(_) => len,
            };
            for reported in self.start..self.start + covered as u64 {
                if self.arrivals[reported as usize % WINDOW].take().is_some() {
                    self.pending -= 1;
                }
            }
            self.start += covered as u64;
        }
        self.next_due = Some(now + FEEDBACK_INTERVAL);
        if self.pending < SEND_AFTER_PACKETS {
            self.urgent_since = None;
        }
    }

    /// When [`FeedbackGenerator::poll`] next has feedback to write, if packets await report.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending == 0 {
            return None;
        }
        match (self.next_due, self.urgent_since) {
            (Some(due), Some(urgent)) => Some(due.min(urgent)),
            (due, urgent) => due.or(urgent),
        }
    }

    /// What was ignored, given up and sent so far.
    pub fn counters(&self) -> FeedbackCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    const MS: Duration = Duration::from_millis(1);

    /// Every packet `poll` emits at `now`, as `(seq, arrival in µs after the epoch)`.
    fn reported(generator: &mut FeedbackGenerator, now: Instant) -> Vec<(u16, Option<i64>)> {
        let mut packets = Vec::new();
        generator.poll(now, |bytes| {
            let compound = RtcpCompound::new_checked(bytes).expect("feedback parses");
            for packet in compound.packets() {
                let RtcpPacket::TransportFeedback(feedback) = packet else { panic!("{packet:?}") };
                let reference_us = i64::from(feedback.reference_time()) * REFERENCE_TICK_US;
                packets.extend(feedback.packets().map(|(seq, arrival)| (seq, arrival.map(|us| us + reference_us))));
            }
        });
        packets
    }

    #[test]
    fn reports_arrivals_and_gaps_every_interval() {
        let t0 = Instant::now();
        let mut generator = FeedbackGenerator::new(1, 2);
        assert_eq!(generator.poll_timeout(), None);
        for (at, seq) in [(0, 65534), (1, 65535), (3, 1), (2, 0), (5, 4)] {
            generator.record(t0 + at * MS, seq);
        }
        assert_eq!(generator.poll_timeout(), Some(t0 + FEEDBACK_INTERVAL));
        assert!(reported(&mut generator, t0 + 50 * MS).is_empty(), "not due yet");
        assert_eq!(
            reported(&mut generator, t0 + FEEDBACK_INTERVAL),
            [
                (65534, Some(0)),
                (65535, Some(1000)),
                (0, Some(2000)),
                (1, Some(3000)),
                (2, None),
                (3, None),
                (4, Some(5000))
            ]
        );
        assert_eq!(generator.poll_timeout(), None);
        generator.record(t0 + 101 * MS, 3);
        assert_eq!(generator.counters().late, 1, "3 was reported lost already");
        generator.record(t0 + 102 * MS, 5);
        generator.record(t0 + 103 * MS, 5);
        assert_eq!(generator.counters().duplicates, 1);
        assert_eq!(generator.poll_timeout(), Some(t0 + 2 * FEEDBACK_INTERVAL));
        assert_eq!(reported(&mut generator, t0 + 2 * FEEDBACK_INTERVAL), [(5, Some(102_000))]);
        // Three: the first window wrapped the ring's end (65536 + 65534 is slot 2046 of 2048),
        // so it went out in two packets.
        assert_eq!(generator.counters().feedback_sent, 3);
    }

    #[test]
    fn many_pending_packets_make_feedback_due_at_once() {
        let t0 = Instant::now();
        let mut generator = FeedbackGenerator::new(1, 2);
        for seq in 0..SEND_AFTER_PACKETS as u16 {
            generator.record(t0 + MS, seq);
        }
        assert_eq!(generator.poll_timeout(), Some(t0 + MS));
        assert_eq!(reported(&mut generator, t0 + MS).len(), SEND_AFTER_PACKETS);
    }

    #[test]
    fn a_restart_of_the_numbering_resets_instead_of_reporting_losses() {
        let t0 = Instant::now();
        let mut generator = FeedbackGenerator::new(1, 2);
        generator.record(t0, 10);
        generator.record(t0 + MS, 10 + 0x5000);
        assert_eq!(generator.counters().resets, 1);
        assert_eq!(reported(&mut generator, t0 + FEEDBACK_INTERVAL), [(10 + 0x5000, Some(1000))]);
        // Far behind the new numbering: a restart again, not a late packet.
        generator.record(t0 + 2 * MS, 11);
        assert_eq!(generator.counters().resets, 2);
    }

    #[test]
    fn a_wide_gap_keeps_the_window_bounded() {
        let t0 = Instant::now();
        let mut generator = FeedbackGenerator::new(1, 2);
        generator.record(t0, 0);
        generator.record(t0 + MS, 3000);
        assert_eq!(generator.counters().overflowed, 3001 - WINDOW as u64);
        let packets = reported(&mut generator, t0 + FEEDBACK_INTERVAL);
        assert_eq!(packets.len(), WINDOW);
        assert_eq!(packets[0], (3001 - WINDOW as u16, None));
        assert_eq!(packets[WINDOW - 1], (3000, Some(1000)));
    }

    #[test]
    fn the_ring_wrap_splits_feedback_without_losing_packets() {
        let t0 = Instant::now();
        let mut generator = FeedbackGenerator::new(1, 2);
        let mut expected = Vec::new();
        // 30 rounds of 90 packets pass the ring's end (2048) once.
        for round in 0..30u16 {
            for i in 0..90u16 {
                let at_ms = u64::from(round) * 100 + u64::from(i);
                generator.record(t0 + Duration::from_millis(at_ms), round * 90 + i);
                expected.push((round * 90 + i, Some(at_ms as i64 * 1000)));
            }
            let now = t0 + FEEDBACK_INTERVAL * u32::from(round + 1);
            assert!(generator.poll_timeout().is_some_and(|due| due <= now));
            assert_eq!(reported(&mut generator, now), expected[usize::from(round) * 90..], "round {round}");
        }
    }
}
