//! The recording's one timeline and what is on screen along it: where each track starts
//! (least delay, and lip sync of a peer's tracks by their sender reports), when each video is
//! present, and the layout per segment (a span in which the visible set and the rotations
//! do not change). Pure functions of the tracks and the event log.

use std::collections::BTreeMap;

use super::track::Track;
use crate::capture::format::{LogEntry, LogLine};
use crate::capture::{CaptureEvent, Layout, MediaKind};

/// A presence span is shown until one canvas frame after its last frame.
const LAST_FRAME_MS: u64 = 40;

/// Each track's start on the timeline (µs, the earliest track at 0), in `tracks` order, and
/// the timeline's origin on the capture clock.
pub(crate) fn place(tracks: &[Track]) -> (Vec<u64>, i64) {
    let mut placed: Vec<i64> = tracks.iter().map(|t| t.origin_capture_us).collect();
    let mut peers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, track) in tracks.iter().enumerate() {
        peers.entry(track.spec.peer.as_str()).or_default().push(i);
    }
    for members in peers.values().filter(|m| m.len() > 1) {
        // The tracks' origins on the peer's NTP clock, if every one has a sender report.
        let ntp: Option<Vec<i64>> =
            members.iter().map(|&i| tracks[i].sender_report.map(|sr| sr.ntp_us - sr.origin_to_report_us)).collect();
        let Some(ntp) = ntp else { continue };
        // The NTP clock's offset to the capture clock, by the least-delayed track.
        let Some(offset) = members.iter().zip(&ntp).map(|(&i, n)| tracks[i].origin_capture_us - n).min() else {
            continue;
        };
        for (&i, n) in members.iter().zip(&ntp) {
            placed[i] = n + offset;
        }
    }
    let origin = placed.iter().copied().min().unwrap_or(0);
    (placed.iter().map(|p| (p - origin) as u64).collect(), origin)
}

/// A track's span on screen, in timeline ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
}

/// Video tracks' spans on screen: presence moved onto the timeline, cut where the peer left
/// or the stream ended.
pub(crate) fn presence(track: &Track, start_us: u64, events: &[LogLine], timeline_origin_us: i64) -> Vec<Span> {
    let start_ms = start_us / 1000;
    let cut = events
        .iter()
        .filter(|line| match &line.entry {
            LogEntry::Event(CaptureEvent::Left { peer }) => *peer == track.spec.peer,
            LogEntry::StreamEnded { ssrc } => *ssrc == track.spec.ssrc,
            _ => false,
        })
        .map(|line| ((line.at_us as i64 - timeline_origin_us).max(0) / 1000) as u64)
        .collect::<Vec<_>>();
    track
        .presence
        .iter()
        .map(|&(a, b)| {
            let (start, end) = (a + start_ms, b + start_ms + LAST_FRAME_MS);
            let end = cut.iter().copied().filter(|&c| c >= start && c < end).min().unwrap_or(end);
            Span { start, end }
        })
        .filter(|span| span.end > span.start)
        .collect()
}

/// One span of time with a fixed layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub tiles: Vec<Tile>,
}

/// One video on the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    /// Index of the video track.
    pub track: usize,
    pub rect: Rect,
    /// Quarter turns clockwise that make it upright (0 unless the video is being fixed).
    pub rotation: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// What the layout needs of a video track.
#[derive(Debug, Clone)]
pub(crate) struct Shown<'a> {
    pub peer: &'a str,
    pub spans: Vec<Span>,
    /// (timeline ms, rotation) at each change; empty when rotations are ignored.
    pub rotations: Vec<(u64, u8)>,
}

