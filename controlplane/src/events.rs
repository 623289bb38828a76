//! What the workers report, acted on: one task per worker drains its event stream and
//! hands each transport's end to the session that opened it (which then leaves the room or
//! unpublishes, see `signalling`), forgets imports whose stream ended, and counts it all.
//! Also the counters of the sessions' own lifecycle (pings unanswered, writes that stalled,
//! connections replaced) and of published streams that started and stopped flowing, so that
//! `/metrics` shows why clients went and whether their media flows.
//!
//! Rule: the drain never waits on anything but its stream; delivering to a session is a
//! `try_send` (a session that cannot take it is closed as stalled by the hub).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use uprtcd_dataplane::command::{EventReceiver, WorkerEvent};
use uprtcd_dataplane::dtls::DtlsError;
use uprtcd_dataplane::engine::{CloseReason, EngineEvent};

use crate::state::AppState;

/// Counters of how transports and sessions ended.
#[derive(Debug, Default)]
pub struct Lifecycle {
    connected: AtomicU64,
    closed: [AtomicU64; CloseReason::NAMES.len()],
    /// Transports whose DTLS handshake failed, by what failed (a subset of `closed`'s
    /// `dtls_failed`): a certificate that does not match its fingerprint, none, one of a
    /// key type not taken, …, in the order of `DtlsError::ALL`.
    dtls_failed: [AtomicU64; DtlsError::ALL.len()],
    /// Signalling sessions closed because their client answered no ping in time.
    pub ping_timeouts: AtomicU64,
    /// Signalling sessions closed because a write to their client did not finish in time.
    pub write_timeouts: AtomicU64,
    /// Sessions that a new connection of the same peer replaced after they failed a probe.
    pub replaced: AtomicU64,
    /// Transports refused because their client's address had its maximum still connecting.
    pub pending_refused: AtomicU64,
    /// Producers whose packets started flowing (the first, or the first after a stop).
    pub producers_started: AtomicU64,
    /// Producers that went quiet without being removed.
    pub producers_stopped: AtomicU64,
    /// Rooms' dominant speakers that changed.
    pub speaker_changes: AtomicU64,
    /// `layers` messages sent to publishers: simulcast layers paused or resumed (dynacast).
    pub layer_updates: AtomicU64,
}

impl Lifecycle {
    fn count_closed(&self, reason: CloseReason) {
        self.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let CloseReason::DtlsFailed(error) = reason
            && let Some(index) = DtlsError::ALL.iter().position(|&e| e == error)
        {
            self.dtls_failed[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// DTLS handshakes failed, by what failed.
    pub fn dtls_failed(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DtlsError::ALL.iter().zip(&self.dtls_failed).map(|(e, count)| (e.name(), count.load(Ordering::Relaxed)))
    }

    /// Transports that finished their handshake.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Transports closed, by reason.
    pub fn closed(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CloseReason::NAMES.iter().zip(&self.closed).map(|(&name, count)| (name, count.load(Ordering::Relaxed)))
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts draining every worker's event stream on the current runtime. Streams already
/// taken are skipped; each task ends when its worker does.
pub fn spawn_drains(state: &AppState) {
    for handle in state.worker_handles() {
        if let Some(events) = handle.take_events() {
            tokio::spawn(drain(state.clone(), events));
        }
    }
}

async fn drain(state: AppState, mut events: EventReceiver) {
    while let Some(event) = events.recv().await {
        apply(&state, event);
    }
}

fn apply(state: &AppState, WorkerEvent { worker, event }: WorkerEvent) {
    let lifecycle = state.lifecycle();
    match event {
        EngineEvent::TransportConnected(transport) => {
            Lifecycle::bump(&lifecycle.connected);
            state.hub().transport_connected(worker, transport);
        }
        EngineEvent::TransportClosed { transport, reason } => {
            lifecycle.count_closed(reason);
            let told = state.hub().transport_closed(worker, transport, reason);
            if reason != CloseReason::Requested {
                tracing::info!(worker, transport = transport.0, reason = reason.as_str(), told, "transport closed");
            }
        }
        EngineEvent::ImportEnded(producer) => state.hub().import_ended(worker, producer),
        EngineEvent::ProducerStarted(producer) => {
            Lifecycle::bump(&lifecycle.producers_started);
            tracing::debug!(worker, producer = producer.0, "producer started");
        }
        EngineEvent::ProducerStopped(producer) => {
            Lifecycle::bump(&lifecycle.producers_stopped);
            tracing::debug!(worker, producer = producer.0, "producer stopped");
        }
        EngineEvent::DominantSpeaker { producer, .. } => {
            Lifecycle::bump(&lifecycle.speaker_changes);
            crate::signalling::speaker_changed(state, worker, producer);
        }
        EngineEvent::Demand { producer, wanted } => {
            crate::signalling::dynacast::demand_changed(state, worker, producer, wanted);
        }
    }
}
