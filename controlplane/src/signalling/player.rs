//! A WHEP player's sections. HTTP gives no channel to renegotiate on, so the one offer fixes
//! them: each receiving audio or video section the SFU can serve becomes a slot, answered
//! `sendonly` with one SSRC for the session and every format of the offer the SFU forwards.
//! A slot plays a stream of its kind the room publishes (the master's first, then in
//! publishing order) as soon as there is one, and when that stream ends (its publisher left
//! or reconnected) the next one, on the same SSRC, so a player may start before the
//! publisher and outlive its reconnects.

use uprtcd_dataplane::command::Command;

use super::Session;
use super::hub::PublishedTrack;
use crate::envelope::ApiError;
use crate::ids::TrackId;
use crate::sdp;

/// Slot `i` is sent as `PLAYER_SSRC_BASE + 2i`, its RTX as the next: unique on the player's
/// transport, which carries nothing else.
const PLAYER_SSRC_BASE: u32 = 0x5700_0000;

/// One section of a player's offer that the session keeps filled.
#[derive(Debug)]
pub(super) struct PlayerSlot {
    ssrc: u32,
    rtx_ssrc: u32,
    /// The offer's section (its mid, kind and extension ids) with the formats the answer
    /// agreed to, in its payload types.
    media: sdp::RemoteMedia,
    /// The track it plays now.
    playing: Option<TrackId>,
}

/// Whether the section `media` can play `track`.
fn fits(media: &sdp::RemoteMedia, track: &PublishedTrack) -> bool {
    media.kind.media() == Some(track.kind) && media.codecs.iter().any(|c| c.same_format(&track.codec))
}

