//! What keeps demo mode from being an open door, as pure state: its limits, the token
//! buckets that pace `POST /demo/join` per source address, the clock that expires demo
//! rooms, and the counters of what they refused and closed.
//!
//! Rules: no I/O and no clock here; callers pass the time in. The bucket map is bounded
//! ([`MAX_SOURCES`]): a bucket that has refilled is forgotten (a new one would be the same),
//! and while every tracked source is still paced, new sources are refused rather than
//! tracked. The expiry clock lives in memory only: after a restart a demo room's idle time
//! and age count from the first sweep that sees it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::ids::RoomId;

/// The operator's limits of demo mode (`client.demo_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoLimits {
    /// Demo rooms open at once; `POST /demo/join` opens no more (503, 50015).
    pub max_rooms: u32,
    /// A demo room without a connected client for this long is closed.
    pub room_idle: Duration,
    /// A demo room is closed this long after it opened, whoever is in it.
    pub room_max_age: Duration,
    /// `POST /demo/join` requests per minute from one source address (an IPv6 /64), at
    /// least 1; as many may come at once.
    pub joins_per_minute: u32,
}

impl DemoLimits {
    /// How often demo rooms are checked for expiry: a tenth of the shorter limit, so a room
    /// outlives its limit by little, within bounds that keep the sweep cheap.
    pub fn sweep_interval(&self) -> Duration {
        (self.room_idle.min(self.room_max_age) / 10).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }
}

/// Why `POST /demo/join` refused a request that was well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source address used up its joins (429).
    RateLimited,
    /// The demo rooms open are at `client.demo_max_rooms` (503, 50015).
    RoomCap,
    /// The invitation code is a room's that the demo did not open (404, 50001: as an
    /// unknown code, so that the codes of real rooms cannot be probed through the demo).
    NotADemoRoom,
    /// No room has the invitation code (404, 50001).
    UnknownCode,
}

impl Refusal {
    pub const ALL: [Self; 4] = [Self::RateLimited, Self::RoomCap, Self::NotADemoRoom, Self::UnknownCode];

    /// The `reason` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::RoomCap => "room_cap",
            Self::NotADemoRoom => "not_a_demo_room",
            Self::UnknownCode => "unknown_code",
        }
    }
}

/// Why a demo room was closed by the demo itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No client for `client.demo_room_idle_ms`.
    Idle,
    /// Open for `client.demo_room_max_age_ms`.
    MaxAge,
}

impl Expiry {
    pub const ALL: [Self; 2] = [Self::Idle, Self::MaxAge];

    /// The `reason` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
        }
    }
}

/// Source addresses (IPv4 addresses, IPv6 /64 prefixes) whose join buckets are kept at once.
pub const MAX_SOURCES: usize = 10_000;

/// The demo's shared state on the control plane: the join buckets and the counters.
#[derive(Debug, Default)]
pub struct DemoGuard {
    joins: Mutex<JoinLimiter>,
    refused: [AtomicU64; Refusal::ALL.len()],
    expired: [AtomicU64; Expiry::ALL.len()],
}

impl DemoGuard {
    /// Takes one join from `source`'s bucket, or says how long until one is left.
    pub fn admit(&self, source: IpAddr, now: Instant, joins_per_minute: u32) -> Result<(), Duration> {
        self.joins.lock().unwrap_or_else(PoisonError::into_inner).admit(source, now, joins_per_minute)
    }

    pub fn count_refused(&self, refusal: Refusal) {
        self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_expired(&self, expiry: Expiry) {
        self.expired[expiry as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Joins refused, by reason.
    pub fn refused(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL.iter().map(|&r| (r.name(), self.refused[r as usize].load(Ordering::Relaxed)))
    }

    /// Demo rooms the demo closed, by reason.
    pub fn expired(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Expiry::ALL.iter().map(|&e| (e.name(), self.expired[e as usize].load(Ordering::Relaxed)))
    }
}

/// A token bucket per source: it holds up to `joins_per_minute` joins and refills at that
/// rate.
#[derive(Debug, Default)]
struct JoinLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens the bucket holds at `now`, out of `capacity`.
    fn at(self, now: Instant, capacity: f64) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * capacity / 60.0;
        (self.tokens + refill).min(capacity)
    }
}

impl JoinLimiter {
    fn admit(&mut self, source: IpAddr, now: Instant, joins_per_minute: u32) -> Result<(), Duration> {
        let capacity = f64::from(joins_per_minute.max(1));
        // The time until a bucket holding `tokens` holds `wanted`.
        let until = |tokens: f64, wanted: f64| Duration::from_secs_f64((wanted - tokens).max(0.0) * 60.0 / capacity);
        let source = source_key(source);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.buckets.retain(|_, bucket| bucket.at(now, capacity) < capacity);
            if self.buckets.len() >= MAX_SOURCES {
                let fullest = self.buckets.values().map(|b| b.at(now, capacity)).fold(0.0, f64::max);
                return Err(until(fullest, capacity));
            }
        }
        let bucket = self.buckets.entry(source).or_insert(Bucket { tokens: capacity, at: now });
        let tokens = bucket.at(now, capacity);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(until(tokens, 1.0))
        }
    }
}

/// The source a bucket paces: an IPv4 address, or the /64 of an IPv6 address (one host
/// commonly holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// What the expiry sweep remembers of each demo room: when it first saw the room and when
/// it last saw a client in it.
#[derive(Debug, Default)]
pub struct Sweep {
    seen: HashMap<RoomId, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    occupied: Instant,
}

