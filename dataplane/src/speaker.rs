//! Dominant speaker detection for one room: which of its audio streams the others are
//! listening to, judged from the RFC 6464 audio levels its packets carry (no decoding).
//!
//! What it owns: per stream (at most [`MAX_STREAMS`]), the level counts of the decision
//! interval under way and of the last [`WINDOW_INTERVALS`] closed ones; the current speaker
//! and a challenger's winning streak. Sans-IO: time is an argument, nothing here reads a
//! clock; after [`DominantSpeaker::new`] only a stream's first packet may allocate.
//!
//! Rules for callers (the engine keeps one detector per room group):
//! - [`DominantSpeaker::record`] for every audio packet whose audio level element parsed,
//!   with the stream's key (its dense handle). It is O(1) and never fails; packets of
//!   streams beyond the cap are counted in [`DominantSpeaker::refused_packets`].
//! - [`DominantSpeaker::poll`] at or after [`DominantSpeaker::poll_timeout`]; it returns the
//!   new speaker when the role changes hands, at most once per [`DECISION_INTERVAL`]. Packets
//!   recorded late go into the interval still open, so poll on time (one loop turn late is
//!   harmless).
//! - [`DominantSpeaker::remove`] when a stream ends. The role does not pass to anyone on
//!   its account: [`DominantSpeaker::speaker`] is `None` until somebody talks, and `poll`
//!   reports that somebody. The same holds for a speaker that sent nothing for
//!   [`SILENT_STREAM_TIMEOUT`]; should it talk again, `poll` reports it again.
//! - Time going backwards is tolerated (the late calls count as now), not corrected.
//!
//! The algorithm, a simplified form of Volfin and Cohen's ("Dominant speaker identification
//! for multipoint videoconferencing", 2013, as Jitsi uses it): three time scales.
//! - Immediate, per packet: a packet is speech when its level is louder than
//!   [`SPEECH_LEVEL_DBOV`]; it scores 100 − level points (51 to 100, so loudness weighs at
//!   most twice), plus [`VOICE_BONUS`] with the V flag, which only breaks near-ties
//!   because most senders leave it clear. Other packets score 0, the V flag
//!   notwithstanding: a voice detector's guess at −60 dBov is no one to listen to.
//! - Medium, per stream over the last [`WINDOW_INTERVALS`] closed intervals of
//!   [`DECISION_INTERVAL`] (one second): its activity, the share of its packets that were
//!   speech, and its score, the mean points of its packets; both averaged per interval,
//!   so the packet rate (20 or 60 ms frames, DTX) does not count. A stream that sent
//!   nothing in an interval has 0 for it.
//! - Long, the decision at each interval's close: the challenger is the best-scoring other
//!   stream whose activity reaches [`CHALLENGE_ACTIVITY`] (a 300 ms cough cannot: it fills
//!   at most 30% of a one-second window). It wins the interval when there is no speaker, or
//!   when the speaker's activity is below [`HOLD_ACTIVITY`] (no longer clearly talking) and
//!   the challenger outscores it by [`SWITCH_MARGIN`]. The same challenger must win
//!   [`CONFIRM_INTERVALS`] intervals in a row to take the role. Two people talking over each
//!   other therefore do not swap it (the speaker holds while active), and silence changes
//!   nothing (nobody challenges). After a clean hand-over, the new talker takes the role
//!   0.8 s after starting; the first talker of a room 0.6 s after.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::wire::audio_level::AudioLevel;

