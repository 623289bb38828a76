//! VP8 temporal layers per subscriber: a subscriber whose link cannot carry even the lowest
//! simulcast layer at its full frame rate is sent fewer of its frames (its TID 2 frames
//! dropped, then its TID 1 frames) rather than a stream that freezes, and is sent them
//! again when it can.
//!
//! What it owns: one consumer's temporal cap (the highest TID it may be sent: the lower of
//! what it was limited to and what the allocator judged its link carries), the highest TID
//! it is sent now, and whether the newest picture went out; and the rule for when that
//! layer may change ([`TemporalLayers::admit`]). The router leaves the packets refused here
//! out of the consumer's stream ([`super::StreamRewriter::skip`],
//! [`super::simulcast::Vp8Continuity::skip`]), so its sequence numbers and picture ids have
//! no gap.
//!
//! Only VP8 with picture ids in their 15-bit form, as browsers send them, is thinned: a
//! packet without a TID, or without such an id to renumber pictures by, always goes out.
//! VP9 and AV1 carry their layers differently (VP9's payload descriptor, AV1's dependency
//! descriptor) and are not thinned here.
#![forbid(unsafe_code)]

use super::simulcast::{PICTURE_ID_MODULUS, UPGRADE_HEADROOM, is_newer_picture};
use crate::wire::video::TemporalId;

/// One consumer's temporal layer choice.
#[derive(Debug, Clone, Copy)]
pub struct TemporalLayers {
    /// The highest TID it was limited to ([`super::Router::limit_temporal_layer`]).
    limit: TemporalId,
    /// The highest TID its link carries, as the allocator last judged it.
    budget: TemporalId,
    /// The highest TID sent now: it follows the cap down at the next picture, up only
    /// where a decoder can take the higher layer in.
    current: TemporalId,
    /// The newest picture id seen, and whether that picture is sent.
    newest: Option<(u16, bool)>,
    /// The highest TID the stream was seen to carry: a change of `current` above it changes
    /// nothing sent, and is not counted as a switch.
    highest_seen: TemporalId,
}

impl Default for TemporalLayers {
    fn default() -> Self {
        Self {
            limit: TemporalId::MAX,
            budget: TemporalId::MAX,
            current: TemporalId::MAX,
            newest: None,
            highest_seen: TemporalId::BASE,
        }
    }
}

/// What [`TemporalLayers::admit`] decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Whether the packet goes to the subscriber.
    pub forward: bool,
    /// Whether the TIDs sent changed at this packet.
    pub switched: bool,
}

impl TemporalLayers {
    /// The highest TID to send: the lower of the limit and the budget.
    pub fn cap(&self) -> TemporalId {
        self.limit.min(self.budget)
    }

    /// The highest TID sent now.
    pub fn current(&self) -> TemporalId {
        self.current
    }

    /// The highest TID it was limited to.
    pub fn limit(&self) -> TemporalId {
        self.limit
    }

    pub fn set_limit(&mut self, max: TemporalId) {
        self.limit = max;
    }

    pub fn budget(&self) -> TemporalId {
        self.budget
    }

    /// The allocator's judgement of what the link carries.
    pub fn fit(&mut self, max: TemporalId) {
        self.budget = max;
    }

    /// The next packet may be of another picture numbering (another simulcast layer, or a
    /// stream resumed after a pause long enough for its picture ids to have gone round):
    /// nothing known about earlier pictures applies.
    pub fn restart(&mut self) {
        self.newest = None;
    }

