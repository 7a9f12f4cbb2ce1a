//! Which Herald instance sends which destinations, when several share one
//! PostgreSQL database: `herald_instances` (a heartbeat per instance) and
//! `herald_shards` (a lease per shard, see [`crate::shards`]), both in
//! migration 0006. Every time here is PostgreSQL's (`clock_timestamp()`, in
//! ms), so instances' clocks never need to agree.
//!
//! [`Leases::tick`] is one round of an instance's lease task: renew the
//! leases it holds that have not lapsed (a lapsed one is lost, never
//! renewed: another instance may hold it already), note its heartbeat, read
//! the live instances, and claim free or lapsed shards up to its fair share.
//! [`Leases::release`] frees shards it gives up. What the instance may do
//! with the leases (and until when) is the sender's business.
//!
//! On SQLite there is one `herald serve` per file and it holds every shard:
//! the tables exist but nothing reads or writes them.

use herald_shared::InstanceRow;

use crate::db::Db;
use crate::shards::{ShardSet, SHARDS};
use crate::StoreError;

/// PostgreSQL's clock in ms since the epoch (the statement's own time, not
/// the transaction's).
/// A lapsed lease is claimed only this long (ms) after it ran out: its
/// holder dropped its transactions in flight at least the sender's safety
/// margin before, and a receiver may still be working through one (Synapse
/// goes on with a transaction whose client went); a freed one (its holder
/// stopped sending a round before freeing it) is claimed at once.
const LAPSED_COOL_DOWN_MS: i64 = 1_000;

const NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The instances and shard leases of the database.
#[derive(Clone, Debug)]
pub struct Leases {
    pool: Db,
}

/// What one round of the lease task came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The shards held now: renewed or newly claimed.
    pub held: ShardSet,
    /// The live instances (a heartbeat within a lease), by name.
    pub live: Vec<String>,
    /// This instance's fair share of the shards.
    pub target: usize,
}

/// The fair share of `me` among `live` (sorted by name): 256 / n, the
/// first 256 % n names one more, so the shares add up to 256 exactly.
pub fn fair_share(live: &[String], me: &str) -> usize {
    let total = usize::from(SHARDS);
    let n = live.len().max(1);
    let (base, rest) = (total / n, total % n);
    match live.iter().position(|name| name == me) {
        Some(i) if i < rest => base + 1,
        _ => base,
    }
}

impl Leases {
    pub(crate) fn new(pool: Db) -> Leases {
        Leases { pool }
    }

    /// Whether several instances may share this database (PostgreSQL);
    /// false on SQLite, where the one `herald serve` holds every shard.
    pub fn is_shared(&self) -> bool {
        self.pool.is_postgres()
    }

    /// Records the signing key `me` signs with ("<key id> <public key>"),
    /// unless a live instance (a heartbeat within `live_ms`) signs with
    /// another: then that instance's name, and nothing is written. Every
    /// instance must sign with the same key, as remote servers fetch it from
    /// whichever instance answers. Nothing on SQLite.
    pub async fn check_signing_key(
        &self,
        me: &str,
        signing_key: &str,
        live_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let other: Option<String> = sqlx::query_scalar(&format!(
            "SELECT instance_name FROM herald_instances \
             WHERE instance_name <> $1 AND left_ts IS NULL AND heartbeat_ts > {NOW} - $2 \
             AND signing_key IS DISTINCT FROM $3 ORDER BY instance_name LIMIT 1"
        ))
        .bind(me)
        .bind(live_ms)
        .bind(signing_key)
        .fetch_optional(pool)
        .await?;
        if other.is_some() {
            return Ok(other);
        }
        // A new row is not live (heartbeat 0) until the first lease round.
        sqlx::query(
            "INSERT INTO herald_instances (instance_name, started_ts, heartbeat_ts, signing_key) \
             VALUES ($1, 0, 0, $2) ON CONFLICT (instance_name) DO UPDATE \
             SET signing_key = EXCLUDED.signing_key",
        )
        .bind(me)
        .bind(signing_key)
        .execute(pool)
        .await?;
        Ok(None)
    }

