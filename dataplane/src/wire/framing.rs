//! RFC 4571 framing, which ICE-TCP (RFC 6544 §3) uses to carry STUN, DTLS, SRTP and SRTCP
//! packets over a TCP stream: each packet is preceded by its length as a 16-bit big-endian
//! integer.
//!
//! What it owns: the byte layout and two fixed buffers that hold a stream's bytes between
//! system calls. [`FrameReader`] cuts received bytes into whole frames; [`FrameWriter`]
//! queues framed packets until the transport takes them; [`encode`] frames one packet into
//! a caller's buffer. No socket, no clock; nothing allocates after construction.
//!
//! Rules for callers:
//! - **A bad length ends the stream.** A zero length or one over the reader's limit is
//!   [`WireError::BadFrameLength`]; a byte stream has no way to find the next frame after
//!   it, so the reader keeps returning the error and the caller closes the connection.
//! - **Frames borrow the reader.** Handle (or decrypt in place) each frame before asking for
//!   the next one or receiving more bytes.
//! - **A full writer refuses whole packets.** [`FrameWriter::push`] writes a frame entirely
//!   or not at all, so the stream never carries half a frame.
#![forbid(unsafe_code)]

use super::WireError;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 2;
/// Longest packet a length prefix can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Frames `packet` into the start of `out`; returns the bytes written (prefix and packet).
/// An empty packet or one over [`MAX_FRAME_LEN`] is [`WireError::Unrepresentable`]; `out`
/// too short is [`WireError::BufferTooSmall`].
pub fn encode(packet: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
    let prefix = frame_prefix(packet)?;
    let total = PREFIX_LEN + packet.len();
    let out = out.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
    out[..PREFIX_LEN].copy_from_slice(&prefix);
    out[PREFIX_LEN..].copy_from_slice(packet);
    Ok(total)
}

/// The length prefix of `packet`, refusing lengths the format cannot carry. An empty frame
/// is legal in RFC 4571 but carries nothing and our reader refuses it, so we never send one.
fn frame_prefix(packet: &[u8]) -> Result<[u8; PREFIX_LEN], WireError> {
    match u16::try_from(packet.len()) {
        Ok(0) | Err(_) => Err(WireError::Unrepresentable),
        Ok(len) => Ok(len.to_be_bytes()),
    }
}

/// Cuts a received byte stream into frames, over one buffer allocated at construction.
///
/// Receive into [`FrameReader::spare`], report the count with [`FrameReader::filled`], then
/// take frames with [`FrameReader::next_frame`] until it says `Ok(None)`.
#[derive(Default)]
pub struct FrameReader {
    buf: Box<[u8]>,
    /// First byte not yet handed out in a frame.
    start: usize,
    /// End of the bytes received.
    end: usize,
    max_frame: usize,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("capacity", &self.buf.len())
            .field("buffered", &self.buffered())
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl FrameReader {
    /// A reader accepting frames of 1 to `max_frame` bytes (at most [`MAX_FRAME_LEN`]) whose
    /// buffer holds `capacity` bytes, raised if need be so that the longest frame and its
    /// prefix fit: a full buffer then always starts with a whole frame or a bad length.
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        let max_frame = max_frame.min(MAX_FRAME_LEN);
        let capacity = capacity.max(PREFIX_LEN + max_frame);
        Self { buf: vec![0; capacity].into_boxed_slice(), start: 0, end: 0, max_frame }
    }

    /// Free space to receive into, after moving the unread bytes (less than one frame once
    /// the frames are taken) to the front. Empty only if frames were left untaken.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were received into the space [`FrameReader::spare`] returned.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes the buffer holds: 0 for a [`FrameReader::default`], which owns no buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received and not yet handed out in a frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next whole frame, writable so that it can be decrypted in place; `Ok(None)` when
    /// more bytes are needed. After an error every call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, WireError> {
        let unread = &self.buf[self.start..self.end];
        let [high, low, ..] = *unread else { return Ok(None) };
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len == 0 || len > self.max_frame {
            return Err(WireError::BadFrameLength);
        }
        if unread.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let frame_start = self.start + PREFIX_LEN;
        self.start = frame_start + len;
        Ok(Some(&mut self.buf[frame_start..frame_start + len]))
    }
}

/// Framed packets waiting for a stream to take them: a ring over one buffer allocated at
/// construction, so that a slow stream costs its bytes and never a copy of what waits.
#[derive(Default)]
pub struct FrameWriter {
    buf: Box<[u8]>,
    /// Oldest pending byte.
    head: usize,
    /// Pending bytes, from `head` on, wrapping at the end of `buf`.
    len: usize,
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter").field("capacity", &self.buf.len()).field("pending", &self.len).finish()
    }
}

