//! A producer stream's recent packets, kept so that a subscriber's NACK can be answered
//! without bothering the publisher.
//!
//! The cache is a fixed ring of slots indexed by sequence number, allocated once: storing
//! a packet copies it into its slot, a newer packet overwrites whatever older one shared
//! the slot, and entries older than the configured age are treated as gone.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Largest RTP packet the cache keeps; larger ones are not cached.
pub const MAX_CACHED_PACKET: usize = 1500;

#[derive(Debug, Clone, Copy)]
struct SlotMeta {
    seq: u16,
    len: u16,
    stored_at: Instant,
}

/// Recent plaintext RTP packets of one stream.
#[derive(Debug)]
pub struct RetransmissionCache {
    bytes: Box<[u8]>,
    meta: Box<[Option<SlotMeta>]>,
    max_age: Duration,
}

impl RetransmissionCache {
    /// Keeps up to `slots` packets (rounded up to a power of two) for at most `max_age`.
    pub fn new(slots: usize, max_age: Duration) -> Self {
        let slots = slots.max(1).next_power_of_two();
        Self {
            bytes: vec![0; slots * MAX_CACHED_PACKET].into_boxed_slice(),
            meta: vec![None; slots].into_boxed_slice(),
            max_age,
        }
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.meta.len() - 1)
    }

    /// Keeps a copy of `packet` (a whole plaintext RTP packet) under `seq`.
    pub fn store(&mut self, now: Instant, seq: u16, packet: &[u8]) {
        let Ok(len) = u16::try_from(packet.len()) else { return };
        if packet.len() > MAX_CACHED_PACKET {
            return;
        }
        let index = self.index(seq);
        let start = index * MAX_CACHED_PACKET;
        self.bytes[start..start + packet.len()].copy_from_slice(packet);
        self.meta[index] = Some(SlotMeta { seq, len, stored_at: now });
    }

    /// The packet stored under `seq`, if it is still there and not older than the limit.
    pub fn get(&self, now: Instant, seq: u16) -> Option<&[u8]> {
        let index = self.index(seq);
        let meta =
            self.meta[index].filter(|m| m.seq == seq && now.saturating_duration_since(m.stored_at) <= self.max_age)?;
        let start = index * MAX_CACHED_PACKET;
        self.bytes.get(start..start + usize::from(meta.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_stored_until_overwritten_or_expired() {
        let t0 = Instant::now();
        let mut cache = RetransmissionCache::new(4, Duration::from_secs(1));
        cache.store(t0, 10, b"ten");
        cache.store(t0, 11, b"eleven");
        assert_eq!(cache.get(t0, 10), Some(&b"ten"[..]));
        assert_eq!(cache.get(t0, 11), Some(&b"eleven"[..]));
        assert_eq!(cache.get(t0, 12), None);
        cache.store(t0, 14, b"fourteen");
        assert_eq!(cache.get(t0, 10), None, "slot reused by a newer packet");
        assert_eq!(cache.get(t0 + Duration::from_secs(2), 11), None, "too old");
    }

    #[test]
    fn oversized_packets_are_not_kept() {
        let t0 = Instant::now();
        let mut cache = RetransmissionCache::new(8, Duration::from_secs(1));
        cache.store(t0, 1, &[0; MAX_CACHED_PACKET + 1]);
        assert_eq!(cache.get(t0, 1), None);
        cache.store(t0, 2, &[7; MAX_CACHED_PACKET]);
        assert_eq!(cache.get(t0, 2).map(<[u8]>::len), Some(MAX_CACHED_PACKET));
    }
}
