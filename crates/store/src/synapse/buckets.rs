//! The refresh's per-bucket row counts and checksums computed in Herald,
//! from the rows the start-up load reads anyway: the same numbers as
//! [`Source::bucket_sums`](super::source::Source::bucket_sums) computes in
//! the database, with the same arithmetic, so that attaching scans
//! Synapse's table once instead of twice. The SQL there and the functions
//! here change together; `tests` below and `server/tests/synapse_attached.rs`
//! compare them on real databases.

use std::collections::HashMap;

use crate::StoreError;

/// The four numeric columns' share of a row's checksum, as `bucket_sums`'s
/// `MIX` without its `LENGTH(destination)`: a NULL counts as -1, and `%`
/// keeps the dividend's sign in Rust as in SQLite and PostgreSQL. Columns
/// in [`DestinationRow::columns`](crate::DestinationRow::columns) order.
fn columns_mix(columns: [Option<i64>; 4]) -> i64 {
    let [retry_last_ts, retry_interval, failure_ts, last_successful] = columns;
    (retry_last_ts.unwrap_or(-1) % 1_000_003) * 3
        + (retry_interval.unwrap_or(-1) % 1_000_033) * 5
        + (failure_ts.unwrap_or(-1) % 999_983) * 7
        + (last_successful.unwrap_or(-1) % 1_000_037) * 11
}

/// Counts and checksums by bucket, fed one row at a time.
#[derive(Debug, Default)]
pub(crate) struct BucketSums {
    /// Bucket → (rows, checksum). The sum is kept wide and checked at the
    /// end, where the database's `SUM` would fail.
    sums: hashbrown::HashMap<i64, (i64, i128)>,
}

impl BucketSums {
    fn add(&mut self, bucket: i64, term: Option<i64>) {
        let entry = self.sums.entry(bucket).or_insert((0, 0));
        entry.0 += 1;
        if let Some(term) = term {
            entry.1 += i128::from(term);
        }
    }

    /// A row of Synapse's SQLite table: the bucket is `rowid >> 10`, the
    /// weight `rowid % 1021 + 1`, and the name counts by its first, last
    /// and middle characters. SQLite's `LENGTH`, `SUBSTR` and `UNICODE`
    /// count characters and stop at a NUL; `UNICODE('')` is NULL, which
    /// makes the row's term NULL, and `SUM` skips it (the row still counts).
    pub(crate) fn add_sqlite(&mut self, rowid: i64, name: &str, columns: [Option<i64>; 4]) {
        let text = name.split('\0').next().unwrap_or_default();
        let (length, name_mix) = if text.is_ascii() {
            let bytes = text.as_bytes();
            let length = bytes.len();
            let at = |i: usize| bytes.get(i).map(|&b| i64::from(b));
            let name_mix = match (
                at(0),
                length.checked_sub(1).and_then(at),
                // SQL's `(LENGTH + 1) / 2`, 1-based.
                length.div_ceil(2).checked_sub(1).and_then(at),
            ) {
                (Some(first), Some(last), Some(middle)) => {
                    Some(first * 13 + last * 17 + middle * 19)
                }
                _ => None,
            };
            (length as i64, name_mix)
        } else {
            let length = text.chars().count();
            let code = |c: Option<char>| c.map(|c| i64::from(u32::from(c)));
            let name_mix = match (
                code(text.chars().next()),
                code(text.chars().next_back()),
                length
                    .div_ceil(2)
                    .checked_sub(1)
                    .and_then(|i| code(text.chars().nth(i))),
            ) {
                (Some(first), Some(last), Some(middle)) => {
                    Some(first * 13 + last * 17 + middle * 19)
                }
                _ => None,
            };
            (length as i64, name_mix)
        };
        let term = name_mix
            .map(|name_mix| (columns_mix(columns) + length + name_mix) * ((rowid % 1021) + 1));
        self.add(rowid >> 10, term);
    }

    /// A row of Synapse's PostgreSQL table, `hash` being its
    /// `hashtext(destination)`: the bucket is `hash & 1023`, the weight
    /// `((hash >> 10) & 1023) + 1`; `LENGTH` counts characters.
    pub(crate) fn add_postgres(&mut self, hash: i32, name: &str, columns: [Option<i64>; 4]) {
        let length = name.chars().count() as i64;
        let weight = i64::from(((hash >> 10) & 1023) + 1);
        let term = (columns_mix(columns) + length) * weight;
        self.add(i64::from(hash & 1023), Some(term));
    }

