//! The server's signing keys and what is built from them: Matrix canonical
//! JSON (`canonical`), ed25519 signing and verification of JSON (`signing`),
//! Synapse's key file and `old_signing_keys` (`key_file`), and here
//! [`ServerKeys`], the keys a running server holds, which signs JSON and builds
//! the self-signed `GET /_matrix/key/v2/server` body.
//!
//! Wiring it in is a few lines:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use herald_keys::ServerKeys;
//! let keys = ServerKeys::load("example.org", "herald.signing.key".as_ref(), &BTreeMap::new())?;
//! let now_ms = 1_700_000_000_000;
//! let body = keys.key_server_response(now_ms + 86_400_000)?; // serve as JSON
//! # Ok(()) }
//! ```

pub mod canonical;
pub mod key_file;
pub mod signing;
pub mod x_matrix;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

pub use canonical::{to_canonical_json, CanonicalJsonError};
pub use key_file::{KeyFileError, OldKeyError, OldSigningKey, OldVerifyKey};
pub use signing::{
    sign_json, verify_json, KeyDecodeError, SigningError, SigningKey, VerifyError, VerifyKey,
};

/// Why the server's keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    OldKey(#[from] OldKeyError),
    #[error("old_signing_keys: {0} is also in the signing key file")]
    OldKeyInUse(String),
}

/// The keys of this server: its name, the keys it signs with (the first is
/// the current one; as Synapse, every key of the key file is served and
/// signs), and the expired keys it still publishes.
#[derive(Debug, Clone)]
pub struct ServerKeys {
    server_name: String,
    signing_keys: Vec<SigningKey>,
    old_verify_keys: Vec<OldVerifyKey>,
}

impl ServerKeys {
    /// A server signing with one key and publishing no old ones.
    pub fn new(server_name: impl Into<String>, current: SigningKey) -> Self {
        Self {
            server_name: server_name.into(),
            signing_keys: vec![current],
            old_verify_keys: Vec::new(),
        }
    }

    /// Reads the key file (generating it on first start) and checks the
    /// configured `old_signing_keys`.
    pub fn load(
        server_name: impl Into<String>,
        signing_key_path: &Path,
        old_signing_keys: &BTreeMap<String, OldSigningKey>,
    ) -> Result<Self, KeysError> {
        let loaded = key_file::load_or_generate(signing_key_path)?;
        let old = key_file::old_verify_keys(old_signing_keys)?;
        let mut keys = loaded.keys.into_iter();
        // load_or_generate never returns an empty list; stay total anyway.
        let current = keys.next().ok_or_else(|| KeyFileError::Empty {
            path: signing_key_path.to_owned(),
        })?;
        let mut server = Self::new(server_name, current);
        server.signing_keys.extend(keys);
        server.with_old_verify_keys(old)
    }

    /// Adds more keys to sign with and serve (after the current one).
    pub fn with_additional_keys(mut self, keys: impl IntoIterator<Item = SigningKey>) -> Self {
        self.signing_keys.extend(keys);
        self
    }

    /// Sets the expired keys to publish. A key id that is also a signing key
    /// is refused: it cannot be both current and expired.
    pub fn with_old_verify_keys(mut self, old: Vec<OldVerifyKey>) -> Result<Self, KeysError> {
        if let Some(clash) = old
            .iter()
            .find(|o| self.signing_keys.iter().any(|k| k.key_id() == o.key_id))
        {
            return Err(KeysError::OldKeyInUse(clash.key_id.clone()));
        }
        self.old_verify_keys = old;
        Ok(self)
    }

