//! Per-SSRC state, kept in a vector sorted by SSRC. A transport carries a handful of
//! streams (audio, video layers, their RTX), so a binary search over a few entries beats
//! hashing, and the vector only allocates when a stream appears.

use super::SrtpError;

/// How many SSRCs one table of a session keeps. It bounds the memory an authenticated but
/// misbehaving peer can make a session hold; a browser sends a few per track.
pub const MAX_STREAMS_PER_SESSION: usize = 256;

#[derive(Debug)]
pub(super) struct StreamTable<S> {
    streams: Vec<(u32, S)>,
}

impl<S> StreamTable<S> {
    pub(super) fn new() -> Self {
        Self { streams: Vec::new() }
    }

    /// `Ok(position)` of the stream with `ssrc`, or `Err(position)` where it would be
    /// inserted, as [`slice::binary_search`] answers.
    pub(super) fn find(&self, ssrc: u32) -> Result<usize, usize> {
        self.streams.binary_search_by_key(&ssrc, |(stream_ssrc, _)| *stream_ssrc)
    }

    /// The state at a position `find` returned as `Ok`.
    pub(super) fn get(&self, position: usize) -> &S {
        &self.streams[position].1
    }

    /// The state at a position `find` returned as `Ok`.
    pub(super) fn get_mut(&mut self, position: usize) -> &mut S {
        &mut self.streams[position].1
    }

    /// Fails when a new stream would not fit; ask before spending work on its packet.
    pub(super) fn ensure_room(&self) -> Result<(), SrtpError> {
        if self.streams.len() < MAX_STREAMS_PER_SESSION { Ok(()) } else { Err(SrtpError::TooManyStreams) }
    }

    /// Adds a stream at the position `find` returned as `Err`, after `ensure_room` passed.
    pub(super) fn insert(&mut self, position: usize, ssrc: u32, state: S) {
        self.streams.insert(position, (ssrc, state));
    }

    pub(super) fn remove(&mut self, ssrc: u32) {
        if let Ok(position) = self.find(ssrc) {
            self.streams.remove(position);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_stay_sorted_and_bounded() {
        let mut table = StreamTable::new();
        for ssrc in [30u32, 10, 20] {
            let position = table.find(ssrc).expect_err("not yet inserted");
            table.ensure_room().expect("far below the bound");
            table.insert(position, ssrc, ssrc * 2);
        }
        let position = table.find(20).expect("inserted above");
        assert_eq!(*table.get(position), 40);
        *table.get_mut(position) += 1;
        assert_eq!(*table.get(table.find(20).expect("still there")), 41);

        table.remove(10);
        assert_eq!(table.find(10), Err(0));
        assert_eq!(table.len(), 2);

        for ssrc in 100..100 + (MAX_STREAMS_PER_SESSION - 2) as u32 {
            let position = table.find(ssrc).expect_err("new");
            table.insert(position, ssrc, 0);
        }
        assert_eq!(table.ensure_room(), Err(SrtpError::TooManyStreams));
    }
}
