//! The `keys` module from the outside: the signing key file on disk (created
//! 0600, read back, refused when malformed), and ruma (`ruma-signatures`,
//! `ruma-common`) as an independent oracle: it verifies what we sign, we
//! verify what it signs, and its canonical JSON equals ours.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::collections::BTreeMap;

use herald_keys::key_file::{self, KeyFileError};
use herald_keys::signing::{decode_base64, encode_base64};
use herald_keys::{
    sign_json, to_canonical_json, verify_json, OldSigningKey, ServerKeys, SigningKey, VerifyError,
    VerifyKey,
};
use ruma_common::serde::Base64;
use ruma_common::{CanonicalJsonObject, CanonicalJsonValue};
use ruma_signatures::{Ed25519KeyPair, PublicKeyMap};
use serde_json::{json, Value};

const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

/// Objects that are easy to get wrong: code point order across planes,
/// escapes, nesting, `unsigned`, integers at the range's edges.
fn tricky_objects() -> Vec<Value> {
    vec![
        json!({}),
        json!({"one": 1, "two": "Two"}),
        json!({"本": 2, "日": 1, "a": "日本語", "é": "e\u{301}", "\u{1F600}": "😀", "\u{FFFD}": 0, "Z": 1, "": ""}),
        json!({
            "escapes": "\" \\ / \u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f} \u{7f} \u{2028}\u{2029}",
            "key with \"quotes\" and \\": true,
            "control\u{1}key": null
        }),
        json!({
            "auth": {
                "success": true,
                "mxid": "@john.doe:example.com",
                "profile": {
                    "display_name": "John Doe",
                    "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"}
                    ]
                }
            },
            "nested": [[[]], {"z": {"y": {"x": [1, -1, 0]}}}],
            "edges": [9007199254740991_i64, -9007199254740991_i64],
            "unsigned": {"age_ts": 922834800000_u64}
        }),
    ]
}

/// A ruma key pair from a 32-byte seed (a PKCS#8 v1 document around it).
fn ruma_key_pair(seed: &[u8], version: &str) -> Ed25519KeyPair {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    Ed25519KeyPair::from_der(&der, version.to_owned()).expect("a valid PKCS#8 document")
}

