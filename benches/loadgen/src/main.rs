//! `uprtcd-load`: runs the standard benchmark set (or the parts asked for) and writes
//! `results.json`, `results.csv` and `summary.txt`. `benches/run` starts it inside a private
//! network namespace with the veth pair Janus needs; see benches/README.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use uprtcd_loadgen::media::{ClientDtls, StreamProfile};
use uprtcd_loadgen::raw::{self, RawMode};
use uprtcd_loadgen::redis::Redis;
use uprtcd_loadgen::report::{Machine, Progress, Results, Run};
use uprtcd_loadgen::scenario::mirror::{MirrorPlan, Nodes};
use uprtcd_loadgen::scenario::{self, Context, FanoutPlan, StormPlan};
use uprtcd_loadgen::uprtcd::{ClusterNode, Uprtcd, UprtcdOptions, random_secret};
use uprtcd_loadgen::{LoadError, janus};

#[derive(Debug, Parser)]
#[command(about = "Load generator for uprtcd, beside the kernel's UDP limit and Janus")]
struct Args {
    /// The uprtcd binary to measure.
    #[arg(long, default_value = "target/release/uprtcd")]
    uprtcd: PathBuf,
    /// Where results go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// What to run, comma-separated: raw, fanout, storm, conference, aes-cm, live, janus; and
    /// mirror (two uprtcd nodes and a Redis; not in the standard set).
    #[arg(long, value_delimiter = ',', default_value = "raw,fanout,storm,conference,aes-cm,live,janus")]
    scenarios: Vec<String>,
    /// Socket backends for uprtcd's fan-out and conference (AES-256-GCM, as browsers get).
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    backends: Vec<String>,
    /// Socket backends for the live room across every worker.
    #[arg(long, value_delimiter = ',', default_value = "uring")]
    live_backends: Vec<String>,
    /// Socket backends for uprtcd's fan-out with clients that offer only AES-CM.
    #[arg(long, value_delimiter = ',', default_value = "epoll")]
    aes_cm_backends: Vec<String>,
    /// Total subscribers at each fan-out step (the first `--meters` are meters).
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000,1500,2000,2500,3000,3500,4000")]
    fanout_steps: Vec<usize>,
    /// Viewers that join one after another after each fan-out step's window, timed until
    /// their first media packet; they stay for the next step.
    #[arg(long, default_value_t = 20)]
    probe_joins: usize,
    /// Milliseconds between two probes' starts.
    #[arg(long, default_value_t = 150)]
    probe_interval_ms: u64,
    /// Socket backends for the join storm.
    #[arg(long, value_delimiter = ',', default_value = "epoll")]
    storm_backends: Vec<String>,
    /// Sinks watching before the storm (besides the meters).
    #[arg(long, default_value_t = 1000)]
    storm_base: usize,
    /// Viewers that join in the storm.
    #[arg(long, default_value_t = 1000)]
    storm_joins: usize,
    /// Seconds the storm's joins are spread over.
    #[arg(long, default_value_t = 10)]
    storm_seconds: u64,
    /// Threads the storm's joins run on, so that slow joins do not hold up the schedule.
    #[arg(long, default_value_t = 128)]
    storm_threads: usize,
    /// Subscribers at each step of the live room spread over every worker.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    live_steps: Vec<usize>,
    /// Audiences of the mirror scenario (meters included): each on the origin node alone, then
    /// split evenly between the origin and a mirror node.
    #[arg(long, value_delimiter = ',', default_value = "600")]
    mirror_audiences: Vec<usize>,
    /// Times each mirror audience's configurations are measured, alternately.
    #[arg(long, default_value_t = 2)]
    mirror_rounds: usize,
    /// Socket backend of both nodes of the mirror scenario.
    #[arg(long, default_value = "epoll")]
    mirror_backend: String,
    /// The mirror node's address (all its listeners and media): a machine of its own on
    /// loopback. The origin node is on `--media-ip`.
    #[arg(long, default_value = "127.0.0.2")]
    mirror_node_ip: IpAddr,
    /// Cores the mirror node may use, its worker on the highest (default: the whole machine,
    /// so its worker shares `--sfu-core` with the origin's).
    #[arg(long, value_delimiter = ',')]
    mirror_node_cores: Vec<usize>,
    /// The Redis the mirror scenario's cluster shares (Debian's redis-server).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Members of each conference size.
    #[arg(long, value_delimiter = ',', default_value = "4,8,12,16")]
    conference_sizes: Vec<usize>,
    /// Subscribers at each Janus fan-out step.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,300,400,600")]
    janus_steps: Vec<usize>,
    /// Members of each Janus conference size.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    janus_conference_sizes: Vec<usize>,
    /// Subscribers that decrypt and check every packet (the rest are sinks).
    #[arg(long, default_value_t = 10)]
    meters: usize,
    /// Send each video frame back to back instead of pacing it as libwebrtc does.
    #[arg(long)]
    unpaced: bool,
    /// Seconds measured at each step.
    #[arg(long, default_value_t = 4)]
    window: u64,
    /// Address uprtcd's media and the clients use.
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// Janus ignores loopback: its media address, on `--janus-interface`, and the address
    /// its clients bind to (the veth pair's other end).
    #[arg(long, default_value = "10.99.0.1")]
    janus_ip: IpAddr,
    #[arg(long, default_value = "10.99.0.2")]
    janus_client_ip: IpAddr,
    #[arg(long, default_value = "ubench0")]
    janus_interface: String,
    /// The core the SFU's forwarding runs on (uprtcd's single worker, Janus, the raw
    /// sender); the load generator keeps to the others.
    #[arg(long, default_value_t = 1)]
    sfu_core: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("\nuprtcd-load: {e}");
        std::process::exit(1);
    }
}

