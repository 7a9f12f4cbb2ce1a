//! Stream orderings: every accepted event's position (`outgoing_events`'
//! AUTOINCREMENT), kept above any ordering that imported or seeded
//! `destinations` / `destination_rooms` rows name.

use super::db::{on_db, Db};
use super::StoreError;

/// Start-up: makes the next stream ordering larger than any in
/// `destinations` or `destination_rooms`, which may have been copied from
/// Synapse (orderings in the millions) or seeded. Otherwise new events would
/// count as older than what those rows say was already sent, and catch-up
/// would skip them.
pub(crate) async fn orderings_above_imported(pool: &Db) -> Result<(), StoreError> {
    const IMPORTED: &str = "SELECT MAX(m) FROM \
        (SELECT MAX(last_successful_stream_ordering) AS m FROM destinations \
        UNION ALL SELECT MAX(stream_ordering) FROM destination_rooms) AS imported";
    let imported: Option<i64> = on_db!(pool, |pool| sqlx::query_scalar(IMPORTED)
        .fetch_one(pool)
        .await?);
    match imported {
        Some(imported) => raise_next_ordering(pool, imported).await,
        None => Ok(()),
    }
}

/// Makes the next stream ordering larger than `imported`: SQLite's
/// `sqlite_sequence` row of the AUTOINCREMENT, PostgreSQL's identity
/// sequence (only ever raised).
pub(crate) async fn raise_next_ordering(pool: &Db, imported: i64) -> Result<(), StoreError> {
    let pool = match pool {
        Db::Sqlite(pool) => pool,
        Db::Postgres(pool) => {
            sqlx::query(
                "SELECT setval('outgoing_events_stream_ordering_seq', $1) \
                 FROM outgoing_events_stream_ordering_seq \
                 WHERE (CASE WHEN is_called THEN last_value ELSE last_value - 1 END) < $1",
            )
            .bind(imported)
            .execute(pool)
            .await?;
            return Ok(());
        }
    };
    let current: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'outgoing_events'")
            .fetch_optional(pool)
            .await?;
    match current {
        Some(seq) if seq >= imported => {}
        Some(_) => {
            sqlx::query("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outgoing_events'")
                .bind(imported)
                .execute(pool)
                .await?;
        }
        None => {
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('outgoing_events', ?)")
                .bind(imported)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}