    /// Whether a packet of picture `picture_id` (15-bit), of temporal layer `tid`, goes out.
    /// `layer_sync` is its Y bit, `key` tells whether it starts a key frame, `left_out`
    /// whether an earlier picture was left out (a late packet goes out with its picture).
    ///
    /// The cap takes effect at the first packet of a picture (a new picture id), never
    /// inside one: a frame goes out whole or not at all. Down at once: a decoder can do
    /// without frames nothing it has depends on. Up only where the decoder can take the
    /// higher layer in: a key frame (it depends on nothing, and every later frame only on it
    /// or later ones: the whole cap at once), or a frame of TID `current + 1` whose Y bit is
    /// set (RFC 7741 §4.2: it depends only on base layer frames, which were sent; and the
    /// frames of its layer after it depend on it or on later ones). A TID 0 frame is no
    /// such point: the next TID 1 frame may refer to a TID 1 frame that was not sent. Nor
    /// is a sync frame two layers up: the layer between would start without one. One layer
    /// at a time, at its own sync frame.
    pub fn admit(
        &mut self,
        picture_id: u16,
        tid: TemporalId,
        layer_sync: bool,
        key: impl FnOnce() -> bool,
        left_out: impl FnOnce(u16) -> bool,
    ) -> Admission {
        let picture_id = picture_id % PICTURE_ID_MODULUS;
        match self.newest {
            Some((newest, sent)) if newest == picture_id => return Admission { forward: sent, switched: false },
            Some((newest, _)) if !is_newer_picture(picture_id, newest) => {
                return Admission { forward: !left_out(picture_id), switched: false };
            }
            _ => {}
        }
        let cap = self.cap();
        let before = self.current;
        if cap < self.current {
            self.current = cap;
        } else if cap > self.current {
            if key() {
                self.current = cap;
            } else if layer_sync && tid.get() == self.current.get() + 1 {
                self.current = tid;
            }
        }
        let forward = tid <= self.current;
        self.newest = Some((picture_id, forward));
        self.highest_seen = self.highest_seen.max(tid);
        let seen = self.highest_seen;
        Admission { forward, switched: self.current.min(seen) != before.min(seen) }
    }
}

