//! The soak: hours of a server's life pressed into minutes of churn, then proof that what the
//! churn took came back. Members join rooms, publish and watch, and leave in every way a client
//! can (politely, killed, silent, kicked, reconnecting as themselves, losing their network);
//! WHIP publishers and WHEP players come and vanish; rooms open and close; strangers hold idle
//! connections, knock on the ICE-TCP port and spray the media port with junk. Every loop is
//! bounded in how much it holds at once and how fast it starts things ([`Plan`]).
//!
//! [`churn`] runs the members, WHIP and WHEP; [`flood`] the strangers; [`sample`] reads the
//! server's resources and judges them against the baseline. Loops never fail the run: what
//! goes wrong is counted ([`Tally`]) and reported, and only the server's resources decide.

pub mod churn;
pub mod flood;
pub mod sample;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::LoadError;
use crate::media::{ClientDtls, StreamProfile};
use crate::uprtcd::Uprtcd;

/// How much each loop holds at once and how often it starts something.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Conversation rooms open at once, each with a publishing host and `slots` members
    /// that come and go.
    pub rooms: usize,
    pub slots: usize,
    /// How long a room stays open, and a member in it, before its end is chosen.
    pub room_life: (Duration, Duration),
    pub member_life: (Duration, Duration),
    /// Live rooms with a WHIP publisher at once, each with `players` WHEP players that come
    /// and go.
    pub whip_rooms: usize,
    pub players: usize,
    /// Idle connections held at once on the API and client listeners together.
    pub idle_http: usize,
    /// Unauthenticated ICE-TCP connections held at once (beyond the server's per-address cap
    /// of 16, so that it refuses some).
    pub ice_tcp: usize,
    /// Junk datagrams a second to the media port.
    pub udp_per_second: u32,
    /// `POST /demo/join` requests per burst, one burst every `demo_every`.
    pub demo_burst: usize,
    pub demo_every: Duration,
    /// The server's signalling ping timeout: a silent member's socket is held this long and
    /// a little more, so that the server, not the client, ends it.
    pub ping_timeout: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            rooms: 3,
            slots: 3,
            room_life: (Duration::from_secs(45), Duration::from_secs(90)),
            member_life: (Duration::from_secs(4), Duration::from_secs(15)),
            whip_rooms: 1,
            players: 2,
            idle_http: 40,
            ice_tcp: 24,
            udp_per_second: 100,
            demo_burst: 12,
            demo_every: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
        }
    }
}

/// What the churn did, counted as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Count {
    RoomsCreated,
    /// Rooms deleted while a member was still connected (it gets `room-closed`).
    RoomsClosedWithMembers,
    /// Rooms deleted after their members left (or vanished).
    RoomsDeleted,
    Joins,
    Publishes,
    Subscribes,
    /// New offers of a subscription answered (streams came or went).
    Renegotiations,
    Left,
    Closed,
    Killed,
    Kicked,
    /// Went silent (socket held, nothing read or sent, media gone): the server's ping
    /// timeout or the room's end must notice.
    Silent,
    /// Went silent and came back at once as the same peer: the server replaces the session.
    Reconnected,
    /// Lost media only (signalling kept): the server's consent expiry must notice.
    MediaLost,
    WhipSessions,
    WhepSessions,
    WhipWhepDeleted,
    /// Connected, then gone without `DELETE`: consent expiry must notice.
    WhipWhepVanished,
    /// Offered, never connected: the connect timeout must notice.
    WhipWhepAbandoned,
    DemoJoins,
    DemoRefused,
    /// Demo joins whose token then joined the room over signalling.
    DemoSessions,
    IdleHttp,
    /// Idle connections the server closed by itself (header-read timeout or cap).
    IdleHttpClosed,
    /// Idle connections still open after 30 s, closed by the soak.
    IdleHttpOutlived,
    IceTcp,
    IceTcpClosed,
    IceTcpOutlived,
    UdpJunk,
    RtpSent,
    RtpReceived,
}

