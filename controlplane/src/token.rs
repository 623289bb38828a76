//! Join tokens: how a client (browser, app, WHIP/WHEP tool) proves which room it may join
//! and as whom.
//!
//! A join token is a standard JWT signed with HMAC-SHA256 (`alg: HS256`) under the server's
//! AppSecret, carrying the claims of [`JoinClaims`]. Because it is a plain JWT, a business
//! server can mint one with any JWT library instead of asking the API. Client upload tokens
//! (in the URL of `POST /record/client/upload`) are made the same way with the claims of
//! [`UploadClaims`]; neither kind passes for the other.
//!
//! Rules:
//! - HS256 only. The header's `alg` decides nothing: `none`, the other HMACs, RSA, ECDSA and
//!   EdDSA are refused before any signature is checked, so no key-confusion trick applies.
//! - No clock inside: the caller passes the time, so every rule here is testable as is.
//!   `exp` is checked with zero leeway: a token whose `exp` equals now has expired.
//! - A token longer than [`MAX_TOKEN_BYTES`] is refused before it is decoded.
//! - Claims other than those of [`JoinClaims`] are ignored (`role` is reserved for later).
#![forbid(unsafe_code)]

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, RecordId, RoomId};

/// Longest token accepted. Tokens this server mints stay far below it (about 2 KiB for two
/// ids of the longest kind); the bound keeps a hostile client from making the server decode
/// and hash arbitrarily large input.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a join token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The room the client may join.
    pub room: RoomId,
    /// Who the client is.
    pub peer: PeerId,
    /// When the token was issued, seconds since the epoch.
    pub iat: u64,
    /// When the token stops being accepted, seconds since the epoch.
    pub exp: u64,
}

/// What a client upload token says: it lets its holder upload the file of one record, and
/// nothing else (a join token is not one, nor the other way round: each lacks the other's
/// claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    /// The record whose file the holder may upload.
    pub record: RecordId,
    /// Always [`UPLOAD_PURPOSE`].
    pub purpose: String,
    pub iat: u64,
    pub exp: u64,
}

/// The `purpose` claim of client upload tokens.
pub const UPLOAD_PURPOSE: &str = "record-upload";

/// Claims that expire.
trait Expiring {
    fn exp(&self) -> u64;
}

impl Expiring for JoinClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl Expiring for UploadClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

/// Why a token was not made or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a well-formed join token")]
    Malformed,
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("there is no AppSecret to sign or verify with")]
    EmptySecret,
    /// The JWT library failed to sign; HMAC over serialisable claims has no known cause.
    #[error("cannot sign the token: {0}")]
    CannotSign(String),
}

/// The `exp` of a token issued at `now_unix` for `ttl` (whole seconds; saturating).
pub fn expiry(now_unix: u64, ttl: Duration) -> u64 {
    now_unix.saturating_add(ttl.as_secs())
}

/// A join token for `peer` in `room`, issued at `now_unix` and valid for `ttl`.
pub fn mint(secret: &str, room: RoomId, peer: PeerId, now_unix: u64, ttl: Duration) -> Result<String, TokenError> {
    sign(secret, &JoinClaims { room, peer, iat: now_unix, exp: expiry(now_unix, ttl) })
}

/// A client upload token for the file of `record`, issued at `now_unix` and valid for `ttl`.
pub fn mint_upload(secret: &str, record: RecordId, now_unix: u64, ttl: Duration) -> Result<String, TokenError> {
    let claims = UploadClaims { record, purpose: UPLOAD_PURPOSE.to_owned(), iat: now_unix, exp: expiry(now_unix, ttl) };
    sign(secret, &claims)
}

fn sign(secret: &str, claims: &impl Serialize) -> Result<String, TokenError> {
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|_| TokenError::EmptySecret)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map_err(|e| TokenError::CannotSign(e.to_string()))
}

/// The claims of `token` if it is an HS256 join token signed with `secret` that has not
/// expired at `now_unix`.
pub fn verify(secret: &str, token: &str, now_unix: u64) -> Result<JoinClaims, TokenError> {
    verify_as(secret, token, now_unix)
}

/// The claims of `token` if it is an HS256 client upload token signed with `secret` that has
/// not expired at `now_unix`.
pub fn verify_upload(secret: &str, token: &str, now_unix: u64) -> Result<UploadClaims, TokenError> {
    let claims: UploadClaims = verify_as(secret, token, now_unix)?;
    if claims.purpose != UPLOAD_PURPOSE {
        return Err(TokenError::Malformed);
    }
    Ok(claims)
}

