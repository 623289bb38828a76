//! `uprtcd-soak`: starts the release uprtcd on loopback, warms it up, lets its timeouts run
//! out and takes the baseline, churns for `--minutes`, lets the timeouts run out again, and
//! judges whether its descriptors, transports, rooms and connections came back exactly and
//! the memory it holds allocated within `--heap-tolerance-pct`. Writes `soak.csv` (a sample every
//! `--sample-secs`), `summary.txt` and the server's `uprtcd.toml` to `--out`; exits 1 when
//! something did not come back. `benches/soak` builds and runs it; see benches/README.md.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use uprtcd_loadgen::LoadError;
use uprtcd_loadgen::media::{ClientDtls, StreamProfile, Transport};
use uprtcd_loadgen::report::{Machine, utc_timestamp};
use uprtcd_loadgen::sfu::{RoomKind, Sfu};
use uprtcd_loadgen::soak::churn::Graveyard;
use uprtcd_loadgen::soak::sample::{self, Phase, Sampler};
use uprtcd_loadgen::soak::{Plan, Soak};
use uprtcd_loadgen::uprtcd::{Uprtcd, UprtcdOptions};

#[derive(Debug, Parser)]
#[command(about = "Soak: churn against uprtcd, then check that its resources came back to the baseline")]
struct Args {
    /// The uprtcd binary.
    #[arg(long, default_value = "target/release/uprtcd")]
    uprtcd: PathBuf,
    /// Where soak.csv, summary.txt and uprtcd.toml go.
    #[arg(long, default_value = "benches/results/soak")]
    out: PathBuf,
    /// Minutes of churn.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds of churn before the baseline, to warm the server up.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Seconds after a churn before its last sample: longer than the server's longest
    /// timeout that ends what clients left behind (HTTP keep-alive 60 s, the demo rooms'
    /// idle time, consent 30 s, signalling pings 30 s).
    #[arg(long, default_value_t = 90)]
    drain_secs: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// uprtcd's socket backend: uring or epoll.
    #[arg(long, default_value = "uring")]
    backend: String,
    /// Growth of the live heap (`uprtcd_heap_live_bytes`) from the baseline to the end still
    /// taken as caches, not a leak. Resident memory is shown beside it, not judged: it also
    /// holds what the allocator keeps for reuse.
    #[arg(long, default_value_t = 10.0)]
    heap_tolerance_pct: f64,
    /// Seeds the churn's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Conversation rooms at once, and members coming and going in each besides its host.
    #[arg(long, default_value_t = 3)]
    rooms: usize,
    #[arg(long, default_value_t = 3)]
    slots: usize,
    /// Live rooms with a WHIP publisher at once, and WHEP players coming and going in each.
    #[arg(long, default_value_t = 1)]
    whip_rooms: usize,
    #[arg(long, default_value_t = 2)]
    players: usize,
    /// Idle connections held at once on the HTTP listeners; unauthenticated ICE-TCP ones.
    #[arg(long, default_value_t = 40)]
    idle_http: usize,
    #[arg(long, default_value_t = 24)]
    ice_tcp: usize,
    /// Junk datagrams a second to the media port.
    #[arg(long, default_value_t = 100)]
    udp_per_second: u32,
    /// `POST /demo/join` requests every 30 s.
    #[arg(long, default_value_t = 12)]
    demo_burst: usize,
    /// How long a demo room may stay without a client (the server's default, 600000, would
    /// need a 10-minute drain).
    #[arg(long, default_value_t = 60_000)]
    demo_room_idle_ms: u64,
}

