//! HTTP byte ranges of downloads (RFC 9110 §14): which part of a file a `Range` header asks
//! for. Pure: the header and the file's length in, the answer out.
//!
//! One range is served (206): `bytes=a-b`, `bytes=a-`, `bytes=-n`. A range that starts past
//! the end is unsatisfiable (416). Anything else — another unit, a malformed value, several
//! ranges — is ignored and the whole file is served (200), as RFC 9110 allows.
#![forbid(unsafe_code)]

/// What to answer a download with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// 200 with the whole file.
    Whole,
    /// 206 with bytes `start..=end` (`end` within the file).
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// The part of a file of `len` bytes that `range` (the `Range` header, if any) selects.
pub fn select(range: Option<&str>, len: u64) -> Selection {
    let Some(spec) = range
        .and_then(|r| r.trim().split_once('='))
        .and_then(|(unit, spec)| unit.trim().eq_ignore_ascii_case("bytes").then_some(spec.trim()))
    else {
        return Selection::Whole;
    };
    if spec.contains(',') {
        return Selection::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else { return Selection::Whole };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) { None } else { text.parse().ok() }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => Selection::Unsatisfiable,
            Some(_) if len == 0 => Selection::Unsatisfiable,
            Some(n) => Selection::Part { start: len.saturating_sub(n), end: len - 1 },
            None => Selection::Whole,
        },
        // `a-`: from a to the end.
        (false, true) => match number(first) {
            Some(start) if start >= len => Selection::Unsatisfiable,
            Some(start) => Selection::Part { start, end: len - 1 },
            None => Selection::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => Selection::Whole,
            (Some(start), Some(_)) if start >= len => Selection::Unsatisfiable,
            (Some(start), Some(end)) => Selection::Part { start, end: end.min(len - 1) },
            _ => Selection::Whole,
        },
        (true, true) => Selection::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::Selection::{Part, Unsatisfiable, Whole};
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(select(None, 100), Whole);
        assert_eq!(select(Some("bytes=0-9"), 100), Part { start: 0, end: 9 });
        assert_eq!(select(Some("bytes=90-"), 100), Part { start: 90, end: 99 });
        assert_eq!(select(Some("bytes=-10"), 100), Part { start: 90, end: 99 });
        assert_eq!(select(Some("bytes=-1000"), 100), Part { start: 0, end: 99 }, "more than the file: all of it");
        assert_eq!(select(Some("bytes=50-1000"), 100), Part { start: 50, end: 99 }, "the end is clamped");
        assert_eq!(select(Some(" Bytes = 1 - 2 "), 100), Part { start: 1, end: 2 });
        assert_eq!(select(Some("bytes=99-99"), 100), Part { start: 99, end: 99 });
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(select(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(select(Some("bytes=100-200"), 100), Unsatisfiable);
        assert_eq!(select(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(select(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(select(Some("bytes=-5"), 0), Unsatisfiable);
    }

    #[test]
    fn what_is_ignored_serves_the_whole_file() {
        for header in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=99999999999999999999999-",
            "",
            "bytes",
        ] {
            assert_eq!(select(Some(header), 100), Whole, "{header:?}");
        }
    }
}
