//! Packet indices and replay protection: the 48-bit SRTP index estimated from a 16-bit
//! sequence number (RFC 3711 §3.3.1 and Appendix A) and a sliding window of the indices
//! already accepted (RFC 3711 §3.3.2). SRTCP carries its 31-bit index in the packet and
//! uses the same window.

use super::SrtpError;

/// The largest SRTP packet index (ROC ‖ SEQ, 48 bits). RFC 3711 §9.2: the master key must be
/// replaced before it is exceeded.
const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

const HALF_SEQUENCE_SPACE: u16 = 1 << 15;

/// Estimates the index of the packet with `sequence_number` on a stream whose highest index
/// so far is `highest`: the sequence number is read in the rollover (ROC) that puts it
/// nearest to the highest one, so a wrap in either direction is followed (Appendix A).
///
/// With ROC 0 there is no earlier rollover to fall back to: a number more than 2^15 above
/// the highest is read as ahead in ROC 0. libsrtp's sender and rtc-srtp do the same.
pub(super) fn estimate_srtp_index(highest: u64, sequence_number: u16) -> Result<u64, SrtpError> {
    let rollover_counter = highest >> 16;
    let highest_sequence = (highest & 0xFFFF) as u16;
    let estimated_rollover = if highest_sequence < HALF_SEQUENCE_SPACE {
        if sequence_number > highest_sequence + HALF_SEQUENCE_SPACE {
            rollover_counter.saturating_sub(1)
        } else {
            rollover_counter
        }
    } else if sequence_number < highest_sequence - HALF_SEQUENCE_SPACE {
        rollover_counter + 1
    } else {
        rollover_counter
    };
    let index = estimated_rollover << 16 | u64::from(sequence_number);
    if index > MAX_SRTP_INDEX { Err(SrtpError::KeyLifetimeExhausted) } else { Ok(index) }
}

const BLOCK_BITS: u64 = u64::BITS as u64;
const BLOCKS: usize = 16;

/// How many indices below the highest one a packet may carry and still be accepted (once).
/// RFC 3711 §3.3.2 asks for at least 64; Chromium configures libsrtp with 1024, and
/// high-rate video reorders by hundreds of packets.
pub const REPLAY_WINDOW_LEN: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Which indices of the last [`REPLAY_WINDOW_LEN`] were accepted, as a ring of 64-bit blocks
/// (RFC 6479): moving the window forward clears the blocks it enters instead of shifting
/// every bit, so the common one-packet step costs one comparison. One block more than the
/// window is kept because the block holding the highest index is only partly in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    highest: u64,
    accepted: [u64; BLOCKS],
}

impl ReplayWindow {
    /// A window whose first accepted packet has `index`.
    pub(super) fn starting_at(index: u64) -> Self {
        let mut window = Self { highest: index, accepted: [0; BLOCKS] };
        window.mark(index);
        window
    }

    /// The highest index accepted so far.
    pub(super) fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether a packet with `index` may be accepted: not yet seen and not too old.
    pub(super) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        if self.highest - index >= REPLAY_WINDOW_LEN {
            return Err(SrtpError::TooOld);
        }
        let (block, bit) = Self::position(index);
        if self.accepted[block] & bit != 0 { Err(SrtpError::Replayed) } else { Ok(()) }
    }

    /// Records `index` as accepted. Call only after [`Self::check`] passed and the packet
    /// authenticated, so that forged packets never move the window.
    pub(super) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let blocks_entered = index / BLOCK_BITS - self.highest / BLOCK_BITS;
            for step in 0..blocks_entered.min(BLOCKS as u64) {
                self.accepted[((index / BLOCK_BITS - step) % BLOCKS as u64) as usize] = 0;
            }
            self.highest = index;
        }
        self.mark(index);
    }

    fn mark(&mut self, index: u64) {
        let (block, bit) = Self::position(index);
        self.accepted[block] |= bit;
    }

    fn position(index: u64) -> (usize, u64) {
        (((index / BLOCK_BITS) % BLOCKS as u64) as usize, 1 << (index % BLOCK_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(rollover_counter: u64, sequence_number: u16) -> u64 {
        rollover_counter << 16 | u64::from(sequence_number)
    }

    #[test]
    fn estimate_follows_the_sequence_number_across_a_wrap_in_both_directions() {
        // Forward wrap: just below 65535, a small number belongs to the next rollover.
        assert_eq!(estimate_srtp_index(index(0, 65_530), 3), Ok(index(1, 3)));
        assert_eq!(estimate_srtp_index(index(4, 65_530), 65_534), Ok(index(4, 65_534)));
        // Backward: just after a wrap, a large number is a late packet of the previous one.
        assert_eq!(estimate_srtp_index(index(1, 3), 65_530), Ok(index(0, 65_530)));
        assert_eq!(estimate_srtp_index(index(7, 100), 99), Ok(index(7, 99)));
        // The boundaries of Appendix A: exactly 2^15 away stays in the same rollover.
        assert_eq!(estimate_srtp_index(index(2, 100), 100 + 32_768), Ok(index(2, 32_868)));
        assert_eq!(estimate_srtp_index(index(2, 100), 100 + 32_769), Ok(index(1, 32_869)));
        assert_eq!(estimate_srtp_index(index(2, 40_000), 40_000 - 32_768), Ok(index(2, 7_232)));
        assert_eq!(estimate_srtp_index(index(2, 40_000), 40_000 - 32_769), Ok(index(3, 7_231)));
        // ROC 0 has no earlier rollover: a far jump is read as ahead.
        assert_eq!(estimate_srtp_index(index(0, 100), 65_000), Ok(index(0, 65_000)));
    }

    #[test]
    fn estimate_refuses_to_pass_the_48_bit_index() {
        assert_eq!(estimate_srtp_index(index(0xFFFF_FFFF, 65_535), 0), Err(SrtpError::KeyLifetimeExhausted));
        assert_eq!(estimate_srtp_index(index(0xFFFF_FFFF, 65_000), 65_001), Ok(index(0xFFFF_FFFF, 65_001)));
    }

    #[test]
    fn window_accepts_each_index_once_and_rejects_the_too_old() {
        let mut window = ReplayWindow::starting_at(5_000);
        assert_eq!(window.check(5_000), Err(SrtpError::Replayed));
        for late in [4_999, 4_100, 5_000 - (REPLAY_WINDOW_LEN - 1)] {
            assert_eq!(window.check(late), Ok(()), "index {late}");
            window.accept(late);
            assert_eq!(window.check(late), Err(SrtpError::Replayed), "index {late}");
        }
        assert_eq!(window.check(5_000 - REPLAY_WINDOW_LEN), Err(SrtpError::TooOld));
        assert_eq!(window.highest(), 5_000);
    }

    #[test]
    fn moving_forward_forgets_what_left_the_window_and_nothing_else() {
        let mut window = ReplayWindow::starting_at(0);
        for index in (1..3_000).step_by(3) {
            window.accept(index);
        }
        let highest = window.highest();
        for index in highest - (REPLAY_WINDOW_LEN - 1)..=highest {
            let expected = if index % 3 == 1 { Err(SrtpError::Replayed) } else { Ok(()) };
            assert_eq!(window.check(index), expected, "index {index}");
        }

        // A jump past the whole ring leaves only the new index marked.
        window.accept(highest + 10 * REPLAY_WINDOW_LEN);
        let highest = window.highest();
        for index in highest - (REPLAY_WINDOW_LEN - 1)..highest {
            assert_eq!(window.check(index), Ok(()), "index {index}");
        }
        assert_eq!(window.check(highest), Err(SrtpError::Replayed));
    }
}