    /// Bucket → (rows, checksum), as the refresh keeps them; an error where
    /// the database's 64-bit sum would have failed.
    pub(crate) fn into_buckets(self) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
        self.sums
            .into_iter()
            .map(|(bucket, (rows, sum))| match i64::try_from(sum) {
                Ok(sum) => Ok((bucket, (rows, sum))),
                Err(_) => Err(StoreError::Corrupt {
                    what: format!(
                        "the checksum of bucket {bucket} of Synapse's destinations is beyond 64 bits"
                    ),
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synapse::source::Source;

    /// Rows whose arithmetic is easy to get wrong: NULLs, negative and
    /// extreme numbers, names with multi-byte characters (2, 3 and 4
    /// bytes), a NUL inside, one character, and none.
    fn awkward_rows() -> Vec<(String, [Option<i64>; 4])> {
        let mut rows: Vec<(String, [Option<i64>; 4])> = vec![
            ("a.org".into(), [None; 4]),
            ("b".into(), [Some(-1), Some(-1_000_034), Some(-7), Some(0)]),
            (
                "é.example".into(),
                [Some(i64::MAX), Some(i64::MIN + 1), None, Some(-5)],
            ),
            (
                "例え.テスト".into(),
                [Some(1_700_000_000_000), Some(600_000), Some(1), None],
            ),
            (
                "🦀x🦀".into(),
                [
                    Some(-1_700_000_000_000),
                    None,
                    Some(999_983),
                    Some(1_000_037),
                ],
            ),
            ("ab\0cd".into(), [Some(3), Some(4), Some(5), Some(6)]),
            ("\0lead".into(), [Some(3), Some(4), Some(5), Some(6)]),
            ("ä".into(), [None, Some(2), None, Some(2)]),
        ];
        for i in 0..3000i64 {
            let v = |m: i64| (i % m != 0).then_some((i * 7_919 - 4_000) * m);
            rows.push((
                format!("host{i}.ñ{}.example", i % 13),
                [v(3), v(5), v(7), v(11)],
            ));
        }
        rows
    }

    fn same(a: &HashMap<i64, (i64, i64)>, b: &[(i64, i64, i64)]) {
        let b: HashMap<i64, (i64, i64)> = b.iter().map(|&(k, n, s)| (k, (n, s))).collect();
        assert_eq!(
            a.len(),
            b.len(),
            "buckets: {:?} vs {:?}",
            a.keys(),
            b.keys()
        );
        for (k, v) in &b {
            assert_eq!(a.get(k), Some(v), "bucket {k}");
        }
    }

    #[tokio::test]
    async fn sqlite_buckets_computed_in_herald_equal_the_databases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("homeserver.db");
        {
            use sqlx::Connection;
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for sql in [
                "CREATE TABLE schema_version (lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, \
                 version INTEGER NOT NULL, upgraded BOOL NOT NULL)",
                "INSERT INTO schema_version (version, upgraded) VALUES (94, 1)",
                "CREATE TABLE destinations (destination TEXT PRIMARY KEY, retry_last_ts BIGINT, \
                 retry_interval BIGINT, failure_ts BIGINT, last_successful_stream_ordering BIGINT)",
                "CREATE TABLE destination_rooms (destination TEXT NOT NULL, room_id TEXT NOT NULL, \
                 stream_ordering BIGINT NOT NULL, PRIMARY KEY (destination, room_id))",
            ] {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            // Rowids as an old, much-edited table has them: negative,
            // sparse, huge; the empty name alone in its bucket (its term
            // is NULL, the bucket's sum 0).
            let rowids = [
                -5_000i64,
                -1,
                0,
                1_023,
                1_024,
                i64::MAX - 3,
                9_000_000,
                70_000,
            ];
            for (i, (name, c)) in awkward_rows().into_iter().enumerate() {
                let rowid = rowids.get(i).copied().unwrap_or(100_000 + i as i64 * 3);
                sqlx::query("INSERT INTO destinations VALUES (?, ?, ?, ?, ?)")
                    .bind(name)
                    .bind(c[0])
                    .bind(c[1])
                    .bind(c[2])
                    .bind(c[3])
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query("UPDATE destinations SET rowid = ? WHERE rowid = last_insert_rowid()")
                    .bind(rowid)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            sqlx::query("INSERT INTO destinations (rowid, destination) VALUES (50000, '')")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        let source = Source::open(&path.display().to_string()).await.unwrap();
        let from_db = source.bucket_sums().await.unwrap();
        let (index, sums) = source.load_index().await.unwrap();
        assert_eq!(index.len(), awkward_rows().len() + 1);
        let computed = sums.into_buckets().unwrap();
        assert!(from_db
            .iter()
            .any(|&(b, n, s)| b == 50_000 >> 10 && n == 1 && s == 0));
        assert!(from_db.iter().any(|&(b, _, _)| b < 0));
        same(&computed, &from_db);
        source.close().await;
    }

    #[test]
    fn a_sum_beyond_64_bits_is_an_error() {
        let mut sums = BucketSums::default();
        for _ in 0..3 {
            sums.add(7, Some(i64::MAX));
        }
        assert!(matches!(
            sums.into_buckets(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
