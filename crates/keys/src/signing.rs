//! Signing and verifying JSON with ed25519, per the spec's "Signing JSON"
//! appendix: the object without `signatures` and `unsigned`, in canonical
//! JSON, signed; the unpadded-base64 signature added under
//! `signatures[server_name][key_id]`. Also the key types ([`SigningKey`],
//! [`VerifyKey`]) and the base64 the spec uses: unpadded on output, and on
//! input padded or not, with non-zero trailing bits accepted (the spec's own
//! test seed has them).

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::canonical::{to_canonical_json_without, CanonicalJsonError};

/// The only signing algorithm the spec defines.
pub const ED25519: &str = "ed25519";

/// The members that signatures do not cover.
const NOT_SIGNED: [&str; 2] = ["signatures", "unsigned"];

/// Standard alphabet, no padding written; padding optional and trailing bits
/// allowed when reading, as the spec asks ("accept input with or without
/// padding characters wherever possible").
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Unpadded standard base64, as Matrix writes keys and signatures.
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Standard base64, padded or unpadded, trailing bits allowed.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64.decode(text)
}

/// Why a key could not be read from its base64 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("an ed25519 key is 32 bytes, this one is {0}")]
    Length(usize),
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
    #[error("a key version may only contain a-z, A-Z, 0-9 and _, found {0:?}")]
    Version(String),
}

