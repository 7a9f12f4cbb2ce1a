//! The one `herald serve` per database and instance name. On SQLite one
//! server has the file (it sends every destination); on PostgreSQL several
//! instances with different `instance_name`s share the database (the
//! destinations split between them by [`crate::leases`]), and a second
//! server with the SAME name is refused, naming `database`.
//!
//! The claim is released by the operating system or the database when the
//! process ends, however it ends (`kill -9` included), so a restart finds
//! it free (after waiting up to [`CLAIM_WAIT`] for a dying process's claim
//! to go):
//! - SQLite: an exclusive lock (`flock`) on `<file>.serve-lock` beside the
//!   database (never on the database file itself: closing another handle
//!   on it would drop SQLite's own locks);
//! - PostgreSQL: a session-level advisory lock on (Herald's key, the
//!   instance name's hash), and Herald's key alone taken shared (which
//!   `herald migrate-store` takes exclusive, [`claim_whole`]), held by a
//!   connection of its own for the server's lifetime, with the server's TCP keepalives at 5 s so that a
//!   claim whose holder vanished goes in about 20 s. If that connection is
//!   lost (the database restarted, the network cut), the claim is lost
//!   with it; the sending is safe anyway, as it is bounded by the shard
//!   leases, not by this claim.
//!
//! Other commands (`herald user add`, `import-synapse`, …) do not claim:
//! they run beside a server as before.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection};

use crate::{DatabaseTarget, StoreError};

/// How long a claim held by someone else is waited for before refusing
/// (a server killed a moment ago may still hold it briefly).
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// Between two tries.
const RETRY: Duration = Duration::from_millis(100);

/// The longest a connection or one try may take on PostgreSQL.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The advisory lock's first key ("HRLD" in ASCII; advisory locks are per
/// database, so it only has to be Herald's); the second is
/// [`instance_key`].
const ADVISORY_KEY: i32 = 0x4852_4c44;

/// The advisory lock's second key for an instance name: the first four
/// bytes of its SHA-256 (two names sharing them would be refused as one,
/// one chance in four billion).
fn instance_key(instance: &str) -> i32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(instance.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A held claim; dropping it releases it.
#[derive(Debug)]
pub struct ServingClaim {
    _held: Held,
}

/// How often [`keep_serving`] checks that a PostgreSQL claim's session lives.
const KEEP_EVERY: Duration = Duration::from_secs(2);

/// Keeps `claim` for a server's lifetime and returns only if it is lost to
/// another process: on PostgreSQL the claim's session is checked every
/// [`KEEP_EVERY`]; when it is gone (the database restarted, the network
/// cut), the claim is taken again as soon as the database answers, and if
/// another `herald serve` with the same `instance_name` took it meanwhile,
/// [`StoreError::Serving`] comes back: the server must stop, as two
/// processes of one name would renew the same shard leases and both send.
/// It also returns ([`StoreError::PgTooNew`]) once a newer Herald has
/// migrated the database: this build may lack what the new schema relies
/// on (since version 8, the queue's locks in place of foreign keys).
/// On SQLite (a lock file, which cannot be lost) it never returns.
pub async fn keep_serving(
    mut claim: ServingClaim,
    target: &DatabaseTarget,
    instance: &str,
) -> StoreError {
    loop {
        tokio::time::sleep(KEEP_EVERY).await;
        let Held::Postgres { session } = &mut claim._held else {
            return std::future::pending().await;
        };
        let alive = tokio::time::timeout(
            STEP_TIMEOUT,
            sqlx::query("SELECT 1").execute(&mut **session),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if alive {
            if let Some(newer) = newer_schema(session, target).await {
                return newer;
            }
            continue;
        }
        tracing::warn!("the serving claim's session was lost; claiming `instance_name` again");
        loop {
            match claim_serving(target, instance, Duration::ZERO).await {
                Ok(again) => {
                    tracing::info!("serving claim taken again");
                    claim = again;
                    break;
                }
                Err(e @ StoreError::Serving { .. }) => return e,
                // The database does not answer yet.
                Err(_) => tokio::time::sleep(KEEP_EVERY).await,
            }
        }
    }
}

/// [`StoreError::PgTooNew`] if a newer Herald has migrated the database
/// since this one opened it (an upgrade without stopping this one); `None`
/// otherwise, and when the version cannot be read (no migration yet: the
/// claim comes before the store opens).
async fn newer_schema(
    session: &mut sqlx::PgConnection,
    target: &DatabaseTarget,
) -> Option<StoreError> {
    let found = tokio::time::timeout(
        STEP_TIMEOUT,
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(session),
    )
    .await
    .ok()?
    .ok()??;
    let known = crate::postgres::known_version();
    (found > known).then(|| StoreError::PgTooNew {
        target: target.shown(),
        found,
        known,
    })
}

/// What holds the claim (kept; on PostgreSQL its session is checked by
/// [`keep_serving`]).
#[derive(Debug)]
enum Held {
    File { _lock: std::fs::File },
    Postgres { session: Box<sqlx::PgConnection> },
}

/// The lock file of the SQLite database at `path`.
pub fn lock_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".serve-lock");
    PathBuf::from(name)
}