/// The signalling ping timeout the server runs with (its default).
const PING_TIMEOUT_MS: u64 = 30_000;

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("\nuprtcd-soak: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<bool, LoadError> {
    std::fs::create_dir_all(&args.out).map_err(LoadError::io(format!("create {}", args.out.display())))?;
    let config = args.out.join("uprtcd.toml");
    let config_text = format!(
        "# The soak's server: defaults, but for demo rooms' idle time (the drain waits it out).\n\
         [client]\nping_timeout_ms = {PING_TIMEOUT_MS}\ndemo_room_idle_ms = {}\n",
        args.demo_room_idle_ms
    );
    std::fs::write(&config, config_text).map_err(LoadError::io(format!("write {}", config.display())))?;
    let machine = Machine::this();
    let media_ip = IpAddr::from([127, 0, 0, 1]);
    let options = UprtcdOptions {
        binary: args.uprtcd.clone(),
        workers: 1,
        backend: args.backend.clone(),
        media_ip,
        cores: (0..machine.cpus).collect(),
    };
    let server = Uprtcd::start_configured(options, Some(&config))?;
    let mut sampler = Sampler::new(&server, server.pid(), &args.out.join("soak.csv"))?;
    let identity = ClientDtls::browserlike()?;
    let stream = StreamProfile::default();
    let plan = Plan {
        rooms: args.rooms,
        slots: args.slots,
        whip_rooms: args.whip_rooms,
        players: args.players,
        idle_http: args.idle_http,
        ice_tcp: args.ice_tcp,
        udp_per_second: args.udp_per_second,
        demo_burst: args.demo_burst,
        ping_timeout: Duration::from_millis(PING_TIMEOUT_MS),
        ..Plan::default()
    };
    let media = media_address(&server, &identity, media_ip)?;
    let soak = Soak::new(&server, identity, stream, plan, media);
    let started = utc_timestamp();
    let every = Duration::from_secs(args.sample_secs.max(1));
    let drain = Duration::from_secs(args.drain_secs);
    sampler.take(Phase::Start, &soak.tally)?;
    let steps = [
        (Phase::Warmup, Duration::from_secs(args.warmup_secs)),
        (Phase::Settle, drain),
        (Phase::Churn, Duration::from_secs_f64(args.minutes * 60.0)),
        (Phase::Drain, drain),
    ];
    let mut died = None;
    for (phase, length) in steps {
        eprintln!("uprtcd-soak: {} for {} s", phase.name(), length.as_secs());
        let done = match phase {
            Phase::Warmup | Phase::Churn => churn(&soak, &mut sampler, phase, length, args.seed, every),
            _ => wait(&soak, &mut sampler, phase, length, every),
        };
        if let Err(e) = done {
            died = Some(format!("{e} (during the {})", phase.name()));
            break;
        }
    }
    let verdict = sample::judge(&sampler.samples, &soak.tally, args.heap_tolerance_pct / 100.0);
    let mut summary = format!(
        "uprtcd soak, started {started}, ended {}\n\
         machine: {} CPUs ({}), Linux {}\n\
         uprtcd: {} ({} backend, 1 worker), its configuration: uprtcd.toml\n\
         churn: {} min after a {} s warm-up; drains of {} s; a sample every {} s; seed {}\n\
         plan: {:?}\n\n",
        utc_timestamp(),
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        args.uprtcd.display(),
        args.backend,
        args.minutes,
        args.warmup_secs,
        args.drain_secs,
        every.as_secs(),
        args.seed,
        soak.plan,
    );
    if let Some(died) = &died {
        summary.push_str(&format!("THE RUN ENDED EARLY: {died}\n\n"));
    }
    summary.push_str(&verdict.text);
    let passed = verdict.passed && died.is_none();
    let memory = if verdict.memory_within {
        "the live heap within the tolerance"
    } else {
        "memory NOT within the tolerance (heap_live_kb above)"
    };
    let exact = if passed {
        "descriptors, transports, producers, consumers, rooms and connections back to the baseline exactly"
    } else {
        "NOT everything that must come back exactly did (see above)"
    };
    summary.push_str(&format!("\nverdict: {exact}; {memory}\n"));
    let path = args.out.join("summary.txt");
    std::fs::write(&path, &summary).map_err(LoadError::io(format!("write {}", path.display())))?;
    print!("{summary}");
    println!("results in {}", args.out.display());
    Ok(passed)
}

/// Runs every loop of the churn until `length` has passed and they have all ended, sampling
/// meanwhile. Fails, ending the loops, when the server is gone.
fn churn(
    soak: &Soak<'_>,
    sampler: &mut Sampler,
    phase: Phase,
    length: Duration,
    seed: u64,
    every: Duration,
) -> Result<(), LoadError> {
    let until = Instant::now() + length;
    let graveyard = Graveyard::default();
    let seed = seed.wrapping_add(u64::from(phase == Phase::Churn) << 32);
    std::thread::scope(|scope| {
        let graveyard = &graveyard;
        let mut loops = Vec::new();
        for i in 0..soak.plan.rooms {
            loops.push(scope.spawn(move || soak.room_loop(i, seed, until, graveyard)));
        }
        for i in 0..soak.plan.whip_rooms {
            loops.push(scope.spawn(move || soak.whip_loop(i, seed, until)));
        }
        loops.push(scope.spawn(move || soak.idle_http(seed, until)));
        loops.push(scope.spawn(move || soak.ice_tcp(seed, until)));
        loops.push(scope.spawn(move || soak.udp_junk(seed, until)));
        loops.push(scope.spawn(move || soak.demo(seed, until)));
        let mut next = Instant::now();
        let mut sampled = Ok(());
        while loops.iter().any(|l| !l.is_finished()) || graveyard.last().is_some() {
            let now = Instant::now();
            graveyard.reap(now);
            if now >= next && sampled.is_ok() {
                sampled = sampler.take(phase, &soak.tally).map(drop);
                if sampled.is_err() {
                    soak.abort();
                }
                next += every;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        sampled
    })
}

/// Lets `length` pass, sampling; the last sample at its end.
fn wait(
    soak: &Soak<'_>,
    sampler: &mut Sampler,
    phase: Phase,
    length: Duration,
    every: Duration,
) -> Result<(), LoadError> {
    let until = Instant::now() + length;
    loop {
        std::thread::sleep(every.min(until.saturating_duration_since(Instant::now())));
        sampler.take(phase, &soak.tally)?;
        if Instant::now() >= until {
            return Ok(());
        }
    }
}

/// The worker's media address, from the answer to a first publisher (which then leaves with
/// its room).
fn media_address(server: &Uprtcd, identity: &ClientDtls, ip: IpAddr) -> Result<SocketAddr, LoadError> {
    let room = server.create_room(RoomKind::Conversation { max_members: 2 }, "probe", &[])?;
    let mut member = server.connect(&room, "probe")?;
    let peer = Transport::bind(ip)?.publish(&mut member, identity, 1, 2)?;
    let address = peer.server();
    drop(peer);
    member.leave()?;
    server.call("DELETE", &format!("/room/{room}"), Value::Null)?;
    Ok(address)
}