    /// One round of `me`'s lease task (see the module's comment), leases
    /// lasting `lease_ms` from the moment each statement runs. On SQLite:
    /// every shard, nothing written.
    pub async fn tick(&self, me: &str, started_ts: i64, lease_ms: i64) -> Result<Tick, StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(Tick {
                held: ShardSet::all(),
                live: vec![me.to_owned()],
                target: usize::from(SHARDS),
            });
        };
        let renewed: Vec<i32> = sqlx::query_scalar(&format!(
            "UPDATE herald_shards SET expires_at = {NOW} + $1 \
             WHERE instance_name = $2 AND expires_at > {NOW} RETURNING shard"
        ))
        .bind(lease_ms)
        .bind(me)
        .fetch_all(pool)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO herald_instances (instance_name, started_ts, heartbeat_ts) \
             VALUES ($1, $2, {NOW}) ON CONFLICT (instance_name) DO UPDATE \
             SET started_ts = EXCLUDED.started_ts, heartbeat_ts = EXCLUDED.heartbeat_ts, \
             left_ts = NULL"
        ))
        .bind(me)
        .bind(started_ts)
        .execute(pool)
        .await?;
        let live: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT instance_name FROM herald_instances \
             WHERE heartbeat_ts > {NOW} - $1 AND left_ts IS NULL ORDER BY instance_name"
        ))
        .bind(lease_ms)
        .fetch_all(pool)
        .await?;
        let target = fair_share(&live, me);
        let mut held: ShardSet = renewed
            .iter()
            .filter_map(|s| u16::try_from(*s).ok())
            .collect();
        if held.len() < target {
            let wanted = i64::try_from(target - held.len()).unwrap_or(0);
            // Free or lapsed rows only, re-checked by the UPDATE itself: a
            // row another instance claims meanwhile is skipped, never taken.
            let claimed: Vec<i32> = sqlx::query_scalar(&format!(
                "UPDATE herald_shards SET instance_name = $1, expires_at = {NOW} + $2, \
                 generation = generation + 1 \
                 WHERE shard IN (SELECT shard FROM herald_shards \
                   WHERE instance_name IS NULL OR expires_at IS NULL \
                   OR expires_at <= {NOW} - {LAPSED_COOL_DOWN_MS} \
                   ORDER BY shard LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 AND (instance_name IS NULL OR expires_at IS NULL \
                   OR expires_at <= {NOW} - {LAPSED_COOL_DOWN_MS}) \
                 RETURNING shard"
            ))
            .bind(me)
            .bind(lease_ms)
            .bind(wanted)
            .fetch_all(pool)
            .await?;
            for shard in claimed {
                if let Ok(shard) = u16::try_from(shard) {
                    held.insert(shard);
                }
            }
        }
        Ok(Tick { held, live, target })
    }

    /// Frees `shards` if `me` holds them (the instance has stopped sending
    /// them already).
    pub async fn release(&self, me: &str, shards: &ShardSet) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let list: Vec<i32> = shards.iter().map(i32::from).collect();
        sqlx::query(
            "UPDATE herald_shards SET instance_name = NULL, expires_at = NULL \
             WHERE instance_name = $1 AND shard = ANY($2)",
        )
        .bind(me)
        .bind(&list)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// `me` stops cleanly: every shard it holds is freed and it no longer
    /// counts as live, so the others share its shards at their next round.
    pub async fn leave(&self, me: &str) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        sqlx::query(
            "UPDATE herald_shards SET instance_name = NULL, expires_at = NULL \
             WHERE instance_name = $1",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE herald_instances SET left_ts = {NOW} WHERE instance_name = $1"
        ))
        .bind(me)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every instance the database knows, with the shards each holds (an
    /// unexpired lease) and whether it is live (a heartbeat within
    /// `lease_ms`). On SQLite: `me` alone, holding every shard.
    pub async fn instances(
        &self,
        me: &str,
        started_ts: i64,
        lease_ms: i64,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        let Db::Postgres(pool) = &self.pool else {
            return Ok(vec![InstanceRow {
                name: me.to_owned(),
                started_ts,
                heartbeat_ts: crate::now_ms(),
                live: true,
                shard_count: u32::from(SHARDS),
                shards: (0..SHARDS).collect(),
            }]);
        };
        let rows: Vec<(String, i64, i64, bool)> = sqlx::query_as(&format!(
            "SELECT instance_name, started_ts, heartbeat_ts, \
             heartbeat_ts > {NOW} - $1 AND left_ts IS NULL \
             FROM herald_instances ORDER BY instance_name"
        ))
        .bind(lease_ms)
        .fetch_all(pool)
        .await?;
        let held: Vec<(i32, String)> = sqlx::query_as(&format!(
            "SELECT shard, instance_name FROM herald_shards \
             WHERE instance_name IS NOT NULL AND expires_at > {NOW} ORDER BY shard"
        ))
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, started_ts, heartbeat_ts, live)| {
                let shards: Vec<u16> = held
                    .iter()
                    .filter(|(_, owner)| *owner == name)
                    .filter_map(|(shard, _)| u16::try_from(*shard).ok())
                    .collect();
                InstanceRow {
                    shard_count: u32::try_from(shards.len()).unwrap_or(u32::MAX),
                    shards,
                    name,
                    started_ts,
                    heartbeat_ts,
                    live,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_cover_every_shard() {
        for n in 1..=7 {
            let live: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
            let total: usize = live.iter().map(|me| fair_share(&live, me)).sum();
            assert_eq!(total, 256, "{n} instances");
        }
        let three = vec!["a".to_owned(), "b".into(), "c".into()];
        assert_eq!(fair_share(&three, "a"), 86);
        assert_eq!(fair_share(&three, "c"), 85);
    }
}
