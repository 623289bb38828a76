//! The numbers a renumbered stream left out: a consumer that drops packets (frames of a
//! temporal layer its subscriber does not get) numbers the packets after them on without a
//! gap, so each kept number moves back by the count of numbers skipped before it. This
//! module remembers recent skips so that a late packet, a NACK or a retransmission of a
//! packet from before them still maps to the number it was (or would have been) sent as.
//!
//! What it owns: a fixed ring of the newest runs of skipped numbers on one circle (16-bit
//! RTP sequence numbers, 15-bit VP8 picture ids), and where its memory ends. Rules for
//! callers: record a skip only for a number newer than every number the stream numbered
//! so far (a skip further back would move numbers already sent); ask only about numbers
//! of the same stream, and pass the newest number seen, which bounds how far back an
//! answer can be trusted. Nothing allocates: the ring is part of the value.
#![forbid(unsafe_code)]

/// Runs of skipped numbers remembered. A run is a stretch of consecutive skipped numbers:
/// one dropped frame's packets, or one stretch of dropped pictures between two kept ones,
/// so there are at most as many runs a second as kept frames (30 at 60 frames a second
/// with every other frame dropped). 32 runs reach back a second at that rate, as far as
/// the retransmission cache answers NACKs ([`super::RouterConfig::cache_max_age`]); a
/// number from before the oldest run remembered is refused rather than misnumbered.
pub const SKIP_RUNS: usize = 32;

/// A stretch of skipped numbers: `len` numbers from `first` on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Run {
    first: u16,
    len: u16,
}

/// What a number's place is among the skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Kept, with this many numbers skipped after it: its output is that much further
    /// from the newest output than its input is from the newest input.
    Kept { skipped_after: u16 },
    /// Left out: it has no output.
    Skipped,
    /// Too old to tell how many numbers after it were skipped.
    Unknown,
}

/// Recent skips on a circle of `mask + 1` numbers.
#[derive(Debug, Clone)]
pub struct SkipLog {
    /// Ring of runs, oldest at `head`; consecutive runs are in circle order with kept
    /// numbers between them.
    runs: [Run; SKIP_RUNS],
    head: usize,
    len: usize,
    /// The last number of the newest run pushed out of the ring: numbers up to it cannot be
    /// placed any more.
    forgotten: Option<u16>,
    mask: u16,
}

impl SkipLog {
    /// A log of 16-bit RTP sequence numbers.
    pub fn sequence_numbers() -> Self {
        Self::with_mask(u16::MAX)
    }

    /// A log of 15-bit VP8 picture ids.
    pub fn picture_ids() -> Self {
        Self::with_mask(0x7FFF)
    }

    fn with_mask(mask: u16) -> Self {
        Self { runs: [Run::default(); SKIP_RUNS], head: 0, len: 0, forgotten: None, mask }
    }

    /// Forgets every skip: the stream starts a new numbering.
    pub fn clear(&mut self) {
        self.len = 0;
        self.forgotten = None;
    }

