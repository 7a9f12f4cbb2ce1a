//! Forgetting a destination (`DELETE /_herald/admin/v1/federation/
//! destinations/<d>`): its `destinations` row, its rooms, its queued PDUs
//! and EDUs and its last error go in one transaction; its history stays,
//! with a `forgotten` entry naming the admin and what went. Accepted
//! events no queue needs any more are left to the sender's usual pruning.

use herald_shared::{Forgotten, HistoryEvent};

use super::db::on_tx;
use super::destinations::to_the_end;
use super::history::NewEntry;
use super::shared_index::Edit;
use super::{now_ms, Destinations, StoreError};

impl Destinations {
    /// Forgets `name`; `None` when it is not known.
    pub async fn forget(
        &self,
        name: &str,
        actor: Option<&str>,
    ) -> Result<Option<Forgotten>, StoreError> {
        self.writable()?;
        let (this, name, actor) = (self.clone(), name.to_owned(), actor.map(str::to_owned));
        to_the_end(async move { this.forget_now(&name, actor).await }).await
    }

    async fn forget_now(
        &self,
        name: &str,
        actor: Option<String>,
    ) -> Result<Option<Forgotten>, StoreError> {
        if !self.pool.can_hold(name) {
            return Ok(None);
        }
        let _writer = self.writer.lock().await;
        let _history = self.outages.writer.lock().await;
        // Immediate: it reads, then writes, beside writers that take
        // neither of the locks above (pruning, dropped queues).
        // (PostgreSQL: `FOR UPDATE` holds the row until the commit.)
        let mut tx = self.pool.begin_write().await?;
        let known = on_tx!(&mut tx, |conn, pg| sqlx::query(if pg {
            "SELECT 1 FROM destinations WHERE destination = $1 FOR UPDATE"
        } else {
            "SELECT 1 FROM destinations WHERE destination = $1"
        })
        .bind(name)
        .fetch_optional(conn)
        .await?
        .is_some());
        if !known {
            return Ok(None);
        }
        // Rows that name it first (foreign keys), then the row itself.
        let mut counts = [0u64; 3];
        for (i, table) in ["destination_rooms", "destination_pdus", "destination_edus"]
            .into_iter()
            .enumerate()
        {
            counts[i] = on_tx!(&mut tx, |conn| sqlx::query(&format!(
                "DELETE FROM {table} WHERE destination = $1"
            ))
            .bind(name)
            .execute(conn)
            .await?
            .rows_affected());
        }
        for table in ["destination_health", "destinations"] {
            on_tx!(&mut tx, |conn| sqlx::query(&format!(
                "DELETE FROM {table} WHERE destination = $1"
            ))
            .bind(name)
            .execute(conn)
            .await
            .map(drop))?;
        }
        tx.commit().await?;
        let [rooms, queued_pdus, queued_edus] = counts;
        self.index.apply(vec![Edit::Remove(name.to_owned())]).await;
        let entry = NewEntry {
            actor,
            message: Some(format!(
                "{rooms} rooms, {queued_pdus} queued PDUs and {queued_edus} queued EDUs removed"
            )),
            ..NewEntry::default()
        };
        // The forget is committed: a history that cannot be written is
        // logged, not the answer (and no outage stays open for it).
        self.outages.open.lock().remove(name);
        if let Err(e) = self
            .add_entry_now(name, now_ms(), HistoryEvent::Forgotten, entry)
            .await
        {
            tracing::warn!(destination = ?name, error = %e, "could not note the forget in the history");
        }
        Ok(Some(Forgotten {
            destination: name.to_owned(),
            rooms,
            queued_pdus,
            queued_edus,
        }))
    }
}
