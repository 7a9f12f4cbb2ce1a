//! Access tokens and device IDs: random, and stored only as SHA-256 hashes.

use base64::Engine;
use rand::{distributions::Alphanumeric, Rng, RngCore};
use sha2::{Digest, Sha256};

/// A new access token: `hrd_` and 32 random bytes, URL-safe base64.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "hrd_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hash under which a token is stored and looked up.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A device ID as Synapse makes them: ten upper-case letters.
pub fn device_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .filter(u8::is_ascii_alphabetic)
        .take(10)
        .map(|b| (b as char).to_ascii_uppercase())
        .collect()
}

/// A password for the demo's admin: 20 random letters and digits.
pub fn password() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashes_stable() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("hrd_") && a.len() == 47);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        let d = device_id();
        assert_eq!(d.len(), 10);
        assert!(d.chars().all(|c| c.is_ascii_uppercase()));
    }
}
