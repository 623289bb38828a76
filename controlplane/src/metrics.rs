//! The Prometheus text exposition of the dataplane workers' counters, the registry's size,
//! the store's I/O failures, the HTTP listeners' connection counters, how client transports
//! and sessions ended, demo mode's guards, server-side recordings and the recording files'
//! uploads and retention, served at `/metrics` on the API listener (which operators keep
//! private).
#![forbid(unsafe_code)]

use std::fmt::Write;

use uprtcd_dataplane::stats::{DropReason, MediaStat};

use crate::listener::{HandshakeFailure, HttpStats, ListenerStats};
use crate::state::AppState;

/// The Prometheus family of a worker's media quality statistic: name, type and help.
fn media_family(stat: MediaStat) -> (&'static str, &'static str, &'static str) {
    let kind = if stat.is_gauge() { "gauge" } else { "counter" };
    let (name, help) = match stat {
        MediaStat::LayerSwitches => (
            "uprtcd_layer_switches_total",
            "Subscribers' streams switched to another simulcast layer, at its key frame.",
        ),
        MediaStat::LossDowngrades => (
            "uprtcd_loss_downgrades_total",
            "Simulcast subscribers moved a layer down for asking too many key frames (persistent loss).",
        ),
        MediaStat::TemporalSwitches => (
            "uprtcd_temporal_switches_total",
            "Changes of the highest VP8 temporal layer a subscriber is sent (its frame rate), by its estimate or its frameRate.",
        ),
        MediaStat::LayersBound => {
            ("uprtcd_layers_bound_total", "Simulcast layers whose SSRC was learnt from the rid they carry.")
        }
        MediaStat::ProbePackets => ("uprtcd_probe_packets_total", "Padding packets sent to probe subscribers' paths."),
        MediaStat::FeedbackSent => (
            "uprtcd_transport_feedback_sent_total",
            "Transport-wide congestion control feedback packets sent to publishers.",
        ),
        MediaStat::FeedbackReceived => (
            "uprtcd_transport_feedback_received_total",
            "Transport-wide congestion control feedback packets from subscribers used for their estimates.",
        ),
        MediaStat::FeedbackIgnored => (
            "uprtcd_transport_feedback_ignored_total",
            "Transport-wide feedback or numbering ignored as absurd (sequence numbers or reference times far off).",
        ),
        MediaStat::BadAudioLevels => {
            ("uprtcd_bad_audio_levels_total", "Audio packets whose RFC 6464 audio level element was not one byte.")
        }
        MediaStat::SubscribersEstimated => {
            ("uprtcd_subscribers_estimated", "Subscribers whose bandwidth the worker estimates from their feedback.")
        }
        MediaStat::SubscriberEstimateKbps => {
            ("uprtcd_subscriber_estimate_kbps", "The sum of the estimated subscribers' bandwidth estimates, in kbit/s.")
        }
        MediaStat::StreamsBelowWanted => (
            "uprtcd_streams_below_wanted",
            "Simulcast streams sent below the layer their subscriber wants (its estimate, or a layer that stopped).",
        ),
    };
    (name, kind, help)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl Iterator<Item = (String, f64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The whole exposition.
pub fn render(state: &AppState, http: &HttpStats) -> String {
    let loads = state.loads();
    let cpu = loads.cpu();
    let workers: Vec<_> = loads
        .workers()
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("worker=\"{i}\",tid=\"{}\"", w.thread_id), w.stats.snapshot()))
        .collect();
    let mut out = String::new();
    let per_worker = |pick: &dyn Fn(&uprtcd_dataplane::stats::WorkerCounters) -> f64| {
        workers.iter().map(move |(labels, c)| (labels.clone(), pick(c))).collect::<Vec<_>>().into_iter()
    };
    family(
        &mut out,
        "uprtcd_worker_packets_in_total",
        "counter",
        "Datagrams the worker received.",
        per_worker(&|c| c.packets_in as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_bytes_in_total",
        "counter",
        "Bytes the worker received.",
        per_worker(&|c| c.bytes_in as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_packets_out_total",
        "counter",
        "Datagrams the worker queued for sending.",
        per_worker(&|c| c.packets_out as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_bytes_out_total",
        "counter",
        "Bytes the worker queued for sending.",
        per_worker(&|c| c.bytes_out as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_transports",
        "gauge",
        "Client transports the worker holds.",
        per_worker(&|c| c.transports as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_producers",
        "gauge",
        "Producers the worker holds, those imported from other workers included.",
        per_worker(&|c| c.producers as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_consumers",
        "gauge",
        "Consumers the worker holds.",
        per_worker(&|c| c.consumers as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_relayed_packets_out_total",
        "counter",
        "Packets the worker relayed to other workers, one per destination worker.",
        per_worker(&|c| c.relayed_out as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_relayed_packets_in_total",
        "counter",
        "Packets other workers relayed to this one.",
        per_worker(&|c| c.relayed_in as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_loop_turns_total",
        "counter",
        "Loop turns the worker ran.",
        per_worker(&|c| c.loop_turns as f64),
    );
    family(
        &mut out,
        "uprtcd_worker_busy_seconds_total",
        "counter",
        "Time the worker spent handling work, by its own clock.",
        per_worker(&|c| c.busy.as_secs_f64()),
    );
    family(
        &mut out,
        "uprtcd_worker_longest_turn_seconds",
        "gauge",
        "Longest loop turn in the last publishing interval.",
        per_worker(&|c| c.longest_turn.as_secs_f64()),
    );
    family(
        &mut out,
        "uprtcd_worker_cpu_percent",
        "gauge",
        "CPU of the worker thread over the last second, from the kernel's accounting.",
        workers.iter().zip(&cpu).map(|((labels, _), cpu)| (labels.clone(), *cpu)),
    );
    let drops = workers.iter().flat_map(|(labels, c)| {
        DropReason::ALL
            .iter()
            .map(move |&reason| (format!("{labels},reason=\"{}\"", reason.name()), c.drops_of(reason) as f64))
    });
    family(&mut out, "uprtcd_worker_drops_total", "counter", "Datagrams the worker dropped, by reason.", drops);
    for stat in MediaStat::ALL {
        let (name, kind, help) = media_family(stat);
        family(&mut out, name, kind, help, per_worker(&|c| c.media_of(stat) as f64));
    }
    let rooms = state.read(|reg| reg.room_count());
    family(&mut out, "uprtcd_rooms", "gauge", "Open rooms.", std::iter::once((String::new(), rooms as f64)));
    family(
        &mut out,
        "uprtcd_heap_live_bytes",
        "gauge",
        "Bytes the process holds allocated (what it has not freed; its resident size also counts what the allocator keeps for reuse).",
        std::iter::once((String::new(), uprtcd_dataplane::live_heap_bytes() as f64)),
    );
    let store = state.store_health();
    family(
        &mut out,
        "uprtcd_store_io_errors_total",
        "counter",
        "Store operations that failed on an I/O error (a full disk); the change they carried was refused.",
        std::iter::once((String::new(), store.io_errors as f64)),
    );
    family(
        &mut out,
        "uprtcd_store_reopens_total",
        "counter",
        "Reopens of the store file after an I/O error, by result; the store refuses changes while they fail.",
        [("result=\"ok\"", store.reopens), ("result=\"failed\"", store.failed_reopens)]
            .into_iter()
            .map(|(labels, n)| (labels.to_owned(), n as f64)),
    );
    lifecycle(&mut out, state);
    let listeners = http.listeners();
    let per_listener = |pick: &dyn Fn(&ListenerStats) -> f64| {
        listeners
            .iter()
            .map(|(name, stats)| (format!("listener=\"{name}\""), pick(stats)))
            .collect::<Vec<_>>()
            .into_iter()
    };
    family(
        &mut out,
        "uprtcd_http_connections",
        "gauge",
        "Connections open on the listener, upgraded WebSockets included.",
        per_listener(&|s| s.open() as f64),
    );
    family(
        &mut out,
        "uprtcd_http_connections_refused_total",
        "counter",
        "Connections closed at accept because the listener had its maximum open.",
        per_listener(&|s| s.refused() as f64),
    );
    let timeouts = listeners.iter().flat_map(|(name, stats)| {
        [
            ("header", stats.header_timeouts()),
            ("idle", stats.idle_timeouts()),
            ("tls_handshake", stats.tls_handshake_timeouts()),
        ]
        .map(|(kind, n)| (format!("listener=\"{name}\",kind=\"{kind}\""), n as f64))
    });
    family(
        &mut out,
        "uprtcd_http_timeouts_total",
        "counter",
        "Connections closed because a request's head took longer than the header-read timeout \
         (header), no request began within the idle timeout (idle), or the TLS handshake took \
         longer than its timeout (tls_handshake).",
        timeouts,
    );
    tls(&mut out, &listeners);
    demo(&mut out, state);
    recordings(&mut out, state);
    files(&mut out, state);
    cluster(&mut out, state);
    out
}

/// Recycling, and the node's cluster side when it has one.
fn cluster(out: &mut String, state: &AppState) {
    let draining = state.read(|reg| reg.draining());
    let one = |value: bool| std::iter::once((String::new(), f64::from(u8::from(value))));
    family(
        out,
        "uprtcd_draining",
        "gauge",
        "1 once POST /server/recycle was called: no new rooms.",
        one(draining.is_some()),
    );
    family(
        out,
        "uprtcd_drained",
        "gauge",
        "1 when the node is recycled and has no room and no client left: a stop loses nothing.",
        one(draining == Some((0, 0))),
    );
    let Some(cluster) = state.cluster() else { return };
    let stats = &cluster.stats;
    let count = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed) as f64;
    family(
        out,
        "uprtcd_cluster_registered",
        "gauge",
        "1 while the node's entry is in the cluster's Redis.",
        one(cluster.registered()),
    );
    family(
        out,
        "uprtcd_cluster_nodes",
        "gauge",
        "Live nodes in the cluster directory as last read (0 while Redis cannot be read).",
        std::iter::once((String::new(), cluster.nodes().len() as f64)),
    );
    family(
        out,
        "uprtcd_cluster_heartbeats_total",
        "counter",
        "Heartbeats to the cluster's Redis, by result.",
        [
            ("ok", count(&stats.heartbeats) - count(&stats.heartbeat_failures)),
            ("failed", count(&stats.heartbeat_failures)),
        ]
        .into_iter()
        .map(|(result, n)| (format!("result=\"{result}\""), n)),
    );
    family(
        out,
        "uprtcd_cluster_bad_entries_total",
        "counter",
        "Directory entries of other nodes that did not parse, ignored.",
        std::iter::once((String::new(), count(&stats.bad_entries))),
    );
    family(
        out,
        "uprtcd_cluster_forwarded_total",
        "counter",
        "REST calls about another node's rooms passed to it, by result (refused: too many in flight), and \
         calls other nodes passed to this one (received).",
        [
            ("ok", &stats.forwarded_ok),
            ("unreachable", &stats.forwarded_unreachable),
            ("timeout", &stats.forwarded_timeout),
            ("refused", &stats.forwarded_refused),
            ("received", &stats.received_forwarded),
        ]
        .into_iter()
        .map(|(result, n)| (format!("result=\"{result}\""), count(n))),
    );
    let (mirrors, feeds) = state.read(|reg| {
        let held = reg.rooms().filter(|r| r.origin.is_some());
        held.fold((0, 0), |(mirrors, feeds), r| if r.feed { (mirrors, feeds + 1) } else { (mirrors + 1, feeds) })
    });
    family(
        out,
        "uprtcd_cluster_held_rooms",
        "gauge",
        "Other nodes' live rooms held here: mirrors for an audience, and feeds of merge groups.",
        [("mirror", mirrors), ("feed", feeds)].into_iter().map(|(kind, n)| (format!("kind=\"{kind}\""), f64::from(n))),
    );
    family(
        out,
        "uprtcd_cluster_redirects_total",
        "counter",
        "Audience members of a full origin sent to a mirror node (signalling redirect or WHEP 307).",
        std::iter::once((String::new(), count(&stats.redirects))),
    );
}

/// Uploads refused, client uploads by how they ended, and records the retention removed.
fn files(out: &mut String, state: &AppState) {
    let files = state.files();
    family(
        out,
        "uprtcd_record_client_uploads_total",
        "counter",
        "Client upload connections (GET /record on the client listener), by how they ended: stored, \
         not_media, refused (bad_token, expired_token, wrong_record, busy), idle_timeout, too_large, \
         protocol, disconnected (may resume), failed (the server could not store or check the file).",
        files.client_uploads().map(|(result, n)| (format!("result=\"{result}\""), n as f64)),
    );
    family(
        out,
        "uprtcd_record_uploads_not_media_total",
        "counter",
        "POST /record/upload files refused because ffprobe found no audio or video in them.",
        std::iter::once((String::new(), files.uploads_not_media() as f64)),
    );
    family(
        out,
        "uprtcd_recordings_expired_total",
        "counter",
        "Finished records removed with their files after recording.retention_days.",
        std::iter::once((String::new(), files.expired() as f64)),
    );
}

/// The TLS listeners' handshakes and certificate reloads (all zero on a listener without TLS).
fn tls(out: &mut String, listeners: &[(&'static str, &ListenerStats)]) {
    let handshakes = listeners.iter().flat_map(|(name, stats)| {
        [("full", false), ("resumed", true)].map(|(kind, resumed)| {
            (format!("listener=\"{name}\",kind=\"{kind}\""), stats.tls_handshakes(resumed) as f64)
        })
    });
    family(
        out,
        "uprtcd_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, full or resumed with a session ticket.",
        handshakes,
    );
    let failures = listeners.iter().flat_map(|(name, stats)| {
        HandshakeFailure::ALL.map(|reason| {
            (format!("listener=\"{name}\",reason=\"{}\"", reason.label()), stats.tls_failures(reason) as f64)
        })
    });
    family(
        out,
        "uprtcd_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed, by reason: plain_http (answered 400), not_tls, malformed, \
         misbehaved, incompatible (nothing in common), alert (the client refused, often the \
         certificate), closed (by the client), other. Timeouts are in uprtcd_http_timeouts_total.",
        failures,
    );
    let reloads = listeners.iter().flat_map(|(name, stats)| {
        [("ok", true), ("failed", false)]
            .map(|(result, ok)| (format!("listener=\"{name}\",result=\"{result}\""), stats.tls_reloads(ok) as f64))
    });
    family(
        out,
        "uprtcd_tls_reloads_total",
        "counter",
        "Certificate reloads (SIGHUP or a change of the files); a failed one keeps the certificate in use.",
        reloads,
    );
}

/// What demo mode holds open, refused and closed.
fn demo(out: &mut String, state: &AppState) {
    let rooms = state.read(|reg| reg.demo_rooms().count());
    family(
        out,
        "uprtcd_demo_rooms",
        "gauge",
        "Open rooms that the demo page (POST /demo/join) opened.",
        std::iter::once((String::new(), rooms as f64)),
    );
    let guard = state.demo_guard();
    family(
        out,
        "uprtcd_demo_joins_refused_total",
        "counter",
        "POST /demo/join requests refused, by reason (bad input is not counted).",
        guard.refused().map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
    family(
        out,
        "uprtcd_demo_rooms_expired_total",
        "counter",
        "Demo rooms closed for being empty (client.demo_room_idle_ms) or old (client.demo_room_max_age_ms).",
        guard.expired().map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
}

/// Server-side recordings: capturing, composed, failed, and packets their captures lost.
fn recordings(out: &mut String, state: &AppState) {
    let recordings = state.recordings();
    let counters = &recordings.counters;
    let count = |counter: &std::sync::atomic::AtomicU64| {
        std::iter::once((String::new(), counter.load(std::sync::atomic::Ordering::Relaxed) as f64))
    };
    family(
        out,
        "uprtcd_recordings_capturing",
        "gauge",
        "Server-side recordings capturing now (status 1 or 2).",
        std::iter::once((String::new(), recordings.active_count() as f64)),
    );
    family(
        out,
        "uprtcd_recordings_started_total",
        "counter",
        "Server-side recordings started.",
        count(&counters.started),
    );
    family(
        out,
        "uprtcd_recordings_composed_total",
        "counter",
        "Recordings composed into their MP4 (status 6).",
        count(&counters.composed),
    );
    family(
        out,
        "uprtcd_recordings_failed_total",
        "counter",
        "Recordings that ended in status 7.",
        count(&counters.failed),
    );
    family(
        out,
        "uprtcd_recording_capture_overflow_total",
        "counter",
        "Packets a capture's socket had no room for (dropped; forwarding never waits for a capture).",
        count(&counters.capture_overflow),
    );
}

/// How client transports and sessions ended.
fn lifecycle(out: &mut String, state: &AppState) {
    let lifecycle = state.lifecycle();
    let single = |value: u64| std::iter::once((String::new(), value as f64));
    let count = |counter: &std::sync::atomic::AtomicU64| single(counter.load(std::sync::atomic::Ordering::Relaxed));
    family(
        out,
        "uprtcd_transports_connected_total",
        "counter",
        "Client transports that completed ICE and DTLS.",
        single(lifecycle.connected()),
    );
    family(
        out,
        "uprtcd_transports_closed_total",
        "counter",
        "Client transports the workers removed, by reason.",
        lifecycle.closed().map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
    family(
        out,
        "uprtcd_dtls_failures_total",
        "counter",
        "Client transports whose DTLS handshake failed, by what failed (fingerprint_mismatch, no_certificate, certificate_rejected, ...).",
        lifecycle.dtls_failed().filter(|&(_, n)| n > 0).map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
    family(
        out,
        "uprtcd_transports_owned",
        "gauge",
        "Open client transports with a session that owns them.",
        single(state.hub().owned_transports() as u64),
    );
    family(
        out,
        "uprtcd_transports_pending",
        "gauge",
        "Client transports opened and not yet connected.",
        single(state.hub().pending_transports() as u64),
    );
    family(
        out,
        "uprtcd_transports_pending_refused_total",
        "counter",
        "Transports refused because their client's address had client.max_pending_transports_per_ip still connecting.",
        count(&lifecycle.pending_refused),
    );
    family(
        out,
        "uprtcd_signalling_ping_timeouts_total",
        "counter",
        "Signalling sessions closed because their client answered no ping within client.ping_timeout_ms.",
        count(&lifecycle.ping_timeouts),
    );
    family(
        out,
        "uprtcd_signalling_write_timeouts_total",
        "counter",
        "Sessions closed because a write to their client took longer than client.write_timeout_ms.",
        count(&lifecycle.write_timeouts),
    );
    family(
        out,
        "uprtcd_sessions_replaced_total",
        "counter",
        "Sessions a new connection of the same peer replaced after they answered no probe.",
        count(&lifecycle.replaced),
    );
    family(
        out,
        "uprtcd_producers_started_total",
        "counter",
        "Published streams whose packets started flowing: the first packet, or the first after a stop.",
        count(&lifecycle.producers_started),
    );
    family(
        out,
        "uprtcd_producers_stopped_total",
        "counter",
        "Published streams that sent nothing for 5 s while still published.",
        count(&lifecycle.producers_stopped),
    );
    family(
        out,
        "uprtcd_speaker_changes_total",
        "counter",
        "Changes of a room's dominant speaker, as its clients hear them in `speaker` events.",
        count(&lifecycle.speaker_changes),
    );
    family(
        out,
        "uprtcd_layer_updates_total",
        "counter",
        "`layers` messages that paused or resumed a publisher's simulcast layers (dynacast).",
        count(&lifecycle.layer_updates),
    );
}