impl FrameWriter {
    /// A writer that holds up to `capacity` bytes of frames and prefixes.
    pub fn new(capacity: usize) -> Self {
        Self { buf: vec![0; capacity].into_boxed_slice(), head: 0, len: 0 }
    }

    /// Queues `packet` with its prefix. [`WireError::BufferTooSmall`] when the frame does
    /// not fit in the free space (nothing is queued); [`WireError::Unrepresentable`] for an
    /// empty packet or one over [`MAX_FRAME_LEN`].
    pub fn push(&mut self, packet: &[u8]) -> Result<(), WireError> {
        let prefix = frame_prefix(packet)?;
        if self.buf.len() - self.len < PREFIX_LEN + packet.len() {
            return Err(WireError::BufferTooSmall);
        }
        self.put(&prefix);
        self.put(packet);
        Ok(())
    }

    /// Appends `bytes`, which the caller checked fit in the free space.
    fn put(&mut self, bytes: &[u8]) {
        let capacity = self.buf.len();
        if bytes.is_empty() || capacity == 0 {
            return;
        }
        let tail = (self.head + self.len) % capacity;
        let first = bytes.len().min(capacity - tail);
        self.buf[tail..tail + first].copy_from_slice(&bytes[..first]);
        self.buf[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.len += bytes.len();
    }

    /// The pending bytes, oldest first, as the two runs they occupy in the ring (the second
    /// is empty unless they wrap).
    pub fn pending(&self) -> [&[u8]; 2] {
        let first = self.len.min(self.buf.len() - self.head);
        [&self.buf[self.head..self.head + first], &self.buf[..self.len - first]]
    }

    /// Forgets the oldest `n` pending bytes, which the stream took.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        // Restarting an empty ring at 0 keeps the next frames in one run: one write call.
        self.head = if self.len == 0 { 0 } else { (self.head + n) % self.buf.len() };
    }

    /// Bytes the ring holds: 0 for a [`FrameWriter::default`], which owns no buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `reader` yields from `stream`, received `chunk` bytes at a time.
    fn deframe(reader: &mut FrameReader, stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, WireError> {
        let mut frames = Vec::new();
        let mut rest = stream;
        loop {
            while let Some(frame) = reader.next_frame()? {
                frames.push(frame.to_vec());
            }
            if rest.is_empty() {
                return Ok(frames);
            }
            let spare = reader.spare();
            let n = chunk.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            reader.filled(n);
            rest = &rest[n..];
        }
    }

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut stream = Vec::new();
        for packet in packets {
            let mut out = vec![0; PREFIX_LEN + packet.len()];
            assert_eq!(encode(packet, &mut out), Ok(out.len()));
            stream.extend_from_slice(&out);
        }
        stream
    }

    #[test]
    fn the_prefix_is_the_big_endian_length() {
        let mut out = [0u8; 8];
        assert_eq!(encode(&[0xAA; 5], &mut out), Ok(7));
        assert_eq!(out[..7], [0x00, 0x05, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]);
        let long = vec![7u8; 0x0123];
        let mut out = vec![0u8; 0x0125];
        assert_eq!(encode(&long, &mut out), Ok(0x0125));
        assert_eq!(out[..2], [0x01, 0x23]);
    }

