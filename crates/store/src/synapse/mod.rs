//! Synapse's own database as a read-only source of destinations ("attached
//! mode"), and `herald import-synapse`.
//!
//! Attached, [`Store::open_attached`] opens Herald's own database as usual
//! (history, health, users) and serves `destinations` / `destination_rooms`
//! from Synapse's database, never writing to it: SQLite is opened read-only
//! (`SQLITE_OPEN_READONLY`, never created), PostgreSQL through a pool whose
//! sessions are `default_transaction_read_only=on`, and every admin write
//! answers [`StoreError::ReadOnly`]. One job per file: [`source`] (connect,
//! check the schema, the reads), [`copy`] (PostgreSQL's binary COPY of the
//! rows, read), [`buckets`] (the refresh's checksums of the loaded rows),
//! [`refresh`] (keeping the index fresh), [`import`] (copying Synapse's
//! rows into Herald's own database).

mod buckets;
mod copy;
pub mod import;
pub mod refresh;
pub(crate) mod source;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::{Destinations, Outbox, Store, StoreError, Users};

pub use import::{import_synapse, ImportCounts, ImportProgress};
pub use source::{KNOWN_SCHEMA_VERSIONS, SETTING};

/// Where Synapse's database is and how often Herald looks for changes.
/// `Debug` never shows a password in `database`.
#[derive(Clone)]
pub struct SynapseSettings {
    /// An SQLite path or a `postgresql://` (or `postgres://`) URL.
    pub database: String,
    /// How often the refresh looks for rows Synapse changed.
    pub refresh_interval: Duration,
}

impl std::fmt::Debug for SynapseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseSettings")
            .field("database", &without_password(&self.database))
            .field("refresh_interval", &self.refresh_interval)
            .finish()
    }
}

/// `database` with the password of a `scheme://user:password@host/…` URL,
/// and any `password=` in its query, replaced by `***` (a path or a URL
/// without one is returned as it is; a URL that does not parse is shown as
/// its scheme alone).
pub fn without_password(database: &str) -> String {
    let Some((scheme, _)) = database.split_once("://") else {
        return database.to_owned();
    };
    let Ok(mut url) = url::Url::parse(database) else {
        return format!("{scheme}://…");
    };
    let in_query = url
        .query_pairs()
        .any(|(key, _)| key.eq_ignore_ascii_case("password"));
    if url.password().is_none() && !in_query {
        return database.to_owned();
    }
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return format!("{scheme}://…");
    }
    if in_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key.eq_ignore_ascii_case("password") {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl SynapseSettings {
    /// The default refresh interval (see the README's "Use with an
    /// existing Synapse" for the worst-case delay it gives).
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);
}

/// What attached [`Destinations`] hold: the source and the refresh's stop.
pub(crate) struct Attached {
    pub(crate) source: source::Source,
    /// Dropping or sending on it stops the refresh task.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// The refresh's state; held while a cycle or `refresh_one` reads and
    /// applies, so their edits apply in the order they read.
    pub(crate) applying: tokio::sync::Mutex<refresh::Cycles>,
}

impl Attached {
    /// Closes Synapse's database. The detector's connection goes back
    /// first (closing the pool waits for every connection checked out of
    /// it), and the refresh's lock is held throughout, so a cycle waiting
    /// for it cannot check out another before the pool is closed.
    pub(crate) async fn close(&self) {
        let mut cycles = self.applying.lock().await;
        cycles.held = None;
        self.source.close().await;
    }
}