    /// Whether nothing was skipped since the last clear (the common case, answered fast).
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.forgotten.is_none()
    }

    /// How far back from the newest number an answer is trusted: a quarter of the circle, so
    /// that "older" and "newer" never flip between a question and the skips it looks at.
    fn window(&self) -> u16 {
        (self.mask >> 2) + 1
    }

    fn distance(&self, newer: u16, older: u16) -> u16 {
        newer.wrapping_sub(older) & self.mask
    }

    /// Whether `a` comes after `b` on the circle.
    fn is_newer(&self, a: u16, b: u16) -> bool {
        let d = self.distance(a, b);
        d != 0 && d <= self.mask >> 1
    }

    fn run(&self, from_newest: usize) -> Run {
        self.runs[(self.head + self.len - 1 - from_newest) % SKIP_RUNS]
    }

    fn last_of(&self, run: Run) -> u16 {
        run.first.wrapping_add(run.len - 1) & self.mask
    }

    /// Records that `number`, newer than every number numbered so far, is left out.
    pub fn skip(&mut self, number: u16) {
        let number = number & self.mask;
        if self.len > 0 {
            let newest_at = (self.head + self.len - 1) % SKIP_RUNS;
            let newest = self.runs[newest_at];
            if !self.is_newer(number, self.last_of(newest)) {
                // Recorded already (or out of order, against the rules): the ring stays sorted.
                return;
            }
            // A run never spans more than the trusted window, so its length cannot wrap.
            if self.distance(number, self.last_of(newest)) == 1 && newest.len < self.window() {
                self.runs[newest_at].len += 1;
                return;
            }
        }
        if self.len == SKIP_RUNS {
            let oldest = self.runs[self.head];
            self.forgotten = Some(self.last_of(oldest));
            self.head = (self.head + 1) % SKIP_RUNS;
            self.len -= 1;
        }
        self.runs[(self.head + self.len) % SKIP_RUNS] = Run { first: number, len: 1 };
        self.len += 1;
    }

    /// Where `number` stands, `newest` being the newest number the stream has seen.
    pub fn place(&self, number: u16, newest: u16) -> Place {
        if self.is_empty() {
            return Place::Kept { skipped_after: 0 };
        }
        let number = number & self.mask;
        if self.distance(newest, number) >= self.window() {
            return Place::Unknown;
        }
        let mut skipped_after = 0u16;
        for from_newest in 0..self.len {
            let run = self.run(from_newest);
            if self.is_newer(number, self.last_of(run)) || self.too_old(run, newest) {
                return Place::Kept { skipped_after };
            }
            if !self.is_newer(run.first, number) {
                return Place::Skipped;
            }
            skipped_after += run.len;
        }
        self.kept_unless_forgotten(number, newest, skipped_after)
    }

    /// The kept number whose output is `output_distance` behind the newest output, counted
    /// as input numbers: `newest_input - output_distance` when nothing was skipped since.
    /// The inverse of [`SkipLog::place`]: `candidate` is the newest input number minus
    /// that distance, and each run it reaches pushes it back by the run's length.
    pub fn kept_at(&self, candidate: u16, newest: u16) -> Option<u16> {
        if self.is_empty() {
            return Some(candidate);
        }
        let mut number = candidate & self.mask;
        let mut skipped_after = 0u16;
        for from_newest in 0..self.len {
            let run = self.run(from_newest);
            if self.distance(newest, number) >= self.window() {
                return None;
            }
            if self.is_newer(number, self.last_of(run)) || self.too_old(run, newest) {
                return Some(number);
            }
            number = number.wrapping_sub(run.len) & self.mask;
            skipped_after += run.len;
        }
        if self.distance(newest, number) >= self.window() {
            return None;
        }
        match self.kept_unless_forgotten(number, newest, skipped_after) {
            Place::Kept { .. } => Some(number),
            _ => None,
        }
    }

    /// Whether `run` lies wholly outside the trusted window behind `newest`: every number
    /// asked about is newer than it.
    fn too_old(&self, run: Run, newest: u16) -> bool {
        self.distance(newest, self.last_of(run)) >= self.window()
    }

    fn kept_unless_forgotten(&self, number: u16, newest: u16, skipped_after: u16) -> Place {
        match self.forgotten {
            Some(last) if self.distance(newest, last) < self.window() && !self.is_newer(number, last) => Place::Unknown,
            _ => Place::Kept { skipped_after },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_numbers_count_the_skips_after_them() {
        let mut log = SkipLog::sequence_numbers();
        assert_eq!(log.place(5, 10), Place::Kept { skipped_after: 0 });
        for skipped in [11, 12, 14] {
            log.skip(skipped);
        }
        assert_eq!(log.place(15, 15), Place::Kept { skipped_after: 0 });
        assert_eq!(log.place(13, 15), Place::Kept { skipped_after: 1 });
        assert_eq!(log.place(10, 15), Place::Kept { skipped_after: 3 });
        assert_eq!(log.place(12, 15), Place::Skipped);
        assert_eq!(log.place(14, 15), Place::Skipped);
        // Inverse: counted back from the newest input, 15.
        assert_eq!(log.kept_at(15, 15), Some(15));
        assert_eq!(log.kept_at(14, 15), Some(13), "one output back from 15 is 13");
        assert_eq!(log.kept_at(13, 15), Some(10), "two back skips 11 and 12");
        assert_eq!(log.kept_at(12, 15), Some(9));
    }

    #[test]
    fn runs_cross_the_wrap_of_their_circle() {
        let mut log = SkipLog::picture_ids();
        log.skip(0x7FFE);
        log.skip(0x7FFF);
        log.skip(0);
        assert_eq!(log.place(1, 1), Place::Kept { skipped_after: 0 });
        assert_eq!(log.place(0x7FFF, 1), Place::Skipped);
        assert_eq!(log.place(0x7FFD, 1), Place::Kept { skipped_after: 3 });
        assert_eq!(log.kept_at(0, 1), Some(0x7FFD));
        let mut log = SkipLog::sequence_numbers();
        log.skip(65_535);
        log.skip(1);
        assert_eq!(log.place(0, 2), Place::Kept { skipped_after: 1 });
        assert_eq!(log.place(65_534, 2), Place::Kept { skipped_after: 2 });
        assert_eq!(log.kept_at(0, 2), Some(65_534));
    }

    #[test]
    fn numbers_before_the_oldest_run_remembered_are_not_placed() {
        let mut log = SkipLog::sequence_numbers();
        for run in 0..SKIP_RUNS as u16 + 1 {
            log.skip(100 + 2 * run);
        }
        let newest = 100 + 2 * SKIP_RUNS as u16 + 1;
        assert_eq!(log.place(100, newest), Place::Unknown, "the first run is forgotten");
        assert_eq!(log.place(99, newest), Place::Unknown);
        assert_eq!(log.place(101, newest), Place::Kept { skipped_after: SKIP_RUNS as u16 }, "after it, known");
        assert_eq!(log.place(103, newest), Place::Kept { skipped_after: SKIP_RUNS as u16 - 1 });
        assert_eq!(log.kept_at(newest - SKIP_RUNS as u16, newest), Some(101));
        assert_eq!(log.kept_at(newest - SKIP_RUNS as u16 - 1, newest), None);
        // Far behind the newest number nothing is trusted, and old runs stop counting.
        let far = 105u16.wrapping_add(0x4000);
        assert_eq!(log.place(105, far), Place::Unknown);
        assert_eq!(log.place(far, far), Place::Kept { skipped_after: 0 });
        assert_eq!(log.kept_at(far - 1, far), Some(far - 1));
        log.clear();
        assert!(log.is_empty());
        assert_eq!(log.place(99, newest), Place::Kept { skipped_after: 0 });
    }
}
