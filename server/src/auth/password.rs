//! Password hashing with Argon2id (PHC strings in `users.password_hash`),
//! and the small fixed pool of threads every login's verification runs on.
//!
//! Argon2 is memory-hard by design: each hash fills `m_cost` KiB (19 MiB
//! with the crate's defaults). Run on tokio's blocking pool, as it once was,
//! a flood of failed logins spread the work over up to 512 threads, and
//! glibc's malloc keeps a separate arena per thread whose memory it does not
//! give back: 600 failed logins took the process to 5.3 GB. Now a fixed set
//! of [`hashing_threads`] dedicated threads takes the work from a bounded
//! queue ([`QUEUE`]) and each reuses its own Argon2 memory block, so memory
//! is bounded by the number of threads whatever the load, and work beyond
//! the queue is refused at once ([`VerifyError::Busy`]; the login route
//! answers 429). A check that panics is caught: the thread lives on and the
//! login answers 500 ([`VerifyError::Failed`]), not "wrong password".
//! Hand-written rather than a thread-pool crate: a `std` channel and two
//! threads are the whole of it, and the memory reuse needs a long-lived
//! buffer per thread, which a general-purpose pool does not give.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The most memory one hash may ask for (in 1 KiB blocks): 256 MiB. A stored
/// hash asking for more never matches rather than taking the memory.
const MAX_BLOCKS: usize = 256 * 1024;

/// Threads that verify passwords: half the cores, at least one and at most
/// two, so that a flood of logins leaves the other cores to the requests that
/// matter (one on this project's 2-core machine, which verifies about 30
/// passwords a second: far more than an admin tool's logins need).
pub fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 2))
}

/// Verifications that may wait for a thread; more are refused.
pub const QUEUE: usize = 8;

/// Hashes `password` with a new random salt and Argon2id's defaults, using
/// (and growing if needed) `memory` for Argon2's blocks.
fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let err = |e: &dyn std::fmt::Display| HashError(e.to_string());
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| err(&e))?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory[..])
        .map_err(|e| err(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

/// True if `password` matches the stored PHC string, computed in `memory`
/// (grown if needed, up to [`MAX_BLOCKS`]); a malformed hash never matches.
fn verify_with(memory: &mut Vec<Block>, password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        tracing::warn!(blocks, "a stored password hash asks for too much memory");
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory[..])
        .is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(&out).is_ok_and(|out| out == expected)
}

/// Hashes a password (blocking, ~tens of ms: call off the async workers).
/// For `herald user add` and tests: one hash at a time, its memory freed.
pub fn hash(password: &str) -> Result<String, HashError> {
    hash_with(&mut Vec::new(), password)
}

/// True if `password` matches the stored hash; a malformed hash never
/// matches. Blocking, and allocates Argon2's memory: the server verifies
/// through [`Verifier`] instead.
pub fn verify(password: &str, stored: &str) -> bool {
    verify_with(&mut Vec::new(), password, stored)
}

/// Why a verification gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The pool is full: [`QUEUE`] verifications already wait.
    #[error("too many logins are being checked")]
    Busy,
    /// The check panicked (Argon2 should not, but a bug must not read as a
    /// wrong password): logged, and the thread goes on with the next job.
    #[error("the password check failed")]
    Failed,
}

/// One verification: the password, the stored hash (`None`: a user that
/// does not exist, checked against a dummy hash so that both failures take
/// the same time), and where the answer goes.
struct Job {
    password: String,
    stored: Option<String>,
    reply: oneshot::Sender<Result<bool, VerifyError>>,
}

/// How a thread checks a password against a PHC string in its memory:
/// [`verify_with`]; the tests give one that panics.
type Check = fn(&mut Vec<Block>, &str, &str) -> bool;

/// The fixed threads that verify passwords, fed by a bounded queue. Threads
/// end when the last clone of the `Verifier` is dropped.
#[derive(Clone)]
pub struct Verifier {
    queue: std::sync::mpsc::SyncSender<Job>,
}

impl Verifier {
    /// Starts `threads` threads (at least one) with room for `queue` waiting
    /// verifications. A thread the system refuses to start is logged; with
    /// none, every verification is refused as [`VerifyError::Busy`].
    pub fn start(threads: usize, queue: usize) -> Verifier {
        Verifier::start_with(threads, queue, verify_with)
    }

