//! Synapse's signing key file, and its `old_signing_keys` setting as plain
//! data.
//!
//! The file holds one key a line, `ed25519 <version> <unpadded base64 seed>`
//! (blank lines are skipped). The first key signs; Synapse serves and signs
//! with every key in the file. A missing file is generated on first start with
//! one key of version `a_` + 4 random letters or digits, as Synapse does, and
//! created with mode 0600 (its directory must already exist). A malformed file
//! is an error naming the file and the line, never a panic, and never quoting
//! the secret.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::signing::{KeyDecodeError, SigningKey, VerifyKey, ED25519};

/// Why the key file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read signing key file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create signing key file {}: directory {} does not exist", path.display(), dir.display())]
    MissingDirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot create signing key file {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("signing key file {}, line {line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("signing key file {} holds no key", path.display())]
    Empty { path: PathBuf },
}

/// The keys of a key file, and whether this start created it.
#[derive(Debug)]
pub struct LoadedKeys {
    /// In file order; never empty. The first is the current signing key.
    pub keys: Vec<SigningKey>,
    /// True when the file did not exist and was generated now.
    pub generated: bool,
}

/// Reads the key file at `path`, or generates it when it does not exist.
pub fn load_or_generate(path: &Path) -> Result<LoadedKeys, KeyFileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(LoadedKeys {
            keys: parse_key_file(path, &bytes)?,
            generated: false,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LoadedKeys {
            keys: vec![generate_key_file(path)?],
            generated: true,
        }),
        Err(source) => Err(KeyFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads the key file at `path`.
pub fn read_key_file(path: &Path) -> Result<Vec<SigningKey>, KeyFileError> {
    let bytes = fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_key_file(path, &bytes)
}

/// Parses the text of a key file; `path` only names it in errors.
pub fn parse_key_file(path: &Path, bytes: &[u8]) -> Result<Vec<SigningKey>, KeyFileError> {
    let malformed = |line: usize, reason: String| KeyFileError::Malformed {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut keys = Vec::new();
    let mut versions = HashSet::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let text =
            std::str::from_utf8(raw).map_err(|_| malformed(line, "not UTF-8 text".into()))?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [algorithm, version, seed] = fields[..] else {
            if fields.is_empty() {
                continue;
            }
            return Err(malformed(
                line,
                format!(
                    "expected `ed25519 <version> <base64 seed>`, found {} field(s)",
                    fields.len()
                ),
            ));
        };
        if algorithm != ED25519 {
            return Err(malformed(
                line,
                format!("unsupported algorithm {algorithm:?}, only ed25519 is"),
            ));
        }
        let key = SigningKey::from_base64_seed(version, seed).map_err(|e| match e {
            KeyDecodeError::Version(_) => malformed(line, e.to_string()),
            // Never quote the seed itself.
            other => malformed(line, format!("bad seed for key ed25519:{version}: {other}")),
        })?;
        if !versions.insert(version.to_owned()) {
            return Err(malformed(
                line,
                format!("key ed25519:{version} appears twice"),
            ));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

/// The text of a key file holding `keys`.
pub fn format_key_file(keys: &[SigningKey]) -> zeroize::Zeroizing<String> {
    let mut text = zeroize::Zeroizing::new(String::new());
    for key in keys {
        text.push_str(ED25519);
        text.push(' ');
        text.push_str(key.version());
        text.push(' ');
        text.push_str(&key.seed_base64());
        text.push('\n');
    }
    text
}

/// A new key version as Synapse makes them: `a_` and 4 random letters or
/// digits.
pub fn random_key_version() -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(4)
        .map(char::from)
        .collect();
    format!("a_{suffix}")
}

/// Creates a key file at `path` holding one new key, with mode 0600. Refuses
/// to overwrite an existing file.
pub fn generate_key_file(path: &Path) -> Result<SigningKey, KeyFileError> {
    let dir = match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(KeyFileError::MissingDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
        });
    }
    let create = |source| KeyFileError::Create {
        path: path.to_owned(),
        source,
    };
    let key =
        SigningKey::generate(&random_key_version()).map_err(|e| create(io::Error::other(e)))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(create)?;
    let written = file
        .write_all(format_key_file(std::slice::from_ref(&key)).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        // Leave no half-written key behind to be read on the next start.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(create(source));
    }
    Ok(key)
}

/// One entry of Synapse's `old_signing_keys` setting, as configured:
/// `"ed25519:<version>" = { key = "<base64 public key>", expired_ts = <ms> }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldSigningKey {
    pub key: String,
    pub expired_ts: u64,
}

/// A key this server signed with until `expired_ts`, served under
/// `old_verify_keys` so others can still check what it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldVerifyKey {
    pub key_id: String,
    pub verify_key: VerifyKey,
    pub expired_ts: u64,
}

/// Why an `old_signing_keys` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OldKeyError {
    #[error("old_signing_keys: {0:?} is not a key id of the form ed25519:<version>")]
    KeyId(String),
    #[error("old_signing_keys: {key_id}: {source}")]
    Key {
        key_id: String,
        source: KeyDecodeError,
    },
}