/// Streams one detector follows; packets of others are counted and ignored. A room's audio
/// publishers beyond this many are an audience, not speakers.
pub const MAX_STREAMS: usize = 64;
/// How often the detector decides: the role changes hands at most this often.
pub const DECISION_INTERVAL: Duration = Duration::from_millis(200);
/// Closed intervals a stream's activity and score average over: one second, long enough to
/// outlast a cough, short enough to follow a conversation.
pub const WINDOW_INTERVALS: usize = 5;
/// Levels below this (louder than −50 dBov) are speech. Chromium's speech sits at 20 to 40,
/// room noise above 60.
pub const SPEECH_LEVEL_DBOV: u8 = 50;
/// Points the V flag adds to a speech packet.
pub const VOICE_BONUS: u32 = 10;
/// Activity a challenger needs, in per mille: speech in 40% of its packets over the window.
pub const CHALLENGE_ACTIVITY: u32 = 400;
/// Activity at which the speaker holds the role against any challenger, in per mille.
pub const HOLD_ACTIVITY: u32 = 500;
/// How much a challenger must outscore a speaker who is not holding: 3/2 of its score.
pub const SWITCH_MARGIN: (u32, u32) = (3, 2);
/// Intervals in a row the same challenger must win.
pub const CONFIRM_INTERVALS: u8 = 2;
/// A speaker that sent no packet for this long loses the role (a stream that ended without
/// a `remove`, or was muted without DTX).
pub const SILENT_STREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Points of a packet's level (see the module documentation).
fn points(level: AudioLevel) -> u32 {
    if level.level_dbov >= SPEECH_LEVEL_DBOV {
        return 0;
    }
    let loudness = 100 - u32::from(level.level_dbov);
    if level.voice { loudness + VOICE_BONUS } else { loudness }
}

/// One stream's counts.
#[derive(Debug, Clone)]
struct Stream {
    /// Order of arrival: ties go to the stream known longest, the same way every time.
    ordinal: u64,
    last_packet: Instant,
    /// The open interval's packets, speech packets and points.
    packets: u32,
    speech: u32,
    points: u32,
    /// Per closed interval, activity in per mille and score in points per packet; slot
    /// `next` is overwritten next, so the array holds the last [`WINDOW_INTERVALS`].
    activity: [u32; WINDOW_INTERVALS],
    score: [u32; WINDOW_INTERVALS],
    next: usize,
}

impl Stream {
    fn new(ordinal: u64, now: Instant) -> Self {
        Self {
            ordinal,
            last_packet: now,
            packets: 0,
            speech: 0,
            points: 0,
            activity: [0; WINDOW_INTERVALS],
            score: [0; WINDOW_INTERVALS],
            next: 0,
        }
    }

    fn record(&mut self, now: Instant, level: AudioLevel) {
        let points = points(level);
        // Saturating: a flood of packets in one interval must not wrap into silence.
        self.packets = self.packets.saturating_add(1);
        self.speech = self.speech.saturating_add(u32::from(points > 0));
        self.points = self.points.saturating_add(points);
        self.last_packet = self.last_packet.max(now);
    }

    fn close_interval(&mut self) {
        let (activity, score) = match self.packets {
            0 => (0, 0),
            // `speech` never exceeds `packets`, so the share is at most 1,000.
            packets => ((u64::from(self.speech) * 1000 / u64::from(packets)) as u32, self.points / packets),
        };
        self.activity[self.next] = activity;
        self.score[self.next] = score;
        self.next = (self.next + 1) % WINDOW_INTERVALS;
        (self.packets, self.speech, self.points) = (0, 0, 0);
    }

    /// Mean activity over the window, per mille.
    fn activity(&self) -> u32 {
        self.activity.iter().sum::<u32>() / WINDOW_INTERVALS as u32
    }

    /// Summed score over the window (compared only with other sums).
    fn score(&self) -> u32 {
        self.score.iter().sum()
    }
}

/// The dominant speaker of one room. `K` is the caller's key of a stream.
#[derive(Debug, Clone)]
pub struct DominantSpeaker<K> {
    streams: HashMap<K, Stream>,
    next_ordinal: u64,
    /// When the open interval closes; `None` while no stream is known.
    interval_end: Option<Instant>,
    speaker: Option<K>,
    /// The challenger and the intervals in a row it has won.
    challenger: Option<(K, u8)>,
    /// The speaker `poll` last returned, so that it reports each change once.
    reported: Option<K>,
    refused_packets: u64,
}

impl<K: Copy + Eq + Hash> Default for DominantSpeaker<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash> DominantSpeaker<K> {
    /// A detector with room for [`MAX_STREAMS`] streams, allocated now.
    pub fn new() -> Self {
        Self {
            streams: HashMap::with_capacity(MAX_STREAMS),
            next_ordinal: 0,
            interval_end: None,
            speaker: None,
            challenger: None,
            reported: None,
            refused_packets: 0,
        }
    }

