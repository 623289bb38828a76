//! Simulcast: a publisher's layers of one video stream, and each subscriber's choice among
//! them. Layers named by `rid` (RFC 8851/8852) announce no SSRC: the router learns each
//! layer's SSRC from the first packet whose RtpStreamId header extension names it, and
//! again when the publisher changes it. A subscriber receives one layer at a time; a switch
//! waits for a key frame of the new layer (asked for at once, again while it does not come),
//! and the consumer's numbering (sequence numbers, timestamps, VP8 picture ids) goes on
//! without a break, so the subscriber's decoder sees one stream.
//!
//! Within a VP8 layer, a subscriber may be sent only its lower temporal layers
//! ([`super::temporal`]); the pictures left out are left out of its picture ids too.
//!
//! What it owns: the rid names ([`Rid`], `RidBinding`), one consumer's layer state
//! ([`Layers`]: the layers, the current one, the one switched to at its next key frame, the
//! highest one wanted, its temporal layers, its key frame requests' budget) and its VP8
//! picture id continuity ([`Vp8Continuity`]). The router moves consumers between producers;
//! this module decides where they should be.
//!
//! A subscriber that keeps asking for key frames (its link loses what the publisher sends)
//! would have the publisher send key frames, the largest frames there are, to everybody on
//! its layer. Past [`KeyframeBudget`] it is moved a layer down instead for [`LOSS_HOLD`]:
//! the switch asks for the lower layer's key frame, and the lower layer's bitrate suits a
//! lossy link better.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use super::skips::{Place, SkipLog};
use super::temporal::{Admission, TemporalLayers};
use super::{ProducerId, RewriteRefusal, RouterError, TransportId};
use crate::wire::video::{TemporalId, VideoFormat, Vp8PictureIds, Vp8Temporal};

/// At most this many layers per simulcast stream (browsers send up to three).
pub const MAX_LAYERS: usize = 4;

/// A layer that sent nothing for this long is not chosen; a subscriber on it moves to one
/// that sends. Browsers stop their upper layers when their own estimate falls.
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// Whether a layer (or a temporal layer of one) whose last packet came at `last_packet` still
/// counts as sending at `now`: it sent within [`LAYER_IDLE`].
pub fn sends(last_packet: Option<Instant>, now: Instant) -> bool {
    last_packet.is_some_and(|at| now.saturating_duration_since(at) < LAYER_IDLE)
}

/// A switch whose key frame has not come for this long asks again (the request or the key
/// frame was lost).
pub const SWITCH_RETRY: Duration = Duration::from_millis(1000);

/// How long a subscriber moved down for asking too many key frames stays at most on that
/// layer; then the allocator may take it up again.
pub const LOSS_HOLD: Duration = Duration::from_secs(10);

/// Key frame requests one subscriber of a simulcast stream may make at once, and how often it
/// may make one more: a browser asks once or twice per loss it cannot repair; asking more
/// than that, steadily, is a link that cannot carry the layer.
pub const KEYFRAME_BURST: u32 = 3;
pub const KEYFRAME_REFILL: Duration = Duration::from_secs(2);

/// One subscriber's allowance of key frame requests: a bucket of [`KEYFRAME_BURST`] requests
/// that refills one per [`KEYFRAME_REFILL`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyframeBudget {
    /// The refill time credited and not spent; `None` before the first request (a full bucket).
    credit: Option<(Duration, Instant)>,
}

impl KeyframeBudget {
    /// Spends one request at `now`; false when none is left.
    pub fn spend(&mut self, now: Instant) -> bool {
        let full = KEYFRAME_REFILL * KEYFRAME_BURST;
        let (credit, since) = self.credit.unwrap_or((full, now));
        let credit = (credit + now.saturating_duration_since(since)).min(full);
        let allowed = credit >= KEYFRAME_REFILL;
        let left = if allowed { credit - KEYFRAME_REFILL } else { credit };
        self.credit = Some((left, now));
        allowed
    }
}

/// Longest rid kept: RFC 8852's element fits 16 bytes in the one-byte header form; longer
/// names are refused rather than cut.
pub const MAX_RID_LEN: usize = 16;