    fn start_with(threads: usize, queue: usize, check: Check) -> Verifier {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        // A random password's hash, made once by the first thread that needs
        // it, for users that do not exist.
        let dummy: Arc<std::sync::OnceLock<String>> = Arc::default();
        for i in 0..threads.max(1) {
            let (rx, dummy) = (rx.clone(), dummy.clone());
            let started = std::thread::Builder::new()
                .name(format!("herald-argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = rx.lock().recv();
                        let Ok(job) = job else { return };
                        if job.reply.is_closed() {
                            continue; // the client went away while it waited
                        }
                        // A panic is caught here so that the thread lives on
                        // (with none left, every login would be refused as
                        // busy) and the login answers an error, not "wrong
                        // password".
                        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            let stored = match &job.stored {
                                Some(stored) => stored.as_str(),
                                None => dummy.get_or_init(|| {
                                    hash_with(&mut memory, &crate::auth::token::password())
                                        .unwrap_or_default()
                                }),
                            };
                            check(&mut memory, &job.password, stored)
                        }));
                        let answer = checked.map_err(|panic| {
                            let message = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            tracing::error!(panic = ?message, "a password check panicked");
                            // Whatever state the panic left it in, start afresh.
                            memory = Vec::new();
                            VerifyError::Failed
                        });
                        let _ = job.reply.send(answer);
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Verifier { queue: tx }
    }

    /// Whether `password` matches `stored` (`None`: no such user, never
    /// matches), on one of the pool's threads; [`VerifyError::Busy`] at once
    /// when the queue is full, [`VerifyError::Failed`] if the check did not
    /// complete.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, VerifyError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            stored,
            reply,
        };
        self.queue.try_send(job).map_err(|_| VerifyError::Busy)?;
        answer.await.unwrap_or(Err(VerifyError::Failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("x", "not a hash"));
        // Hashes made by the crate's own API (as older Herald versions
        // stored them) verify too, and ours verify with the crate's API.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"old password", &salt)
            .unwrap()
            .to_string();
        assert!(verify("old password", &theirs));
        assert!(!verify("old passworD", &theirs));
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
    }

    #[tokio::test]
    async fn the_pool_verifies_and_refuses_beyond_its_queue() {
        let h = hash("pw").unwrap();
        let pool = Verifier::start(1, 2);
        assert_eq!(pool.verify("pw".into(), Some(h.clone())).await, Ok(true));
        assert_eq!(pool.verify("no".into(), Some(h.clone())).await, Ok(false));
        assert_eq!(pool.verify("pw".into(), None).await, Ok(false));
        // One thread busy, two waiting: the next is refused at once.
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let (pool, h) = (pool.clone(), h.clone());
                tokio::spawn(async move { pool.verify("pw".into(), Some(h)).await })
            })
            .collect();
        let mut results = Vec::new();
        for w in waiting {
            results.push(w.await.unwrap());
        }
        let busy = results
            .iter()
            .filter(|r| **r == Err(VerifyError::Busy))
            .count();
        assert!(busy >= 8 - 3, "{results:?}");
        assert!(results
            .iter()
            .all(|r| *r == Ok(true) || *r == Err(VerifyError::Busy)));
    }

    /// Panics for the password "panic", else checks as the server does.
    fn panicking(memory: &mut Vec<Block>, password: &str, stored: &str) -> bool {
        assert_ne!(password, "panic", "an injected panic");
        verify_with(memory, password, stored)
    }

    #[tokio::test]
    async fn a_panicking_check_is_an_error_and_the_thread_lives_on() {
        let h = hash("pw").unwrap();
        let pool = Verifier::start_with(1, 2, panicking);
        for _ in 0..3 {
            assert_eq!(
                pool.verify("panic".into(), Some(h.clone())).await,
                Err(VerifyError::Failed)
            );
            // The one thread still answers.
            assert_eq!(pool.verify("pw".into(), Some(h.clone())).await, Ok(true));
            assert_eq!(pool.verify("no".into(), Some(h.clone())).await, Ok(false));
        }
    }
}
