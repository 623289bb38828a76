//! Dynacast: a publisher's simulcast layers that nobody on this node could receive are
//! paused at the publisher, and resumed as soon as somebody could. Each worker reports the
//! demand of the layer producers it holds, the publisher's own and the ones it imported
//! (`EngineEvent::Demand`: a subscriber may receive a layer at or below the quality it
//! asked for; a node link or a recording takes the highest); a layer is wanted while any of
//! them is demanded. The publisher hears `{"type":"layers","mid","active":[rids]}` and sets
//! its encodings' `active` (the SDK does); a WHIP publisher has no way to hear it and keeps
//! sending every layer.
//!
//! Rules: the lowest layer is never paused, so a new subscriber has video at once, whatever
//! the others asked for. A layer is resumed at once but paused only after [`PAUSE_HOLD`]
//! without demand: a resumed layer starts with a key frame, and a viewer flipping between
//! qualities must not make the encoder restart a layer each time. [`LayerSwitch`] decides,
//! in time given as an argument; [`review`] applies its decisions and schedules the next.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use uprtcd_dataplane::router::ProducerId;

use super::hub::Outgoing;
use super::protocol::ServerEvent;
use crate::events::Lifecycle;
use crate::ids::TrackId;
use crate::state::AppState;

/// How long a layer goes without demand before its publisher is told to pause it.
pub const PAUSE_HOLD: Duration = Duration::from_secs(3);

/// Which of one track's layers its publisher sends, as told, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSwitch {
    /// Whether each layer is active at the publisher, as last told (every one at first: a
    /// publisher starts with all its encodings).
    active: Vec<bool>,
    /// Since when each active layer has had no demand.
    unwanted_since: Vec<Option<Instant>>,
}

/// What a review of a track's layers decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwitchDecision {
    /// Tell the publisher: these layers active, the others paused.
    pub send: Option<Vec<bool>>,
    /// Review again then: an active layer without demand is due to pause.
    pub review_at: Option<Instant>,
}

impl LayerSwitch {
    /// A track of `layers` layers, all sending.
    pub fn new(layers: usize) -> Self {
        Self { active: vec![true; layers], unwanted_since: vec![None; layers] }
    }

    /// Decides at `now` what the layers should be given which are `wanted` (lowest first).
    pub fn review(&mut self, now: Instant, wanted: &[bool]) -> SwitchDecision {
        let mut next = self.active.clone();
        let mut review_at: Option<Instant> = None;
        for (layer, active) in next.iter_mut().enumerate() {
            let wanted = layer == 0 || wanted.get(layer).copied().unwrap_or(false);
            let since = &mut self.unwanted_since[layer];
            if wanted {
                *since = None;
                *active = true;
                continue;
            }
            if !*active {
                continue;
            }
            let due = *since.get_or_insert(now) + PAUSE_HOLD;
            if now >= due {
                *active = false;
                *since = None;
            } else {
                review_at = Some(review_at.map_or(due, |at| at.min(due)));
            }
        }
        let send = (next != self.active).then(|| next.clone());
        self.active = next;
        SwitchDecision { send, review_at }
    }
}

/// Reviews `track_id`'s layers now: tells its publisher what changed, and comes back when
/// a layer without demand is due to pause.
pub fn review(state: &AppState, track_id: &TrackId) {
    let Some((decision, told)) = state.hub().review_layers(track_id, Instant::now()) else { return };
    if let (Some(active), Some((room, publisher, mid, rids))) = (decision.send, told) {
        let active = rids.iter().zip(active).filter(|(_, on)| *on).map(|(rid, _)| rid.clone()).collect();
        let event = Outgoing::Event(ServerEvent::Layers { mid, active });
        if state.hub().send_to(&room, std::slice::from_ref(&publisher), &event) > 0 {
            Lifecycle::bump(&state.lifecycle().layer_updates);
        }
    }
    if let Some(at) = decision.review_at {
        let (state, track_id) = (state.clone(), track_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            review(&state, &track_id);
        });
    }
}

/// A worker reported whether some consumer of it could receive `producer`.
pub fn demand_changed(state: &AppState, worker: usize, producer: ProducerId, wanted: bool) {
    if let Some(track_id) = state.hub().set_demand(worker, producer, wanted) {
        review(state, &track_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_without_demand_pauses_after_the_hold_and_resumes_at_once() {
        let start = Instant::now();
        let mut switch = LayerSwitch::new(3);
        let decision = switch.review(start, &[true, true, false]);
        assert_eq!(decision, SwitchDecision { send: None, review_at: Some(start + PAUSE_HOLD) });
        // Reviews in between change nothing and keep the first moment it was unwanted.
        let decision = switch.review(start + Duration::from_secs(1), &[true, true, false]);
        assert_eq!(decision.review_at, Some(start + PAUSE_HOLD));
        let decision = switch.review(start + PAUSE_HOLD, &[true, true, false]);
        assert_eq!(decision, SwitchDecision { send: Some(vec![true, true, false]), review_at: None });
        let decision = switch.review(start + PAUSE_HOLD * 2, &[true, true, true]);
        assert_eq!(decision.send, Some(vec![true, true, true]), "resumed at once");
    }

    #[test]
    fn demand_coming_back_within_the_hold_keeps_the_layer() {
        let start = Instant::now();
        let mut switch = LayerSwitch::new(2);
        switch.review(start, &[true, false]);
        switch.review(start + Duration::from_secs(2), &[true, true]);
        let decision = switch.review(start + Duration::from_secs(4), &[true, false]);
        assert_eq!(decision, SwitchDecision { send: None, review_at: Some(start + Duration::from_secs(7)) });
    }

    #[test]
    fn the_lowest_layer_is_never_paused() {
        let start = Instant::now();
        let mut switch = LayerSwitch::new(3);
        switch.review(start, &[false, false, false]);
        let decision = switch.review(start + PAUSE_HOLD, &[]);
        assert_eq!(decision.send, Some(vec![true, false, false]));
    }
}