impl Store {
    /// Herald's own database at `own` (its users, history, health tables
    /// as today) with `destinations`/`destination_rooms` read — never
    /// written — from Synapse's database. Starts the refresh task (stopped
    /// by [`Store::close`]). Errors name the setting (`[synapse] database`)
    /// and say what is wrong: does not answer, not Synapse's database (no
    /// `schema_version` / no `destinations` table), a schema version not
    /// known. Synapse's database is checked before Herald's own is opened.
    pub async fn open_attached(own: &Path, synapse: &SynapseSettings) -> Result<Store, StoreError> {
        let source = source::Source::open(&synapse.database).await?;
        let mut held = None;
        let (seen, index) = match refresh::Seen::load(&source, &mut held).await {
            Ok(loaded) => loaded,
            Err(e) => {
                drop(held);
                source.close().await;
                return Err(e);
            }
        };
        // Herald's own file, without loading its `destinations`: the index
        // is Synapse's.
        let store = match Store::open_reading(own, false).await {
            Ok(store) => store,
            Err(e) => {
                drop(held);
                source.close().await;
                return Err(e);
            }
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let attached = Arc::new(Attached {
            source,
            stop,
            applying: tokio::sync::Mutex::new(refresh::Cycles {
                seen,
                held,
                count: 0,
            }),
        });
        let destinations =
            match Destinations::attached(store.pool.clone(), index, attached.clone()).await {
                Ok(destinations) => destinations,
                Err(e) => {
                    attached.close().await;
                    store.close().await;
                    return Err(e);
                }
            };
        refresh::spawn(
            destinations.index.clone(),
            Arc::downgrade(&attached),
            stopped,
            synapse.refresh_interval,
        );
        Ok(Store {
            outbox: Outbox::new(store.pool.clone(), destinations.clone()),
            users: Users::new(store.pool.clone()),
            leases: store.leases,
            destinations,
            pool: store.pool,
            notices: None,
        })
    }
}

impl Destinations {
    /// Whether destinations come from Synapse's database (read-only).
    pub fn is_attached(&self) -> bool {
        self.attached.is_some()
    }

    /// Re-reads one destination's row from Synapse's database now and
    /// applies it to the index (called right after a reset forwarded to
    /// Synapse answers 200). A row that is gone leaves the index too. Not
    /// attached, it re-reads Herald's own row.
    pub async fn refresh_one(&self, name: &str) -> Result<(), StoreError> {
        let Some(attached) = &self.attached else {
            return self.refresh_own(name).await;
        };
        let _applying = attached.applying.lock().await;
        let edit = match attached.source.destination(name).await? {
            Some(row) => crate::shared_index::Edit::Put(row),
            None => crate::shared_index::Edit::Remove(name.to_owned()),
        };
        self.index.apply(vec![edit]).await;
        Ok(())
    }

    /// Runs one refresh cycle now, as the task does (`compare`: compare the
    /// buckets even if the change detector is still), for benchmarks and
    /// tests; `None` when not attached.
    pub async fn refresh_now(
        &self,
        compare: bool,
    ) -> Result<Option<refresh::CycleReport>, StoreError> {
        let Some(attached) = &self.attached else {
            return Ok(None);
        };
        refresh::run_cycle(attached, &self.index, compare)
            .await
            .map(Some)
    }

    /// Stops the refresh task (attached only).
    pub(crate) async fn detach(&self) {
        if let Some(attached) = &self.attached {
            let _ = attached.stop.send(true);
            attached.close().await;
        }
    }

    /// [`StoreError::ReadOnly`] when attached: admin writes never reach
    /// Synapse's database.
    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        match self.attached {
            Some(_) => Err(StoreError::ReadOnly),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let s = SynapseSettings {
            database: "postgresql://reader:s3cret@db.example:5432/synapse?sslmode=require".into(),
            refresh_interval: Duration::from_secs(2),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgresql://reader:***@db.example:5432/synapse"),
            "{shown}"
        );
        assert_eq!(
            without_password("/var/lib/synapse/homeserver.db"),
            "/var/lib/synapse/homeserver.db"
        );
        assert_eq!(
            without_password("postgresql://reader@db/synapse"),
            "postgresql://reader@db/synapse"
        );
        // A password given as a parameter, or one whose `/` or `#` ends the
        // authority early, is not shown either.
        for url in [
            "postgresql:///synapse?host=/run/postgresql&password=s3cret",
            "postgresql://reader@db/synapse?sslmode=require&PASSWORD=s3cret",
            "postgresql://reader:s3/cret@db/synapse",
            "postgresql://reader:s3#cret@db/synapse",
        ] {
            let shown = without_password(url);
            assert!(
                !shown.contains("s3cret") && !shown.contains("cret@"),
                "{url}: {shown}"
            );
        }
    }
}