    /// Our server name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The key requests and events are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.signing_keys[0]
    }

    /// Every key we sign with, the current one first.
    pub fn signing_keys(&self) -> &[SigningKey] {
        &self.signing_keys
    }

    /// The expired keys we publish.
    pub fn old_verify_keys(&self) -> &[OldVerifyKey] {
        &self.old_verify_keys
    }

    /// Our public key for `key_id`, current or old (what a peer fetching our
    /// key would find).
    pub fn verify_key(&self, key_id: &str) -> Option<VerifyKey> {
        self.signing_keys
            .iter()
            .find(|k| k.key_id() == key_id)
            .map(SigningKey::verify_key)
            .or_else(|| {
                self.old_verify_keys
                    .iter()
                    .find(|o| o.key_id == key_id)
                    .map(|o| o.verify_key)
            })
    }

    /// Signs `value` (an object) as this server with the current key.
    pub fn sign_json(&self, value: &mut Value) -> Result<(), SigningError> {
        sign_json(&self.server_name, self.current(), value)
    }

    /// The body of `GET /_matrix/key/v2/server`: `server_name`,
    /// `verify_keys`, `old_verify_keys`, `valid_until_ts` (milliseconds since
    /// the epoch), signed by every signing key. Fails only when
    /// `valid_until_ts` is beyond canonical JSON's integer range.
    pub fn key_server_response(&self, valid_until_ts: u64) -> Result<Value, SigningError> {
        let verify_keys: Map<String, Value> = self
            .signing_keys
            .iter()
            .map(|k| (k.key_id(), json!({ "key": k.verify_key().to_base64() })))
            .collect();
        let old_verify_keys: Map<String, Value> = self
            .old_verify_keys
            .iter()
            .map(|o| {
                (
                    o.key_id.clone(),
                    json!({ "key": o.verify_key.to_base64(), "expired_ts": o.expired_ts }),
                )
            })
            .collect();
        let mut body = json!({
            "server_name": self.server_name,
            "verify_keys": verify_keys,
            "old_verify_keys": old_verify_keys,
            "valid_until_ts": valid_until_ts,
        });
        for key in &self.signing_keys {
            sign_json(&self.server_name, key, &mut body)?;
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerKeys {
        let current = SigningKey::generate("a_cur1").unwrap();
        let old = SigningKey::generate("a_old1").unwrap();
        ServerKeys::new("example.org", current)
            .with_old_verify_keys(vec![OldVerifyKey {
                key_id: old.key_id(),
                verify_key: old.verify_key(),
                expired_ts: 1_600_000_000_000,
            }])
            .unwrap()
    }

    #[test]
    fn key_server_response_is_self_signed_and_complete() {
        let keys = server();
        let body = keys.key_server_response(1_700_000_086_400_000).unwrap();
        let current = keys.current();
        assert_eq!(body["server_name"], "example.org");
        assert_eq!(body["valid_until_ts"], 1_700_000_086_400_000_u64);
        assert_eq!(
            body["verify_keys"],
            json!({ "ed25519:a_cur1": { "key": current.verify_key().to_base64() } })
        );
        assert_eq!(
            body["old_verify_keys"]["ed25519:a_old1"]["expired_ts"],
            1_600_000_000_000_u64
        );
        // A peer checks it with the key it just read from the body itself.
        let published = VerifyKey::from_base64(
            body["verify_keys"]["ed25519:a_cur1"]["key"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        verify_json("example.org", "ed25519:a_cur1", &published, &body).unwrap();
    }

    #[test]
    fn every_key_of_the_file_is_served_and_signs() {
        let second = SigningKey::generate("a_two2").unwrap();
        let keys = server().with_additional_keys([second.clone()]);
        let body = keys.key_server_response(1).unwrap();
        assert!(body["verify_keys"]["ed25519:a_two2"].is_object());
        verify_json("example.org", "ed25519:a_two2", &second.verify_key(), &body).unwrap();
        verify_json(
            "example.org",
            "ed25519:a_cur1",
            &keys.current().verify_key(),
            &body,
        )
        .unwrap();
    }

    #[test]
    fn sign_json_signs_as_the_server_with_the_current_key() {
        let keys = server();
        let mut event = json!({"type": "m.room.message", "content": {"body": "hi"}});
        keys.sign_json(&mut event).unwrap();
        let key_id = keys.current().key_id();
        let verify_key = keys.verify_key(&key_id).unwrap();
        verify_json("example.org", &key_id, &verify_key, &event).unwrap();
        assert!(keys.verify_key("ed25519:a_old1").is_some());
        assert!(keys.verify_key("ed25519:nope").is_none());
    }

    #[test]
    fn an_old_key_cannot_also_be_current() {
        let current = SigningKey::generate("a_same").unwrap();
        let result = ServerKeys::new("example.org", current.clone()).with_old_verify_keys(vec![
            OldVerifyKey {
                key_id: current.key_id(),
                verify_key: current.verify_key(),
                expired_ts: 0,
            },
        ]);
        assert!(matches!(result, Err(KeysError::OldKeyInUse(id)) if id == "ed25519:a_same"));
    }

    #[test]
    fn valid_until_beyond_the_integer_range_is_an_error_not_a_panic() {
        assert!(matches!(
            server().key_server_response(u64::MAX),
            Err(SigningError::Canonical(_))
        ));
    }
}