impl Sweep {
    /// Takes the demo rooms open at `now`, each with whether a client is connected to it,
    /// and returns those due to close, and why. Rooms no longer open are forgotten.
    pub fn due(
        &mut self,
        now: Instant,
        open: impl IntoIterator<Item = (RoomId, bool)>,
        limits: &DemoLimits,
    ) -> Vec<(RoomId, Expiry)> {
        let mut seen = HashMap::with_capacity(self.seen.len());
        let mut due = Vec::new();
        for (id, occupied) in open {
            let mut room = self.seen.remove(&id).unwrap_or(Seen { first: now, occupied: now });
            if occupied {
                room.occupied = now;
            }
            if now.saturating_duration_since(room.first) >= limits.room_max_age {
                due.push((id.clone(), Expiry::MaxAge));
            } else if now.saturating_duration_since(room.occupied) >= limits.room_idle {
                due.push((id.clone(), Expiry::Idle));
            }
            // Kept while due: a room whose close was called off keeps its age.
            seen.insert(id, room);
        }
        self.seen = seen;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ServerIdentity;

    const MINUTE: Duration = Duration::from_secs(60);

    fn limits() -> DemoLimits {
        DemoLimits {
            max_rooms: 100,
            room_idle: Duration::from_secs(600),
            room_max_age: Duration::from_secs(7200),
            joins_per_minute: 10,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_joins_per_minute_then_waits() {
        let mut limiter = JoinLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            limiter.admit(ip("192.0.2.1"), t0, 10).unwrap();
        }
        let wait = limiter.admit(ip("192.0.2.1"), t0, 10).unwrap_err();
        assert_eq!(wait, Duration::from_secs(6), "one join every six seconds");
        limiter.admit(ip("192.0.2.2"), t0, 10).expect("another source has its own bucket");
        limiter.admit(ip("192.0.2.1"), t0 + Duration::from_secs(6), 10).expect("refilled one");
        assert!(limiter.admit(ip("192.0.2.1"), t0 + Duration::from_secs(7), 10).is_err());
        for _ in 0..10 {
            limiter.admit(ip("192.0.2.1"), t0 + 2 * MINUTE, 10).expect("full again, not fuller");
        }
        assert!(limiter.admit(ip("192.0.2.1"), t0 + 2 * MINUTE, 10).is_err());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let mut limiter = JoinLimiter::default();
        let t0 = Instant::now();
        limiter.admit(ip("2001:db8::1"), t0, 1).unwrap();
        assert!(limiter.admit(ip("2001:db8::ffff:2"), t0, 1).is_err(), "same /64");
        limiter.admit(ip("2001:db8:0:1::1"), t0, 1).expect("another /64");
        limiter.admit(ip("::ffff:192.0.2.9"), t0, 1).unwrap();
        assert!(limiter.admit(ip("192.0.2.9"), t0, 1).is_err(), "the same IPv4 address");
    }

    #[test]
    fn the_bucket_map_is_bounded_and_forgets_refilled_buckets() {
        let mut limiter = JoinLimiter::default();
        let t0 = Instant::now();
        let nth = |i: usize| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_SOURCES {
            limiter.admit(nth(i), t0, 10).unwrap();
        }
        let wait = limiter.admit(nth(MAX_SOURCES), t0, 10).expect_err("every tracked source is still paced");
        assert_eq!(wait, Duration::from_secs(6));
        assert_eq!(limiter.buckets.len(), MAX_SOURCES);
        limiter.admit(nth(MAX_SOURCES), t0 + Duration::from_secs(6), 10).expect("refilled buckets are forgotten");
        assert_eq!(limiter.buckets.len(), 1);
    }

    #[test]
    fn demo_rooms_expire_when_idle_or_old() {
        let identity = ServerIdentity::from_key([7; 32]);
        let [empty, busy, left] = [(); 3].map(|_| identity.generate_room_id());
        let mut sweep = Sweep::default();
        let limits = limits();
        let t0 = Instant::now();
        let at = |minutes: u32| t0 + MINUTE * minutes;
        let open = |occupied: [bool; 3]| [empty.clone(), busy.clone(), left.clone()].into_iter().zip(occupied);
        assert!(sweep.due(t0, open([false, true, true]), &limits).is_empty());
        assert!(sweep.due(at(5), open([false, true, true]), &limits).is_empty());
        assert_eq!(sweep.due(at(10), open([false, true, false]), &limits), vec![(empty.clone(), Expiry::Idle)]);
        // The close of `empty` was called off (someone came in the meantime): it stays, and
        // keeps its age.
        assert_eq!(sweep.due(at(15), open([true, true, false]), &limits), vec![(left.clone(), Expiry::Idle)]);
        let after_two_hours = sweep.due(at(120), [(empty.clone(), true), (busy.clone(), true)], &limits);
        assert_eq!(after_two_hours, vec![(empty, Expiry::MaxAge), (busy, Expiry::MaxAge)]);
        assert_eq!(sweep.seen.len(), 2, "closed rooms are forgotten");
    }

    #[test]
    fn the_sweep_runs_often_enough_for_the_shorter_limit() {
        assert_eq!(limits().sweep_interval(), Duration::from_secs(30));
        let short = DemoLimits { room_idle: Duration::from_secs(1), ..limits() };
        assert_eq!(short.sweep_interval(), Duration::from_millis(100));
        let shortest = DemoLimits { room_max_age: Duration::from_millis(300), ..short };
        assert_eq!(shortest.sweep_interval(), Duration::from_millis(50));
    }
}
