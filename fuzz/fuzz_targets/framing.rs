//! The RFC 4571 reader never panics however a stream is split between receives (at points
//! the fuzzer picks, or in sizes drawn from a seed), yields exactly the frames a straight
//! parse of the stream finds, and stops for good at the first bad length. What it yields,
//! queued through a writer drained in odd steps, reads back the same, and the encoder frames
//! each packet as the writer does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::wire::WireError;
use uprtcd_dataplane::wire::framing::{FrameReader, FrameWriter, PREFIX_LEN, encode};

/// The worker's limit: one send-queue slot.
const MAX_FRAME: usize = 2048;

/// The whole frames of `stream` read straight through, and whether a bad length ended it.
fn straight_parse(stream: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while let [high, low, body @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low]));
        if len == 0 || len > MAX_FRAME {
            return (frames, true);
        }
        let Some(frame) = body.get(..len) else { break };
        frames.push(frame);
        rest = &body[len..];
    }
    (frames, false)
}

/// Feeds `stream` to `reader` in receives whose sizes `next_size` picks; the frames, and
/// the error that stopped them, if any.
fn read_split(reader: &mut FrameReader, stream: &[u8], mut next_size: impl FnMut() -> usize) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= MAX_FRAME);
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e, WireError::BadFrameLength);
                    assert_eq!(reader.next_frame(), Err(WireError::BadFrameLength), "errors are sticky");
                    return (frames, true);
                }
            }
        }
        if rest.is_empty() {
            return (frames, false);
        }
        let spare = reader.spare();
        assert!(!spare.is_empty(), "a drained reader always has room");
        let n = next_size().min(spare.len()).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        reader.filled(n);
        rest = &rest[n..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else { return };
    // A first byte with its top bit set is followed by that many (low seven bits) size bytes,
    // so that the fuzzer picks every split point itself: each receive takes the next size
    // (0: as much as the reader has room for), cycling. Otherwise the sizes come from a
    // small LCG seeded by the first byte: 1 to 4,096 bytes each.
    let (sizes, stream) =
        if seed & 0x80 == 0 { (&[][..], rest) } else { rest.split_at(usize::from(seed & 0x7F).min(rest.len())) };
    let mut state = u32::from(seed) | 1;
    let mut picked = sizes.iter().cycle();
    let mut next_size = move || match picked.next() {
        Some(0) => usize::MAX,
        Some(&size) => usize::from(size),
        None => {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as usize % 4096 + 1
        }
    };
    let (expected, bad) = straight_parse(stream);
    // The smallest buffer the reader allows, so that every receive forces a compaction.
    let mut reader = FrameReader::new(0, MAX_FRAME);
    let (frames, stopped) = read_split(&mut reader, stream, &mut next_size);
    assert_eq!(stopped, bad);
    assert!(frames.iter().map(Vec::as_slice).eq(expected.iter().copied()));

    let mut writer = FrameWriter::new(usize::from(seed) * 16 + PREFIX_LEN + MAX_FRAME);
    let mut written = Vec::new();
    let mut framed = Vec::new();
    for frame in &frames {
        let mut out = vec![0; PREFIX_LEN + frame.len()];
        assert_eq!(encode(frame, &mut out), Ok(out.len()));
        framed.extend_from_slice(&out);
        while writer.push(frame) == Err(WireError::BufferTooSmall) {
            let [first, _] = writer.pending();
            assert!(!first.is_empty(), "an empty writer takes any frame it can hold");
            let step = next_size().min(first.len());
            written.extend_from_slice(&first[..step]);
            writer.consume(step);
        }
    }
    while !writer.is_empty() {
        let [first, second] = writer.pending();
        written.extend_from_slice(first);
        written.extend_from_slice(second);
        writer.consume(first.len() + second.len());
    }
    assert_eq!(written, framed, "the writer's stream is the encoder's");
    let (again, stopped) = read_split(&mut FrameReader::new(0, MAX_FRAME), &written, next_size);
    assert!(!stopped);
    assert_eq!(again, frames);
});