fn ruma_object(value: &Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value.clone()).expect("ruma accepts the value") {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

fn ruma_public_keys(server_name: &str, key_id: &str, key: &VerifyKey) -> PublicKeyMap {
    let mut set = BTreeMap::new();
    set.insert(key_id.to_owned(), Base64::new(key.as_bytes().to_vec()));
    let mut map = PublicKeyMap::new();
    map.insert(server_name.to_owned(), set);
    map
}

#[test]
fn our_canonical_json_equals_rumas() {
    for value in tricky_objects() {
        let ruma = CanonicalJsonValue::try_from(value.clone())
            .unwrap()
            .to_string();
        assert_eq!(to_canonical_json(&value).unwrap(), ruma, "for {value}");
    }
}

#[test]
fn ruma_refuses_integral_floats_that_we_write_as_integers() {
    // The spec's own vector: `{"a":-0,"b":1e10}` is `{"a":0,"b":10000000000}`.
    // serde_json reads both numbers as floats; ruma refuses them, we follow
    // the spec. Documented here so a change on either side is noticed.
    let value: Value = serde_json::from_str(r#"{"a": -0, "b": 1e10}"#).unwrap();
    assert_eq!(
        to_canonical_json(&value).unwrap(),
        r#"{"a":0,"b":10000000000}"#
    );
    assert!(CanonicalJsonValue::try_from(value).is_err());
}

#[test]
fn ruma_verifies_what_we_sign() {
    let key = SigningKey::generate("a_Herd").unwrap();
    let public_keys = ruma_public_keys("herald.example", &key.key_id(), &key.verify_key());
    for mut value in tricky_objects() {
        sign_json("herald.example", &key, &mut value).unwrap();
        ruma_signatures::verify_json(&public_keys, &ruma_object(&value))
            .unwrap_or_else(|e| panic!("ruma refused our signature on {value}: {e}"));
    }
}

#[test]
fn ruma_verifies_our_key_server_response() {
    let keys = ServerKeys::new("herald.example", SigningKey::generate("a_Key1").unwrap());
    let body = keys.key_server_response(1_700_000_000_000).unwrap();
    let published = body["verify_keys"]["ed25519:a_Key1"]["key"]
        .as_str()
        .unwrap();
    let public_keys = ruma_public_keys(
        "herald.example",
        "ed25519:a_Key1",
        &VerifyKey::from_base64(published).unwrap(),
    );
    ruma_signatures::verify_json(&public_keys, &ruma_object(&body)).unwrap();
}

#[test]
fn we_verify_what_ruma_signs() {
    let seed: [u8; 32] = rand_seed();
    let ruma_key = ruma_key_pair(&seed, "ruma1");
    let verify_key = VerifyKey::from_bytes(&ruma_key.public_key()).unwrap();
    for value in tricky_objects() {
        let mut object = ruma_object(&value);
        ruma_signatures::sign_json("ruma.example", &ruma_key, &mut object).unwrap();
        let signed: Value = serde_json::to_value(&object).unwrap();
        verify_json("ruma.example", "ed25519:ruma1", &verify_key, &signed)
            .unwrap_or_else(|e| panic!("we refused ruma's signature on {signed}: {e}"));

        let mut tampered = signed.clone();
        tampered["added"] = json!(1);
        assert!(matches!(
            verify_json("ruma.example", "ed25519:ruma1", &verify_key, &tampered),
            Err(VerifyError::BadSignature { .. })
        ));
    }
}

#[test]
fn same_seed_same_signatures_as_ruma() {
    let seed = decode_base64(SPEC_SEED).unwrap();
    let ruma_key = ruma_key_pair(&seed, "1");
    let ours = SigningKey::from_base64_seed("1", SPEC_SEED).unwrap();
    assert_eq!(&ruma_key.public_key(), ours.verify_key().as_bytes());
    for value in tricky_objects() {
        let mut object = ruma_object(&value);
        ruma_signatures::sign_json("domain", &ruma_key, &mut object).unwrap();
        let mut signed = value.clone();
        sign_json("domain", &ours, &mut signed).unwrap();
        assert_eq!(
            signed,
            serde_json::to_value(&object).unwrap(),
            "for {value}"
        );
    }
    // And the spec's vector through ruma, for good measure.
    let mut empty = ruma_object(&json!({}));
    ruma_signatures::sign_json("domain", &ruma_key, &mut empty).unwrap();
    assert_eq!(
        serde_json::to_value(&empty).unwrap()["signatures"]["domain"]["ed25519:1"],
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
    );
}

fn rand_seed() -> [u8; 32] {
    let key = SigningKey::generate("seed").unwrap();
    decode_base64(&key.seed_base64())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn first_start_generates_a_private_key_file_and_later_starts_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.signing.key");

    let first = key_file::load_or_generate(&path).unwrap();
    assert!(first.generated);
    assert_eq!(first.keys.len(), 1);
    let key = &first.keys[0];
    assert!(key.version().starts_with("a_") && key.version().len() == 6);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!("ed25519 {} {}\n", key.version(), key.seed_base64().as_str())
    );

    let again = key_file::load_or_generate(&path).unwrap();
    assert!(!again.generated);
    assert_eq!(again.keys[0].key_id(), key.key_id());
    assert_eq!(again.keys[0].verify_key(), key.verify_key());
}

#[test]
fn a_synapse_key_file_is_read_as_synapse_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.org.signing.key");
    std::fs::write(&path, format!("ed25519 a_AbCd {SPEC_SEED}\n")).unwrap();
    let keys = ServerKeys::load("example.org", &path, &BTreeMap::new()).unwrap();
    assert_eq!(keys.current().key_id(), "ed25519:a_AbCd");
    // Same key as the spec's test vectors.
    let mut value = json!({});
    keys.sign_json(&mut value).unwrap();
    assert_eq!(
        value["signatures"]["example.org"]["ed25519:a_AbCd"],
        "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
    );
}

#[test]
fn generating_needs_the_directory_to_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("signing.key");
    let error = key_file::load_or_generate(&path).unwrap_err();
    assert!(
        matches!(error, KeyFileError::MissingDirectory { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert!(!path.exists());
}

#[test]
fn a_malformed_key_file_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.key");
    std::fs::write(
        &path,
        format!("ed25519 a_1 {SPEC_SEED}\ned25519 a_2 not-base64\n"),
    )
    .unwrap();
    let error = ServerKeys::load("example.org", &path, &BTreeMap::new()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");
    // The file is left as it was: a bad key file is never replaced.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("not-base64"));
}

#[test]
fn old_signing_keys_are_published_with_their_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let retired = SigningKey::generate("a_old0").unwrap();
    let mut old = BTreeMap::new();
    old.insert(
        "ed25519:a_old0".to_owned(),
        OldSigningKey {
            key: encode_base64(retired.verify_key().as_bytes()),
            expired_ts: 1_600_000_000_000,
        },
    );
    let keys = ServerKeys::load("example.org", &path, &old).unwrap();
    let body = keys.key_server_response(1_700_000_000_000).unwrap();
    assert_eq!(
        body["old_verify_keys"],
        json!({"ed25519:a_old0": {
            "key": retired.verify_key().to_base64(),
            "expired_ts": 1_600_000_000_000_u64
        }})
    );
    assert_eq!(body["server_name"], "example.org");
    assert_eq!(body["valid_until_ts"], 1_700_000_000_000_u64);
    let current = keys.current();
    verify_json(
        "example.org",
        &current.key_id(),
        &current.verify_key(),
        &body,
    )
    .unwrap();
}
