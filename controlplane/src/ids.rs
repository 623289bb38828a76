//! Readable ids of the REST API and the rules that make them.
//!
//! A generated [`RoomId`] is ten characters of `[0-9A-Za-z]`: seven random ones, a
//! two-character tag of the server that made it, and a check character keyed by that
//! server's secret identity. A server therefore tells its own ids from another server's and
//! from arbitrary strings, which the roomId rules of the spec need ("a roomId is reusable
//! only on the server that made it"). The identity key lives in the store, so a restarted
//! server still recognises its ids.
#![forbid(unsafe_code)]

use std::fmt;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_CHARS: usize = 7;
const TAG_CHARS: usize = 2;
/// Length of every id this server generates.
pub const GENERATED_ID_LEN: usize = RANDOM_CHARS + TAG_CHARS + 1;
/// Longest id (in characters) the API accepts anywhere.
pub const MAX_ID_CHARS: usize = 128;

/// Why a string is not an acceptable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a string of 1 to {MAX_ID_CHARS} characters, none of them a control character")]
pub struct BadId;

/// Ids go into logs and events as they are: a control character (a newline that starts a
/// forged log line, a terminal escape) has no place in one.
fn check_id(text: &str) -> Result<(), BadId> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS || text.chars().any(char::is_control) { Err(BadId) } else { Ok(()) }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, min_length = 1, max_length = 128)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadId;

            fn try_from(text: String) -> Result<Self, BadId> {
                check_id(&text)?;
                Ok(Self(text))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A room, as the API names it.
    RoomId
);
string_id!(
    /// A user (master, member, co-host, audience member), as the business server names it.
    PeerId
);
string_id!(
    /// A recording.
    RecordId
);
string_id!(
    /// A media track as clients see it in signalling.
    TrackId
);

impl TrackId {
    /// The id of the server's `number`th published track: `t0`, `t1`, …
    pub fn numbered(number: u64) -> Self {
        TrackId(format!("t{number}"))
    }
}

/// This server's secret identity: the key behind the tag and check character of its ids.
#[derive(Clone)]
pub struct ServerIdentity {
    key: [u8; 32],
    tag: [u8; TAG_CHARS],
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity").field("tag", &String::from_utf8_lossy(&self.tag)).finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// A fresh random identity (first start of a data dir).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        Self::from_key(key)
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        let digest = Self::mac(&key, b"tag");
        let tag = [ALPHABET[usize::from(digest[0]) % 62], ALPHABET[usize::from(digest[1]) % 62]];
        Self { key, tag }
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The two characters every id this server generates carries: how other nodes of a
    /// cluster tell which node made an id (see [`tag_of`]).
    pub fn tag(&self) -> &str {
        std::str::from_utf8(&self.tag).expect("the alphabet is ASCII")
    }

    fn mac(key: &[u8; 32], input: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(input);
        mac.finalize().into_bytes().into()
    }

    fn check_char(&self, body: &[u8]) -> u8 {
        ALPHABET[usize::from(Self::mac(&self.key, body)[0]) % 62]
    }

    /// A new room id carrying this server's tag and check character.
    pub fn generate_room_id(&self) -> RoomId {
        let mut rng = rand::rng();
        let mut id = [0u8; GENERATED_ID_LEN];
        for c in &mut id[..RANDOM_CHARS] {
            *c = ALPHABET[rng.random_range(0..ALPHABET.len())];
        }
        id[RANDOM_CHARS..RANDOM_CHARS + TAG_CHARS].copy_from_slice(&self.tag);
        id[GENERATED_ID_LEN - 1] = self.check_char(&id[..GENERATED_ID_LEN - 1]);
        RoomId(String::from_utf8(id.to_vec()).expect("the alphabet is ASCII"))
    }

    /// A new recording id, made like a room id.
    pub fn generate_record_id(&self) -> RecordId {
        RecordId(self.generate_room_id().0)
    }

    /// Whether this server made `id`.
    pub fn made(&self, id: &RoomId) -> bool {
        let bytes = id.0.as_bytes();
        bytes.len() == GENERATED_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_alphanumeric())
            && bytes[RANDOM_CHARS..RANDOM_CHARS + TAG_CHARS] == self.tag
            && bytes[GENERATED_ID_LEN - 1] == self.check_char(&bytes[..GENERATED_ID_LEN - 1])
    }
}

/// The server tag of `id` when it has the shape of a generated id; what the tag says is
/// unchecked (only the node that made an id can check it).
pub fn tag_of(id: &str) -> Option<&str> {
    let bytes = id.as_bytes();
    (bytes.len() == GENERATED_ID_LEN && bytes.iter().all(u8::is_ascii_alphanumeric))
        .then(|| &id[RANDOM_CHARS..RANDOM_CHARS + TAG_CHARS])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(text: &str) -> RoomId {
        RoomId::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn generated_ids_are_recognised_by_their_maker_only() {
        let ours = ServerIdentity::from_key([1; 32]);
        let theirs = ServerIdentity::from_key([2; 32]);
        for _ in 0..1000 {
            let id = ours.generate_room_id();
            assert_eq!(id.as_str().len(), GENERATED_ID_LEN);
            assert!(ours.made(&id), "{id}");
        }
        let foreign = (0..1000).filter(|_| ours.made(&theirs.generate_room_id())).count();
        // A foreign id passes only when both tag and check character collide (1 in 62³).
        assert!(foreign <= 1, "{foreign} foreign ids accepted");
    }

    #[test]
    fn arbitrary_strings_are_not_own_ids() {
        let ours = ServerIdentity::from_key([1; 32]);
        for text in ["N6QAwbs", "hello", "房间🚀", "0000000000", "aaaaaaaaaaaaaaaaaaaa"] {
            assert!(!ours.made(&room(text)), "{text}");
        }
        let mut id = ours.generate_room_id().0.into_bytes();
        id[0] = if id[0] == b'a' { b'b' } else { b'a' };
        assert!(!ours.made(&room(std::str::from_utf8(&id).unwrap())), "a changed character must fail the check");
    }

    #[test]
    fn the_tag_of_an_id_names_the_server_that_made_it() {
        let ours = ServerIdentity::from_key([1; 32]);
        assert_eq!(tag_of(ours.generate_room_id().as_str()), Some(ours.tag()));
        assert_eq!(tag_of(ours.generate_record_id().as_str()), Some(ours.tag()));
        for text in ["convo", "live", "房间房间房间房间房间", "abc-defghi", "0123456789a"] {
            assert_eq!(tag_of(text), None, "{text}");
        }
    }

    #[test]
    fn identity_survives_being_rebuilt_from_its_key() {
        let ours = ServerIdentity::generate();
        let id = ours.generate_room_id();
        assert!(ServerIdentity::from_key(*ours.key()).made(&id));
    }

    #[test]
    fn ids_are_bounded_in_characters_not_bytes() {
        assert_eq!(RoomId::try_from(String::new()), Err(BadId));
        assert!(PeerId::try_from("房".repeat(MAX_ID_CHARS)).is_ok());
        assert_eq!(PeerId::try_from("x".repeat(MAX_ID_CHARS + 1)), Err(BadId));
    }

    #[test]
    fn ids_with_control_characters_are_refused() {
        for bad in ["alice\nuprtcd: ready", "bob\r", "\u{1b}[31mred", "tab\there", "nul\0"] {
            assert_eq!(PeerId::try_from(bad.to_owned()), Err(BadId), "{bad:?}");
        }
        assert!(PeerId::try_from("alice bob-1_2.房".to_owned()).is_ok(), "spaces and letters of any script are fine");
    }
}
