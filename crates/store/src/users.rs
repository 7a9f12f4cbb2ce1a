//! The `users` and `access_tokens` tables: accounts with Argon2id password
//! hashes, and access tokens stored only as SHA-256 hashes.

use sqlx::Row;

use sqlx::SqlitePool;

use super::{now_ms, StoreError};

/// Accounts and their access tokens (stored only as hashes).
#[derive(Clone)]
pub struct Users {
    pool: SqlitePool,
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
    pub(crate) fn new(pool: SqlitePool) -> Users {
        Users { pool }
    }

    /// Creates an account; fails with [`StoreError::UserExists`] if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_ts) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(admin)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::UserExists(name.into()));
        }
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT name, password_hash, admin FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| -> Result<User, sqlx::Error> {
                Ok(User {
                    name: r.try_get(0)?,
                    password_hash: r.try_get(1)?,
                    admin: r.try_get(2)?,
                })
            })
            .transpose()?)
    }

    pub async fn insert_token(
        &self,
        token_hash: &[u8],
        user: &str,
        device_id: &str,
        expires_ts: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, user_name, device_id, created_ts, expires_ts) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(device_id)
        .bind(now_ms())
        .bind(expires_ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The owner of a token that exists and has not expired.
    pub async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT u.name, u.admin, t.device_id FROM access_tokens t JOIN users u ON u.name = t.user_name \
             WHERE t.token_hash = ? AND (t.expires_ts IS NULL OR t.expires_ts > ?)",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<TokenOwner, sqlx::Error> {
                Ok(TokenOwner {
                    user: r.try_get(0)?,
                    admin: r.try_get(1)?,
                    device_id: r.try_get(2)?,
                })
            })
            .transpose()?)
    }

    pub async fn delete_token(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM access_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