fn wants(args: &Args, scenario: &str) -> bool {
    args.scenarios.iter().any(|s| s == scenario)
}

fn run(args: &Args) -> Result<(), LoadError> {
    // Read before pinning: the count of usable CPUs follows this thread's affinity.
    let mut results = Results { started: timestamp(), machine: Machine::this(), ..Results::default() };
    pin_away_from(args.sfu_core);
    let window = Duration::from_secs(args.window);
    let stream = StreamProfile { pacing: (!args.unpaced).then_some(2.5), ..StreamProfile::default() };
    let planned = usize::from(wants(args, "raw")) * 2
        + args.backends.len()
            * (usize::from(wants(args, "fanout")) * args.fanout_steps.len()
                + usize::from(wants(args, "conference")) * args.conference_sizes.len())
        + usize::from(wants(args, "storm")) * args.storm_backends.len() * 3
        + usize::from(wants(args, "aes-cm")) * args.aes_cm_backends.len() * args.fanout_steps.len()
        + usize::from(wants(args, "live")) * args.live_backends.len() * args.live_steps.len()
        + usize::from(wants(args, "janus")) * (args.janus_steps.len() + args.janus_conference_sizes.len())
        + usize::from(wants(args, "mirror")) * mirror_plan(args, None).windows();
    let mut progress = Progress::new(planned);

    if wants(args, "raw") {
        for mode in [RawMode::Sendmmsg, RawMode::Gso] {
            progress.show(&format!("raw {mode:?}"));
            // 1,100 payload bytes, the RTP header and an AES-GCM tag: what an SFU sends.
            match raw::measure(mode, 1128, 200, args.media_ip, Duration::from_secs(3), Some(args.sfu_core)) {
                Ok(result) => results.raw.push(result),
                Err(e) => results.notes.push(format!("raw {mode:?}: not measured: {e}")),
            }
            progress.advance();
        }
    }

    for backend in &args.backends {
        if !(wants(args, "fanout") || wants(args, "conference")) {
            break;
        }
        let server = start_uprtcd(args, results.machine.cpus, backend, 1)?;
        let ctx = Context::new(&server, Some(&server), stream, ClientDtls::browserlike()?, window)?;
        if wants(args, "fanout") {
            let plan = fanout_plan(args, &args.fanout_steps, false);
            record(&mut results, scenario::fanout(&ctx, &plan, &mut progress), "fanout");
        }
        if wants(args, "conference") {
            record(&mut results, scenario::conference(&ctx, &args.conference_sizes, &mut progress), "conference");
        }
    }

    // A server of its own, so that the storm's room is the only one.
    for backend in args.storm_backends.iter().filter(|_| wants(args, "storm")) {
        let server = start_uprtcd(args, results.machine.cpus, backend, 1)?;
        let ctx = Context::new(&server, Some(&server), stream, ClientDtls::browserlike()?, window)?;
        let plan = StormPlan {
            base: args.storm_base,
            meters: args.meters,
            joins: args.storm_joins,
            spread: Duration::from_secs(args.storm_seconds),
            threads: args.storm_threads.max(1),
        };
        record(&mut results, scenario::storm(&ctx, &plan, &mut progress), "storm");
    }

    for backend in args.aes_cm_backends.iter().filter(|_| wants(args, "aes-cm")) {
        let server = start_uprtcd(args, results.machine.cpus, backend, 1)?;
        let ctx = Context::new(&server, Some(&server), stream, ClientDtls::aes_cm_only()?, window)?;
        let plan = fanout_plan(args, &args.fanout_steps, false);
        record(&mut results, scenario::fanout(&ctx, &plan, &mut progress), "fanout with AES-CM");
    }

    for backend in args.live_backends.iter().filter(|_| wants(args, "live")) {
        let workers = results.machine.cpus.max(2);
        let server = start_uprtcd(args, results.machine.cpus, backend, workers)?;
        let ctx = Context::new(&server, Some(&server), stream, ClientDtls::browserlike()?, window)?;
        let plan = fanout_plan(args, &args.live_steps, true);
        record(&mut results, scenario::fanout(&ctx, &plan, &mut progress), "live across workers");
    }

    if wants(args, "mirror") {
        let run = mirror(args, results.machine.cpus, stream, window, &mut progress);
        record(&mut results, run, "mirror on another node");
    }

    if wants(args, "janus") {
        match start_janus(args) {
            Ok(server) => {
                let ctx = Context::new(&server, None, stream, ClientDtls::browserlike()?, window)?;
                let plan = fanout_plan(args, &args.janus_steps, false);
                record(&mut results, scenario::fanout(&ctx, &plan, &mut progress), "janus fanout");
                record(
                    &mut results,
                    scenario::conference(&ctx, &args.janus_conference_sizes, &mut progress),
                    "janus conference",
                );
            }
            Err(e) => results.notes.push(format!("Janus: not measured: {e}")),
        }
    }
    progress.finish();
    results.write(&args.out)?;
    print!("{}", results.summary());
    println!("results in {}", args.out.display());
    Ok(())
}