/// Checks the configured `old_signing_keys`, in key id order.
pub fn old_verify_keys(
    configured: &BTreeMap<String, OldSigningKey>,
) -> Result<Vec<OldVerifyKey>, OldKeyError> {
    configured
        .iter()
        .map(|(key_id, old)| {
            match key_id.split_once(':') {
                Some((ED25519, version)) if super::signing::is_valid_key_version(version) => {}
                _ => return Err(OldKeyError::KeyId(key_id.clone())),
            }
            let verify_key =
                VerifyKey::from_base64(&old.key).map_err(|source| OldKeyError::Key {
                    key_id: key_id.clone(),
                    source,
                })?;
            Ok(OldVerifyKey {
                key_id: key_id.clone(),
                verify_key,
                expired_ts: old.expired_ts,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

    fn malformed_line(result: Result<Vec<SigningKey>, KeyFileError>) -> (usize, String) {
        match result {
            Err(KeyFileError::Malformed { line, reason, .. }) => (line, reason),
            other => panic!("expected a malformed file, got {other:?}"),
        }
    }

    #[test]
    fn reads_synapse_key_files() {
        let text = format!("ed25519 a_Ab1z {SPEC_SEED}\n\ned25519 1 {SPEC_SEED}=\n");
        let keys = parse_key_file(Path::new("k.key"), text.as_bytes()).unwrap();
        let ids: Vec<String> = keys.iter().map(SigningKey::key_id).collect();
        assert_eq!(ids, ["ed25519:a_Ab1z", "ed25519:1"]);
        assert_eq!(keys[0].verify_key(), keys[1].verify_key());
    }

    #[test]
    fn a_file_written_reads_back_the_same() {
        let key = SigningKey::generate(&random_key_version()).unwrap();
        let text = format_key_file(std::slice::from_ref(&key));
        assert!(text.starts_with("ed25519 a_"), "{}", text.as_str());
        assert!(!text.contains('='), "unpadded: {}", text.as_str());
        let back = parse_key_file(Path::new("k"), text.as_bytes()).unwrap();
        assert_eq!(back[0].key_id(), key.key_id());
        assert_eq!(back[0].verify_key(), key.verify_key());
    }

    #[test]
    fn versions_look_like_synapses() {
        for _ in 0..50 {
            let version = random_key_version();
            assert_eq!(version.len(), 6);
            assert!(version.starts_with("a_"));
            assert!(
                version[2..].bytes().all(|b| b.is_ascii_alphanumeric()),
                "{version}"
            );
        }
    }

    #[test]
    fn malformed_files_name_the_line_and_never_the_seed() {
        let path = Path::new("/etc/herald/signing.key");
        let (line, reason) = malformed_line(parse_key_file(path, b"ed25519 a_1 c2VlZA\n"));
        assert_eq!(line, 1);
        assert!(reason.contains("32 bytes"), "{reason}");
        assert!(!reason.contains("c2VlZA"), "{reason}");

        let text = format!("ed25519 a_1 {SPEC_SEED}\nrsa a_2 {SPEC_SEED}\n");
        assert_eq!(malformed_line(parse_key_file(path, text.as_bytes())).0, 2);

        let text = format!("ed25519 a_1 {SPEC_SEED}\n\ned25519 a_1\n");
        let (line, reason) = malformed_line(parse_key_file(path, text.as_bytes()));
        assert_eq!(line, 3);
        assert!(reason.contains("found 2 field(s)"), "{reason}");

        let text = format!("ed25519 a_1 {SPEC_SEED}\ned25519 a_1 {SPEC_SEED}\n");
        assert_eq!(malformed_line(parse_key_file(path, text.as_bytes())).0, 2);

        let text = format!("ed25519 a-1 {SPEC_SEED}\n");
        assert_eq!(malformed_line(parse_key_file(path, text.as_bytes())).0, 1);

        assert_eq!(
            malformed_line(parse_key_file(path, b"ed25519 a_1 %%%%\n")).0,
            1
        );
        assert_eq!(malformed_line(parse_key_file(path, b"\xff\xfe\n")).0, 1);

        let error = parse_key_file(path, b"ed25519 a_1 c2VlZA\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("signing key file /etc/herald/signing.key, line 1: "),
            "{error}"
        );
        assert!(matches!(
            parse_key_file(path, b"\n\n"),
            Err(KeyFileError::Empty { .. })
        ));
    }

    #[test]
    fn old_signing_keys_are_checked() {
        let key = SigningKey::generate("old").unwrap();
        let mut configured = BTreeMap::new();
        configured.insert(
            "ed25519:old".to_owned(),
            OldSigningKey {
                key: key.verify_key().to_base64(),
                expired_ts: 1_600_000_000_000,
            },
        );
        let old = old_verify_keys(&configured).unwrap();
        assert_eq!(
            old,
            [OldVerifyKey {
                key_id: "ed25519:old".into(),
                verify_key: key.verify_key(),
                expired_ts: 1_600_000_000_000
            }]
        );

        let mut bad_id = BTreeMap::new();
        bad_id.insert(
            "old".to_owned(),
            OldSigningKey {
                key: key.verify_key().to_base64(),
                expired_ts: 0,
            },
        );
        assert_eq!(
            old_verify_keys(&bad_id),
            Err(OldKeyError::KeyId("old".into()))
        );

        let mut bad_key = BTreeMap::new();
        bad_key.insert(
            "ed25519:x".to_owned(),
            OldSigningKey {
                key: "Zm9v".into(),
                expired_ts: 0,
            },
        );
        assert!(matches!(
            old_verify_keys(&bad_key),
            Err(OldKeyError::Key { .. })
        ));
    }
}