/// Cuts the timeline wherever a span starts or ends or a rotation changes, and lays out each
/// piece; neighbours with the same tiles are merged. Cuts fall on the output's frame grid
/// (`frame_ms`), so that the pieces, rendered one after the other, add up to the timeline
/// exactly; together they cover `0..duration_ms` rounded up to that grid, pieces without
/// any video included.
pub(crate) fn segments(
    shown: &[Shown<'_>],
    layout: &Layout,
    canvas: (u32, u32),
    duration_ms: u64,
    frame_ms: u64,
) -> Vec<Segment> {
    let frame_ms = frame_ms.max(1);
    let on_grid = |t: u64| (t + frame_ms / 2) / frame_ms * frame_ms;
    let total = duration_ms.max(1).div_ceil(frame_ms) * frame_ms;
    let spans: Vec<Vec<Span>> = shown
        .iter()
        .map(|s| s.spans.iter().map(|span| Span { start: on_grid(span.start), end: on_grid(span.end) }).collect())
        .collect();
    let mut cuts = vec![0, total];
    for (s, spans) in shown.iter().zip(&spans) {
        cuts.extend(spans.iter().flat_map(|span| [span.start, span.end]));
        cuts.extend(s.rotations.iter().map(|&(at, _)| on_grid(at)));
    }
    cuts.retain(|&c| c <= total);
    cuts.sort_unstable();
    cuts.dedup();
    let mut segments: Vec<Segment> = Vec::new();
    for pair in cuts.windows(2) {
        let (start_ms, end_ms) = (pair[0], pair[1]);
        let visible: Vec<(usize, &str, u8)> = shown
            .iter()
            .zip(&spans)
            .enumerate()
            .filter(|(_, (_, spans))| spans.iter().any(|span| span.start <= start_ms && end_ms <= span.end))
            .map(|(i, (s, _))| {
                let rotation =
                    s.rotations.iter().take_while(|&&(at, _)| on_grid(at) <= start_ms).last().map_or(0, |r| r.1);
                (i, s.peer, rotation)
            })
            .collect();
        let tiles = arrange(&visible, layout, canvas);
        match segments.last_mut() {
            Some(last) if last.tiles == tiles => last.end_ms = end_ms,
            _ => segments.push(Segment { start_ms, end_ms, tiles }),
        }
    }
    segments
}

/// Tiles for the visible videos `(track, peer, rotation)`.
fn arrange(visible: &[(usize, &str, u8)], layout: &Layout, (width, height): (u32, u32)) -> Vec<Tile> {
    let tile = |&(track, _, rotation): &(usize, &str, u8), rect| Tile { track, rect, rotation };
    let centre = match layout {
        Layout::Centre(peer) => visible.iter().position(|v| v.1 == peer),
        Layout::Grid => None,
    };
    let Some(centre) = centre else {
        let rects = grid(visible.len(), Rect { x: 0, y: 0, w: width, h: height });
        return visible.iter().zip(rects).map(|(v, r)| tile(v, r)).collect();
    };
    let others: Vec<_> = visible.iter().enumerate().filter(|&(i, _)| i != centre).map(|(_, v)| v).collect();
    if others.is_empty() {
        return vec![tile(&visible[centre], Rect { x: 0, y: 0, w: width, h: height })];
    }
    // The centre peer above a row of thumbnails, each a fifth of the height.
    let strip = even(height / 5);
    let thumb_w = even((width / others.len() as u32).min(strip * 16 / 9));
    let row_x = (width - thumb_w * others.len() as u32) / 2;
    let mut tiles = vec![tile(&visible[centre], Rect { x: 0, y: 0, w: width, h: height - strip })];
    for (i, v) in others.into_iter().enumerate() {
        tiles.push(tile(v, Rect { x: row_x + i as u32 * thumb_w, y: height - strip, w: thumb_w, h: strip }));
    }
    tiles
}

/// `n` equal cells filling `area`, row by row, a short last row centred.
fn grid(n: usize, area: Rect) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let columns = (1..=n).find(|c| c * c >= n).unwrap_or(n) as u32;
    let rows = (n as u32).div_ceil(columns);
    let (w, h) = (even(area.w / columns), even(area.h / rows));
    let top = area.y + (area.h - h * rows) / 2;
    (0..n as u32)
        .map(|i| {
            let (row, column) = (i / columns, i % columns);
            let in_row = (n as u32 - row * columns).min(columns);
            let left = area.x + (area.w - w * in_row) / 2;
            Rect { x: left + column * w, y: top + row * h, w, h }
        })
        .collect()
}

fn even(value: u32) -> u32 {
    value & !1
}