    #[test]
    fn encoding_refuses_what_the_prefix_cannot_carry() {
        let mut out = vec![0u8; MAX_FRAME_LEN + 8];
        assert_eq!(encode(&[], &mut out), Err(WireError::Unrepresentable));
        assert_eq!(encode(&vec![0; MAX_FRAME_LEN + 1], &mut out), Err(WireError::Unrepresentable));
        assert_eq!(encode(&vec![0; MAX_FRAME_LEN], &mut out), Ok(MAX_FRAME_LEN + 2));
        assert_eq!(encode(&[1, 2, 3], &mut out[..4]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let packets: Vec<Vec<u8>> = (1..=40u16).map(|i| vec![i as u8; usize::from(i) * 37]).collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for chunk in [1, 2, 3, 7, 100, 1500, 4096, stream.len()] {
            let mut reader = FrameReader::new(4096, 2048);
            assert_eq!(deframe(&mut reader, &stream, chunk).unwrap(), packets, "chunks of {chunk}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn a_frame_of_exactly_the_limit_fits_even_in_the_smallest_buffer() {
        let mut reader = FrameReader::new(0, 2048);
        let stream = framed(&[&[9; 2048], &[8; 2048]]);
        assert_eq!(deframe(&mut reader, &stream, 5000).unwrap(), vec![vec![9; 2048], vec![8; 2048]]);
    }

    #[test]
    fn zero_and_oversized_lengths_are_refused_and_stay_refused() {
        for bad in [[0x00, 0x00], [0x08, 0x01], [0xFF, 0xFF]] {
            let mut reader = FrameReader::new(4096, 2048);
            let mut stream = framed(&[b"ok"]);
            stream.extend_from_slice(&bad);
            stream.extend_from_slice(&[1; 16]);
            assert_eq!(deframe(&mut reader, &stream, 1), Err(WireError::BadFrameLength), "{bad:?}");
            assert_eq!(reader.next_frame(), Err(WireError::BadFrameLength));
        }
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut reader = FrameReader::new(64, 32);
        reader.spare()[..3].copy_from_slice(&[0, 4, 1]);
        reader.filled(3);
        assert_eq!(reader.next_frame(), Ok(None));
        assert_eq!(reader.buffered(), 3);
        reader.spare()[..3].copy_from_slice(&[2, 3, 4]);
        reader.filled(3);
        assert_eq!(reader.next_frame().unwrap().map(|f| f.to_vec()), Some(vec![1, 2, 3, 4]));
        assert_eq!(reader.next_frame(), Ok(None));
    }

    #[test]
    fn frames_can_be_rewritten_in_place() {
        let mut reader = FrameReader::new(64, 32);
        let stream = framed(&[&[1, 2, 3]]);
        reader.spare()[..stream.len()].copy_from_slice(&stream);
        reader.filled(stream.len());
        reader.next_frame().unwrap().unwrap().fill(0xEE);
        assert_eq!(reader.buf[..5], [0, 3, 0xEE, 0xEE, 0xEE]);
    }

    #[test]
    fn the_default_reader_and_writer_hold_nothing_and_never_panic() {
        let mut reader = FrameReader::default();
        assert_eq!(reader.capacity(), 0);
        assert!(reader.spare().is_empty());
        reader.filled(10);
        assert_eq!(reader.next_frame(), Ok(None));
        let mut writer = FrameWriter::default();
        assert_eq!(writer.capacity(), 0);
        assert_eq!(writer.push(b"x"), Err(WireError::BufferTooSmall));
        writer.consume(5);
        assert_eq!(writer.pending(), [&[][..], &[][..]]);
    }

    /// Drains `writer` into `stream`, `step` bytes at a time, as a slow socket would take it.
    fn drain(writer: &mut FrameWriter, stream: &mut Vec<u8>, step: usize) {
        while !writer.is_empty() {
            let [first, second] = writer.pending();
            let taken: Vec<u8> = first.iter().chain(second).copied().take(step).collect();
            stream.extend_from_slice(&taken);
            writer.consume(taken.len());
        }
    }

    #[test]
    fn the_writer_frames_packets_across_the_ring_boundary() {
        let mut writer = FrameWriter::new(100);
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for i in 1..=60u8 {
            let packet = vec![i; usize::from(i % 23) + 1];
            while writer.push(&packet) == Err(WireError::BufferTooSmall) {
                let [first, _] = writer.pending();
                let step = first.len().min(17);
                stream.extend_from_slice(&first[..step]);
                writer.consume(step);
            }
            sent.push(packet);
        }
        drain(&mut writer, &mut stream, 9);
        let mut reader = FrameReader::new(256, 64);
        assert_eq!(deframe(&mut reader, &stream, 13).unwrap(), sent);
    }

    #[test]
    fn a_full_writer_refuses_whole_frames_only() {
        let mut writer = FrameWriter::new(10);
        assert_eq!(writer.push(&[1; 4]), Ok(()));
        assert_eq!(writer.len(), 6);
        assert_eq!(writer.push(&[2; 3]), Err(WireError::BufferTooSmall));
        assert_eq!(writer.len(), 6, "nothing of the refused frame was queued");
        assert_eq!(writer.push(&[3; 2]), Ok(()));
        assert_eq!(writer.len(), 10);
        assert_eq!(writer.push(&[]), Err(WireError::Unrepresentable));
        let mut stream = Vec::new();
        drain(&mut writer, &mut stream, 3);
        assert_eq!(stream, [0, 4, 1, 1, 1, 1, 0, 2, 3, 3]);
    }
}
