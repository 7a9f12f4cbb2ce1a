//! Synapse's database, read-only: connecting (SQLite read-only or a
//! read-only PostgreSQL pool), checking that it is Synapse's and of a
//! schema version Herald knows, and every read attached mode makes — rows,
//! rooms pages with Synapse's paging and `total`, and the change detector
//! and bucket checksums the refresh uses. Queries are written once per
//! dialect (`?` / `$1`, `rowid` / `hashtext`) rather than through
//! `sqlx::Any`, which would hide the dialect differences the refresh
//! depends on.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use herald_shared::{next_token, DestinationRoom, Direction, RoomsPage, RoomsQuery};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Row};

use super::buckets::BucketSums;
use super::copy::{CopyError, CopyReader};
use crate::{DestinationIndex, DestinationRow, NullsOrder, StoreError};

/// The config setting every error about Synapse's database names.
pub const SETTING: &str = "[synapse] database";

/// Synapse schema versions whose `destinations` and `destination_rooms`
/// Herald knows: the columns it reads exist since 58; 94 is Synapse 1.163's.
pub const KNOWN_SCHEMA_VERSIONS: RangeInclusive<i64> = 58..=94;

/// How long connecting to PostgreSQL may take before it "does not answer".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of `destinations` Herald reads, in [`DestinationRow`]'s order.
macro_rules! columns {
    () => {
        "destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering"
    };
}

/// Synapse's database, opened read-only.
pub(crate) enum Source {
    Sqlite { pool: SqlitePool, path: PathBuf },
    Postgres { pool: PgPool, shown: String },
}

/// The error for `target`'s `problem`, named by [`SETTING`] (an import
/// renames it to its own flag).
fn bad(target: &str, problem: impl Into<String>) -> StoreError {
    StoreError::Synapse {
        setting: SETTING,
        target: target.to_owned(),
        problem: problem.into(),
    }
}

fn is_postgres(database: &str) -> bool {
    database.starts_with("postgresql://") || database.starts_with("postgres://")
}

impl Source {
    /// Connects and checks: it answers, it is Synapse's (`schema_version`,
    /// `destinations` and `destination_rooms` are there), and its schema
    /// version is one Herald knows.
    pub(crate) async fn open(database: &str) -> Result<Source, StoreError> {
        let source = if is_postgres(database) {
            Source::open_postgres(database).await?
        } else {
            Source::open_sqlite(database).await?
        };
        if let Err(e) = source.check().await {
            source.close().await;
            return Err(e);
        }
        Ok(source)
    }

