//! Publishing: a client's offer becomes a transport on the room's worker, a producer per
//! stream the answer accepts, and the SDP answer pointing the client at that worker. The
//! room's `maxBitrate` caps the publisher twice: `b=AS`/`b=TIAS` in the answer and REMB from
//! the worker. The
//! room's other sessions hear `track-added` for each stream, which makes the subscribing
//! ones renegotiate. A simulcast publisher that hears signalling has the layers nobody
//! receives paused ([`super::dynacast`]).
#![forbid(unsafe_code)]

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::router::{MediaKind, ProducerId, ProducerSpec, Rid, SpeakerGroup};

use super::Session;
use super::hub::{Outgoing, PublishedTrack};
use super::protocol::ServerEvent;
use crate::envelope::{ApiCode, ApiError};
use crate::ids::TrackId;
use crate::registry::PublishRights;
use crate::sdp;

impl Session<'_> {
    /// Answers a publisher's offer. Conversation members publish audio and video; in a live
    /// room the master does, a co-host its kind within its own cap, and the audience is
    /// refused (50009). `hears_layers`: the client hears `layers` (a WebSocket client, not a
    /// WHIP one), so its simulcast layers nobody receives are paused.
    pub(super) async fn publish(&mut self, sdp: &str, hears_layers: bool) -> Result<String, ApiError> {
        if self.publishing.is_some() {
            return Err(ApiError::request("this session publishes already; publish again from a new session"));
        }
        let offer = sdp::RemoteDescription::parse(sdp).map_err(|e| ApiError::invalid(format!("offer refused: {e}")))?;
        no_format_in_common(&offer)?;
        let (room, peer) = (&self.room, &self.peer);
        let (rights, worker, min_bitrate) = self.state.read(|reg| {
            let rights = reg.publish_rights(room, peer)?;
            let room = reg.room(room)?;
            Ok::<_, ApiError>((rights, room.worker, room.min_bitrate))
        })?;
        let PublishRights { audio, video, max_bitrate } = rights;
        let (created, address) = self.create_transport(worker, None, &offer, "offer").await?;
        let bitrate = sdp::BitrateCaps {
            // A co-host's own cap may be below the room's floor: the cap wins.
            min_bps: u32::try_from(min_bitrate.min(max_bitrate)).ok(),
            max_bps: Some(u32::try_from(max_bitrate).unwrap_or(u32::MAX)),
        };
        let session_id = u64::from(created.transport.0) + 1;
        let local =
            self.local_parameters(session_id, 1, &created.local_ice, created.fingerprint, address.port(), bitrate);
        let allowed = |media: &sdp::RemoteMedia| match media.kind {
            sdp::SectionKind::Audio if audio => sdp::Direction::RecvOnly,
            sdp::SectionKind::Video if video => sdp::Direction::RecvOnly,
            _ => sdp::Direction::Inactive,
        };
        let transport = created.transport;
        let answer = match sdp::answer(&offer, &local, &sdp::CodecPolicy::default(), allowed) {
            Ok(answer) => answer,
            Err(e) => {
                let _ = self.state.request_worker(worker, Command::CloseTransport { transport }).await;
                return Err(ApiError::invalid(format!("cannot answer the offer: {e}")));
            }
        };
        // From here the transport belongs to the session, which closes it when it ends.
        self.publishing = Some(transport);
        let mut published = Vec::new();
        // The section and rids of each simulcast track, by its place in `published`.
        let mut switched = Vec::new();
        for section in answer.negotiated.sections.iter().filter(|s| s.direction == sdp::Direction::RecvOnly) {
            // Only audio and video sections are answered receiving.
            let Some(kind) = section.kind.media() else { continue };
            let track = |producer, layers| PublishedTrack {
                track_id: TrackId::numbered(0),
                number: 0,
                room: self.room.clone(),
                publisher: self.peer.clone(),
                session: self.id,
                worker,
                producer,
                layers,
                kind,
                codec: section.codec.clone(),
                extensions: section.extensions,
            };
            if let (false, Some(rid_extension)) = (section.rids.is_empty(), section.extensions.rtp_stream_id) {
                // One track of simulcast layers, lowest first; its highest layer is what
                // recordings and other nodes get.
                let mut layers = Vec::new();
                let names = layers_lowest_first(&section.rids);
                for &name in &names {
                    let rid = Rid::new(name).map_err(|e| ApiError::invalid(format!("rid {name}: {e}")))?;
                    let clock_rate = section.codec.clock_rate;
                    let add = Command::AddLayerProducer { transport, rid_extension, rid, kind, clock_rate };
                    layers.push(added_producer(self.state.request_worker(worker, add).await?)?);
                }
                if let Some(&highest) = layers.last() {
                    let rids = names.iter().map(|&n| n.to_owned()).collect();
                    switched.push((published.len(), section.mid.to_string(), rids));
                    published.push(track(highest, layers));
                }
                continue;
            }
            // One stream, or simulcast in the older form (RFC 5576 `ssrc-group:SIM`, as
            // libwebrtc writes it): the group's SSRCs are the layers, lowest first.
            let mut producers = Vec::new();
            for stream in &section.streams {
                let spec = ProducerSpec { transport, ssrc: stream.ssrc.0, kind, clock_rate: section.codec.clock_rate };
                producers
                    .push(added_producer(self.state.request_worker(worker, Command::AddProducer { spec }).await?)?);
            }
            match producers[..] {
                [] => {}
                [single] => published.push(track(single, Vec::new())),
                [.., highest] => published.push(track(highest, producers)),
            }
        }
        // Each audio stream's speech is followed among the room's, when it carries levels.
        let group = SpeakerGroup(self.state.hub().speaker_group(&self.room));
        for track in published.iter().filter(|t| t.kind == MediaKind::Audio) {
            if let Some(extension_id) = track.extensions.audio_level {
                let follow = Command::FollowSpeech { producer: track.producer, extension_id, group };
                self.state.request_worker(worker, follow).await?;
            }
        }
        // One transport for every section (BUNDLE): its first transport-wide numbering is it.
        if let Some(extension_id) = answer.negotiated.sections.iter().find_map(|s| s.extensions.transport_cc) {
            self.state.request_worker(worker, Command::EnableTransportFeedback { transport, extension_id }).await?;
        }
        if let Ok(max_bps) = u32::try_from(max_bitrate)
            && max_bps > 0
        {
            self.state.request_worker(worker, Command::LimitBitrate { transport, max_bps }).await?;
        }
        let peer = self.peer.clone();
        let audiences = self.state.read(|reg| reg.visible_rooms(&self.room));
        let published = self.state.hub().add_tracks(&self.room, published);
        for track in &published {
            let added = Outgoing::Tracks(ServerEvent::TrackAdded(track.info()));
            for audience in &audiences {
                self.state.hub().send(audience, |p| p != &peer, &added);
            }
        }
        if hears_layers {
            self.switch_layers(&published, switched).await?;
        }
        crate::recording::tracks_added(self.state, &self.room, &published).await;
        Ok(answer.sdp)
    }

    /// Has the workers report the demand of each simulcast track's layers (`switched`: a
    /// track's place in `published`, its section and rids), so that the layers nobody
    /// receives are paused.
    async fn switch_layers(
        &self,
        published: &[PublishedTrack],
        switched: Vec<(usize, String, Vec<String>)>,
    ) -> Result<(), ApiError> {
        for (index, mid, rids) in switched {
            let Some(track) = published.get(index) else { continue };
            self.state.hub().switch_layers(&track.track_id, mid, rids);
            for &producer in &track.layers {
                self.state.request_worker(track.worker, Command::WatchDemand { producer }).await?;
            }
            super::dynacast::review(self.state, &track.track_id);
        }
        Ok(())
    }
}