fn verify_as<C: serde::de::DeserializeOwned + Expiring>(
    secret: &str,
    token: &str,
    now_unix: u64,
) -> Result<C, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|_| TokenError::EmptySecret)?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        // The library's header type has no room for an algorithm it does not know (`none`)
        // or for a missing one: such a header fails as JSON of the wrong shape. (So does a
        // header whose `kid` or `typ` is not a string; a rarity no signer of ours writes.)
        ErrorKind::Json(json) if json.classify() == serde_json::error::Category::Data => TokenError::WrongAlgorithm,
        _ => TokenError::Malformed,
    })?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::WrongAlgorithm);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // The library would compare `exp` with the system clock; it is compared with `now_unix`
    // below instead, after the signature has been checked.
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<C>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        })?
        .claims;
    if claims.exp() <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const SECRET: &str = "app-secret-for-tests";
    const NOW: u64 = 1_800_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn room(text: &str) -> RoomId {
        RoomId::try_from(text.to_owned()).unwrap()
    }

    fn peer(text: &str) -> PeerId {
        PeerId::try_from(text.to_owned()).unwrap()
    }

    /// Unpadded base64url (RFC 4648 §5), written out so that the tokens built here owe
    /// nothing to the JWT library under test.
    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let group = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn hmac_sha256(secret: &str, message: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// `header.payload.signature` from raw JSON texts, signed with HMAC-SHA256 whatever the
    /// header says, the way any JWT library lays a token out.
    fn hand_made(secret: &str, header: &str, payload: &str) -> String {
        let signed = format!("{}.{}", base64url(header.as_bytes()), base64url(payload.as_bytes()));
        let signature = base64url(&hmac_sha256(secret, &signed));
        format!("{signed}.{signature}")
    }

    fn claims_json(exp: u64) -> String {
        format!(r#"{{"room":"r1","peer":"alice","iat":{NOW},"exp":{exp}}}"#)
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (input, encoded) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg")] {
            assert_eq!(base64url(input.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8", "the URL-safe alphabet");
    }

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let token = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        let claims = verify(SECRET, &token, NOW).unwrap();
        assert_eq!(claims, JoinClaims { room: room("r1"), peer: peer("alice"), iat: NOW, exp: NOW + 3600 });
    }

    #[test]
    fn a_token_expires_at_exp_exactly() {
        let token = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        assert!(verify(SECRET, &token, NOW + 3599).is_ok());
        assert_eq!(verify(SECRET, &token, NOW + 3600), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &token, NOW + 3601), Err(TokenError::Expired));
        let zero_ttl = mint(SECRET, room("r1"), peer("alice"), NOW, Duration::ZERO).unwrap();
        assert_eq!(verify(SECRET, &zero_ttl, NOW), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let forged = mint("another-secret", room("r1"), peer("alice"), NOW, HOUR).unwrap();
        assert_eq!(verify(SECRET, &forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let other_peer =
            base64url(format!(r#"{{"room":"r1","peer":"mallory","iat":{NOW},"exp":{}}}"#, NOW + 3600).as_bytes());
        let tampered = format!("{}.{other_peer}.{}", parts[0], parts[2]);
        assert_eq!(verify(SECRET, &tampered, NOW), Err(TokenError::BadSignature));
        // An expired token made to look fresh fails on its signature, not on its expiry.
        let stale = mint(SECRET, room("r1"), peer("alice"), NOW - 7200, HOUR).unwrap();
        let parts: Vec<&str> = stale.split('.').collect();
        let fresh = base64url(claims_json(NOW + 3600).as_bytes());
        assert_eq!(verify(SECRET, &format!("{}.{fresh}.{}", parts[0], parts[2]), NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = base64url(claims_json(NOW + 3600).as_bytes());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"typ":"JWT"}"#] {
            let unsigned = format!("{}.{payload}.", base64url(header.as_bytes()));
            assert_eq!(verify(SECRET, &unsigned, NOW), Err(TokenError::WrongAlgorithm), "{header}");
        }
    }

    #[test]
    fn hs512_with_the_right_secret_is_refused() {
        let claims = JoinClaims { room: room("r1"), peer: peer("alice"), iat: NOW, exp: NOW + 3600 };
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key).unwrap();
        assert_eq!(verify(SECRET, &hs512, NOW), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn any_other_header_alg_is_refused_even_over_a_valid_hs256_signature() {
        for alg in ["HS384", "RS256", "PS256", "ES256", "EdDSA", "hs256", "HS1"] {
            let token = hand_made(SECRET, &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &claims_json(NOW + 3600));
            assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::WrongAlgorithm), "{alg}");
        }
    }

    #[test]
    fn a_token_made_without_this_library_verifies() {
        // Key order, spacing and an extra claim as other libraries may write them.
        let token = hand_made(
            SECRET,
            r#"{"typ": "JWT", "alg": "HS256"}"#,
            &format!(r#"{{"exp": {}, "iat": {NOW}, "peer": "alice", "room": "r1", "role": "viewer"}}"#, NOW + 60),
        );
        let claims = verify(SECRET, &token, NOW).unwrap();
        assert_eq!(claims, JoinClaims { room: room("r1"), peer: peer("alice"), iat: NOW, exp: NOW + 60 });
    }

    #[test]
    fn a_minted_token_is_plain_hs256_over_header_and_payload() {
        let token = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        let (signed, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(signature, base64url(&hmac_sha256(SECRET, signed)));
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        assert_eq!(verify(SECRET, &"a".repeat(MAX_TOKEN_BYTES + 1), NOW), Err(TokenError::TooLarge));
        let padded =
            format!(r#"{{"room":"r1","peer":"alice","iat":{NOW},"exp":{},"pad":"{}"}}"#, NOW + 60, "x".repeat(3000));
        let signed_but_long = hand_made(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, &padded);
        assert_eq!(verify(SECRET, &signed_but_long, NOW), Err(TokenError::TooLarge));
    }

    #[test]
    fn the_longest_ids_still_fit() {
        // Ids have no control characters (JSON would write each as six bytes): the worst case
        // is a character of four UTF-8 bytes.
        let longest = "\u{1F600}".repeat(crate::ids::MAX_ID_CHARS);
        let token = mint(SECRET, room(&longest), peer(&longest), NOW, HOUR).unwrap();
        assert!(token.len() <= MAX_TOKEN_BYTES, "{} bytes", token.len());
        assert_eq!(verify(SECRET, &token, NOW).unwrap().peer, peer(&longest));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        for token in [
            String::new(),
            "not a token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            hand_made(SECRET, "not json", &claims_json(NOW + 60)),
            hand_made(SECRET, header, "not json"),
            hand_made(SECRET, header, &format!(r#"{{"room":"r1","peer":"alice","iat":{NOW}}}"#)),
            hand_made(SECRET, header, &format!(r#"{{"room":"","peer":"alice","iat":{NOW},"exp":{}}}"#, NOW + 60)),
            hand_made(SECRET, header, &format!(r#"{{"room":"r1","peer":"alice","iat":{NOW},"exp":"soon"}}"#)),
        ] {
            assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::Malformed), "{token}");
        }
    }

    #[test]
    fn upload_tokens_open_one_record_only_and_are_no_join_tokens() {
        let record = RecordId::try_from("rec1".to_owned()).unwrap();
        let token = mint_upload(SECRET, record.clone(), NOW, HOUR).unwrap();
        let claims = verify_upload(SECRET, &token, NOW).unwrap();
        assert_eq!((claims.record, claims.exp), (record.clone(), NOW + 3600));
        assert_eq!(verify_upload(SECRET, &token, NOW + 3600), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &token, NOW), Err(TokenError::Malformed), "not a join token");
        let join = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        assert_eq!(verify_upload(SECRET, &join, NOW), Err(TokenError::Malformed), "not an upload token");
        let other_purpose = hand_made(
            SECRET,
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"record":"rec1","purpose":"x","iat":{NOW},"exp":{}}}"#, NOW + 60),
        );
        assert_eq!(verify_upload(SECRET, &other_purpose, NOW), Err(TokenError::Malformed));
        let forged = mint_upload("another-secret", record, NOW, HOUR).unwrap();
        assert_eq!(verify_upload(SECRET, &forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_empty_secret_neither_signs_nor_verifies() {
        assert_eq!(mint("", room("r1"), peer("alice"), NOW, HOUR), Err(TokenError::EmptySecret));
        let token = mint(SECRET, room("r1"), peer("alice"), NOW, HOUR).unwrap();
        assert_eq!(verify("", &token, NOW), Err(TokenError::EmptySecret));
    }
}
