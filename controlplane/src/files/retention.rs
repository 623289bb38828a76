//! The hourly sweep of recording files: finished records (status 6 or 7) older than
//! `recording.retention_days` are removed with their files, and client uploads left
//! unfinished when their URL expired become status 7 (their partial file removed).
//!
//! Rule: the registry commits the change before any file is removed (see [`super`]), so a
//! crash never leaves a record whose file is gone.
#![forbid(unsafe_code)]

use std::time::{Duration, UNIX_EPOCH};

use crate::ids::RecordId;
use crate::registry::{Recording, record_status};
use crate::state::AppState;

/// How often the sweep runs (and once at start).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// A record as the sweep judges it.
#[derive(Debug, Clone)]
struct Candidate {
    id: RecordId,
    status: u8,
    /// Milliseconds since the epoch; the file's modification time for records stored before
    /// creation times were.
    born_ms: Option<u64>,
    upload_expires: Option<u64>,
}

/// The finished records born at least `retention` before `now_ms`.
fn expired(candidates: &[Candidate], now_ms: u64, retention: Duration) -> Vec<RecordId> {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    candidates
        .iter()
        .filter(|c| record_status::is_finished(c.status))
        .filter(|c| c.born_ms.is_some_and(|born| now_ms.saturating_sub(born) >= retention_ms))
        .map(|c| c.id.clone())
        .collect()
}

/// The client uploads still in progress whose URL has expired.
fn abandoned(candidates: &[Candidate], now_ms: u64) -> Vec<RecordId> {
    candidates
        .iter()
        .filter(|c| matches!(c.status, record_status::PREPARING | record_status::RECORDING))
        .filter(|c| c.upload_expires.is_some_and(|exp| exp.saturating_mul(1000) <= now_ms))
        .map(|c| c.id.clone())
        .collect()
}

/// Starts the sweep on the current runtime: at once, then every [`SWEEP_INTERVAL`].
pub fn spawn(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            sweep(&state).await;
        }
    });
}

/// One sweep; failures are logged and retried at the next.
pub async fn sweep(state: &AppState) {
    let dir = state.settings().recordings_dir.clone();
    let records: Vec<Recording> = state.read(|reg| reg.recordings().cloned().collect());
    let mut candidates = Vec::with_capacity(records.len());
    for r in records {
        let born_ms = match r.created_ms {
            0 => file_time_ms(&dir.join(&r.file)).await,
            ms => Some(ms),
        };
        candidates.push(Candidate { id: r.id, status: r.status, born_ms, upload_expires: r.upload_expires });
    }
    let now_ms = super::unix_ms();
    for id in abandoned(&candidates, now_ms) {
        if state.files().is_uploading(&id) {
            continue;
        }
        let msg = "the client upload was not finished before its URL expired".to_owned();
        if let Err(e) = super::client_upload::fail(state, &id, msg).await {
            tracing::warn!(record = %id, error = %e.msg, "cannot end an abandoned client upload");
        }
    }
    let Some(retention) = state.settings().retention else { return };
    let due = expired(&candidates, now_ms, retention);
    if due.is_empty() {
        return;
    }
    let removed =
        state.write(move |reg| Ok(due.iter().filter_map(|id| reg.remove_recording(id)).collect::<Vec<_>>())).await;
    let removed = match removed {
        Ok(removed) => removed,
        Err(e) => {
            tracing::warn!(error = %e.msg, "cannot remove expired recordings; retrying at the next sweep");
            return;
        }
    };
    for recording in &removed {
        if !recording.file.is_empty()
            && let Err(e) = tokio::fs::remove_file(dir.join(&recording.file)).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(record = %recording.id, error = %e, "cannot remove an expired recording's file");
        }
        let _ = tokio::fs::remove_file(super::partial_path(&dir, &recording.id)).await;
    }
    let _ = super::sync_dir(&dir).await;
    state.files().count_expired(removed.len() as u64);
    tracing::info!(records = removed.len(), ?retention, "removed recordings past their retention");
}

async fn file_time_ms(path: &std::path::Path) -> Option<u64> {
    let modified = tokio::fs::metadata(path).await.ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;

    fn candidate(id: &str, status: u8, born_ms: Option<u64>, upload_expires: Option<u64>) -> Candidate {
        Candidate { id: RecordId::try_from(id.to_owned()).unwrap(), status, born_ms, upload_expires }
    }

    fn ids(list: Vec<RecordId>) -> Vec<String> {
        list.into_iter().map(String::from).collect()
    }

    #[test]
    fn finished_records_past_their_retention_go() {
        let now = 100 * DAY_MS;
        let all = [
            candidate("old-done", 6, Some(now - 8 * DAY_MS), None),
            candidate("old-error", 7, Some(now - 7 * DAY_MS), None),
            candidate("young", 6, Some(now - 6 * DAY_MS), None),
            candidate("old-but-processing", 5, Some(now - 30 * DAY_MS), None),
            candidate("old-recording", 2, Some(now - 30 * DAY_MS), None),
            candidate("unknown-age", 6, None, None),
        ];
        assert_eq!(ids(expired(&all, now, Duration::from_millis(7 * DAY_MS))), ["old-done", "old-error"]);
    }

    #[test]
    fn client_uploads_unfinished_at_expiry_are_abandoned() {
        let now_ms = 1_000_000_000;
        let all = [
            candidate("expired", 2, Some(0), Some(now_ms / 1000)),
            candidate("expired-untouched", 1, Some(0), Some(now_ms / 1000 - 1)),
            candidate("valid", 2, Some(0), Some(now_ms / 1000 + 1)),
            candidate("done", 6, Some(0), Some(1)),
            candidate("live-recording", 2, Some(0), None),
        ];
        assert_eq!(ids(abandoned(&all, now_ms)), ["expired", "expired-untouched"]);
    }
}