/// The producer a worker added, or why it did not.
fn added_producer(reply: Reply) -> Result<ProducerId, ApiError> {
    match reply {
        Reply::ProducerAdded(producer) => Ok(producer),
        other => Err(ApiError::new(ApiCode::RtcFailed, format!("producer refused: {other:?}"))),
    }
}

/// Simulcast layers' rids from the lowest layer to the highest. Layers carry no size in the
/// SDP; names that say it (`q`/`h`/`f`, `l`/`m`/`h`, `low`/`mid`/`high`, `0`/`1`/`2`) are
/// ordered by it, any other list is taken in the offer's order, lowest first, as browsers
/// list `sendEncodings`.
fn layers_lowest_first(rids: &[String]) -> Vec<&str> {
    const SCALES: [&[&str]; 4] = [&["q", "h", "f"], &["l", "m", "h"], &["low", "mid", "high"], &["0", "1", "2"]];
    let mut names: Vec<&str> = rids.iter().map(String::as_str).collect();
    if let Some(scale) = SCALES.iter().find(|scale| names.iter().all(|n| scale.contains(n))) {
        names.sort_by_key(|n| scale.iter().position(|s| s == n));
    }
    names
}

/// Refuses an offer whose audio and video sections all send formats the SFU does not forward,
/// naming what it offered: answering it would publish nothing.
fn no_format_in_common(offer: &sdp::RemoteDescription) -> Result<(), ApiError> {
    let policy = sdp::CodecPolicy::default();
    let sending: Vec<&sdp::RemoteMedia> =
        offer.media.iter().filter(|m| !m.rejected && m.direction.sends() && m.kind.media().is_some()).collect();
    if sending.is_empty() || sending.iter().any(|m| !sdp::forwardable(m, &policy).is_empty()) {
        return Ok(());
    }
    let mut offered: Vec<String> =
        sending.iter().flat_map(|m| &m.codecs).map(|c| format!("{}/{}", c.name, c.clock_rate)).collect();
    offered.dedup();
    Err(ApiError::invalid(format!(
        "no format in common: the offer sends {}; the SFU forwards {}",
        if offered.is_empty() { "none".to_owned() } else { offered.join(", ") },
        sdp::FORWARDED_FORMATS
    )))
}

#[cfg(test)]
mod tests {
    use super::layers_lowest_first;

    #[test]
    fn layers_are_ordered_by_names_that_say_their_size() {
        let names = |rids: &[&str]| rids.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
        assert_eq!(layers_lowest_first(&names(&["f", "h", "q"])), ["q", "h", "f"]);
        assert_eq!(layers_lowest_first(&names(&["high", "low"])), ["low", "high"]);
        assert_eq!(layers_lowest_first(&names(&["2", "0", "1"])), ["0", "1", "2"]);
        assert_eq!(layers_lowest_first(&names(&["b", "a"])), ["b", "a"], "unknown names: the offer's order");
        assert_eq!(layers_lowest_first(&names(&["h", "x"])), ["h", "x"]);
    }
}