/// Claims `target` for this server (on PostgreSQL, for the instance
/// named `instance`), waiting up to `wait` for another holder to go;
/// [`StoreError::Serving`] if it does not.
pub async fn claim_serving(
    target: &DatabaseTarget,
    instance: &str,
    wait: Duration,
) -> Result<ServingClaim, StoreError> {
    claim(target, Who::Instance(instance), wait).await
}

/// Claims the whole of `target` for a command that rewrites it
/// (`herald migrate-store`): on SQLite the same lock file as a server's, on
/// PostgreSQL the exclusive form of the lock every server holds shared, so
/// no instance of any name runs beside it, nor starts until it is done.
pub async fn claim_whole(
    target: &DatabaseTarget,
    wait: Duration,
) -> Result<ServingClaim, StoreError> {
    claim(target, Who::Whole, wait).await
}

/// Who claims a database.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    /// A server, as the instance of this name (and, shared, the database).
    Instance(&'a str),
    /// A command that needs the database to itself.
    Whole,
}

async fn claim(
    target: &DatabaseTarget,
    who: Who<'_>,
    wait: Duration,
) -> Result<ServingClaim, StoreError> {
    let deadline = Instant::now() + wait;
    match target {
        DatabaseTarget::Sqlite(path) => {
            let lock = lock_path(path);
            let refused = |detail: String| StoreError::Serving {
                target: path.display().to_string(),
                detail,
            };
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock)
                .map_err(|e| refused(format!("cannot open {}: {e}", lock.display())))?;
            loop {
                match file.try_lock() {
                    Ok(()) => {
                        return Ok(ServingClaim {
                            _held: Held::File { _lock: file },
                        })
                    }
                    Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                        tokio::time::sleep(RETRY).await;
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(refused(format!(
                            "another `herald serve` holds {}",
                            lock.display()
                        )))
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(refused(format!("cannot lock {}: {e}", lock.display())))
                    }
                }
            }
        }
        DatabaseTarget::Postgres(url) => {
            let shown = crate::synapse::without_password(url);
            let refused = |detail: String| StoreError::Serving {
                target: shown.clone(),
                detail,
            };
            let options: sqlx::postgres::PgConnectOptions = url
                .parse()
                .map_err(|e| refused(format!("not a PostgreSQL URL: {e}")))?;
            let unreachable = |detail: String| StoreError::PgUnreachable {
                target: shown.clone(),
                detail,
            };
            // The server's keepalives on this session: a claim whose
            // server has gone (a crash, a network cut) is released in about
            // 20 s instead of the system's two hours.
            let options = options
                .application_name("herald serve claim")
                .options([
                    ("tcp_keepalives_idle", "5"),
                    ("tcp_keepalives_interval", "5"),
                    ("tcp_keepalives_count", "3"),
                ])
                .disable_statement_logging();
            let mut conn = tokio::time::timeout(STEP_TIMEOUT, options.connect())
                .await
                .map_err(|_| unreachable("no answer within 10 s".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
            loop {
                let held = match who {
                    Who::Instance(name) => {
                        let own = try_advisory(
                            &mut conn,
                            "SELECT pg_try_advisory_lock($1, $2)",
                            Some(instance_key(name)),
                        )
                        .await
                        .map_err(unreachable)?;
                        if !own {
                            Err(format!(
                                "another `herald serve` with instance_name {name:?} holds its \
                                 advisory lock; give each instance its own `instance_name`"
                            ))
                        } else if try_advisory(
                            &mut conn,
                            "SELECT pg_try_advisory_lock_shared($1::BIGINT)",
                            None,
                        )
                        .await
                        .map_err(unreachable)?
                        {
                            Ok(())
                        } else {
                            try_advisory(
                                &mut conn,
                                "SELECT pg_advisory_unlock($1, $2)",
                                Some(instance_key(name)),
                            )
                            .await
                            .map_err(unreachable)?;
                            Err("a `herald migrate-store` is writing this database".to_owned())
                        }
                    }
                    Who::Whole => {
                        if try_advisory(&mut conn, "SELECT pg_try_advisory_lock($1::BIGINT)", None)
                            .await
                            .map_err(unreachable)?
                        {
                            Ok(())
                        } else {
                            Err("a `herald serve` (or another `herald migrate-store`) is \
                                 running on this database"
                                .to_owned())
                        }
                    }
                };
                match held {
                    Ok(()) => {
                        return Ok(ServingClaim {
                            _held: Held::Postgres {
                                session: Box::new(conn),
                            },
                        })
                    }
                    Err(why) if Instant::now() >= deadline => {
                        let _ = conn.close().await;
                        return Err(refused(why));
                    }
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
            }
        }
    }
}

/// Runs one `pg_try_advisory_lock…`/`pg_advisory_unlock` statement on
/// Herald's key (and `second`, for the two-key form), within
/// [`STEP_TIMEOUT`]: whether it took (or released) the lock.
async fn try_advisory(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    second: Option<i32>,
) -> Result<bool, String> {
    let query = match second {
        Some(second) => sqlx::query_scalar(sql).bind(ADVISORY_KEY).bind(second),
        None => sqlx::query_scalar(sql).bind(i64::from(ADVISORY_KEY)),
    };
    tokio::time::timeout(STEP_TIMEOUT, query.fetch_one(conn))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| e.to_string())
}
