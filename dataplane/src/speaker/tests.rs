//! Rooms in virtual time: each stream sends one packet per 20 ms frame, and the detector is
//! polled whenever its timeout says so.

use super::*;

/// Speech as Chromium measures it, with the V flag.
const TALK: AudioLevel = AudioLevel { voice: true, level_dbov: 30 };
/// What a muted or quiet microphone sends.
const SILENCE: AudioLevel = AudioLevel { voice: false, level_dbov: 127 };
const COUGH: AudioLevel = AudioLevel { voice: true, level_dbov: 5 };
const FRAME_MS: u64 = 20;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

struct Room {
    detector: DominantSpeaker<u32>,
    start: Instant,
    now: Instant,
    /// Each change `poll` reported, with when, counted from `start`.
    changes: Vec<(Duration, u32)>,
}

impl Room {
    fn new() -> Self {
        let start = Instant::now();
        Self { detector: DominantSpeaker::new(), start, now: start, changes: Vec::new() }
    }

    /// Sends the same level for each stream every frame for `millis`.
    fn run(&mut self, millis: u64, streams: &[(u32, AudioLevel)]) {
        self.run_varying(millis, |_| streams.to_vec());
    }

    /// Sends what `frame` says for each frame (numbered from 0) of `millis`.
    fn run_varying(&mut self, millis: u64, mut frame: impl FnMut(u64) -> Vec<(u32, AudioLevel)>) {
        for index in 0..millis / FRAME_MS {
            for (key, level) in frame(index) {
                self.detector.record(self.now, key, level);
            }
            self.now += ms(FRAME_MS);
            if self.detector.poll_timeout().is_some_and(|due| due <= self.now)
                && let Some(key) = self.detector.poll(self.now)
            {
                self.changes.push((self.now - self.start, key));
            }
        }
    }

    fn speakers(&self) -> Vec<u32> {
        self.changes.iter().map(|&(_, key)| key).collect()
    }
}

#[test]
fn one_talker_becomes_speaker_within_a_second() {
    let mut room = Room::new();
    room.run(3000, &[(1, TALK), (2, SILENCE)]);
    assert_eq!(room.speakers(), [1]);
    assert!(room.changes[0].0 <= ms(1000), "{:?}", room.changes);
    assert_eq!(room.detector.speaker(), Some(1));
}

#[test]
fn the_speaker_follows_a_conversation_once_per_turn() {
    let mut room = Room::new();
    for turn in 0..5 {
        let (talker, listener) = if turn % 2 == 0 { (1, 2) } else { (2, 1) };
        room.run(3000, &[(talker, TALK), (listener, SILENCE)]);
    }
    assert_eq!(room.speakers(), [1, 2, 1, 2, 1]);
    for (turn, &(at, _)) in (0..).zip(&room.changes) {
        let turn_start = ms(3000 * turn);
        assert!(at > turn_start && at <= turn_start + ms(1000), "turn {turn}: {:?}", room.changes);
    }
}

#[test]
fn a_cough_does_not_take_the_role() {
    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    // Over the speaker, then into a silence, starting mid-interval.
    room.run(300, &[(1, TALK), (2, COUGH)]);
    room.run(2700, &[(1, SILENCE), (2, SILENCE)]);
    room.run(300, &[(1, SILENCE), (2, COUGH)]);
    room.run(3000, &[(1, SILENCE), (2, SILENCE)]);
    assert_eq!(room.speakers(), [1]);
    assert_eq!(room.detector.speaker(), Some(1));
}

#[test]
fn silence_elects_nobody_and_keeps_the_last_speaker() {
    let mut room = Room::new();
    // A voice detector's guess at −60 dBov is not speech either.
    let murmur = AudioLevel { voice: true, level_dbov: 60 };
    room.run(5000, &[(1, SILENCE), (2, murmur)]);
    assert!(room.changes.is_empty());
    assert_eq!(room.detector.speaker(), None);

    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    room.run(5000, &[(1, SILENCE), (2, murmur)]);
    assert_eq!(room.speakers(), [1]);
    assert_eq!(room.detector.speaker(), Some(1));
}

/// Two people talking at once, at levels that wander independently between −15 and
/// −44 dBov: at most the first election, then no flips; the speaker holds against a
/// louder voice while it talks, and yields once it stops.
#[test]
fn talking_over_each_other_does_not_oscillate() {
    let wandering = |frame: u64| {
        let level = |step: u64| AudioLevel { voice: true, level_dbov: 15 + (frame * step % 30) as u8 };
        vec![(1, level(7)), (2, level(13))]
    };
    let mut room = Room::new();
    room.run_varying(5000, wandering);
    assert!(room.changes.len() <= 1, "{:?}", room.changes);

    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    room.run_varying(5000, wandering);
    // A quiet speaker holds even against a voice twice its score.
    let quiet = AudioLevel { voice: false, level_dbov: 45 };
    room.run(5000, &[(1, quiet), (2, COUGH)]);
    assert_eq!(room.speakers(), [1]);
    room.run(2000, &[(1, SILENCE), (2, TALK)]);
    assert_eq!(room.speakers(), [1, 2]);
}

#[test]
fn the_voice_flag_and_loudness_break_ties_then_seniority() {
    let unflagged = AudioLevel { voice: false, ..TALK };
    let mut room = Room::new();
    room.run(2000, &[(1, unflagged), (2, TALK)]);
    assert_eq!(room.speakers(), [2]);

    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, AudioLevel { level_dbov: 20, ..TALK })]);
    assert_eq!(room.speakers(), [2]);

    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, TALK)]);
    assert_eq!(room.speakers(), [1]);
}

