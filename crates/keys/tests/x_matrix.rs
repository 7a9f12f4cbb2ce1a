//! The X-Matrix request credential against ruma as an independent oracle:
//! ruma parses the headers we write and verifies the requests we sign, and we
//! parse and verify what ruma writes and signs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use herald_keys::x_matrix::{self, XMatrix, XMatrixError};
use herald_keys::{ServerKeys, SigningKey};
use ruma_common::serde::Base64;
use ruma_common::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, OwnedServerSigningKeyId,
};
use ruma_signatures::{Ed25519KeyPair, PublicKeyMap};
use serde_json::{json, Value};

const SEED: [u8; 32] = [42; 32];
const URI: &str = "/_matrix/federation/v1/send/1700000000000?x=a%20b";

fn herald_keys() -> ServerKeys {
    ServerKeys::new(
        "origin.test",
        SigningKey::from_seed("a_1", &SEED).expect("key"),
    )
}

fn ruma_pair() -> Ed25519KeyPair {
    // ruma's key pair from the seed, as a PKCS#8 v1 document (RFC 8410).
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&SEED);
    Ed25519KeyPair::from_der(&pkcs8, "a_1".into()).expect("ruma key pair")
}

fn canonical(value: Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value).expect("canonical") {
        CanonicalJsonValue::Object(o) => o,
        _ => unreachable!("an object"),
    }
}

#[test]
fn ruma_parses_our_header_and_verifies_our_request() {
    let keys = herald_keys();
    let body = json!({"origin": "origin.test", "pdus": [], "edus": [{"edu_type": "m.typing"}]});
    let header = x_matrix::sign_request(&keys, "PUT", URI, "dest.test", Some(&body)).expect("sign");

    let parsed = ruma_federation_api::authentication::XMatrix::parse(header.to_header())
        .expect("ruma parses ours");
    assert_eq!(parsed.origin.as_str(), "origin.test");
    assert_eq!(
        parsed.destination.as_ref().map(|d| d.as_str()),
        Some("dest.test")
    );
    assert_eq!(parsed.key.as_str(), "ed25519:a_1");
    assert_eq!(parsed.sig.encode(), header.sig);

    // ruma verifies the request JSON with the signature from the header.
    let mut request = canonical(x_matrix::request_json(
        "PUT",
        URI,
        "origin.test",
        "dest.test",
        Some(&body),
    ));
    let signatures = canonical(json!({"origin.test": {"ed25519:a_1": header.sig}}));
    request.insert("signatures".into(), CanonicalJsonValue::Object(signatures));
    let mut public = PublicKeyMap::new();
    public.insert(
        "origin.test".into(),
        [(
            "ed25519:a_1".to_owned(),
            Base64::new(keys.current().verify_key().as_bytes().to_vec()),
        )]
        .into(),
    );
    ruma_signatures::verify_json(&public, &request).expect("ruma verifies our request signature");
}

#[test]
fn we_parse_rumas_header_and_verify_a_request_ruma_signed() {
    let pair = ruma_pair();
    let body = json!({"pdus": [{"type": "m.room.message"}]});
    let mut request = canonical(x_matrix::request_json(
        "PUT",
        URI,
        "ruma.test",
        "origin.test",
        Some(&body),
    ));
    ruma_signatures::sign_json("ruma.test", &pair, &mut request).expect("ruma signs");
    let sig = match &request["signatures"] {
        CanonicalJsonValue::Object(by_server) => match &by_server["ruma.test"] {
            CanonicalJsonValue::Object(by_key) => match &by_key["ed25519:a_1"] {
                CanonicalJsonValue::String(s) => s.clone(),
                other => panic!("signature is {other:?}"),
            },
            other => panic!("signatures of ruma.test are {other:?}"),
        },
        other => panic!("signatures are {other:?}"),
    };

    let theirs = ruma_federation_api::authentication::XMatrix::new(
        OwnedServerName::try_from("ruma.test").expect("name"),
        OwnedServerName::try_from("origin.test").expect("name"),
        OwnedServerSigningKeyId::try_from("ed25519:a_1").expect("key id"),
        Base64::parse(&sig).expect("base64"),
    );
    // ruma writes tokens unquoted where it can, in its own order.
    let header = XMatrix::parse(&theirs.to_string()).expect("we parse ruma's header");
    assert_eq!(header.origin, "ruma.test");
    assert_eq!(header.destination.as_deref(), Some("origin.test"));
    assert_eq!(header.key_id, "ed25519:a_1");

    let vk = herald_keys::VerifyKey::from_bytes(&pair.public_key()).expect("key");
    x_matrix::verify_request(&header, "PUT", URI, "origin.test", Some(&body), &vk)
        .expect("verifies");
    assert!(matches!(
        x_matrix::verify_request(&header, "PUT", URI, "origin.test", Some(&json!({})), &vk),
        Err(XMatrixError::Signature(_))
    ));
}
