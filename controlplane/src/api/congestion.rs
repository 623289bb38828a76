//! `GET /debug/congestion`: what each worker's congestion control decided for each
//! subscriber it estimates (the estimate, what was allocated of it, what a better layer
//! would need, and per simulcast stream the layer sent, awaited, wanted and affordable), so
//! an operator can see why a viewer gets the picture it gets. Behind the AppSecret, outside
//! the REST contract.
#![forbid(unsafe_code)]

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use uprtcd_dataplane::command::{Command, Reply};

use crate::envelope::ApiError;
use crate::state::AppState;

/// One subscriber's congestion control.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberCongestion {
    worker: usize,
    transport: u32,
    room_id: Option<String>,
    peer_id: Option<String>,
    estimate_bps: u64,
    allocated_bps: u64,
    /// The estimate the next better layer needs, while one does not fit.
    wanted_bps: Option<u64>,
    feedback_packets: u64,
    /// Feedback ignored: absurd reference times or sequence numbers.
    feedback_ignored: u64,
    streams: Vec<StreamLayers>,
}

/// A subscriber's place among one simulcast stream's layers (0 = lowest).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamLayers {
    ssrc: u32,
    layers: usize,
    current: usize,
    pending: Option<usize>,
    /// The highest layer the subscriber asked for (`video-quality`).
    wanted: usize,
    /// The highest layer its estimate carries.
    affordable: usize,
    /// Whether the subscriber pinned it (its bandwidth goes to it first).
    pinned: bool,
    /// The highest VP8 temporal layer it may be sent (3: all), and the one sent now.
    temporal_cap: u8,
    temporal_layer: u8,
}

pub async fn report(State(state): State<AppState>) -> Result<Json<Vec<SubscriberCongestion>>, ApiError> {
    let mut out = Vec::new();
    for worker in 0..state.worker_handles().len() {
        let Reply::Congestion(reports) = state.request_worker(worker, Command::ReportCongestion).await? else {
            continue;
        };
        for report in reports {
            let owner = state.hub().transport_owner(worker, report.transport);
            out.push(SubscriberCongestion {
                worker,
                transport: report.transport.0,
                room_id: owner.as_ref().map(|(room, _)| room.to_string()),
                peer_id: owner.as_ref().map(|(_, peer)| peer.to_string()),
                estimate_bps: report.estimate_bps,
                allocated_bps: report.allocation.allocated_bps,
                wanted_bps: report.allocation.wanted_bps,
                feedback_packets: report.feedback.feedback,
                feedback_ignored: report.feedback.absurd_reference_time + report.feedback.absurd_sequence,
                streams: report
                    .streams
                    .into_iter()
                    .map(|(ssrc, s)| StreamLayers {
                        ssrc,
                        layers: s.layers,
                        current: s.current,
                        pending: s.pending,
                        wanted: s.cap,
                        affordable: s.budget,
                        pinned: s.pinned,
                        temporal_cap: s.temporal_cap.get(),
                        temporal_layer: s.temporal_layer.get(),
                    })
                    .collect(),
            });
        }
    }
    Ok(Json(out))
}