/// A simulcast layer's name, as the RtpStreamId header extension carries it (RFC 8852).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rid {
    bytes: [u8; MAX_RID_LEN],
    len: u8,
}

impl Rid {
    /// A rid of 1 to [`MAX_RID_LEN`] alphanumeric characters, `-` or `_` (RFC 8851 §10).
    pub fn new(name: &str) -> Result<Self, RouterError> {
        let valid = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
        if name.is_empty() || name.len() > MAX_RID_LEN || !name.bytes().all(|b| valid(&b)) {
            return Err(RouterError::InvalidRid);
        }
        let mut bytes = [0; MAX_RID_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self { bytes, len: name.len() as u8 })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Rid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rid({})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A publisher's layer named by rid: packets on `transport` whose extension `extension_id`
/// holds `rid` feed `producer`, whatever SSRC they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RidBinding {
    pub transport: TransportId,
    pub extension_id: u8,
    pub rid: Rid,
    pub producer: ProducerId,
}

/// Keeps a subscriber's VP8 picture ids and TL0PICIDX continuous across the layers it
/// receives: each layer numbers its pictures on its own, and a decoder that saw the ids
/// jump back could take the new layer's pictures for old ones. Pictures left out (frames
/// of a temporal layer not sent, [`Vp8Continuity::skip`]) give their ids to the pictures
/// after them: a receiver that saw a gap would wait for the missing picture before it
/// decodes a frame that may refer to it (libwebrtc does for TID 1 and 2 frames). TL0PICIDX
/// needs no such care: base layer frames are never left out.
#[derive(Debug, Clone)]
pub struct Vp8Continuity {
    /// Added to the current layer's picture id and TL0PICIDX; set by its first packet. The
    /// picture offset is that of the newest picture: an older one's id is further on by the
    /// number of pictures left out after it.
    offsets: Option<(u16, u8)>,
    /// The newest ids sent.
    last: Option<(u16, u8)>,
    /// The current layer's pictures left out, and its newest picture id seen (15-bit ids
    /// only: a 7-bit id wraps too soon to tell an old picture from a new one, and pictures
    /// with them are never left out).
    skipped: SkipLog,
    newest: Option<u16>,
}

impl Default for Vp8Continuity {
    fn default() -> Self {
        Self { offsets: None, last: None, skipped: SkipLog::picture_ids(), newest: None }
    }
}

/// The circle of 15-bit VP8 picture ids.
pub(super) const PICTURE_ID_MODULUS: u16 = 0x8000;

/// Whether picture id `a` comes after `b` on their 15-bit circle.
pub(super) fn is_newer_picture(a: u16, b: u16) -> bool {
    let ahead = a.wrapping_sub(b) % PICTURE_ID_MODULUS;
    ahead != 0 && ahead < PICTURE_ID_MODULUS / 2
}

impl Vp8Continuity {
    /// The next packet comes from another layer: its ids continue from the last ones sent.
    pub fn restart(&mut self) {
        self.offsets = None;
        self.forget_skips();
    }

    /// Nothing is known any more about the pictures before the next packet: the stream
    /// resumes after a pause, in which its picture ids may have gone a long way on.
    pub fn forget_skips(&mut self) {
        self.skipped.clear();
        self.newest = None;
    }

    fn offsets_for(&mut self, picture_id: u16, tl0: u8) -> (u16, u8) {
        *self.offsets.get_or_insert_with(|| match self.last {
            Some((last_id, last_tl0)) => (
                last_id.wrapping_add(1).wrapping_sub(picture_id) % PICTURE_ID_MODULUS,
                last_tl0.wrapping_add(1).wrapping_sub(tl0),
            ),
            None => (0, 0),
        })
    }

    /// Leaves out the picture of a packet not sent (a frame above the subscriber's temporal
    /// cap): the pictures after it take its id. Only a picture newer than every one seen
    /// gives its id away; the other packets of a picture left out change nothing.
    pub fn skip(&mut self, ids: Vp8PictureIds) {
        let Some((picture_id, true)) = ids.picture_id else { return };
        if self.newest.is_some_and(|newest| !is_newer_picture(picture_id, newest)) {
            return;
        }
        let (picture_offset, tl0_offset) = self.offsets_for(picture_id, ids.tl0picidx.unwrap_or(0));
        self.offsets = Some((picture_offset.wrapping_sub(1) % PICTURE_ID_MODULUS, tl0_offset));
        self.newest = Some(picture_id);
        self.skipped.skip(picture_id);
    }