impl Session<'_> {
    /// The room's tracks a player takes first: the master's, then the others in publishing
    /// order.
    fn tracks_for_players(&self) -> Vec<PublishedTrack> {
        let master = self.state.read(|reg| reg.room(&self.room).map(|r| r.master.clone())).ok();
        let mut tracks = self.visible_tracks();
        tracks.sort_by_key(|t| Some(&t.publisher) != master.as_ref());
        tracks
    }

    /// Answers a player's offer: every receiving audio or video section with a format the SFU
    /// forwards becomes a slot, answered with the format of the stream it will play first
    /// (when one is published) or the policy's choice, then the rest; the slots are filled
    /// at once and again whenever the room's tracks change ([`Session::fill_slots`]).
    pub(super) async fn play(&mut self, sdp: &str) -> Result<String, ApiError> {
        let offer = sdp::RemoteDescription::parse(sdp).map_err(|e| ApiError::invalid(format!("offer refused: {e}")))?;
        let policy = sdp::CodecPolicy::default();
        let tracks = self.tracks_for_players();
        let mut taken: Vec<&TrackId> = Vec::new();
        let mut planned: Vec<(sdp::Mid, sdp::OutgoingTrack)> = Vec::new();
        for media in offer.media.iter().filter(|m| !m.rejected && m.direction.receives()) {
            let (Some(kind), Some(&fallback)) = (media.kind.media(), sdp::forwardable(media, &policy).first()) else {
                continue;
            };
            let now = tracks.iter().find(|t| !taken.contains(&&t.track_id) && fits(media, t));
            taken.extend(now.map(|t| &t.track_id));
            let index = planned.len() as u32;
            let outgoing = sdp::OutgoingTrack {
                mid: media.mid.clone(),
                kind: media.kind,
                codec: now.map_or_else(|| fallback.clone(), |t| t.codec.clone()),
                ssrc: sdp::Ssrc(PLAYER_SSRC_BASE + 2 * index),
                rtx_ssrc: Some(sdp::Ssrc(PLAYER_SSRC_BASE + 2 * index + 1)),
                stream_id: format!("s{}", self.id),
                track_id: format!("{}-{}", kind, media.mid),
                cname: format!("c{}", self.id),
            };
            planned.push((media.mid.clone(), outgoing));
        }
        if planned.is_empty() {
            return Err(ApiError::invalid(format!(
                "the offer receives no audio or video in a format the SFU forwards ({})",
                sdp::FORWARDED_FORMATS
            )));
        }
        let worker = self.place_subscriber().await?;
        let (created, address) = self.create_transport(worker, None, &offer, "offer").await?;
        let no_caps = sdp::BitrateCaps { min_bps: None, max_bps: None };
        let local =
            self.local_parameters(self.id + 1, 1, &created.local_ice, created.fingerprint, address.port(), no_caps);
        let mut subscription =
            super::subscribe::Subscription::new(created.local_ice.clone(), worker, Some(created.transport));
        let answer = sdp::answer_with_tracks(&offer, &local, &policy, |media| {
            planned.iter().find(|(mid, _)| mid == &media.mid).map(|(_, outgoing)| outgoing)
        });
        for (mid, outgoing) in &planned {
            let agreed = answer.as_ref().ok().and_then(|a| a.negotiated.section(mid)).filter(|s| s.direction.sends());
            let (Some(agreed), Some(offered)) = (agreed, offer.media.iter().find(|m| &m.mid == mid)) else { continue };
            let codecs = std::iter::once(&agreed.codec).chain(&agreed.more_codecs).cloned().collect();
            subscription.slots.push(PlayerSlot {
                ssrc: outgoing.ssrc.0,
                rtx_ssrc: outgoing.rtx_ssrc.map_or(0, |s| s.0),
                media: sdp::RemoteMedia { codecs, ..offered.clone() },
                playing: None,
            });
        }
        // The session owns the transport from here, even when the answer failed: ending the
        // session closes it.
        self.subscription = Some(subscription);
        let answer = answer.map_err(|e| ApiError::invalid(format!("cannot answer the offer: {e}")))?;
        if let Some(extension_id) = answer.negotiated.sections.iter().find_map(|s| s.extensions.transport_cc) {
            self.estimate_bandwidth(worker, created.transport, extension_id).await?;
        }
        self.fill_slots().await?;
        Ok(answer.sdp)
    }

    /// Frees the slots whose stream is no longer the room's and gives each empty one the
    /// first stream that fits it and that no other slot plays.
    pub(super) async fn fill_slots(&mut self) -> Result<(), ApiError> {
        // A WHIP publisher's session hears of the room's tracks too, and has no slots.
        if self.subscription.as_ref().is_none_or(|s| s.slots.is_empty()) {
            return Ok(());
        }
        let tracks = self.tracks_for_players();
        let Some(subscription) = self.subscription.as_mut() else { return Ok(()) };
        let (Some(transport), worker) = (subscription.transport(), subscription.worker()) else { return Ok(()) };
        let mut ended = Vec::new();
        for slot in &mut subscription.slots {
            if let Some(track) = slot.playing.take_if(|playing| !tracks.iter().any(|t| &t.track_id == playing)) {
                subscription.receiving.remove(&track);
                ended.push(slot.ssrc);
            }
        }
        let mut playing: Vec<&TrackId> = subscription.slots.iter().filter_map(|s| s.playing.as_ref()).collect();
        let mut starting = Vec::new();
        for (index, slot) in subscription.slots.iter().enumerate().filter(|(_, s)| s.playing.is_none()) {
            let fitting = tracks.iter().find(|t| !playing.contains(&&t.track_id) && fits(&slot.media, t));
            if let Some(track) = fitting {
                playing.push(&track.track_id);
                starting.push((index, (slot.ssrc, slot.rtx_ssrc), slot.media.clone(), track.clone()));
            }
        }
        // A stream that left the room with its producer alive (a separated merge) stops here;
        // one whose publisher left went with its producer, and this is refused.
        for ssrc in ended {
            let _ = self.state.request_worker(worker, Command::RemoveConsumer { transport, ssrc }).await;
        }
        for (index, ssrcs, media, track) in starting {
            let Some(consumer) = self.add_consumer(worker, transport, &track, &media, ssrcs).await? else { continue };
            if let Some(subscription) = self.subscription.as_mut() {
                subscription.receiving.insert(track.track_id.clone(), (media.mid, consumer, ssrcs.0));
                if let Some(slot) = subscription.slots.get_mut(index) {
                    slot.playing = Some(track.track_id);
                }
            }
        }
        Ok(())
    }
}