impl Count {
    pub const ALL: [Count; 31] = [
        Count::RoomsCreated,
        Count::RoomsClosedWithMembers,
        Count::RoomsDeleted,
        Count::Joins,
        Count::Publishes,
        Count::Subscribes,
        Count::Renegotiations,
        Count::Left,
        Count::Closed,
        Count::Killed,
        Count::Kicked,
        Count::Silent,
        Count::Reconnected,
        Count::MediaLost,
        Count::WhipSessions,
        Count::WhepSessions,
        Count::WhipWhepDeleted,
        Count::WhipWhepVanished,
        Count::WhipWhepAbandoned,
        Count::DemoJoins,
        Count::DemoRefused,
        Count::DemoSessions,
        Count::IdleHttp,
        Count::IdleHttpClosed,
        Count::IdleHttpOutlived,
        Count::IceTcp,
        Count::IceTcpClosed,
        Count::IceTcpOutlived,
        Count::UdpJunk,
        Count::RtpSent,
        Count::RtpReceived,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::RoomsCreated => "rooms_created",
            Count::RoomsClosedWithMembers => "rooms_closed_with_members",
            Count::RoomsDeleted => "rooms_deleted",
            Count::Joins => "joins",
            Count::Publishes => "publishes",
            Count::Subscribes => "subscribes",
            Count::Renegotiations => "renegotiations",
            Count::Left => "left",
            Count::Closed => "closed",
            Count::Killed => "killed",
            Count::Kicked => "kicked",
            Count::Silent => "silent",
            Count::Reconnected => "reconnected",
            Count::MediaLost => "media_lost",
            Count::WhipSessions => "whip_sessions",
            Count::WhepSessions => "whep_sessions",
            Count::WhipWhepDeleted => "whip_whep_deleted",
            Count::WhipWhepVanished => "whip_whep_vanished",
            Count::WhipWhepAbandoned => "whip_whep_abandoned",
            Count::DemoJoins => "demo_joins",
            Count::DemoRefused => "demo_refused",
            Count::DemoSessions => "demo_sessions",
            Count::IdleHttp => "idle_http",
            Count::IdleHttpClosed => "idle_http_closed_by_server",
            Count::IdleHttpOutlived => "idle_http_outlived",
            Count::IceTcp => "ice_tcp",
            Count::IceTcpClosed => "ice_tcp_closed_by_server",
            Count::IceTcpOutlived => "ice_tcp_outlived",
            Count::UdpJunk => "udp_junk",
            Count::RtpSent => "rtp_sent",
            Count::RtpReceived => "rtp_received",
        }
    }
}

/// How many failures of one kind the report quotes.
const QUOTED_FAILURES: usize = 3;

/// The churn's counters, and its failures by what failed (a few quoted).
#[derive(Debug, Default)]
pub struct Tally {
    counts: [AtomicU64; Count::ALL.len()],
    failures: Mutex<BTreeMap<&'static str, (u64, Vec<String>)>>,
}