    /// Whether the picture `picture_id` (15-bit) was left out, or is too old to tell.
    pub fn left_out(&self, picture_id: u16) -> bool {
        let Some(newest) = self.newest else { return false };
        !matches!(self.skipped.place(picture_id, newest), Place::Kept { .. })
    }

    /// The ids `ids` are sent as; `None` when the packet has none to rewrite. Refused for a
    /// picture left out, or too old to know whether pictures after it were.
    pub fn map(&mut self, ids: Option<Vp8PictureIds>) -> Result<Option<Vp8PictureIds>, RewriteRefusal> {
        let Some(ids) = ids else { return Ok(None) };
        let picture_id = ids.picture_id.map_or(0, |(id, _)| id);
        let tl0 = ids.tl0picidx.unwrap_or(0);
        let (picture_offset, tl0_offset) = self.offsets_for(picture_id, tl0);
        let mut skipped_after = 0;
        if let Some((id, true)) = ids.picture_id {
            match self.newest {
                Some(newest) if !is_newer_picture(id, newest) => {
                    skipped_after = match self.skipped.place(id, newest) {
                        Place::Kept { skipped_after } => skipped_after,
                        Place::Skipped => return Err(RewriteRefusal::Skipped),
                        Place::Unknown => return Err(RewriteRefusal::SkipsForgotten),
                    };
                }
                _ => self.newest = Some(id),
            }
        }
        let out_id = picture_id.wrapping_add(picture_offset).wrapping_add(skipped_after) % PICTURE_ID_MODULUS;
        let out_tl0 = tl0.wrapping_add(tl0_offset);
        let newer = self.last.is_none_or(|(last, _)| {
            let ahead = out_id.wrapping_sub(last) % PICTURE_ID_MODULUS;
            ahead != 0 && ahead < PICTURE_ID_MODULUS / 2
        });
        if newer {
            self.last = Some((out_id, out_tl0));
        }
        Ok(Some(Vp8PictureIds {
            picture_id: ids.picture_id.map(|(_, long)| (out_id, long)),
            tl0picidx: ids.tl0picidx.map(|_| out_tl0),
        }))
    }
}

/// One subscriber's place among a simulcast stream's layers, lowest layer first.
#[derive(Debug, Clone)]
pub struct Layers {
    producers: [ProducerId; MAX_LAYERS],
    count: usize,
    format: VideoFormat,
    current: usize,
    /// The highest layer the subscriber wants (its view's size).
    cap: usize,
    /// The highest layer its link carries, as the allocator last judged it.
    budget: usize,
    /// The layer to switch to at its next key frame, and when that was decided (or last
    /// asked for again).
    pending: Option<(usize, Instant)>,
    /// The highest layer while its subscriber asks for too many key frames, and until when.
    held_down: Option<(usize, Instant)>,
    pub keyframes: KeyframeBudget,
    /// Its subscriber's bandwidth goes to it before other simulcast streams (a pinned view).
    pub pinned: bool,
    pub vp8: Vp8Continuity,
    temporal: TemporalLayers,
}

/// What a review of a consumer's layers decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDecision {
    /// Stay where it is.
    Stay,
    /// Wait for a key frame of this layer's producer (ask its publisher for one).
    Await(ProducerId),
}

