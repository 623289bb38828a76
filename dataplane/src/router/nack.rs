//! Loss repair on the receiving end of a stream: which sequence numbers are missing, and
//! when to ask the sender for them again (RFC 4585 §6.2.1 generic NACK). Used for streams
//! that arrive over a node link, whose sending node answers from its retransmission cache;
//! browsers' streams are not NACKed here (their subscribers NACK the SFU instead).
//!
//! What it owns: the highest sequence number seen and a bounded list of the missing ones
//! newer than it saw, each with when it went missing, how often it was asked for and when
//! to ask next. Sans-IO: time is an argument; nothing allocates after [`NackGenerator::new`].
//!
//! Rules for callers: [`NackGenerator::received`] for every packet of the stream in arrival
//! order; [`NackGenerator::poll`] at or after [`NackGenerator::poll_timeout`] to get the
//! numbers to NACK now. A number is asked for at most [`MAX_NACK_TRIES`] times, a retry
//! interval apart, and not at all once it has been missing for [`NACK_GIVE_UP`]: a
//! subscriber that still misses it asks for a keyframe itself, as after any loss the SFU
//! could not repair.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::rewrite::seq_is_newer;

/// Missing packets one stream tracks at most; when more go missing, the oldest are given
/// up first. About half a second of a 4 Mbit/s video stream, the longest time a packet is
/// asked for.
pub const MAX_MISSING: usize = 256;
/// Times one missing packet is asked for.
pub const MAX_NACK_TRIES: u8 = 3;
/// How long after it went missing a packet is no longer asked for: by then a subscriber's
/// decoder has waited too long for it, and the sender's cache (1 s) may have dropped it.
pub const NACK_GIVE_UP: Duration = Duration::from_millis(500);
/// The retry interval before any repair measured the round trip, and the shortest one: a
/// retry sooner than the repair can come back would only cause a second copy.
const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(30);
/// The longest retry interval, so that a slow repair still leaves room for all tries
/// within [`NACK_GIVE_UP`].
const MAX_RETRY_INTERVAL: Duration = Duration::from_millis(160);
/// A jump ahead by more than this is the sender's restart, not loss (RFC 3550 A.1's
/// MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    /// When its absence was noticed.
    since: Instant,
    /// When it was last asked for, once it was.
    asked: Option<Instant>,
    tries: u8,
    /// When to ask for it (again).
    due: Instant,
}

/// The missing packets of one stream and when to NACK them.
#[derive(Debug, Clone)]
pub struct NackGenerator {
    highest: Option<u16>,
    /// Oldest first: numbers are added in sequence order.
    missing: VecDeque<Missing>,
    /// Smoothed time from a NACK to its repair (RFC 6298's SRTT, gain 1/8): the round trip
    /// to the sender and its turn, which retries wait for.
    repair_time: Option<Duration>,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl NackGenerator {
    pub fn new() -> Self {
        Self { highest: None, missing: VecDeque::with_capacity(MAX_MISSING), repair_time: None }
    }

    /// Accounts a packet that arrived at `now`. Returns whether it revealed missing ones,
    /// which are due to be asked for at once.
    pub fn received(&mut self, now: Instant, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return false;
        };
        if !seq_is_newer(seq, highest) {
            // Late: a repair, or reordered on the way; no longer missing either way.
            if let Some(index) = self.missing.iter().position(|m| m.seq == seq) {
                let found = self.missing.remove(index);
                if let Some(asked) = found.and_then(|m| m.asked) {
                    self.sample_repair_time(now.saturating_duration_since(asked));
                }
            }
            return false;
        }
        self.highest = Some(seq);
        let ahead = seq.wrapping_sub(highest);
        if ahead > MAX_DROPOUT {
            self.missing.clear();
            return false;
        }
        let gap = ahead - 1;
        // Only the newest of a gap wider than the list are asked for: the rest would be given
        // up first anyway.
        let tracked = gap.min(MAX_MISSING as u16);
        for lost in (0..tracked).rev().map(|back| seq.wrapping_sub(1 + back)) {
            if self.missing.len() == MAX_MISSING {
                self.missing.pop_front();
            }
            self.missing.push_back(Missing { seq: lost, since: now, asked: None, tries: 0, due: now });
        }
        gap > 0
    }

    fn sample_repair_time(&mut self, sample: Duration) {
        self.repair_time = Some(match self.repair_time {
            Some(smoothed) => (smoothed * 7 + sample) / 8,
            None => sample,
        });
    }

    /// How long to wait for a repair before asking again: the measured repair time with a
    /// margin for its variation, within bounds.
    fn retry_interval(&self) -> Duration {
        self.repair_time.map_or(MIN_RETRY_INTERVAL, |t| (t + t / 2).clamp(MIN_RETRY_INTERVAL, MAX_RETRY_INTERVAL))
    }

