//! Which producers somebody on this worker could receive: a producer is *demanded* while an
//! unpaused consumer takes it (a single stream), or may take it (a simulcast layer at or
//! below what its subscriber asked for: the allocator may move it down to any of those).
//! The control plane watches simulcast layers' producers, its own and imported ones, and
//! has publishers stop sending the layers no worker demands (dynacast).
//!
//! Rules: changes to consumers only mark the demand stale; [`Router::refresh_demand`] once
//! a turn recomputes it, in one pass over consumers and producers, and reports each watched
//! producer whose demand changed (and each newly watched one once). Control operations are
//! rare next to packets, so no count is kept up to date per packet.
#![forbid(unsafe_code)]

use super::{ProducerId, Router, RouterError, slab_key};

/// Whether the control plane follows a producer's demand, and what it was told last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum DemandWatch {
    #[default]
    Unwatched,
    /// Watched; `None` until its demand is first reported.
    Watched(Option<bool>),
}

impl Router {
    /// Reports `producer`'s demand through [`Router::refresh_demand`] from now on, starting
    /// with what it is now.
    pub fn watch_demand(&mut self, producer: ProducerId) -> Result<(), RouterError> {
        let p = self.producers.get_mut(producer.0 as usize).ok_or(RouterError::UnknownProducer)?;
        if p.demand_watch == DemandWatch::Unwatched {
            p.demand_watch = DemandWatch::Watched(None);
        }
        self.demand_stale = true;
        Ok(())
    }

    /// Recomputes demand if consumers changed since the last call, and names each watched
    /// producer whose demand changed through `emit`, with whether it is demanded now.
    pub fn refresh_demand(&mut self, mut emit: impl FnMut(ProducerId, bool)) {
        if !std::mem::take(&mut self.demand_stale) {
            return;
        }
        if !self.producers.iter().any(|(_, p)| p.demand_watch != DemandWatch::Unwatched) {
            return;
        }
        for (_, p) in &mut self.producers {
            p.demanded = false;
        }
        for (_, consumer) in self.consumers.iter().filter(|(_, c)| !c.paused) {
            let wanted = match &consumer.layers {
                Some(layers) => &layers.producers()[..=layers.cap()],
                None => std::slice::from_ref(&consumer.producer),
            };
            for producer in wanted {
                if let Some(p) = self.producers.get_mut(producer.0 as usize) {
                    p.demanded = true;
                }
            }
        }
        for (key, p) in &mut self.producers {
            if let DemandWatch::Watched(reported) = p.demand_watch
                && reported != Some(p.demanded)
            {
                p.demand_watch = DemandWatch::Watched(Some(p.demanded));
                emit(slab_key(key), p.demanded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{MediaKind, ProducerSpec, Router, RouterConfig, TransportId};
    use super::*;
    use crate::wire::video::VideoFormat;

    const PUBLISHER: TransportId = TransportId(1);

    fn layers(router: &mut Router) -> Vec<ProducerId> {
        (0..3)
            .map(|ssrc| {
                let spec = ProducerSpec { transport: PUBLISHER, ssrc, kind: MediaKind::Video, clock_rate: 90_000 };
                router.add_producer(spec).unwrap()
            })
            .collect()
    }

    fn changes(router: &mut Router) -> Vec<(ProducerId, bool)> {
        let mut changed = Vec::new();
        router.refresh_demand(|producer, wanted| changed.push((producer, wanted)));
        changed
    }

    #[test]
    fn a_layer_is_demanded_up_to_what_some_subscriber_asked_for() {
        let mut router = Router::new(RouterConfig::default());
        let [low, mid, high] = layers(&mut router)[..] else { unreachable!() };
        for &layer in &[low, mid, high] {
            router.watch_demand(layer).unwrap();
        }
        assert_eq!(changes(&mut router), [(low, false), (mid, false), (high, false)], "first report: nobody");
        assert!(changes(&mut router).is_empty(), "nothing changed, nothing reported");

        let first = router.add_consumer(high, TransportId(2), 10).unwrap();
        router.set_layers(first, &[low, mid, high], VideoFormat::Vp8).unwrap();
        assert_eq!(changes(&mut router), [(low, true), (mid, true), (high, true)]);

        router.prefer_layer(first, 0, false).unwrap();
        assert_eq!(changes(&mut router), [(mid, false), (high, false)], "only the low layer is wanted");

        // A second subscriber wanting the middle layer brings it back, not the top one.
        let second = router.add_consumer(high, TransportId(3), 10).unwrap();
        router.set_layers(second, &[low, mid, high], VideoFormat::Vp8).unwrap();
        router.prefer_layer(second, 1, false).unwrap();
        assert_eq!(changes(&mut router), [(mid, true)]);

        router.set_paused(second, true).unwrap();
        assert_eq!(changes(&mut router), [(mid, false)], "a paused subscriber receives nothing");
        router.remove_consumer(second).unwrap();
        router.remove_consumer(first).unwrap();
        assert_eq!(changes(&mut router), [(low, false)]);
    }

    #[test]
    fn a_single_stream_consumer_demands_its_producer_only() {
        let mut router = Router::new(RouterConfig::default());
        let [low, _, high] = layers(&mut router)[..] else { unreachable!() };
        router.watch_demand(low).unwrap();
        router.watch_demand(high).unwrap();
        changes(&mut router);
        // A recording or a node link takes the highest layer as one stream.
        let link = router.add_consumer(high, TransportId(4), 10).unwrap();
        assert_eq!(changes(&mut router), [(high, true)]);
        router.review_layers(Instant::now(), None, |_| {});
        router.remove_producer(high).unwrap();
        assert!(router.consumer_of(TransportId(4), 10).is_none(), "{link:?} went with its producer");
        assert!(changes(&mut router).is_empty(), "a removed producer is not reported");
    }

    #[test]
    fn unwatched_producers_are_never_reported() {
        let mut router = Router::new(RouterConfig::default());
        let [low, ..] = layers(&mut router)[..] else { unreachable!() };
        router.add_consumer(low, TransportId(2), 10).unwrap();
        assert!(changes(&mut router).is_empty());
        assert_eq!(router.watch_demand(ProducerId(99)), Err(RouterError::UnknownProducer));
    }
}