impl Layers {
    /// A consumer of `producers` (lowest layer first, at most [`MAX_LAYERS`]) in `format`,
    /// currently fed by `current`, wanting the highest layer.
    pub fn new(producers: &[ProducerId], format: VideoFormat, current: ProducerId) -> Result<Self, RouterError> {
        if producers.is_empty() || producers.len() > MAX_LAYERS {
            return Err(RouterError::InvalidLayers);
        }
        let mut all = [ProducerId(u32::MAX); MAX_LAYERS];
        all[..producers.len()].copy_from_slice(producers);
        let current = producers.iter().position(|&p| p == current).ok_or(RouterError::InvalidLayers)?;
        Ok(Self {
            producers: all,
            count: producers.len(),
            format,
            current,
            cap: producers.len() - 1,
            budget: producers.len() - 1,
            pending: None,
            held_down: None,
            keyframes: KeyframeBudget::default(),
            pinned: false,
            vp8: Vp8Continuity::default(),
            temporal: TemporalLayers::default(),
        })
    }

    pub fn producers(&self) -> &[ProducerId] {
        &self.producers[..self.count]
    }

    pub fn format(&self) -> VideoFormat {
        self.format
    }

    /// The layer sent now (0 = lowest).
    pub fn current(&self) -> usize {
        self.current
    }

    /// The layer being switched to, if a switch waits for its key frame.
    pub fn pending(&self) -> Option<usize> {
        self.pending.map(|(layer, _)| layer)
    }

    /// The highest layer to send: the lowest of what the subscriber wants, what its link
    /// carries and where its losses hold it.
    pub fn preferred(&self) -> usize {
        let held = self.held_down.map_or(usize::MAX, |(layer, _)| layer);
        self.cap.min(self.budget).min(held)
    }

    /// Holds the subscriber a layer below the one it receives until [`LOSS_HOLD`] after
    /// `now` (it asked for too many key frames); false on the lowest layer, where there is
    /// nothing cheaper to send.
    pub fn hold_down(&mut self, now: Instant) -> bool {
        let Some(lower) = self.current.checked_sub(1) else { return false };
        self.held_down = Some((lower, now + LOSS_HOLD));
        true
    }

    /// The subscriber wants at most layer `layer` from now on (clamped to the layers there are).
    pub fn prefer(&mut self, layer: usize) {
        self.cap = layer.min(self.count - 1);
    }