    async fn open_sqlite(database: &str) -> Result<Source, StoreError> {
        let path = PathBuf::from(database);
        let shown = path.display().to_string();
        if database.is_empty() {
            return Err(bad(
                &shown,
                "is empty: give Synapse's SQLite file or a postgresql:// URL",
            ));
        }
        if !path.is_file() {
            return Err(bad(
                &shown,
                "no such file (Herald never creates Synapse's database: give the path of \
                 Synapse's homeserver.db or a postgresql:// URL)",
            ));
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(5))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| bad(&shown, format!("cannot be opened read-only: {e}")))?;
        Ok(Source::Sqlite { pool, path })
    }

    async fn open_postgres(database: &str) -> Result<Source, StoreError> {
        let options = PgConnectOptions::from_str(database)
            .map_err(|e| bad("a postgresql:// URL", format!("is not a valid URL: {e}")))?;
        let shown = format!(
            "PostgreSQL {}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        // A second guard besides the role's privileges: every transaction
        // of these sessions is read-only.
        let options = options
            .options([("default_transaction_read_only", "on")])
            .application_name("herald")
            .disable_statement_logging();
        // One connection first: the pool would only say it timed out, this
        // says why (refused, no such database, authentication).
        let probe = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(bad(&shown, format!("does not answer: {e}"))),
            Err(_) => {
                return Err(bad(
                    &shown,
                    format!("does not answer within {CONNECT_TIMEOUT:?}"),
                ))
            }
        };
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| bad(&shown, format!("does not answer: {e}")))?;
        // Herald orders names as bytes, as the C collation Synapse asks
        // for does; a database made with `allow_unsafe_locale` and another
        // collation orders Synapse's list differently.
        let collation: Result<(String,), _> = sqlx::query_as(
            "SELECT datcollate::text FROM pg_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await;
        if let Ok((collation,)) = collation {
            if collation != "C" && collation != "POSIX" {
                tracing::warn!(
                    database = %shown,
                    collation = ?collation,
                    "Synapse's database does not use the C collation: Herald orders destinations \
                     as bytes (as C does), so its list may order names differently from Synapse's"
                );
            }
        }
        Ok(Source::Postgres { pool, shown })
    }

    /// How errors name this database.
    pub(crate) fn shown(&self) -> String {
        match self {
            Source::Sqlite { path, .. } => path.display().to_string(),
            Source::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// PostgreSQL's COPY of the rows is not what was asked for.
    fn malformed_copy(&self, e: CopyError) -> StoreError {
        StoreError::Corrupt {
            what: format!(
                "Synapse's destinations as {} sent them (binary COPY): {e}",
                self.shown()
            ),
        }
    }

    /// A failed read while running: Synapse's database went away or broke.
    fn unavailable(&self, e: sqlx::Error) -> StoreError {
        StoreError::SynapseUnavailable {
            target: self.shown(),
            detail: e.to_string(),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        let shown = self.shown();
        let wanted = ["schema_version", "destinations", "destination_rooms"];
        let found: Vec<String> = match self {
            Source::Sqlite { pool, .. } => sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name IN ('schema_version', 'destinations', 'destination_rooms')",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| bad(&shown, format!("is not a readable SQLite database: {e}")))?,
            Source::Postgres { pool, .. } => sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() \
                 AND table_name IN ('schema_version', 'destinations', 'destination_rooms')",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| bad(&shown, format!("cannot be read: {e}")))?,
        };
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !found.iter().any(|f| f == w))
            .collect();
        if !missing.is_empty() {
            return Err(bad(
                &shown,
                format!(
                    "is not Synapse's database (no {} table{}; or the role may not read it: \
                     GRANT SELECT on schema_version, destinations and destination_rooms)",
                    missing.join(", "),
                    if missing.len() > 1 { "s" } else { "" }
                ),
            ));
        }
        let version: Option<i64> = match self {
            Source::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT CAST(version AS INTEGER) FROM schema_version")
                    .fetch_optional(pool)
                    .await
            }
            Source::Postgres { pool, .. } => {
                sqlx::query_scalar("SELECT version::bigint FROM schema_version")
                    .fetch_optional(pool)
                    .await
            }
        }
        .map_err(|e| bad(&shown, format!("its schema_version cannot be read: {e}")))?;
        match version {
            None => Err(bad(
                &shown,
                "is not Synapse's database (schema_version is empty)",
            )),
            Some(v) if !KNOWN_SCHEMA_VERSIONS.contains(&v) => Err(bad(
                &shown,
                format!(
                    "has Synapse schema version {v}, which this Herald does not know \
                     (it knows {}–{}, up to Synapse 1.163){}",
                    KNOWN_SCHEMA_VERSIONS.start(),
                    KNOWN_SCHEMA_VERSIONS.end(),
                    if v > *KNOWN_SCHEMA_VERSIONS.end() {
                        ": upgrade Herald"
                    } else {
                        ": upgrade Synapse"
                    }
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Source::Sqlite { pool, .. } => pool.close().await,
            Source::Postgres { pool, .. } => pool.close().await,
        }
    }

    /// Every row in name order (bytes), one at a time.
    pub(crate) fn rows_by_name(&self) -> BoxStream<'_, Result<DestinationRow, StoreError>> {
        match self {
            Source::Sqlite { pool, .. } => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM destinations ORDER BY destination"
            ))
            .fetch(pool)
            .map(|r| {
                r.and_then(|r| decode_sqlite(&r))
                    .map_err(|e| self.unavailable(e))
            })
            .boxed(),
            Source::Postgres { pool, .. } => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM destinations ORDER BY destination COLLATE \"C\""
            ))
            .fetch(pool)
            .map(|r| {
                r.and_then(|r| decode_pg(&r))
                    .map_err(|e| self.unavailable(e))
            })
            .boxed(),
        }
    }

    /// The index of every row, in the NULL order of Synapse's database
    /// (SQLite: NULL smallest; PostgreSQL: NULL largest), and the
    /// refresh's bucket sums of the same rows, computed in Herald (see
    /// [`BucketSums`]): one statement reads both, so they describe one
    /// snapshot and the table is scanned once. SQLite's file is read
    /// through the same read-only loader as Herald's own (with `rowid`);
    /// PostgreSQL's rows come as a binary `COPY` of the query (with
    /// `hashtext(destination)`), read straight into the builder.
    pub(crate) async fn load_index(&self) -> Result<(DestinationIndex, BucketSums), StoreError> {
        match self {
            Source::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut sums = BucketSums::default();
                    let index = crate::destinations::load_index_with(
                        &path,
                        false,
                        Some(&mut |rowid, name, columns| sums.add_sqlite(rowid, name, columns)),
                    )?;
                    Ok((index, sums))
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
            }
            Source::Postgres { pool, .. } => {
                let mut conn = pool.acquire().await.map_err(|e| self.unavailable(e))?;
                // Closed, never returned to the pool: a load dropped or
                // failed in the middle of the COPY leaves the connection
                // in it (one reconnect at start-up).
                conn.close_on_drop();
                let mut builder = DestinationIndex::builder(NullsOrder::Largest);
                let mut sums = BucketSums::default();
                let mut reader = CopyReader::default();
                let read = async {
                    let mut chunks = conn
                        .copy_out_raw(
                            "COPY (SELECT destination, retry_last_ts::bigint, \
                             retry_interval::bigint, failure_ts::bigint, \
                             last_successful_stream_ordering::bigint, hashtext(destination) \
                             FROM destinations) TO STDOUT (FORMAT binary)",
                        )
                        .await
                        .map_err(|e| self.unavailable(e))?;
                    while let Some(chunk) =
                        chunks.try_next().await.map_err(|e| self.unavailable(e))?
                    {
                        reader
                            .feed(&chunk, |row| {
                                sums.add_postgres(row.hash, row.destination, row.columns);
                                builder.push_columns(row.destination, row.columns, 0);
                            })
                            .map_err(|e| self.malformed_copy(e))?;
                    }
                    Ok::<_, StoreError>(())
                };
                let read = read.await;
                let read = read.and_then(|()| {
                    std::mem::take(&mut reader)
                        .finish()
                        .map_err(|e| self.malformed_copy(e))
                });
                read?;
                drop(conn);
                let index = tokio::task::spawn_blocking(move || builder.finish())
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?;
                Ok((index, sums))
            }
        }
    }

    /// One row, if Synapse has it.
    pub(crate) async fn destination(
        &self,
        name: &str,
    ) -> Result<Option<DestinationRow>, StoreError> {
        match self {
            Source::Sqlite { pool, .. } => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM destinations WHERE destination = ?"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await
            .and_then(|r| r.as_ref().map(decode_sqlite).transpose()),
            Source::Postgres { pool, .. } => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM destinations WHERE destination = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await
            .and_then(|r| r.as_ref().map(decode_pg).transpose()),
        }
        .map_err(|e| self.unavailable(e))
    }

    /// A page of a destination's rooms as Synapse answers it: ordered by
    /// room ID, `total` counted in SQL.
    pub(crate) async fn rooms_page(
        &self,
        name: &str,
        q: RoomsQuery,
    ) -> Result<RoomsPage, StoreError> {
        let order = match q.dir {
            Direction::Forwards => "ASC",
            Direction::Backwards => "DESC",
        };
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let from = i64::try_from(q.from).unwrap_or(i64::MAX);
        type Rooms = Vec<(String, i64)>;
        let (total, rooms): (Result<i64, _>, Result<Rooms, _>) = match self {
            Source::Sqlite { pool, .. } => {
                let total = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM destination_rooms WHERE destination = ?",
                )
                .bind(name)
                .fetch_one(pool)
                .await;
                let rooms = sqlx::query_as(&format!(
                    "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = ? \
                     ORDER BY room_id {order} LIMIT ? OFFSET ?"
                ))
                .bind(name)
                .bind(limit)
                .bind(from)
                .fetch_all(pool)
                .await;
                (total, rooms)
            }
            Source::Postgres { pool, .. } => {
                let total = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM destination_rooms WHERE destination = $1",
                )
                .bind(name)
                .fetch_one(pool)
                .await;
                let rooms = sqlx::query_as(&format!(
                    "SELECT room_id, stream_ordering FROM destination_rooms WHERE destination = $1 \
                     ORDER BY room_id {order} LIMIT $2 OFFSET $3"
                ))
                .bind(name)
                .bind(limit)
                .bind(from)
                .fetch_all(pool)
                .await;
                (total, rooms)
            }
        };
        let (total, rooms) = (
            total.map_err(|e| self.unavailable(e))?,
            rooms.map_err(|e| self.unavailable(e))?,
        );
        let total = total.max(0) as u64;
        let rooms: Vec<DestinationRoom> = rooms
            .into_iter()
            .map(|(room_id, stream_ordering)| DestinationRoom {
                room_id,
                stream_ordering,
            })
            .collect();
        Ok(RoomsPage {
            next_token: next_token(q.from, q.limit, rooms.len(), total),
            rooms,
            total,
        })
    }

    /// Per bucket of rows: (bucket, rows, checksum). SQLite buckets are
    /// ranges of 1024 rowids (Synapse's upserts keep a row's rowid);
    /// PostgreSQL's are `hashtext(destination) & 1023`. The checksum
    /// weights each row's columns by a per-row factor, so values moving
    /// between two rows of a bucket change it too. The start-up load
    /// computes the same numbers in Herald (`super::buckets`, which must
    /// change with this SQL). SQLite's sum is 0, not NULL, for a bucket
    /// whose only row has an empty name (`UNICODE('')` is NULL).
    pub(crate) async fn bucket_sums(&self) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        const MIX: &str = "(COALESCE(retry_last_ts, -1) % 1000003) * 3 \
            + (COALESCE(retry_interval, -1) % 1000033) * 5 \
            + (COALESCE(failure_ts, -1) % 999983) * 7 \
            + (COALESCE(last_successful_stream_ordering, -1) % 1000037) * 11 \
            + LENGTH(destination)";
        // SQLite's buckets are rowid ranges, so a name replaced in place (a
        // delete whose rowid an insert reuses) must move the sum by itself;
        // PostgreSQL's buckets and weights come from the name's hash.
        const SQLITE_NAME: &str = "UNICODE(destination) * 13 \
            + UNICODE(SUBSTR(destination, -1)) * 17 \
            + UNICODE(SUBSTR(destination, (LENGTH(destination) + 1) / 2, 1)) * 19";
        match self {
            Source::Sqlite { pool, .. } => {
                sqlx::query_as(&format!(
                    "SELECT rowid >> 10 AS b, COUNT(*), \
                 COALESCE(SUM(({MIX} + {SQLITE_NAME}) * ((rowid % 1021) + 1)), 0) \
                 FROM destinations GROUP BY b ORDER BY b"
                ))
                .fetch_all(pool)
                .await
            }
            Source::Postgres { pool, .. } => {
                sqlx::query_as(&format!(
                    "SELECT (hashtext(destination) & 1023)::bigint AS b, COUNT(*), \
                 SUM(({MIX})::bigint * (((hashtext(destination) >> 10) & 1023) + 1))::bigint \
                 FROM destinations GROUP BY b ORDER BY b"
                ))
                .fetch_all(pool)
                .await
            }
        }
        .map_err(|e| self.unavailable(e))
    }

    /// Every row of the given buckets (see [`Source::bucket_sums`]).
    pub(crate) async fn rows_in_buckets(
        &self,
        buckets: &[i64],
    ) -> Result<Vec<DestinationRow>, StoreError> {
        match self {
            Source::Sqlite { pool, .. } => {
                let mut out = Vec::new();
                for &b in buckets {
                    let rows = sqlx::query(concat!(
                        "SELECT ",
                        columns!(),
                        " FROM destinations WHERE rowid >= ? AND rowid <= ?"
                    ))
                    // The bucket's first and last rowid (`(b + 1) << 10`
                    // would wrap for the top bucket).
                    .bind(b << 10)
                    .bind((b << 10) | 1023)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                    for r in &rows {
                        out.push(decode_sqlite(r).map_err(|e| self.unavailable(e))?);
                    }
                }
                Ok(out)
            }
            Source::Postgres { pool, .. } => {
                let wanted: Vec<i32> = buckets.iter().map(|&b| b as i32).collect();
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM destinations WHERE (hashtext(destination) & 1023) = ANY($1)"
                ))
                .bind(wanted)
                .fetch_all(pool)
                .await
                .map_err(|e| self.unavailable(e))?;
                rows.iter()
                    .map(|r| decode_pg(r).map_err(|e| self.unavailable(e)))
                    .collect()
            }
        }
    }

    /// A cheap value that moves when `destinations` may have changed:
    /// SQLite's `PRAGMA data_version` on `held` (it moves when another
    /// connection commits to the file), PostgreSQL's insert, update and
    /// delete counters for the table (flushed by Synapse's backends within
    /// about a second of a commit, at most ten when one goes idle).
    pub(crate) async fn change_marker(
        &self,
        held: &mut Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
    ) -> Result<i64, StoreError> {
        match self {
            Source::Sqlite { pool, .. } => {
                if held.is_none() {
                    *held = Some(pool.acquire().await.map_err(|e| self.unavailable(e))?);
                }
                let Some(conn) = held.as_mut() else {
                    return Ok(0);
                };
                let marker = sqlx::query_scalar("PRAGMA data_version")
                    .fetch_one(&mut **conn)
                    .await;
                if marker.is_err() {
                    *held = None;
                }
                marker.map_err(|e| self.unavailable(e))
            }
            Source::Postgres { pool, .. } => sqlx::query_scalar(
                "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), -1)::bigint \
                 FROM pg_stat_user_tables WHERE relid = 'destinations'::regclass",
            )
            .fetch_one(pool)
            .await
            .map_err(|e| self.unavailable(e)),
        }
    }

    /// Every `destination_rooms` row, streamed for an import.
    pub(crate) fn rooms_stream(&self) -> BoxStream<'_, Result<(String, String, i64), StoreError>> {
        let sql = "SELECT destination, room_id, stream_ordering FROM destination_rooms";
        match self {
            Source::Sqlite { pool, .. } => sqlx::query_as(sql)
                .fetch(pool)
                .map(|r| r.map_err(|e| self.unavailable(e)))
                .boxed(),
            Source::Postgres { pool, .. } => sqlx::query_as(sql)
                .fetch(pool)
                .map(|r| r.map_err(|e| self.unavailable(e)))
                .boxed(),
        }
    }

    /// How many rows each table holds (for an import's progress).
    pub(crate) async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let q =
            "SELECT (SELECT COUNT(*) FROM destinations), (SELECT COUNT(*) FROM destination_rooms)";
        let (d, r): (i64, i64) = match self {
            Source::Sqlite { pool, .. } => sqlx::query_as(q).fetch_one(pool).await,
            Source::Postgres { pool, .. } => sqlx::query_as(q).fetch_one(pool).await,
        }
        .map_err(|e| self.unavailable(e))?;
        Ok((d.max(0) as u64, r.max(0) as u64))
    }
}

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<DestinationRow, sqlx::Error> {
    Ok(DestinationRow {
        destination: row.try_get(0)?,
        retry_last_ts: row.try_get(1)?,
        retry_interval: row.try_get(2)?,
        failure_ts: row.try_get(3)?,
        last_successful_stream_ordering: row.try_get(4)?,
    })
}

/// `retry_interval` was an `integer` (int4) in older schemas and is a
/// `bigint` since; both are read.
fn decode_pg(row: &sqlx::postgres::PgRow) -> Result<DestinationRow, sqlx::Error> {
    Ok(DestinationRow {
        destination: row.try_get(0)?,
        retry_last_ts: row.try_get(1)?,
        retry_interval: match row.try_get::<Option<i64>, _>(2) {
            Ok(v) => v,
            Err(_) => row.try_get::<Option<i32>, _>(2)?.map(i64::from),
        },
        failure_ts: row.try_get(3)?,
        last_successful_stream_ordering: row.try_get(4)?,
    })
}