    /// Accounts one packet of stream `key`, received at `now`, with its parsed audio level.
    /// A stream's first packet makes it known, unless [`MAX_STREAMS`] already are.
    pub fn record(&mut self, now: Instant, key: K, level: AudioLevel) {
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.record(now, level);
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            self.refused_packets += 1;
            return;
        }
        let mut stream = Stream::new(self.next_ordinal, now);
        stream.record(now, level);
        self.streams.insert(key, stream);
        self.next_ordinal += 1;
        self.interval_end.get_or_insert(now + DECISION_INTERVAL);
    }

    /// Forgets stream `key`. If it was the speaker, nobody is until somebody talks.
    pub fn remove(&mut self, key: K) {
        if self.streams.remove(&key).is_none() {
            return;
        }
        if self.speaker == Some(key) {
            self.speaker = None;
        }
        if self.reported == Some(key) {
            self.reported = None;
        }
        if self.challenger.is_some_and(|(challenger, _)| challenger == key) {
            self.challenger = None;
        }
        if self.streams.is_empty() {
            self.interval_end = None;
        }
    }

    /// Forgets every stream `keep` says no to, as [`DominantSpeaker::remove`] does.
    pub fn retain(&mut self, keep: impl Fn(K) -> bool) {
        self.streams.retain(|&key, _| keep(key));
        let known = |key: Option<K>| key.filter(|k| self.streams.contains_key(k));
        self.speaker = known(self.speaker);
        self.reported = known(self.reported);
        self.challenger = self.challenger.filter(|(challenger, _)| self.streams.contains_key(challenger));
        if self.streams.is_empty() {
            self.interval_end = None;
        }
    }

    /// Closes the intervals that ended by `now`, deciding at each, and returns the speaker
    /// if it changed since the last report.
    pub fn poll(&mut self, now: Instant) -> Option<K> {
        let mut closed = 0;
        while let Some(end) = self.interval_end.filter(|&end| end <= now) {
            // After a window of empty intervals every stream's counts are zero and nothing
            // can change any more: a long stall (or a clock jump) costs no more than that.
            if closed > WINDOW_INTERVALS {
                self.interval_end = Some(now + DECISION_INTERVAL);
                break;
            }
            self.decide(end);
            self.interval_end = Some(end + DECISION_INTERVAL);
            closed += 1;
        }
        if self.speaker.is_some() && self.speaker != self.reported {
            self.reported = self.speaker;
            return self.speaker;
        }
        None
    }

    /// When [`DominantSpeaker::poll`] next has an interval to close; `None` while no stream
    /// is known.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.interval_end
    }

    /// The current speaker, if any.
    pub fn speaker(&self) -> Option<K> {
        self.speaker
    }

    /// Streams known.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is known.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Packets ignored because their stream came beyond [`MAX_STREAMS`].
    pub fn refused_packets(&self) -> u64 {
        self.refused_packets
    }

    /// Closes the interval that ended at `end` and runs one decision.
    fn decide(&mut self, end: Instant) {
        for stream in self.streams.values_mut() {
            stream.close_interval();
        }
        let holder = self.speaker.and_then(|key| self.streams.get(&key));
        if holder.is_some_and(|stream| end.saturating_duration_since(stream.last_packet) >= SILENT_STREAM_TIMEOUT) {
            self.speaker = None;
            self.reported = None;
        }
        let holder = self.speaker.and_then(|key| self.streams.get(&key));
        let best = self
            .streams
            .iter()
            .filter(|&(&key, stream)| Some(key) != self.speaker && stream.activity() >= CHALLENGE_ACTIVITY)
            .max_by_key(|&(_, stream)| (stream.score(), std::cmp::Reverse(stream.ordinal)));
        let winner = best.and_then(|(&key, challenger)| {
            let wins = holder.is_none_or(|holder| {
                let (more, than) = SWITCH_MARGIN;
                holder.activity() < HOLD_ACTIVITY && challenger.score() * than >= holder.score() * more
            });
            wins.then_some(key)
        });
        self.challenger = match (winner, self.challenger) {
            (Some(key), Some((previous, won))) if previous == key => Some((key, won.saturating_add(1))),
            (Some(key), _) => Some((key, 1)),
            (None, _) => None,
        };
        if let Some((key, won)) = self.challenger
            && won >= CONFIRM_INTERVALS
        {
            self.speaker = Some(key);
            self.challenger = None;
        }
    }
}

#[cfg(test)]
mod tests;