#[test]
fn a_removed_stream_stops_being_speaker() {
    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    room.detector.remove(1);
    assert_eq!(room.detector.speaker(), None);
    room.run(2000, &[(2, SILENCE)]);
    assert_eq!(room.speakers(), [1]);
    room.run(2000, &[(2, TALK)]);
    assert_eq!(room.speakers(), [1, 2]);

    room.detector.remove(2);
    room.detector.remove(2);
    assert!(room.detector.is_empty());
    assert_eq!(room.detector.speaker(), None);
    assert_eq!(room.detector.poll_timeout(), None);
}

#[test]
fn a_speaker_that_stops_sending_decays_out() {
    let mut room = Room::new();
    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    // Its last packet went at 1.98 s; the interval closing at 4 s is the first 2 s after.
    room.run(1900, &[(2, SILENCE)]);
    assert_eq!(room.detector.speaker(), Some(1));
    room.run(300, &[(2, SILENCE)]);
    assert_eq!(room.detector.speaker(), None);
    room.run(2000, &[(1, TALK), (2, SILENCE)]);
    assert_eq!(room.speakers(), [1, 1]);
}

#[test]
fn streams_beyond_the_cap_are_counted_and_ignored() {
    let mut room = Room::new();
    let mut streams: Vec<(u32, AudioLevel)> = (0..70).map(|key| (key, SILENCE)).collect();
    room.run(1000, &streams);
    assert_eq!(room.detector.len(), MAX_STREAMS);
    assert_eq!(room.detector.refused_packets(), 6 * 1000 / FRAME_MS);

    streams[64].1 = TALK;
    room.run(2000, &streams);
    assert!(room.changes.is_empty());
    // A stream ends, and the first newcomer to send (64) takes its slot.
    room.detector.remove(0);
    streams.remove(0);
    room.run(2000, &streams);
    assert_eq!(room.speakers(), [64]);
    assert_eq!(room.detector.len(), MAX_STREAMS);
}

#[test]
fn poll_decides_once_per_interval() {
    let start = Instant::now();
    let mut detector = DominantSpeaker::new();
    assert_eq!(detector.poll_timeout(), None);
    assert_eq!(detector.poll(start), None);
    detector.record(start, 1, TALK);
    assert_eq!(detector.poll_timeout(), Some(start + DECISION_INTERVAL));
    detector.poll(start + ms(199));
    assert_eq!(detector.poll_timeout(), Some(start + DECISION_INTERVAL));
    detector.poll(start + ms(200));
    assert_eq!(detector.poll_timeout(), Some(start + ms(400)));
    detector.poll(start + ms(200));
    assert_eq!(detector.poll_timeout(), Some(start + ms(400)));
}

#[test]
fn time_going_backwards_or_leaping_does_not_panic() {
    let start = Instant::now();
    let at = |millis| start + ms(millis);
    let mut detector = DominantSpeaker::new();
    detector.record(at(5000), 1, TALK);
    detector.record(at(100), 1, TALK);
    detector.record(at(0), 2, TALK);
    assert_eq!(detector.poll(at(0)), None);
    detector.poll(at(6000));
    detector.poll(at(50));
    detector.record(at(10), 1, COUGH);
    detector.poll(at(5500));

    // An hour's stall costs a window's worth of intervals, and the next one is due after it.
    let hour = at(3_600_000);
    detector.poll(hour);
    assert!(detector.poll_timeout().is_some_and(|due| due > hour));

    let mut elected = None;
    for frame in 0..100 {
        let now = hour + ms(FRAME_MS * frame);
        detector.record(now, 2, TALK);
        elected = elected.or(detector.poll(now));
    }
    assert_eq!(elected, Some(2));
}

#[test]
fn points_weigh_loudness_and_the_voice_flag() {
    assert_eq!(points(AudioLevel { voice: false, level_dbov: 127 }), 0);
    assert_eq!(points(AudioLevel { voice: true, level_dbov: SPEECH_LEVEL_DBOV }), 0);
    assert_eq!(points(AudioLevel { voice: false, level_dbov: SPEECH_LEVEL_DBOV - 1 }), 51);
    assert_eq!(points(AudioLevel { voice: false, level_dbov: 0 }), 100);
    assert_eq!(points(AudioLevel { voice: true, level_dbov: 0 }), 100 + VOICE_BONUS);
    // Levels above 127 cannot come from the parser, but the fields are public.
    assert_eq!(points(AudioLevel { voice: true, level_dbov: 255 }), 0);
}

#[test]
fn retained_streams_stay_and_the_others_go_with_their_role() {
    let mut detector = DominantSpeaker::new();
    let t0 = Instant::now();
    for frame in 0..100u64 {
        let now = t0 + ms(frame * FRAME_MS);
        detector.record(now, 1u32, TALK);
        detector.record(now, 2u32, SILENCE);
        detector.poll(now);
    }
    assert_eq!(detector.speaker(), Some(1));
    detector.retain(|key| key == 2);
    assert_eq!((detector.speaker(), detector.len()), (None, 1), "the speaker's stream ended");
    detector.retain(|_| false);
    assert!(detector.is_empty() && detector.poll_timeout().is_none());
}