/// The highest temporal cap whose bitrate fits `budget_bps`, given `rates[t]`: the bitrate
/// of TIDs 0..=t together, for each TID the stream sends. Going above `current` needs
/// [`UPGRADE_HEADROOM`], as a spatial layer does, so that a link that just carries one cap
/// does not flap between two. The base layer when nothing fits (video slower, never cut);
/// no cap ([`TemporalId::MAX`]) when the whole stream fits. With the bitrate it sends, and
/// the budget the next cap up needs (for a probe to look for).
pub fn fit_temporal(rates: &[u64], current: TemporalId, budget_bps: u64) -> (TemporalId, u64, Option<u64>) {
    let mut chosen = (TemporalId::BASE, rates.first().copied().unwrap_or(0));
    for (tid, &rate) in rates.iter().enumerate() {
        let Some(tid) = u8::try_from(tid).ok().and_then(TemporalId::new) else { break };
        let needed = if tid > current { (rate as f64 * UPGRADE_HEADROOM) as u64 } else { rate };
        if needed > budget_bps {
            return (chosen.0, chosen.1, Some(needed));
        }
        chosen = (tid, rate);
    }
    (TemporalId::MAX, chosen.1, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(t: u8) -> TemporalId {
        TemporalId::new(t).unwrap()
    }

    /// Feeds one packet per picture of an L1T3 stream, from picture `first` on (TIDs
    /// 0, 2, 1, 2, ...; Y on the first TID 2 and TID 1 frames of each group of eight, which
    /// refer to the TID 0 frame alone, as libwebrtc sends them); the TIDs sent.
    fn feed(layers: &mut TemporalLayers, first: u16, pictures: u16) -> Vec<u8> {
        let mut sent = Vec::new();
        for picture in first..first + pictures {
            let t = [0, 2, 1, 2][usize::from(picture % 4)];
            let sync = matches!(picture % 8, 1 | 2);
            if layers.admit(picture, tid(t), sync, || false, |_| false).forward {
                sent.push(t);
            }
        }
        sent
    }

    #[test]
    fn down_at_the_next_picture_up_one_layer_at_its_sync_frame() {
        let mut layers = TemporalLayers::default();
        assert_eq!(feed(&mut layers, 0, 4), [0, 2, 1, 2], "no cap");
        layers.fit(TemporalId::BASE);
        assert_eq!(feed(&mut layers, 4, 8), [0, 0]);
        assert_eq!(layers.current(), TemporalId::BASE);
        layers.fit(TemporalId::MAX);
        // Pictures 12..16 hold no sync frame; 16 (TID 0), 17 (TID 2, sync: two layers up),
        // 18 (TID 1, sync): up to 1; 22 is TID 1; 25 (TID 2, sync): up to 2.
        assert_eq!(feed(&mut layers, 12, 6), [0, 0]);
        assert_eq!(feed(&mut layers, 18, 7), [1, 0, 1, 0]);
        assert_eq!(layers.current(), tid(1));
        assert_eq!(feed(&mut layers, 25, 3), [2, 1, 2]);
        assert_eq!(layers.current(), tid(2), "the stream has no TID 3 to wait for");
        // A cap at the stream's own highest TID, or lifted again, sends the same.
        layers.set_limit(tid(2));
        assert!(!layers.admit(28, tid(0), false, || false, |_| false).switched);
        layers.set_limit(TemporalId::MAX);
        assert!(!layers.admit(29, tid(2), true, || true, |_| false).switched);
    }

    #[test]
    fn a_picture_goes_out_whole_or_not_at_all() {
        let mut layers = TemporalLayers::default();
        assert!(layers.admit(10, tid(2), false, || false, |_| false).forward);
        layers.set_limit(tid(1));
        let admit = layers.admit(10, tid(2), false, || false, |_| false);
        assert_eq!(admit, Admission { forward: true, switched: false }, "the rest of picture 10");
        let admit = layers.admit(11, tid(2), false, || false, |_| false);
        assert_eq!(admit, Admission { forward: false, switched: true }, "down at the next picture");
        assert!(!layers.admit(11, tid(2), false, || true, |_| false).forward, "all of it");
        // Late packets go with their picture's fate.
        assert!(layers.admit(9, tid(2), false, || false, |_| false).forward);
        assert!(!layers.admit(9, tid(2), false, || false, |_| true).forward);
        // A key frame takes the whole cap at once.
        layers.set_limit(TemporalId::MAX);
        let admit = layers.admit(12, tid(0), false, || true, |_| false);
        assert_eq!(admit, Admission { forward: true, switched: true });
        assert_eq!(layers.current(), TemporalId::MAX);
        assert!(layers.admit(13, tid(2), false, || false, |_| false).forward);
        // Across the picture id wrap.
        layers.restart();
        layers.set_limit(TemporalId::BASE);
        assert!(!layers.admit(0x7FFF, tid(1), false, || false, |_| false).forward);
        assert!(layers.admit(0, tid(0), false, || false, |_| false).forward);
        assert!(!layers.admit(1, tid(1), true, || false, |_| false).forward, "new, above the cap");
    }

    #[test]
    fn temporal_caps_are_fitted_to_the_budget_with_headroom_to_go_up() {
        // TID 0 alone, with TID 1, with TID 2.
        let rates = [100_000, 160_000, 200_000];
        assert_eq!(fit_temporal(&rates, TemporalId::MAX, 500_000), (TemporalId::MAX, 200_000, None));
        assert_eq!(fit_temporal(&rates, TemporalId::MAX, 190_000), (tid(1), 160_000, Some(200_000)), "down at once");
        assert_eq!(fit_temporal(&rates, tid(1), 240_000), (tid(1), 160_000, Some(250_000)), "up with headroom");
        assert_eq!(fit_temporal(&rates, tid(1), 250_000), (TemporalId::MAX, 200_000, None));
        assert_eq!(fit_temporal(&rates, tid(0), 50_000), (tid(0), 100_000, Some(100_000)), "the base even over");
        assert_eq!(fit_temporal(&rates, tid(0), 150_000), (tid(0), 100_000, Some(200_000)));
        assert_eq!(fit_temporal(&[], tid(0), 150_000), (TemporalId::MAX, 0, None), "nothing measured: no cap");
    }
}
