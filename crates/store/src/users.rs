//! The `users` and `access_tokens` tables: accounts with Argon2id password
//! hashes, and access tokens stored only as SHA-256 hashes. Each query is
//! one text run on either backend ([`crate::db`]). While the database is
//! unavailable, a token this process verified within [`OUTAGE_GRACE`] is
//! still recognised (so what is served from memory keeps answering); it is
//! never consulted while the database answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;

use super::{now_ms, StoreError};
use crate::db::{on_db, Db};

/// How long after this process last verified a token it is still
/// recognised while the database is unavailable.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(600);

/// The most tokens remembered for an outage (beyond it, the oldest go).
const REMEMBERED: usize = 1_000;

/// Accounts and their access tokens (stored only as hashes).
#[derive(Clone)]
pub struct Users {
    db: Db,
    /// Tokens verified recently: hash → owner, when verified, expiry (ms).
    verified: Arc<Mutex<HashMap<Vec<u8>, Verified>>>,
}

#[derive(Clone)]
struct Verified {
    owner: TokenOwner,
    at: Instant,
    expires_ts: Option<i64>,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub admin: bool,
}

/// Who an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user: String,
    pub admin: bool,
    pub device_id: String,
}

impl Users {
    pub(crate) fn new(db: impl Into<Db>) -> Users {
        Users {
            db: db.into(),
            verified: Arc::default(),
        }
    }

    /// Creates an account; fails with [`StoreError::UserExists`] if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let inserted = on_db!(&self.db, |pool| {
            sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(admin)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        })?;
        if inserted == 0 {
            return Err(StoreError::UserExists(name.into()));
        }
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        if !self.db.can_hold(name) {
            return Ok(None);
        }
        let row = on_db!(&self.db, |pool| sqlx::query(
            "SELECT name, password_hash, admin FROM users WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?
        .map(|r| -> Result<User, sqlx::Error> {
            Ok(User {
                name: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                admin: r.try_get(2)?,
            })
        }));
        Ok(row.transpose()?)
    }

    pub async fn insert_token(
        &self,
        token_hash: &[u8],
        user: &str,
        device_id: &str,
        expires_ts: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        on_db!(&self.db, |pool| sqlx::query(
            "INSERT INTO access_tokens (token_hash, user_name, device_id, created_ts, expires_ts) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(device_id)
        .bind(now)
        .bind(expires_ts)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// The owner of a token that exists and has not expired. While the
    /// database is unavailable: the owner this process verified within
    /// [`OUTAGE_GRACE`] (and not expired since), else the error.
    pub async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>, StoreError> {
        let now = now_ms();
        let found = match self.look_up(token_hash, now).await {
            Err(e) if e.is_unavailable() => {
                return match self.remembered(token_hash, now) {
                    Some(owner) => Ok(Some(owner)),
                    None => Err(e),
                }
            }
            other => other?,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match &found {
            Some((owner, expires_ts)) => {
                if verified.len() >= REMEMBERED && !verified.contains_key(token_hash) {
                    let oldest = verified
                        .iter()
                        .min_by_key(|(_, v)| v.at)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        verified.remove(&oldest);
                    }
                }
                verified.insert(
                    token_hash.to_vec(),
                    Verified {
                        owner: owner.clone(),
                        at: Instant::now(),
                        expires_ts: *expires_ts,
                    },
                );
            }
            None => {
                verified.remove(token_hash);
            }
        }
        Ok(found.map(|(owner, _)| owner))
    }

    async fn look_up(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<(TokenOwner, Option<i64>)>, StoreError> {
        let row = on_db!(&self.db, |pool| {
            sqlx::query(
                "SELECT u.name, u.admin, t.device_id, t.expires_ts FROM access_tokens t \
             JOIN users u ON u.name = t.user_name \
             WHERE t.token_hash = $1 AND (t.expires_ts IS NULL OR t.expires_ts > $2)",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
            .map(|r| -> Result<(TokenOwner, Option<i64>), sqlx::Error> {
                Ok((
                    TokenOwner {
                        user: r.try_get(0)?,
                        admin: r.try_get(1)?,
                        device_id: r.try_get(2)?,
                    },
                    r.try_get(3)?,
                ))
            })
        });
        Ok(row.transpose()?)
    }

    /// A token verified within [`OUTAGE_GRACE`] and not expired at `now`.
    fn remembered(&self, token_hash: &[u8], now: i64) -> Option<TokenOwner> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(token_hash)
            .filter(|v| v.at.elapsed() < OUTAGE_GRACE)
            .filter(|v| v.expires_ts.is_none_or(|ts| ts > now))
            .map(|v| v.owner.clone())
    }

    pub async fn delete_token(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token_hash);
        on_db!(&self.db, |pool| sqlx::query(
            "DELETE FROM access_tokens WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    /// Every operation, on whichever backend `users` is on.
    async fn exercise(users: &Users) {
        users.create_user("alice", "hash-a", true).await.unwrap();
        users.create_user("bob", "hash-b", false).await.unwrap();
        assert!(matches!(
            users.create_user("alice", "other", false).await,
            Err(StoreError::UserExists(name)) if name == "alice"
        ));
        assert_eq!(
            users.user("alice").await.unwrap(),
            Some(User {
                name: "alice".into(),
                password_hash: "hash-a".into(),
                admin: true,
            })
        );
        assert_eq!(users.user("carol").await.unwrap(), None);

        let far = now_ms() + 3_600_000;
        users
            .insert_token(b"\x00token-a\xff", "alice", "DEV1", None)
            .await
            .unwrap();
        users
            .insert_token(b"token-b", "bob", "DEV2", Some(far))
            .await
            .unwrap();
        users
            .insert_token(b"token-old", "bob", "DEV3", Some(now_ms() - 1))
            .await
            .unwrap();
        assert_eq!(
            users.token_owner(b"\x00token-a\xff").await.unwrap(),
            Some(TokenOwner {
                user: "alice".into(),
                admin: true,
                device_id: "DEV1".into(),
            })
        );
        assert_eq!(
            users.token_owner(b"token-b").await.unwrap(),
            Some(TokenOwner {
                user: "bob".into(),
                admin: false,
                device_id: "DEV2".into(),
            })
        );
        assert_eq!(users.token_owner(b"token-old").await.unwrap(), None);
        assert_eq!(users.token_owner(b"nope").await.unwrap(), None);
        users.delete_token(b"token-b").await.unwrap();
        assert_eq!(users.token_owner(b"token-b").await.unwrap(), None);
        assert!(users
            .token_owner(b"\x00token-a\xff")
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn users_and_tokens_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&dir.path().join("herald.db"))
            .await
            .unwrap();
        exercise(&store.users).await;
        store.close().await;
    }

    #[tokio::test]
    async fn users_and_tokens_on_postgres() {
        let (_cluster, url) = crate::test_cluster::fresh_database("users").await;
        let db = crate::postgres::open_schema(&url).await.unwrap();
        assert!(matches!(db, Db::Postgres(_)));
        exercise(&Users::new(db.clone())).await;
        db.close().await;
    }
}