fn fanout_plan(args: &Args, steps: &[usize], across_workers: bool) -> FanoutPlan {
    FanoutPlan {
        steps: steps.to_vec(),
        meters: args.meters,
        across_workers,
        probes: args.probe_joins,
        probe_interval: Duration::from_millis(args.probe_interval_ms),
    }
}

/// Keeps a scenario's run, or notes why it failed, so that one failure does not lose the
/// rest of the set.
fn record(results: &mut Results, run: Result<Run, LoadError>, what: &str) {
    match run {
        Ok(run) => results.runs.push(run),
        Err(e) => results.notes.push(format!("{what}: failed: {e}")),
    }
}

/// uprtcd on `cpus` cores (the machine's), `workers` of them for its workers.
fn start_uprtcd(args: &Args, cpus: usize, backend: &str, workers: usize) -> Result<Uprtcd, LoadError> {
    Uprtcd::start(UprtcdOptions {
        binary: args.uprtcd.clone(),
        workers,
        backend: backend.to_owned(),
        media_ip: args.media_ip,
        cores: (0..cpus).collect(),
    })
}

fn mirror_plan(args: &Args, redis_pid: Option<u32>) -> MirrorPlan {
    MirrorPlan {
        audiences: args.mirror_audiences.clone(),
        meters: args.meters,
        rounds: args.mirror_rounds.max(1),
        redis_pid,
    }
}

/// A cluster of its own — a Redis, the origin node `rtc-1` on `--media-ip` and the mirror node
/// `rtc-2` on `--mirror-node-ip`, one worker each — for the mirror scenario; stopped (nodes
/// first) when it returns.
fn mirror(
    args: &Args,
    cpus: usize,
    stream: StreamProfile,
    window: Duration,
    progress: &mut Progress,
) -> Result<Run, LoadError> {
    let machine: Vec<usize> = (0..cpus).collect();
    let ours: Vec<usize> = machine.iter().copied().filter(|&core| core != args.sfu_core).collect();
    let redis = Redis::start(&args.redis_server, &ours)?;
    let secret = random_secret()?;
    let node = |alias: &str, media_ip: IpAddr, cores: Vec<usize>| {
        let options = UprtcdOptions {
            binary: args.uprtcd.clone(),
            workers: 1,
            backend: args.mirror_backend.clone(),
            media_ip,
            cores,
        };
        Uprtcd::start_node(
            options,
            ClusterNode { alias: alias.to_owned(), redis_url: redis.url(), secret: secret.clone() },
        )
    };
    let origin = node("rtc-1", args.media_ip, machine.clone())?;
    let mirror_cores = if args.mirror_node_cores.is_empty() { machine } else { args.mirror_node_cores.clone() };
    let mirror = node("rtc-2", args.mirror_node_ip, mirror_cores)?;
    let identity = ClientDtls::browserlike()?;
    let on_origin = Context::new(&origin, Some(&origin), stream, identity.clone(), window)?;
    let on_mirror = Context::new(&mirror, Some(&mirror), stream, identity, window)?;
    let nodes = Nodes { origin: &on_origin, mirror: &on_mirror };
    scenario::mirror::mirror(nodes, &mirror_plan(args, Some(redis.pid())), progress)
}

fn start_janus(args: &Args) -> Result<janus::Janus, LoadError> {
    janus::Janus::start(janus::JanusOptions {
        media_ip: args.janus_ip,
        client_ip: args.janus_client_ip,
        interface: args.janus_interface.clone(),
        http_port: 18088,
        event_loops: 1,
        cores: vec![args.sfu_core],
    })
}

/// Keeps the load generator's own threads off the SFU's core, so that the SFU's CPU
/// accounting is its own work (on a two-core machine the control plane shares the other
/// core with the load generator).
fn pin_away_from(sfu_core: usize) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(core) = cores.iter().find(|c| c.id != sfu_core) {
        core_affinity::set_for_current(*core);
    }
}

fn timestamp() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
