//! Join tokens over HTTP: `POST /room/{roomId}/token` answers a JWT that any standard JWT
//! library can check. The contract is docs/rest-api.md, "Join tokens".
//!
//! The token is taken apart here by hand (base64url, JSON, HMAC-SHA256 from the RustCrypto
//! crates) so that the test depends on the JWT format alone, not on the library the server
//! signs with.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;

fn token_path(room: &str) -> String {
    format!("/room/{}/token", enc(room))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// Unpadded base64url (RFC 4648 §5), as JWTs carry each part.
fn base64url_decode(text: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("{:?} is not base64url in {text:?}", char::from(c)),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        assert!(chunk.len() > 1, "{text:?} has a dangling base64url character");
        let group = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
        out.extend_from_slice(&group.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A JWT's header and payload as JSON, after checking that its signature is HMAC-SHA256 over
/// `header.payload` under `secret`.
#[track_caller]
fn open_jwt(token: &str, secret: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT is header.payload.signature: {token}");
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(
        base64url_decode(parts[2]),
        hmac_sha256(secret.as_bytes(), signed.as_bytes()),
        "the signature must be HMAC-SHA256 over header.payload under the AppSecret: {token}"
    );
    let json = |part: &str| -> Value {
        serde_json::from_slice(&base64url_decode(part)).unwrap_or_else(|e| panic!("{part:?} is not JSON: {e}"))
    };
    (json(parts[0]), json(parts[1]))
}

#[test]
fn a_minted_token_names_room_peer_and_expiry_and_carries_the_app_secret_signature() {
    let srv = Server::start(&[]);
    let convo = srv.convo_id("alice", &["bob"]);
    let before = unix_now();
    let data = srv.ok("POST", &token_path(&convo), json!({"peerId": "bob", "ttl": 600}));
    let after = unix_now();
    let (header, claims) = open_jwt(str_field(&data, "token"), &srv.secret);
    assert_eq!(str_field(&header, "alg"), "HS256", "{header}");
    assert_eq!(str_field(&claims, "room"), convo, "{claims}");
    assert_eq!(str_field(&claims, "peer"), "bob", "{claims}");
    let iat = u64_field(&claims, "iat");
    assert!((before..=after).contains(&iat), "iat {iat} must be the time of the call ({before}..={after})");
    assert_eq!(u64_field(&claims, "exp"), iat + 600, "{claims}");
    assert_eq!(u64_field(&data, "expiresAt"), iat + 600, "expiresAt is the token's exp: {data}");

    // A live room, the default ttl, and a peer the room does not know yet (tokens are how
    // the audience of a live room gets in).
    let live = srv.live_id("host");
    let data = srv.ok("POST", &token_path(&live), json!({"peerId": "viewer-房"}));
    let (_, claims) = open_jwt(str_field(&data, "token"), &srv.secret);
    assert_eq!(str_field(&claims, "room"), live, "{claims}");
    assert_eq!(str_field(&claims, "peer"), "viewer-房", "{claims}");
    assert_eq!(u64_field(&claims, "exp") - u64_field(&claims, "iat"), 3600, "default ttl: {claims}");

    for ttl in [1, 86_400] {
        let data = srv.ok("POST", &token_path(&convo), json!({"peerId": "bob", "ttl": ttl}));
        let (_, claims) = open_jwt(str_field(&data, "token"), &srv.secret);
        assert_eq!(u64_field(&claims, "exp") - u64_field(&claims, "iat"), ttl, "{claims}");
    }
}

#[test]
fn token_refusals() {
    let srv = Server::start(&[]);
    let convo = srv.convo_id("alice", &["bob"]);
    let closed = srv.convo_id("carol", &[]);
    srv.ok("DELETE", &format!("/room/{closed}"), ());
    srv.ok("DELETE", "/server/block/peer/mallory", ());
    let mut soft = Soft::new();
    let bob = json!({"peerId": "bob"});
    srv.soft_expect(&mut soft, "POST", &token_path("never-opened"), bob.clone(), 50001, None);
    srv.soft_expect(&mut soft, "POST", &token_path(&closed), bob.clone(), 50001, None);
    srv.soft_expect(&mut soft, "POST", &token_path(&convo), json!({"peerId": "mallory"}), 10003, None);
    for (body, field) in [
        (json!({}), "peerId"),
        (json!({"ttl": 60}), "peerId"),
        (json!({"peerId": ""}), "peerId"),
        (json!({"peerId": "x".repeat(129)}), "peerId"),
        (json!({"peerId": 7}), "peerId"),
        (json!({"peerId": "bob", "ttl": 0}), "ttl"),
        (json!({"peerId": "bob", "ttl": 86_401}), "ttl"),
        (json!({"peerId": "bob", "ttl": -1}), "ttl"),
        (json!({"peerId": "bob", "ttl": 1.5}), "ttl"),
        (json!({"peerId": "bob", "ttl": "1h"}), "ttl"),
    ] {
        srv.soft_expect(&mut soft, "POST", &token_path(&convo), body, 10002, Some(field));
    }
    for auth in [Auth::Missing, Auth::Wrong] {
        let r = srv.call_auth(&auth, "POST", &token_path(&convo), bob.clone());
        soft.check(r.0 == 200 && r.1["code"] == 10001, || format!("{auth:?}: expected 200 / 10001, got {r:?}"));
    }
    soft.done();
}

#[test]
fn the_endpoint_is_in_the_openapi_document() {
    let srv = Server::start(&[]);
    let r = srv.request(&Auth::Missing, "GET", &format!("{PREFIX}/openapi.json"), &[], Body::None);
    let doc: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()));
    assert!(doc["paths"]["/room/{roomId}/token"]["post"].is_object(), "{}", doc["paths"]);
}
