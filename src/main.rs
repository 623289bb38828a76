//! The uprtcd binary: reads the configuration, starts the pinned dataplane workers, then the
//! control plane's runtime on the cores the workers leave free, tells systemd it is ready,
//! and shuts everything down in order on SIGTERM or SIGINT.
#![forbid(unsafe_code)]

mod config;
mod secret;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use uprtcd_controlplane::listener::{self, HttpStats, ListenerStats};
use uprtcd_controlplane::load::{WorkerInfo, WorkerLoads};
use uprtcd_controlplane::recording::RecordingSettings;
use uprtcd_controlplane::state::Settings;
use uprtcd_controlplane::tls::{Certificate, CertificateFiles, ServerCertificate};
use uprtcd_dataplane::worker::{WorkerPlan, Workers};

use crate::config::{Certificates, Cli, Config, DemoNotice};

/// mimalloc, counted: `/metrics` reports the bytes the program holds beside its resident size.
#[global_allocator]
static GLOBAL: uprtcd_dataplane::CountingAllocator<mimalloc::MiMalloc> =
    uprtcd_dataplane::CountingAllocator::new(mimalloc::MiMalloc);

/// `RUST_LOG`, or `info`; the SDP parser's own warnings stay off unless `RUST_LOG` names it.
/// They quote the offending line of a client's offer whole (unknown attributes are routine in
/// browsers' offers), so any stranger could write as much as it likes to the log; a refused
/// offer is answered 10002 with the reason instead.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if asked.contains("webrtc_sdp") {
        return filter;
    }
    filter.add_directive("webrtc_sdp=off".parse().expect("a valid directive"))
}

/// Descriptors a server holds besides its clients' connections: listeners, each worker's
/// sockets, wake-ups and rings, the store, the runtime's own.
const DESCRIPTORS_BESIDES_CONNECTIONS: u64 = 256;

