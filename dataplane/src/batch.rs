//! What the socket backends move, shared by `io` (which drives them) and `sys` (which talks
//! to the kernel) so that neither depends on the other for it: the datagrams a worker will
//! send at the end of its loop turn, written in place into a preallocated arena so that
//! building a fan-out allocates nothing, and what one poll saw.
//!
//! Rules: reserve a slot with [`SendQueue::slot`], write the datagram into it, then
//! [`SendQueue::commit`] its length and destination; an uncommitted slot is simply reused.
//! When the queue is full the caller flushes it through the backend before going on.
//! A datagram whose destination is a TCP peer is moved to that connection at flush time and
//! marked [`SocketIndex::TCP`]; the UDP backends skip what carries that mark.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

/// What one `poll` call saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// Datagrams (and TCP frames) handed to the callback.
    pub received: usize,
    /// The wake-up fd fired: commands are waiting.
    pub woken: bool,
}

/// Largest datagram a slot holds. WebRTC media stays under the path MTU (~1,200–1,400
/// bytes); the rest leaves room for SRTP tags and DTLS flights.
pub const SLOT_SIZE: usize = 2048;

/// Which of the worker's sockets a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketIndex(pub u16);

impl SocketIndex {
    /// The worker's TCP connections as a whole: frames received on any of them come with
    /// this index, and a queued datagram handed to one of them carries it.
    pub const TCP: SocketIndex = SocketIndex(u16::MAX);
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    socket: SocketIndex,
    destination: SocketAddr,
    len: u16,
}

/// A bounded batch of outgoing datagrams.
#[derive(Debug)]
pub struct SendQueue {
    arena: Box<[u8]>,
    entries: Vec<Entry>,
    capacity: usize,
}

impl SendQueue {
    /// A queue of `capacity` datagrams (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            arena: vec![0; capacity * SLOT_SIZE].into_boxed_slice(),
            entries: Vec::with_capacity(capacity),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() == self.capacity
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The next free slot, or `None` when the queue is full and must be flushed first.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        let start = self.entries.len().checked_mul(SLOT_SIZE)?;
        self.arena.get_mut(start..start + SLOT_SIZE)
    }

    /// Queues the first `len` bytes of the slot last returned by [`SendQueue::slot`].
    /// A zero or oversized `len`, or a full queue, queues nothing and returns false.
    pub fn commit(&mut self, socket: SocketIndex, destination: SocketAddr, len: usize) -> bool {
        if self.is_full() || len == 0 || len > SLOT_SIZE {
            return false;
        }
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        self.entries.push(Entry { socket, destination, len });
        true
    }

    /// Copies `datagram` into the next slot and queues it; false when full or too large.
    pub fn push(&mut self, socket: SocketIndex, destination: SocketAddr, datagram: &[u8]) -> bool {
        match self.slot() {
            Some(slot) if datagram.len() <= slot.len() => {
                slot[..datagram.len()].copy_from_slice(datagram);
                self.commit(socket, destination, datagram.len())
            }
            _ => false,
        }
    }

    /// The queued datagram at `index`: its socket, destination and bytes.
    pub fn get(&self, index: usize) -> Option<(SocketIndex, SocketAddr, &[u8])> {
        let entry = self.entries.get(index)?;
        let start = index * SLOT_SIZE;
        let bytes = self.arena.get(start..start + usize::from(entry.len))?;
        Some((entry.socket, entry.destination, bytes))
    }

    /// Marks the datagram at `index` as sent on a TCP connection, so that no UDP socket
    /// sends it.
    pub(crate) fn divert(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.socket = SocketIndex::TCP;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (SocketIndex, SocketAddr, &[u8])> {
        (0..self.entries.len()).filter_map(|i| self.get(i))
    }

    /// Forgets every queued datagram (after a flush).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn slots_are_written_in_place_and_kept_in_order() {
        let mut queue = SendQueue::new(2);
        let slot = queue.slot().unwrap();
        slot[..3].copy_from_slice(b"abc");
        assert!(queue.commit(SocketIndex(0), addr(1), 3));
        assert!(queue.push(SocketIndex(1), addr(2), b"de"));
        assert!(queue.is_full());
        assert!(queue.slot().is_none());
        assert!(!queue.push(SocketIndex(0), addr(3), b"f"));
        let sent: Vec<_> = queue.iter().map(|(s, a, b)| (s.0, a.port(), b.to_vec())).collect();
        assert_eq!(sent, vec![(0, 1, b"abc".to_vec()), (1, 2, b"de".to_vec())]);
        queue.clear();
        assert!(queue.is_empty());
        assert!(queue.slot().is_some());
    }

    #[test]
    fn bad_lengths_queue_nothing() {
        let mut queue = SendQueue::new(4);
        assert!(!queue.commit(SocketIndex(0), addr(1), 0));
        assert!(!queue.commit(SocketIndex(0), addr(1), SLOT_SIZE + 1));
        assert!(!queue.push(SocketIndex(0), addr(1), &[0; SLOT_SIZE + 1]));
        assert!(queue.is_empty());
    }
}