    /// The highest layer the subscriber wants, whatever its link carries.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The subscriber's link carries layer `layer` at most (the allocator's judgement).
    pub fn fit(&mut self, layer: usize) {
        self.budget = layer.min(self.count - 1);
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Whether `producer` is the layer a switch waits for.
    pub fn awaits(&self, producer: ProducerId) -> bool {
        self.pending.is_some_and(|(layer, _)| self.producers[layer] == producer)
    }

    /// The switch to the awaited layer happened (its key frame came): it is current.
    pub fn switched(&mut self) {
        if let Some((layer, _)) = self.pending.take() {
            self.current = layer;
            self.vp8.restart();
            self.temporal.restart();
        }
    }

    /// The consumer was paused and sends again: what was known of its pictures is stale.
    pub fn resumed(&mut self) {
        self.vp8.forget_skips();
        self.temporal.restart();
    }

    /// The temporal layers sent within the current layer.
    pub fn temporal(&self) -> &TemporalLayers {
        &self.temporal
    }

    /// Sends TIDs up to `max` at most, whatever the link carries.
    pub fn limit_temporal(&mut self, max: TemporalId) {
        self.temporal.set_limit(max);
    }

    /// The link carries TIDs up to `max` of the current layer (the allocator's judgement).
    pub fn fit_temporal(&mut self, max: TemporalId) {
        self.temporal.fit(max);
    }

    /// Whether a VP8 packet with ids `ids` and temporal fields `temporal` goes out under the
    /// temporal cap ([`TemporalLayers::admit`]); a picture not sent is left out of the
    /// picture ids. `key` tells whether the packet starts a key frame. A packet without a TID
    /// or a 15-bit picture id always goes out.
    pub fn admit(
        &mut self,
        ids: Option<Vp8PictureIds>,
        temporal: Option<Vp8Temporal>,
        key: impl FnOnce() -> bool,
    ) -> Admission {
        let sent = Admission { forward: true, switched: false };
        let (Some(ids), Some(Vp8Temporal { tid: Some(tid), layer_sync, .. })) = (ids, temporal) else { return sent };
        let Some((picture_id, true)) = ids.picture_id else { return sent };
        let vp8 = &self.vp8;
        let admission = self.temporal.admit(picture_id, tid, layer_sync, key, |id| vp8.left_out(id));
        if !admission.forward {
            self.vp8.skip(ids);
        }
        admission
    }

    /// Chooses the layer to send: the highest one up to the preferred that sends (its last
    /// packet within [`LAYER_IDLE`]), else the lowest that sends above it; none sending,
    /// stay. `last_packet` tells when each producer last sent.
    pub fn review(&mut self, now: Instant, last_packet: impl Fn(ProducerId) -> Option<Instant>) -> LayerDecision {
        if self.held_down.is_some_and(|(_, until)| now >= until) {
            self.held_down = None;
        }
        let sending = |layer: usize| sends(last_packet(self.producers[layer]), now);
        let preferred = self.preferred();
        let wanted =
            (0..=preferred).rev().find(|&l| sending(l)).or_else(|| (preferred..self.count).find(|&l| sending(l)));
        let Some(wanted) = wanted.filter(|&l| l != self.current) else {
            self.pending = None;
            return LayerDecision::Stay;
        };
        match self.pending {
            Some((layer, since)) if layer == wanted && now.saturating_duration_since(since) < SWITCH_RETRY => {
                LayerDecision::Stay
            }
            _ => {
                self.pending = Some((wanted, now));
                LayerDecision::Await(self.producers[wanted])
            }
        }
    }
}

/// How much more than a layer's bitrate the estimate must be to move a subscriber up to it:
/// the margin keeps a link that just carries the current layer from flapping between two.
pub const UPGRADE_HEADROOM: f64 = 1.25;

/// The highest layer that fits `budget_bps`, given each layer's bitrate (`None`: not sending),
/// lowest first; going above `current` needs [`UPGRADE_HEADROOM`], staying or going down
/// only that the layer fits. The lowest sending layer when none fits: video is made smaller,
/// never cut. With its bitrate, and the budget the first layer that did not fit needs (what
/// a probe should look for; the lowest layer's own when even it does not fit).
pub fn fit_layer(rates: &[Option<u64>], current: usize, cap: usize, budget_bps: u64) -> (usize, u64, Option<u64>) {
    let lowest = rates.iter().position(Option::is_some);
    let mut chosen = None;
    let mut next_up = None;
    for (layer, rate) in rates.iter().enumerate().take(cap + 1) {
        let Some(rate) = *rate else { continue };
        let needed = if layer > current { (rate as f64 * UPGRADE_HEADROOM) as u64 } else { rate };
        if needed <= budget_bps {
            chosen = Some((layer, rate));
        } else {
            if Some(layer) == lowest {
                // Over budget already: sent all the same, and nothing above fits either.
                chosen = Some((layer, rate));
            }
            next_up = Some(needed);
            break;
        }
    }
    let (layer, rate) = chosen.unwrap_or((current, 0));
    (layer, rate, next_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: ProducerId = ProducerId(1);
    const MID: ProducerId = ProducerId(2);
    const HIGH: ProducerId = ProducerId(3);

    #[test]
    fn the_keyframe_budget_allows_a_burst_then_one_request_per_refill() {
        let start = Instant::now();
        let mut budget = KeyframeBudget::default();
        let spent: Vec<bool> = (0..5).map(|_| budget.spend(start)).collect();
        assert_eq!(spent, [true, true, true, false, false]);
        assert!(!budget.spend(start + KEYFRAME_REFILL / 2));
        assert!(budget.spend(start + KEYFRAME_REFILL), "refilled by one");
        assert!(!budget.spend(start + KEYFRAME_REFILL));
        // A quiet minute refills the bucket, no more.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..4).map(|_| budget.spend(later)).collect::<Vec<_>>(), [true, true, true, false]);
    }

    #[test]
    fn a_subscriber_held_down_goes_a_layer_lower_until_the_hold_ends() {
        let start = Instant::now();
        let mut layers = Layers::new(&[LOW, MID, HIGH], VideoFormat::Vp8, HIGH).unwrap();
        let sending = |_| Some(start);
        assert!(layers.hold_down(start));
        assert_eq!(layers.preferred(), 1);
        assert_eq!(layers.review(start, sending), LayerDecision::Await(MID));
        layers.switched();
        let later = start + LOSS_HOLD;
        assert_eq!(layers.review(later, |_| Some(later)), LayerDecision::Await(HIGH), "the hold is over");
        let mut lowest = Layers::new(&[LOW, HIGH], VideoFormat::Vp8, LOW).unwrap();
        assert!(!lowest.hold_down(start), "nothing below the lowest");
    }

    #[test]
    fn rids_are_short_tokens() {
        assert_eq!(Rid::new("h").unwrap().as_bytes(), b"h");
        assert_eq!(Rid::new("layer_2-b").unwrap().as_bytes(), b"layer_2-b");
        for bad in ["", "a b", "ü", "x".repeat(17).as_str()] {
            assert_eq!(Rid::new(bad), Err(RouterError::InvalidRid), "{bad:?}");
        }
    }

    #[test]
    fn the_highest_sending_layer_up_to_the_preferred_is_chosen() {
        let t0 = Instant::now();
        let mut layers = Layers::new(&[LOW, MID, HIGH], VideoFormat::Vp8, LOW).unwrap();
        let all_send = |_| Some(t0);
        assert_eq!(layers.review(t0, all_send), LayerDecision::Await(HIGH));
        assert_eq!(layers.review(t0, all_send), LayerDecision::Stay, "asked already");
        assert!(layers.awaits(HIGH));
        layers.switched();
        assert_eq!((layers.current(), layers.pending()), (2, None));

        layers.prefer(1);
        assert_eq!(layers.review(t0, all_send), LayerDecision::Await(MID));
        layers.switched();
        // The high layer stops; preferring it again finds the middle one best.
        layers.prefer(9);
        let no_high = |p| (p != HIGH).then_some(t0);
        assert_eq!(layers.review(t0, no_high), LayerDecision::Stay);
        assert_eq!(layers.preferred(), 2, "clamped");
    }

    #[test]
    fn a_layer_that_went_quiet_is_left_and_an_unanswered_switch_is_asked_again() {
        let t0 = Instant::now();
        let mut layers = Layers::new(&[LOW, HIGH], VideoFormat::H264, HIGH).unwrap();
        let later = t0 + LAYER_IDLE + Duration::from_millis(1);
        let only_low = |p| if p == LOW { Some(later) } else { Some(t0) };
        assert_eq!(layers.review(later, only_low), LayerDecision::Await(LOW));
        assert_eq!(layers.review(later + Duration::from_millis(10), only_low), LayerDecision::Stay);
        assert_eq!(layers.review(later + SWITCH_RETRY, only_low), LayerDecision::Await(LOW), "asked again");
        // The high layer comes back before the key frame: the switch is off.
        let both = |_| Some(later + SWITCH_RETRY);
        assert_eq!(layers.review(later + SWITCH_RETRY, both), LayerDecision::Stay);
        assert_eq!(layers.pending(), None);
        // Nothing sends at all: stay.
        assert_eq!(layers.review(later + Duration::from_secs(60), |_| None), LayerDecision::Stay);
    }

    #[test]
    fn layer_lists_are_checked() {
        assert_eq!(Layers::new(&[], VideoFormat::Vp8, LOW).err(), Some(RouterError::InvalidLayers));
        assert_eq!(Layers::new(&[LOW; 5], VideoFormat::Vp8, LOW).err(), Some(RouterError::InvalidLayers));
        assert_eq!(Layers::new(&[LOW, MID], VideoFormat::Vp8, HIGH).err(), Some(RouterError::InvalidLayers));
    }

    #[test]
    fn layers_are_fitted_to_the_budget_with_headroom_to_go_up() {
        let rates = [Some(150_000), Some(450_000), Some(1_200_000)];
        assert_eq!(fit_layer(&rates, 2, 2, 5_000_000), (2, 1_200_000, None));
        assert_eq!(fit_layer(&rates, 2, 2, 1_000_000), (1, 450_000, Some(1_200_000)), "down at once");
        assert_eq!(fit_layer(&rates, 1, 2, 1_300_000), (1, 450_000, Some(1_500_000)), "up only with headroom");
        assert_eq!(fit_layer(&rates, 1, 2, 1_500_000), (2, 1_200_000, None));
        assert_eq!(fit_layer(&rates, 2, 2, 1_200_000), (2, 1_200_000, None), "staying needs no headroom");
        assert_eq!(fit_layer(&rates, 0, 2, 100_000), (0, 150_000, Some(150_000)), "the lowest even over budget");
        assert_eq!(fit_layer(&rates, 2, 0, 5_000_000), (0, 150_000, None), "the subscriber's cap");
        let gaps = [None, Some(450_000), None];
        assert_eq!(fit_layer(&gaps, 2, 2, 100_000), (1, 450_000, Some(450_000)), "the lowest that sends");
        assert_eq!(fit_layer(&[None, None], 1, 1, 100_000), (1, 0, None), "nothing sends: stay");
    }

    fn ids(picture_id: u16, tl0: u8) -> Option<Vp8PictureIds> {
        Some(Vp8PictureIds { picture_id: Some((picture_id, true)), tl0picidx: Some(tl0) })
    }

    #[test]
    fn vp8_ids_continue_across_a_switch() {
        let mut vp8 = Vp8Continuity::default();
        assert_eq!(vp8.map(ids(100, 5)), Ok(ids(100, 5)), "the first layer keeps its ids");
        assert_eq!(vp8.map(ids(101, 5)), Ok(ids(101, 5)));
        vp8.restart();
        assert_eq!(vp8.map(ids(0x7FFF, 200)), Ok(ids(102, 6)), "the next layer goes on from there");
        assert_eq!(vp8.map(ids(0, 201)), Ok(ids(103, 7)), "across its own wrap");
        assert_eq!(vp8.map(ids(0x7FFF, 200)), Ok(ids(102, 6)), "a late packet keeps its ids");
        vp8.restart();
        assert_eq!(vp8.map(ids(5000, 1)), Ok(ids(104, 8)));
        assert_eq!(vp8.map(None), Ok(None));
        let short = Some(Vp8PictureIds { picture_id: Some((3, false)), tl0picidx: None });
        let mapped = vp8.map(short).unwrap().unwrap();
        assert_eq!(mapped.picture_id.map(|(_, long)| long), Some(false), "the short form stays");
    }

    #[test]
    fn pictures_left_out_give_their_ids_to_the_next() {
        let mut vp8 = Vp8Continuity::default();
        assert_eq!(vp8.map(ids(0x7FFE, 9)), Ok(ids(0x7FFE, 9)));
        vp8.skip(ids(0x7FFF, 9).unwrap());
        vp8.skip(ids(0x7FFF, 9).unwrap());
        assert_eq!(vp8.map(ids(0, 9)), Ok(ids(0x7FFF, 9)), "no gap, across the wrap");
        vp8.skip(ids(1, 9).unwrap());
        vp8.skip(ids(2, 9).unwrap());
        assert_eq!(vp8.map(ids(3, 10)), Ok(ids(0, 10)), "TL0PICIDX goes on as sent");
        assert!(vp8.left_out(2) && vp8.left_out(0x7FFF) && !vp8.left_out(0) && !vp8.left_out(3));
        // Late and resent packets keep their ids, or are refused when left out.
        assert_eq!(vp8.map(ids(0x7FFE, 9)), Ok(ids(0x7FFE, 9)));
        assert_eq!(vp8.map(ids(0, 9)), Ok(ids(0x7FFF, 9)));
        assert_eq!(vp8.map(ids(1, 9)), Err(RewriteRefusal::Skipped));
        // A skip of an older picture, or of one sent, changes nothing.
        vp8.skip(ids(0, 9).unwrap());
        vp8.skip(ids(3, 10).unwrap());
        assert_eq!(vp8.map(ids(4, 10)), Ok(ids(1, 10)));
        // A resume keeps the offsets but forgets the pictures left out.
        vp8.forget_skips();
        assert_eq!(vp8.map(ids(2000, 10)), Ok(ids(1997, 10)));
        assert!(!vp8.left_out(1));
    }
}