/// Takes the hard limit of open files, and warns when even that is below what the connection
/// caps allow: the connections past it would be refused by the kernel, not by a cap.
fn raise_open_files_limit(config: &Config, workers: usize) {
    let connections =
        config.api_http.max_connections + config.client_http.max_connections + workers * config.tcp.max_connections;
    let wanted = connections as u64 + DESCRIPTORS_BESIDES_CONNECTIONS;
    match uprtcd_dataplane::raise_open_files_limit() {
        Ok((_, limit)) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-files limit is below what the connection caps allow; raise the hard limit (systemd: LimitNOFILE)"
        ),
        Ok((before, limit)) if limit > before => tracing::info!(before, limit, "raised the open-files limit"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(log_filter()).init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("uprtcd: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let config = Config::resolve(cli).map_err(|e| e.to_string())?;
    config.prepare_data_dir().map_err(|e| e.to_string())?;
    let (api_listener, client_listener) = config.bind_listeners().map_err(|e| e.to_string())?;
    let certificates = config.load_certificates().map_err(|e| e.to_string())?;
    // Once the configuration is known good: a bad one still stops the start with one line.
    match config.demo_notice {
        Some(notice @ DemoNotice::OffBeyondLoopback) => {
            tracing::info!(listen = %config.client_listen, "{}", notice.message())
        }
        Some(notice @ DemoNotice::OnBeyondLoopback) => {
            tracing::warn!(listen = %config.client_listen, "{}", notice.message())
        }
        None => {}
    }
    if cli.check_config {
        println!("uprtcd: configuration is valid");
        return Ok(());
    }
    let app_secret = match &config.app_secret {
        Some(secret) => secret.clone(),
        None => {
            let (secret, generated) =
                secret::load_or_generate(&config.data_dir).map_err(|e| format!("server.app_secret: {e}"))?;
            if generated {
                eprintln!(
                    "uprtcd: generated the AppSecret {secret} (kept in {}); business servers send it as `authorization: key=<AppSecret>`",
                    secret::path(&config.data_dir).display()
                );
            }
            secret
        }
    };

    let available: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
    let mut plan = WorkerPlan::spread(config.worker_count(available.len()), &available, config.io_backend);
    plan.udp = Some(config.udp_listen);
    plan.engine.connect_timeout = config.connect_timeout;
    plan.tcp = config.tcp;
    if let Some(reason) = uprtcd_dataplane::io::uring_unavailable_reason() {
        tracing::info!(%reason, "io_uring is unavailable; workers use epoll");
    }
    let workers =
        Arc::new(Workers::start(&plan).map_err(|e| format!("dataplane.udp_listen: cannot start the workers: {e}"))?);
    for handle in workers.handles() {
        tracing::info!(
            worker = handle.index(),
            tid = handle.thread_id(),
            core = handle.core(),
            pinned = handle.pinned(),
            backend = handle.backend(),
            udp = ?handle.udp_address(),
            "dataplane worker started"
        );
    }
    let loads = Arc::new(WorkerLoads::new(
        workers
            .handles()
            .iter()
            .map(|h| WorkerInfo { thread_id: h.thread_id(), core: h.core(), stats: Arc::clone(h.stats()) })
            .collect(),
    ));

    let control_cores = plan.spare_cores(&available);
    let settings = settings(&config, app_secret, (&api_listener, &client_listener), &control_cores)?;
    if config.recordings_dir.is_some() {
        std::fs::create_dir_all(&settings.recordings_dir)
            .map_err(|e| format!("recording.dir: cannot create {}: {e}", settings.recordings_dir.display()))?;
    }
    let state = uprtcd_controlplane::open(
        settings,
        &config.data_dir,
        Arc::clone(&loads),
        Arc::clone(&workers),
        uprtcd_controlplane::registry::Limits {
            default_max_members: config.default_max_members,
            max_connections: config.max_connections,
        },
    )
    .map_err(|e| format!("server.data_dir: {e}"))?;

    let runtime = control_runtime(&control_cores).map_err(|e| format!("cannot start the control plane: {e}"))?;
    // Once nothing else can stop the start, so that a refused start stays one line.
    raise_open_files_limit(&config, workers.handles().len());
    let served = runtime.block_on(serve(state, loads, &config, certificates, api_listener, client_listener));
    runtime.shutdown_timeout(Duration::from_secs(5));
    // The control plane's state held the other references; dropping the last one stops and
    // joins the workers.
    match Arc::try_unwrap(workers) {
        Ok(workers) => workers.shutdown(),
        Err(_) => tracing::warn!("the control plane still holds the workers; they stop when the process exits"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    served
}

/// What the API announces, from the configuration and the addresses actually bound; ffmpeg
/// runs on `spare_cores`, the control plane's.
fn settings(
    config: &Config,
    app_secret: String,
    (api, client): (&TcpListener, &TcpListener),
    spare_cores: &[usize],
) -> Result<Settings, String> {
    let local = |listener: &TcpListener, key: &str| listener.local_addr().map_err(|e| format!("{key}: {e}"));
    let api_addr = local(api, "api.listen")?;
    let client_port = local(client, "client.listen")?.port();
    let announced_api =
        if api_addr.ip().is_unspecified() { SocketAddr::new(config.announced_ip, api_addr.port()) } else { api_addr };
    let scheme = if config.client_tls.is_some() { "wss" } else { "ws" };
    // A DNS name, when set, stands for both addresses: it is what a certificate names.
    let url = |ip: IpAddr| match &config.public_host {
        Some(host) => format!("{scheme}://{host}:{client_port}/"),
        None => format!("{scheme}://{}/", SocketAddr::new(ip, client_port)),
    };
    let ip6 = config.announced_ip6.map(IpAddr::V6).or(config.announced_ip.is_ipv6().then_some(config.announced_ip));
    Ok(Settings {
        alias: config.alias.clone(),
        api_address: announced_api.to_string(),
        client_url: url(config.announced_ip),
        client_url6: ip6.map(url).unwrap_or_default(),
        announced_ip: config.announced_ip,
        app_secret,
        max_body_bytes: config.max_body_bytes,
        max_upload_bytes: config.max_upload_bytes,
        recordings_dir: config
            .recordings_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join(uprtcd_controlplane::RECORDINGS_DIR)),
        recording: RecordingSettings {
            ffmpeg: config.ffmpeg.clone(),
            jobs: config.recording_jobs,
            min_free_bytes: config.recording_min_free_bytes,
            cores: spare_cores.to_vec(),
        },
        max_playbacks: config.max_playbacks,
        demo: config.demo,
        ping_timeout: config.ping_timeout,
        write_timeout: config.write_timeout,
        max_pending_transports_per_ip: config.max_pending_transports_per_ip,
        mirror_load_percent: config.mirror_load_percent,
        max_audience_per_node: config.max_audience_per_node,
        retention: config.retention,
        client_upload_ttl: config.client_upload_ttl,
        client_upload_idle_timeout: config.client_upload_idle_timeout,
        cluster: config.cluster.clone(),
    })
}

/// A tokio runtime whose threads are pinned, round robin, to `cores`.
fn control_runtime(cores: &[usize]) -> std::io::Result<tokio::runtime::Runtime> {
    let cores: Arc<[usize]> = cores.into();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.len().clamp(1, 4))
        .thread_name("uprtcd-control")
        .enable_all()
        .on_thread_start(move || {
            if !cores.is_empty() {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                core_affinity::set_for_current(core_affinity::CoreId { id: cores[i % cores.len()] });
            }
        })
        .build()
}

/// Serves both listeners until SIGTERM or SIGINT; reloads their certificates on SIGHUP.
async fn serve(
    state: uprtcd_controlplane::state::AppState,
    loads: Arc<WorkerLoads>,
    config: &Config,
    certificates: Certificates,
    api_listener: TcpListener,
    client_listener: TcpListener,
) -> Result<(), String> {
    let listen = |listener: TcpListener, key: &'static str| -> Result<tokio::net::TcpListener, String> {
        listener.set_nonblocking(true).map_err(|e| format!("{key}: {e}"))?;
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("{key}: {e}"))
    };
    let api = listen(api_listener, "api.listen")?;
    let client = listen(client_listener, "client.listen")?;
    let api_addr = api.local_addr().map_err(|e| e.to_string())?;
    let client_addr = client.local_addr().map_err(|e| e.to_string())?;
    loads.spawn_sampler();
    uprtcd_controlplane::events::spawn_drains(&state);
    uprtcd_controlplane::demo::spawn_expiry(&state);
    uprtcd_controlplane::recording::spawn(&state).await;
    uprtcd_controlplane::files::retention::spawn(&state);
    uprtcd_controlplane::playback::close_orphans(&state);
    uprtcd_controlplane::cluster::start(&state).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = HttpStats::default();
    let serving = |name, loaded: Option<(CertificateFiles, Certificate)>, hosts, stats: &Arc<ListenerStats>| {
        loaded.map(|(files, certificate)| ServerCertificate::new(name, files, certificate, hosts, Arc::clone(stats)))
    };
    // Browsers check the client listener's certificate against the host of serverUrl;
    // business servers reach the API by whatever name they were given.
    let api_certificate = serving("api", certificates.api, Vec::new(), &http.api);
    let client_certificate = serving("client", certificates.client, config.client_hosts(), &http.client);
    let client_task = tokio::spawn(listener::serve(
        client,
        uprtcd_controlplane::client_router(state.clone()),
        config.client_http,
        client_certificate.as_ref().map(ServerCertificate::server_config),
        Arc::clone(&http.client),
        stopped(stop_rx.clone()),
    ));
    let api_task = tokio::spawn(listener::serve(
        api,
        uprtcd_controlplane::api::router(state, http.clone()),
        config.api_http,
        api_certificate.as_ref().map(ServerCertificate::server_config),
        Arc::clone(&http.api),
        stopped(stop_rx.clone()),
    ));
    let certificates: Vec<_> = api_certificate.into_iter().chain(client_certificate).collect();
    if let Some(interval) = config.tls_watch_interval {
        for certificate in &certificates {
            uprtcd_controlplane::tls::spawn_watch(Arc::clone(certificate), interval);
        }
    }
    // Watched before anyone is told the server is up: a SIGTERM right after READY must stop
    // it gracefully, not kill it with the default action, and a SIGHUP (`systemctl reload`)
    // must not kill it either.
    let shutdown = ShutdownSignals::install().map_err(|e| format!("cannot watch for signals: {e}"))?;
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot watch for signals: {e}"))?;
    tokio::spawn(reload_on_hangup(hangup, certificates));

    eprintln!("uprtcd: api listening on {api_addr}");
    eprintln!("uprtcd: client listening on {client_addr}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog(interval / 2));
    }
    eprintln!("uprtcd: ready");

    shutdown.wait().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for (task, key) in [(api_task, "api.listen"), (client_task, "client.listen")] {
        task.await.map_err(|e| format!("{key}: server task failed: {e}"))?;
    }
    Ok(())
}

/// Pings systemd's watchdog while the control plane's runtime is alive and responsive.
async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// Reloads every TLS certificate on each SIGHUP; a failure keeps the certificate in use (see
/// [`ServerCertificate::reload`]).
async fn reload_on_hangup(mut hangup: tokio::signal::unix::Signal, certificates: Vec<Arc<ServerCertificate>>) {
    while hangup.recv().await.is_some() {
        if certificates.is_empty() {
            tracing::info!("SIGHUP: no listener has TLS; nothing to reload");
        }
        for certificate in &certificates {
            let certificate = Arc::clone(certificate);
            // A failure is logged and counted by the reload.
            let _ = tokio::task::spawn_blocking(move || certificate.reload()).await;
        }
    }
}

/// SIGTERM and SIGINT, each ending the server gracefully.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