/// The kinds present, for the output check.
pub(crate) fn has_kind(tracks: &[Track], kind: MediaKind) -> bool {
    tracks.iter().any(|t| t.spec.kind == kind)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::capture::{Codec, StreamSpec};
    use crate::compose::track::SenderReportTiming;

    fn track(peer: &str, ssrc: u32, origin_capture_us: i64, sr: Option<(i64, i64)>) -> Track {
        Track {
            spec: StreamSpec::new(ssrc, peer, Codec::Vp8, 96),
            path: PathBuf::new(),
            origin_capture_us,
            sender_report: sr.map(|(ntp_us, origin_to_report_us)| SenderReportTiming { ntp_us, origin_to_report_us }),
            end_ms: 1000,
            presence: vec![(0, 1000)],
            rotations: vec![(0, 0)],
        }
    }

    #[test]
    fn tracks_start_by_least_delay_without_sender_reports() {
        let (starts, origin) = place(&[track("a", 1, 500_000, None), track("b", 2, 200_000, None)]);
        assert_eq!((starts, origin), (vec![300_000, 0], 200_000));
    }

    #[test]
    fn a_peers_tracks_are_lip_synced_by_sender_reports() {
        // Audio's first packet was captured at 1.00 s, video's first frame at 1.30 s (it was
        // delayed); their sender reports say the video frame was taken 0.10 s after the audio.
        let audio = track("a", 1, 1_000_000, Some((50_000_000, 2_000_000)));
        let video = track("a", 2, 1_300_000, Some((50_000_000, 1_900_000)));
        let (starts, _) = place(&[audio, video]);
        assert_eq!(starts, vec![0, 100_000]);
    }

    #[test]
    fn presence_ends_where_the_peer_left() {
        let t = track("a", 1, 0, None);
        let left = LogLine { at_us: 1_500_000, entry: LogEntry::Event(CaptureEvent::Left { peer: "a".into() }) };
        let other = LogLine { at_us: 1_200_000, entry: LogEntry::Event(CaptureEvent::Left { peer: "b".into() }) };
        assert_eq!(presence(&t, 1_000_000, &[other, left], 0), vec![Span { start: 1000, end: 1500 }]);
        assert_eq!(presence(&t, 1_000_000, &[], 0), vec![Span { start: 1000, end: 2040 }]);
    }

    fn shown(peer: &str, start: u64, end: u64) -> Shown<'_> {
        Shown { peer, spans: vec![Span { start, end }], rotations: Vec::new() }
    }

    #[test]
    fn the_grid_follows_who_is_present() {
        let segments = segments(&[shown("a", 0, 3000), shown("b", 1010, 3000)], &Layout::Grid, (1280, 720), 3000, 40);
        assert_eq!(segments.len(), 2);
        assert_eq!((segments[0].start_ms, segments[0].end_ms), (0, 1000));
        assert_eq!(segments[0].tiles, vec![Tile { track: 0, rect: Rect { x: 0, y: 0, w: 1280, h: 720 }, rotation: 0 }]);
        assert_eq!(
            segments[1].tiles.iter().map(|t| t.rect).collect::<Vec<_>>(),
            vec![Rect { x: 0, y: 0, w: 640, h: 720 }, Rect { x: 640, y: 0, w: 640, h: 720 }]
        );
    }

    #[test]
    fn segments_cover_the_timeline_on_the_frame_grid() {
        // a leaves at 1,013 ms; nobody is shown after that, and the timeline ends at 2,010 ms.
        let s = segments(&[shown("a", 0, 1013)], &Layout::Grid, (1280, 720), 2010, 40);
        assert_eq!(
            s.iter().map(|s| (s.start_ms, s.end_ms, s.tiles.len())).collect::<Vec<_>>(),
            vec![(0, 1000, 1), (1000, 2040, 0)]
        );
    }

    #[test]
    fn a_grid_of_three_centres_its_last_row() {
        let rects = grid(3, Rect { x: 0, y: 0, w: 1280, h: 720 });
        assert_eq!(rects[2], Rect { x: 320, y: 360, w: 640, h: 360 });
    }

    #[test]
    fn the_centre_peer_is_large_and_the_others_below() {
        let s =
            segments(&[shown("a", 0, 1000), shown("b", 0, 1000)], &Layout::Centre("b".into()), (1280, 720), 1000, 40);
        let tiles = &s[0].tiles;
        assert_eq!(tiles[0], Tile { track: 1, rect: Rect { x: 0, y: 0, w: 1280, h: 576 }, rotation: 0 });
        assert_eq!(tiles[1].rect, Rect { x: 512, y: 576, w: 256, h: 144 });
    }

    #[test]
    fn a_rotation_change_cuts_a_segment() {
        let mut a = shown("a", 0, 2000);
        a.rotations = vec![(0, 0), (1200, 1)];
        let s = segments(&[a], &Layout::Grid, (1280, 720), 2000, 40);
        assert_eq!(s.iter().map(|s| (s.start_ms, s.tiles[0].rotation)).collect::<Vec<_>>(), vec![(0, 0), (1200, 1)]);
    }
}