/// Why an object could not be signed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SigningError {
    #[error("only a JSON object can be signed, not {0}")]
    NotAnObject(&'static str),
    #[error("`signatures` must be an object of objects")]
    MalformedSignatures,
    #[error(transparent)]
    Canonical(#[from] CanonicalJsonError),
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("only a JSON object carries signatures, not {0}")]
    NotAnObject(&'static str),
    #[error("unsupported signing algorithm in key id {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("no signature from {server_name}")]
    NotSignedBy { server_name: String },
    #[error("no signature from {server_name} with key {key_id}")]
    NoSignatureWithKey { server_name: String, key_id: String },
    #[error("the signature from {server_name} with key {key_id} is malformed: {reason}")]
    MalformedSignature {
        server_name: String,
        key_id: String,
        reason: String,
    },
    #[error("the signature from {server_name} with key {key_id} does not match")]
    BadSignature { server_name: String, key_id: String },
    #[error(transparent)]
    Canonical(#[from] CanonicalJsonError),
}

/// A key version is `[a-zA-Z0-9_]+` (spec: key IDs in the server-server API).
pub fn is_valid_key_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An ed25519 signing key and its version (`a_AbCd`); its key id is
/// `ed25519:<version>`. `Debug` never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    version: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(version: &str, seed: &[u8; 32]) -> Result<Self, KeyDecodeError> {
        if !is_valid_key_version(version) {
            return Err(KeyDecodeError::Version(version.to_owned()));
        }
        Ok(Self {
            version: version.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(seed),
        })
    }

    /// A key from its seed in base64, as Synapse's key file holds it.
    pub fn from_base64_seed(version: &str, seed: &str) -> Result<Self, KeyDecodeError> {
        let bytes = Zeroizing::new(decode_base64(seed)?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyDecodeError::Length(bytes.len()))?,
        );
        Self::from_seed(version, &seed)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate(version: &str) -> Result<Self, KeyDecodeError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        Self::from_seed(version, &seed)
    }

    /// The version: `a_AbCd` for the key id `ed25519:a_AbCd`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("{ED25519}:{}", self.version)
    }

    /// The public half.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey(self.key.verifying_key())
    }

    /// The seed in unpadded base64 (what the key file stores).
    pub fn seed_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(encode_base64(self.key.as_bytes()))
    }

    /// The unpadded-base64 signature of raw bytes.
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        encode_base64(&self.key.sign(message).to_bytes())
    }

    /// The signature `sign_json` would add for this object, without adding
    /// it: what an `X-Matrix` authorization header carries.
    pub fn sign_json_detached(&self, value: &Value) -> Result<String, SigningError> {
        let object = value
            .as_object()
            .ok_or(SigningError::NotAnObject(type_name(value)))?;
        Ok(self.sign_bytes(to_canonical_json_without(object, &NOT_SIGNED)?.as_bytes()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .field("verify_key", &self.verify_key())
            .finish_non_exhaustive()
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyKey(ed25519_dalek::VerifyingKey);

impl VerifyKey {
    /// A key from its base64 text (padded or not).
    pub fn from_base64(text: &str) -> Result<Self, KeyDecodeError> {
        let bytes = decode_base64(text)?;
        Self::from_bytes(&bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        let bytes: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyDecodeError::Length(bytes.len()))?;
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyDecodeError::InvalidPoint)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Unpadded base64, as `verify_keys` publishes it.
    pub fn to_base64(&self) -> String {
        encode_base64(self.0.as_bytes())
    }

    /// Checks an unpadded- or padded-base64 signature of raw bytes.
    fn verify_bytes(&self, message: &[u8], signature: &str) -> Result<(), SignatureCheck> {
        let bytes =
            decode_base64(signature).map_err(|e| SignatureCheck::Malformed(e.to_string()))?;
        let signature = ed25519_dalek::Signature::from_slice(&bytes).map_err(|_| {
            SignatureCheck::Malformed(format!(
                "an ed25519 signature is 64 bytes, this one is {}",
                bytes.len()
            ))
        })?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| SignatureCheck::Mismatch)
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyKey({})", self.to_base64())
    }
}

impl fmt::Display for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

enum SignatureCheck {
    Malformed(String),
    Mismatch,
}

/// Signs `value` (an object) as `server_name` with `key`, adding the
/// signature under `signatures[server_name][key_id]`. Signatures already
/// there are kept; `unsigned` is left out of what is signed and kept.
pub fn sign_json(
    server_name: &str,
    key: &SigningKey,
    value: &mut Value,
) -> Result<(), SigningError> {
    let signature = key.sign_json_detached(value)?;
    let object = value
        .as_object_mut()
        .ok_or(SigningError::NotAnObject("non-object"))?;
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    let by_server = signatures
        .entry(server_name)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    by_server.insert(key.key_id(), Value::String(signature));
    Ok(())
}

/// Checks that `value` carries a valid signature by `server_name` with the key
/// `key_id` (`ed25519:<version>`), whose public half is `verify_key`.
pub fn verify_json(
    server_name: &str,
    key_id: &str,
    verify_key: &VerifyKey,
    value: &Value,
) -> Result<(), VerifyError> {
    let object = value
        .as_object()
        .ok_or(VerifyError::NotAnObject(type_name(value)))?;
    match key_id.split_once(':') {
        Some((ED25519, version)) if is_valid_key_version(version) => {}
        _ => return Err(VerifyError::UnsupportedAlgorithm(key_id.to_owned())),
    }
    let by_server = object
        .get("signatures")
        .and_then(|s| s.get(server_name))
        .and_then(Value::as_object)
        .ok_or_else(|| VerifyError::NotSignedBy {
            server_name: server_name.to_owned(),
        })?;
    let signature = by_server
        .get(key_id)
        .ok_or_else(|| VerifyError::NoSignatureWithKey {
            server_name: server_name.to_owned(),
            key_id: key_id.to_owned(),
        })?;
    let malformed = |reason: String| VerifyError::MalformedSignature {
        server_name: server_name.to_owned(),
        key_id: key_id.to_owned(),
        reason,
    };
    let signature = signature
        .as_str()
        .ok_or_else(|| malformed("not a string".to_owned()))?;
    let canonical = to_canonical_json_without(object, &NOT_SIGNED)?;
    verify_key
        .verify_bytes(canonical.as_bytes(), signature)
        .map_err(|check| match check {
            SignatureCheck::Malformed(reason) => malformed(reason),
            SignatureCheck::Mismatch => VerifyError::BadSignature {
                server_name: server_name.to_owned(),
                key_id: key_id.to_owned(),
            },
        })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The spec's "Cryptographic Test Vectors": seed, server name and key id.
    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
    const SPEC_SERVER: &str = "domain";
    const SPEC_KEY_ID: &str = "ed25519:1";

    fn spec_key() -> SigningKey {
        SigningKey::from_base64_seed("1", SPEC_SEED).expect("the spec's seed decodes")
    }

    #[test]
    fn spec_vector_empty_object() {
        let mut value = json!({});
        sign_json(SPEC_SERVER, &spec_key(), &mut value).unwrap();
        assert_eq!(
            value,
            json!({
                "signatures": {
                    "domain": {
                        "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
                    }
                }
            })
        );
    }

    #[test]
    fn spec_vector_object_with_data() {
        let mut value = json!({"one": 1, "two": "Two"});
        sign_json(SPEC_SERVER, &spec_key(), &mut value).unwrap();
        assert_eq!(
            value,
            json!({
                "one": 1,
                "signatures": {
                    "domain": {
                        "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
                    }
                },
                "two": "Two"
            })
        );
        verify_json(SPEC_SERVER, SPEC_KEY_ID, &spec_key().verify_key(), &value).unwrap();
    }

    #[test]
    fn the_spec_seed_has_trailing_bits_and_still_decodes() {
        // 43 characters carry 258 bits for 256: the last 2 are not zero here.
        assert!(base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(SPEC_SEED)
            .is_err());
        assert_eq!(decode_base64(SPEC_SEED).unwrap().len(), 32);
    }

    #[test]
    fn base64_is_written_unpadded_and_read_padded_or_not() {
        // The spec's "Unpadded Base64" examples.
        for (raw, text) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(raw.as_bytes()), text);
            assert_eq!(decode_base64(text).unwrap(), raw.as_bytes());
        }
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert!(decode_base64("Zm9v!").is_err());
    }

    #[test]
    fn signing_skips_unsigned_keeps_it_and_keeps_other_signatures() {
        let key = spec_key();
        let mut value = json!({
            "one": 1,
            "two": "Two",
            "unsigned": {"age_ts": 922834800000_u64},
            "signatures": {"other.example": {"ed25519:x": "c2ln"}}
        });
        sign_json(SPEC_SERVER, &key, &mut value).unwrap();
        // Same signature as the spec's vector: unsigned and signatures are not covered.
        assert_eq!(
            value["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        assert_eq!(value["signatures"]["other.example"]["ed25519:x"], "c2ln");
        assert_eq!(value["unsigned"]["age_ts"], 922834800000_u64);
    }

    #[test]
    fn verification_names_what_is_missing_or_wrong() {
        let key = spec_key();
        let verify_key = key.verify_key();
        let mut value = json!({"one": 1});
        sign_json(SPEC_SERVER, &key, &mut value).unwrap();

        assert_eq!(
            verify_json("elsewhere", SPEC_KEY_ID, &verify_key, &value),
            Err(VerifyError::NotSignedBy {
                server_name: "elsewhere".into()
            })
        );
        assert_eq!(
            verify_json(SPEC_SERVER, "ed25519:2", &verify_key, &value),
            Err(VerifyError::NoSignatureWithKey {
                server_name: "domain".into(),
                key_id: "ed25519:2".into()
            })
        );
        assert!(matches!(
            verify_json(SPEC_SERVER, "curve25519:1", &verify_key, &value),
            Err(VerifyError::UnsupportedAlgorithm(_))
        ));

        let mut tampered = value.clone();
        tampered["one"] = json!(2);
        assert!(matches!(
            verify_json(SPEC_SERVER, SPEC_KEY_ID, &verify_key, &tampered),
            Err(VerifyError::BadSignature { .. })
        ));

        let other_key = SigningKey::generate("1").unwrap().verify_key();
        assert!(matches!(
            verify_json(SPEC_SERVER, SPEC_KEY_ID, &other_key, &value),
            Err(VerifyError::BadSignature { .. })
        ));

        let mut garbled = value.clone();
        garbled["signatures"]["domain"]["ed25519:1"] = json!("not base64!");
        assert!(matches!(
            verify_json(SPEC_SERVER, SPEC_KEY_ID, &verify_key, &garbled),
            Err(VerifyError::MalformedSignature { .. })
        ));
        garbled["signatures"]["domain"]["ed25519:1"] = json!("c2hvcnQ");
        assert!(matches!(
            verify_json(SPEC_SERVER, SPEC_KEY_ID, &verify_key, &garbled),
            Err(VerifyError::MalformedSignature { .. })
        ));
    }

    #[test]
    fn padded_signatures_verify_too() {
        let key = spec_key();
        let mut value = json!({});
        sign_json(SPEC_SERVER, &key, &mut value).unwrap();
        let padded = format!(
            "{}==",
            value["signatures"]["domain"]["ed25519:1"].as_str().unwrap()
        );
        value["signatures"]["domain"]["ed25519:1"] = json!(padded);
        verify_json(SPEC_SERVER, SPEC_KEY_ID, &key.verify_key(), &value).unwrap();
    }

    #[test]
    fn only_objects_are_signed() {
        let key = spec_key();
        assert_eq!(
            sign_json(SPEC_SERVER, &key, &mut json!([1])),
            Err(SigningError::NotAnObject("an array"))
        );
        assert_eq!(
            sign_json(SPEC_SERVER, &key, &mut json!({"signatures": "x"})),
            Err(SigningError::MalformedSignatures)
        );
        assert!(matches!(
            sign_json(SPEC_SERVER, &key, &mut json!({"ratio": 0.5})),
            Err(SigningError::Canonical(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_base64_and_hide_their_secret() {
        let key = SigningKey::generate("a_AbC1").unwrap();
        assert_eq!(key.key_id(), "ed25519:a_AbC1");
        let again = SigningKey::from_base64_seed("a_AbC1", &key.seed_base64()).unwrap();
        assert_eq!(again.verify_key(), key.verify_key());
        assert_eq!(
            VerifyKey::from_base64(&key.verify_key().to_base64()).unwrap(),
            key.verify_key()
        );
        let debug = format!("{key:?}");
        assert!(!debug.contains(key.seed_base64().as_str()), "{debug}");
        assert!(matches!(
            SigningKey::from_base64_seed("1", "Zm9v"),
            Err(KeyDecodeError::Length(3))
        ));
        assert!(matches!(
            SigningKey::generate("no spaces"),
            Err(KeyDecodeError::Version(_))
        ));
    }
}