    /// The numbers to NACK at `now`, oldest first, handed to `emit` in one batch (none when
    /// nothing is due); gives up those asked for often or long enough.
    pub fn poll(&mut self, now: Instant, emit: impl FnOnce(&[u16])) {
        let retry = self.retry_interval();
        let mut due = [0u16; MAX_MISSING];
        let mut count = 0;
        self.missing.retain_mut(|m| {
            if now.saturating_duration_since(m.since) >= NACK_GIVE_UP {
                return false;
            }
            if m.due > now {
                return true;
            }
            // After its last try a number stays until its repair could have come (so that
            // the repair still counts towards the repair time), then goes.
            if m.tries >= MAX_NACK_TRIES {
                return false;
            }
            // At most MAX_MISSING entries: the batch has room for each.
            if let Some(slot) = due.get_mut(count) {
                *slot = m.seq;
                count += 1;
            }
            m.tries += 1;
            m.asked = Some(now);
            m.due = now + retry;
            true
        });
        if count > 0 {
            emit(&due[..count]);
        }
    }

    /// When [`NackGenerator::poll`] next has a number to ask for or to give up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.due.min(m.since + NACK_GIVE_UP)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A generator that saw `seqs` arrive at `t0`.
    fn having_seen(t0: Instant, seqs: &[u16]) -> NackGenerator {
        let mut generator = NackGenerator::new();
        for &seq in seqs {
            generator.received(t0, seq);
        }
        generator
    }

    fn polled(generator: &mut NackGenerator, now: Instant) -> Vec<u16> {
        let mut asked = Vec::new();
        generator.poll(now, |seqs| asked.extend_from_slice(seqs));
        asked
    }

    #[test]
    fn an_unbroken_stream_asks_for_nothing() {
        let t0 = Instant::now();
        let mut generator = NackGenerator::new();
        for seq in 65_530..=65_535u16 {
            assert!(!generator.received(t0, seq));
        }
        assert!(!generator.received(t0, 0), "across the wrap");
        assert_eq!(generator.poll_timeout(), None);
        assert!(polled(&mut generator, t0 + 100 * MS).is_empty());
    }

    #[test]
    fn a_gap_is_asked_for_at_once_then_retried_then_given_up() {
        let t0 = Instant::now();
        let mut generator = having_seen(t0, &[65_534]);
        assert!(generator.received(t0, 2), "65535, 0 and 1 are missing");
        assert_eq!(generator.poll_timeout(), Some(t0));
        assert_eq!(polled(&mut generator, t0), [65_535, 0, 1]);
        assert!(polled(&mut generator, t0 + 10 * MS).is_empty(), "not before the retry interval");
        assert_eq!(generator.poll_timeout(), Some(t0 + MIN_RETRY_INTERVAL));
        assert_eq!(polled(&mut generator, t0 + 30 * MS), [65_535, 0, 1]);
        assert_eq!(polled(&mut generator, t0 + 60 * MS), [65_535, 0, 1]);
        assert!(polled(&mut generator, t0 + 90 * MS).is_empty(), "{MAX_NACK_TRIES} tries at most");
        assert_eq!(generator.poll_timeout(), None, "forgotten");
    }

    #[test]
    fn a_repair_ends_the_asking_and_times_the_retries() {
        let t0 = Instant::now();
        let mut generator = having_seen(t0, &[10, 13]);
        assert_eq!(polled(&mut generator, t0), [11, 12]);
        assert!(!generator.received(t0 + 100 * MS, 11), "a repair reveals nothing");
        assert_eq!(polled(&mut generator, t0 + 100 * MS), [12], "overdue");
        // From now on retries wait the time 11's repair took, and a half.
        assert!(polled(&mut generator, t0 + 249 * MS).is_empty());
        assert_eq!(polled(&mut generator, t0 + 250 * MS), [12]);
        generator.received(t0 + 260 * MS, 12);
        assert_eq!(generator.poll_timeout(), None);
    }

    #[test]
    fn a_number_missing_too_long_is_not_asked_for() {
        let t0 = Instant::now();
        let mut generator = having_seen(t0, &[1, 3]);
        assert_eq!(generator.poll_timeout(), Some(t0));
        // The worker came back to it late.
        assert!(polled(&mut generator, t0 + NACK_GIVE_UP).is_empty());
        assert_eq!(generator.poll_timeout(), None);
    }

    #[test]
    fn the_list_is_bounded_and_keeps_the_newest() {
        let t0 = Instant::now();
        let mut generator = having_seen(t0, &[0, 1001]);
        let asked = polled(&mut generator, t0);
        assert_eq!(asked.len(), MAX_MISSING);
        assert_eq!((asked[0], asked[MAX_MISSING - 1]), (1001 - MAX_MISSING as u16, 1000));
        generator.received(t0, 1003);
        let asked = polled(&mut generator, t0 + 30 * MS);
        assert_eq!(asked.len(), MAX_MISSING, "the oldest made room for 1002");
        assert_eq!(asked[MAX_MISSING - 1], 1002);
    }

    #[test]
    fn a_jump_past_the_dropout_limit_is_a_restart_not_loss() {
        let t0 = Instant::now();
        let mut generator = having_seen(t0, &[100, 102]);
        assert!(!generator.received(t0, 102 + MAX_DROPOUT + 1));
        assert_eq!(generator.poll_timeout(), None, "what was missing before the restart is forgotten too");
    }
}
