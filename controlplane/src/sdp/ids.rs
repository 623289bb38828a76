//! The identifiers SDP puts on the wire, as newtypes, and the two small enums every media
//! section carries (its kind and its direction).

use std::fmt;

use uprtcd_dataplane::router::MediaKind;

/// A media section's identification tag (`a=mid`, RFC 8843). Unique within a session and
/// never given to another section of the same session, even after its own section closed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mid(String);

impl Mid {
    pub fn new(value: impl Into<String>) -> Self {
        Mid(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Mid {
    fn from(value: &str) -> Self {
        Mid::new(value)
    }
}

impl fmt::Display for Mid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An RTP synchronisation source identifier (RFC 3550).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RTP payload type. Seven bits on the wire: values above 127 never come out of a parse, and
/// a track that names one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(pub u8);

impl PayloadType {
    pub(crate) const MAX: u8 = 127;
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an m-line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    Audio,
    Video,
    /// SCTP data channels (`m=application`).
    Application,
}

impl SectionKind {
    /// The kind of media the section carries; `None` for data channels.
    pub fn media(self) -> Option<MediaKind> {
        match self {
            SectionKind::Audio => Some(MediaKind::Audio),
            SectionKind::Video => Some(MediaKind::Video),
            SectionKind::Application => None,
        }
    }
}

impl From<MediaKind> for SectionKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => SectionKind::Audio,
            MediaKind::Video => SectionKind::Video,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::Audio => "audio",
            SectionKind::Video => "video",
            SectionKind::Application => "application",
        })
    }
}

/// A media section's direction, always from the point of view of the description that carries
/// it: `SendOnly` in a browser's offer means the browser sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub(crate) fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction an answer may give a section offered with `offered` when the answerer wants
    /// `wanted`: it can only receive what the offerer sends and only send what it receives
    /// (RFC 3264 §6.1).
    pub(crate) fn answering(offered: Direction, wanted: Direction) -> Self {
        Direction::from_flags(wanted.sends() && offered.receives(), wanted.receives() && offered.sends())
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::*;
    use super::*;

    #[test]
    fn an_answer_never_claims_more_than_the_offer_allows() {
        assert_eq!(Direction::answering(SendOnly, RecvOnly), RecvOnly);
        assert_eq!(Direction::answering(SendOnly, SendRecv), RecvOnly);
        assert_eq!(Direction::answering(RecvOnly, RecvOnly), Inactive);
        assert_eq!(Direction::answering(SendRecv, RecvOnly), RecvOnly);
        assert_eq!(Direction::answering(SendRecv, SendRecv), SendRecv);
        assert_eq!(Direction::answering(Inactive, SendRecv), Inactive);
    }
}