impl Tally {
    pub fn add(&self, count: Count, n: u64) {
        self.counts[count as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn one(&self, count: Count) {
        self.add(count, 1);
    }

    pub fn get(&self, count: Count) -> u64 {
        self.counts[count as usize].load(Ordering::Relaxed)
    }

    /// Counts a failure of `what`; the first few are quoted in the report.
    pub fn fail(&self, what: &'static str, error: &LoadError) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, quoted) = failures.entry(what).or_default();
        *n += 1;
        if quoted.len() < QUOTED_FAILURES {
            quoted.push(error.to_string());
        }
    }

    /// Failures by what failed: how many, and the first few.
    pub fn failures(&self) -> BTreeMap<&'static str, (u64, Vec<String>)> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What every loop shares: the server, the clients' DTLS identity and stream, the counters.
#[derive(Debug)]
pub struct Soak<'a> {
    pub server: &'a Uprtcd,
    pub identity: ClientDtls,
    pub stream: StreamProfile,
    pub plan: Plan,
    pub tally: Tally,
    /// Requests to the client listener (WHIP, WHEP, demo), statuses as answers.
    pub http: ureq::Agent,
    /// The worker's media address (UDP, and ICE-TCP on the same port).
    pub media: std::net::SocketAddr,
    /// Numbers publishers, for their SSRCs and meter blocks.
    publishers: AtomicU64,
    /// Set when the run must end at once (the server is gone): loops start nothing more.
    aborted: AtomicBool,
}

impl<'a> Soak<'a> {
    pub fn new(
        server: &'a Uprtcd,
        identity: ClientDtls,
        stream: StreamProfile,
        plan: Plan,
        media: std::net::SocketAddr,
    ) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Self {
            server,
            identity,
            stream,
            plan,
            tally: Tally::default(),
            http,
            media,
            publishers: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
        }
    }

    /// Whether a loop may start something more before `until`.
    pub fn running(&self, until: Instant) -> bool {
        Instant::now() < until && !self.aborted.load(Ordering::Relaxed)
    }

    /// Ends every loop's starting of new work.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    /// Sleeps `duration`, less if the run is aborted.
    pub fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while self.running(until) {
            sleep_until(until, Duration::from_secs(1));
        }
    }

    /// The address clients bind to.
    pub fn client_ip(&self) -> IpAddr {
        self.media.ip()
    }

    /// A new publisher's number and its audio and video SSRCs.
    fn next_publisher(&self) -> (u16, u32, u32) {
        let n = self.publishers.fetch_add(1, Ordering::Relaxed);
        let index = (n % u64::from(u16::MAX)) as u16;
        let base = 0x1000_0000 + 2 * (n % 0x1000_0000) as u32;
        (index, base, base + 1)
    }

    /// A request to the client listener: status, `Location` and body.
    fn client_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(u16, Option<String>, String), LoadError> {
        let uri = format!("http://{}{path}", self.server.client_address());
        let mut request = ureq::http::Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let http =
            |e: &dyn std::fmt::Display| LoadError::Http { what: format!("{method} {uri}"), detail: e.to_string() };
        let request = request.body(body.as_bytes().to_vec()).map_err(|e| http(&e))?;
        let mut response = self.http.run(request).map_err(|e| http(&e))?;
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.body_mut().read_to_string().map_err(|e| http(&e))?;
        Ok((response.status().as_u16(), location, text))
    }
}

/// A small deterministic generator (xorshift64*): each loop has its own, from the run's seed,
/// so that a run's choices can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mixed = (seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Self(mixed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn between(&mut self, (low, high): (Duration, Duration)) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }

    /// One of `choices`, each as likely as its weight.
    pub fn pick<T: Copy>(&mut self, choices: &[(T, u64)]) -> T {
        let mut roll = self.below(choices.iter().map(|(_, w)| w).sum());
        for &(choice, weight) in choices {
            if roll < weight {
                return choice;
            }
            roll -= weight;
        }
        choices[0].0
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Sleeps `duration`, or less if `until` comes first.
pub fn sleep_until(until: Instant, duration: Duration) {
    std::thread::sleep(duration.min(until.saturating_duration_since(Instant::now())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_stays_in_range_and_follows_its_weights() {
        let mut rng = Rng::new(7, 1);
        let mut picked = [0u32; 3];
        for _ in 0..10_000 {
            picked[rng.pick(&[(0usize, 70), (1, 30), (2, 0)])] += 1;
            let d = rng.between((Duration::from_secs(4), Duration::from_secs(15)));
            assert!((Duration::from_secs(4)..=Duration::from_secs(15)).contains(&d));
        }
        assert_eq!(picked[2], 0);
        assert!((6_500..7_500).contains(&picked[0]), "{picked:?}");
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
    }

    #[test]
    fn every_count_has_its_place_and_a_name() {
        for (i, count) in Count::ALL.iter().enumerate() {
            assert_eq!(*count as usize, i);
            assert!(!count.name().is_empty());
        }
    }
}
