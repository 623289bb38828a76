//! The origin worker's pool of relay buffers: each packet it relays is copied once into a
//! pooled, reference-counted buffer that every destination worker reads, and that buffer
//! comes back to the pool by itself when the last destination drops its handle.
//!
//! What it owns: a ring of `Arc` buffers of [`RELAY_PACKET_MAX`] bytes, allocated as the
//! traffic first needs them and at most `max` of them. A buffer is reused when its count is
//! back to one (`Arc::get_mut`: only the pool holds it, so no destination can still read
//! it); the ring is scanned from the buffer filled longest ago, which is the one most likely
//! to be free because links are first-in first-out.
//!
//! Rules for callers: a [`RelayPacket`] is read-only once filled. Holding one keeps its
//! buffer out of the pool, so destinations drop it as soon as they have copied it into
//! their send slots. Once the pool has grown to what the traffic keeps in flight, filling
//! allocates nothing.
#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::io::SLOT_SIZE;
use crate::srtp::MAX_SRTP_OVERHEAD;

/// Largest plaintext RTP packet relayed: the largest one a destination could still protect
/// into a send slot.
pub const RELAY_PACKET_MAX: usize = SLOT_SIZE - MAX_SRTP_OVERHEAD;

/// Buffers examined per fill before the pool grows: bounds the work when destinations
/// hold many buffers at once (a slow link), at the price of growing a little early then.
const SCAN: usize = 16;

struct Buffer {
    len: usize,
    bytes: [u8; RELAY_PACKET_MAX],
}

impl Buffer {
    fn holding(packet: &[u8]) -> Self {
        let mut buffer = Self { len: 0, bytes: [0; RELAY_PACKET_MAX] };
        buffer.fill(packet);
        buffer
    }

    /// `packet` fits: the pool checked its length.
    fn fill(&mut self, packet: &[u8]) {
        self.bytes[..packet.len()].copy_from_slice(packet);
        self.len = packet.len();
    }
}

/// One relayed plaintext packet, shared by every destination it was sent to.
#[derive(Clone)]
pub struct RelayPacket(Arc<Buffer>);

impl RelayPacket {
    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes[..self.0.len]
    }
}

impl std::fmt::Debug for RelayPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPacket").field("len", &self.0.len).finish()
    }
}

/// Why a packet could not be put in a relay buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Longer than [`RELAY_PACKET_MAX`].
    TooLarge,
    /// Every buffer is still held by a destination and the pool is at its maximum.
    Exhausted,
}

/// The relay buffers of one origin worker.
pub struct PacketPool {
    ring: Vec<Arc<Buffer>>,
    /// The buffer filled longest ago, where the next scan starts.
    next: usize,
    max: usize,
}

impl std::fmt::Debug for PacketPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketPool").field("buffers", &self.ring.len()).field("max", &self.max).finish()
    }
}

impl PacketPool {
    /// A pool that grows to at most `max` buffers (none are allocated yet).
    pub fn new(max: usize) -> Self {
        Self { ring: Vec::new(), next: 0, max }
    }

    /// Buffers allocated so far.
    pub fn buffers(&self) -> usize {
        self.ring.len()
    }

    /// Copies `packet` into a free buffer (growing the pool when none of those scanned is
    /// free) and returns the shared handle to it.
    pub fn fill(&mut self, packet: &[u8]) -> Result<RelayPacket, PoolError> {
        if packet.len() > RELAY_PACKET_MAX {
            return Err(PoolError::TooLarge);
        }
        let len = self.ring.len();
        for _ in 0..len.min(SCAN) {
            let index = self.next;
            self.next = (self.next + 1) % len;
            if let Some(buffer) = Arc::get_mut(&mut self.ring[index]) {
                buffer.fill(packet);
                return Ok(RelayPacket(Arc::clone(&self.ring[index])));
            }
        }
        if len >= self.max {
            return Err(PoolError::Exhausted);
        }
        // The new buffer goes just before the scan's start, where the newest one belongs.
        let buffer = Arc::new(Buffer::holding(packet));
        let index = self.next.min(len);
        self.ring.insert(index, Arc::clone(&buffer));
        self.next = (index + 1) % (len + 1);
        Ok(RelayPacket(buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_instead_of_a_new_one() {
        let mut pool = PacketPool::new(8);
        for round in 0..100u8 {
            let packet = pool.fill(&[round; 100]).unwrap();
            let shared = packet.clone();
            assert_eq!(shared.bytes(), &[round; 100][..]);
            drop((packet, shared));
        }
        assert_eq!(pool.buffers(), 1, "one buffer served every packet once each came back");
    }

    #[test]
    fn buffers_still_held_are_never_overwritten() {
        let mut pool = PacketPool::new(8);
        let held: Vec<RelayPacket> = (0..5u8).map(|i| pool.fill(&[i; 10]).unwrap()).collect();
        assert_eq!(pool.buffers(), 5);
        for (i, packet) in held.iter().enumerate() {
            assert_eq!(packet.bytes(), &[i as u8; 10][..], "each destination reads what was relayed");
        }
        drop(held);
        // All five are free again: the pool cycles through them and does not grow.
        for i in 0..20u8 {
            assert_eq!(pool.fill(&[i; 3]).unwrap().bytes(), &[i; 3][..]);
        }
        assert_eq!(pool.buffers(), 5);
    }

    #[test]
    fn a_full_pool_refuses_and_recovers() {
        let mut pool = PacketPool::new(2);
        let a = pool.fill(b"a").unwrap();
        let b = pool.fill(b"b").unwrap();
        assert_eq!(pool.fill(b"c").unwrap_err(), PoolError::Exhausted);
        drop(a);
        assert_eq!(pool.fill(b"c").unwrap().bytes(), b"c");
        assert_eq!(b.bytes(), b"b");
        assert_eq!(pool.fill(&[0; RELAY_PACKET_MAX + 1]).unwrap_err(), PoolError::TooLarge);
        assert_eq!(pool.fill(&[7; RELAY_PACKET_MAX]).unwrap().bytes().len(), RELAY_PACKET_MAX);
    }

    #[test]
    fn a_buffer_dropped_on_another_thread_comes_back() {
        let mut pool = PacketPool::new(4);
        for round in 0..50u8 {
            let packet = pool.fill(&[round; 64]).unwrap();
            let reader = std::thread::spawn(move || packet.bytes().iter().all(|&b| b == round));
            assert!(reader.join().unwrap());
        }
        assert_eq!(pool.buffers(), 1);
    }
}
