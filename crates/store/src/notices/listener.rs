//! The listener of the notices: its connection (a pool of its own, made
//! anew on every reconnect), the pings that tell a silent one, and the
//! reader that hands what it hears to `apply`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::apply::process;
use super::{Queued, DESTINATIONS, PING, QUEUED, RESETS};
use crate::{Destinations, StoreError};

/// How often the listener pings itself.
const PING_EVERY: Duration = Duration::from_secs(2);
/// A listener that hears nothing (not even its pings) this long is lost.
const SILENCE: Duration = Duration::from_secs(7);
/// Notices waiting for the processing task before the reader waits.
const BUFFERED: usize = 8_192;
/// Longest pause between two tries to reconnect the listener.
const MOST_PAUSE: Duration = Duration::from_secs(1);

/// A listener's connection: a pool of its own (one connection listening,
/// one for its pings, never one of the store's), made anew on every
/// reconnect so a connection that went silent is simply left behind.
struct Connected {
    listener: PgListener,
    pool: PgPool,
    pid: i32,
}

/// Connects a new listener and listens on every channel.
async fn connect(options: &PgConnectOptions) -> Result<Connected, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.clone());
    let connected = async {
        let mut listener = PgListener::connect_with(&pool).await?;
        // A lost connection is replaced whole, by `read`.
        listener.eager_reconnect(false);
        listener
            .listen_all([DESTINATIONS, RESETS, QUEUED, PING])
            .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut listener)
            .await?;
        Ok::<_, sqlx::Error>((listener, pid))
    };
    match connected.await {
        Ok((listener, pid)) => Ok(Connected {
            listener,
            pool,
            pid,
        }),
        Err(e) => {
            pool.close().await;
            Err(e)
        }
    }
}

/// The listener, connected and listening (before the index is loaded, so
/// that no write committed after the load goes unheard).
pub(crate) struct Listening {
    connected: Connected,
    options: PgConnectOptions,
    instance: Arc<str>,
}

/// Connects the listener (see [`Connected`]).
pub(crate) async fn listen(url: &str, instance: &str) -> Result<Listening, StoreError> {
    let unreachable = |detail: String| StoreError::PgUnreachable {
        target: crate::synapse::without_password(url),
        detail,
    };
    let options = crate::postgres::connect_options(url, instance)
        .map_err(|e| unreachable(format!("not a PostgreSQL URL: {e}")))?;
    let connected = connect(&options)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(Listening {
        connected,
        options,
        instance: instance.into(),
    })
}

impl Listening {
    /// Starts handling notices for this store: the reader (which
    /// reconnects), its pings, and the task that applies what it hears.
    pub(crate) fn start(
        self,
        destinations: Destinations,
        queued: broadcast::Sender<Queued>,
    ) -> Notices {
        let pid = Arc::new(AtomicI32::new(self.connected.pid));
        let pool = Arc::new(parking_lot::Mutex::new(self.connected.pool.clone()));
        let (tx, rx) = mpsc::channel(BUFFERED);
        let reader = Reader {
            options: self.options,
            tx,
            pid: pid.clone(),
            pool: pool.clone(),
        };
        let tasks = vec![
            tokio::spawn(reader.run(self.connected)),
            tokio::spawn(ping(pool.clone())),
            tokio::spawn(process(rx, self.instance, destinations, queued)),
        ];
        Notices { tasks, pool, pid }
    }

    /// Closes the listener without starting (the store did not open).
    pub(crate) async fn close(self) {
        drop(self.connected.listener);
        self.connected.pool.close().await;
    }
}

/// The running notices of one store; stopped by [`crate::Store::close`].
pub struct Notices {
    tasks: Vec<JoinHandle<()>>,
    /// The listener's pool now.
    pool: Arc<parking_lot::Mutex<PgPool>>,
    pid: Arc<AtomicI32>,
}

impl Notices {
    /// The PostgreSQL backend process of the listener's connection now.
    pub fn backend_pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) async fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        let pool = self.pool.lock().clone();
        // A connection that went silent is not waited for.
        let _ = tokio::time::timeout(Duration::from_secs(1), pool.close()).await;
    }
}

/// Pings the listener through its own pool every [`PING_EVERY`], so that a
/// connection that went silent (a network cut without a reset) is noticed.
async fn ping(pool: Arc<parking_lot::Mutex<PgPool>>) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let pool = pool.lock().clone();
        let sent = sqlx::query("SELECT pg_notify('herald_ping', '')").execute(&pool);
        if let Ok(Err(e)) = tokio::time::timeout(PING_EVERY, sent).await {
            tracing::debug!(error = %e, "notices: cannot ping the listener");
        }
    }
}

/// What the reader hands over.
pub(super) enum Heard {
    Notice(PgNotification),
    /// The listener was lost and listens again: notices may be missing.
    Reconnected,
    /// Nothing heard (a retry's timer).
    Nothing,
}

struct Reader {
    options: PgConnectOptions,
    tx: mpsc::Sender<Heard>,
    pid: Arc<AtomicI32>,
    /// The pool of the connection now, for the pings and the stop.
    pool: Arc<parking_lot::Mutex<PgPool>>,
}

impl Reader {
    /// Reads notices until the store closes. A connection that fails, or
    /// is silent longer than [`SILENCE`] (its own pings would have come),
    /// is left behind and a new one made (pausing up to [`MOST_PAUSE`]
    /// between tries); once it listens, the processing task is told that
    /// notices may be missing.
    async fn run(self, first: Connected) {
        let mut current = Some(first);
        let mut pause = Duration::from_millis(50);
        loop {
            let Some(connected) = current.as_mut() else {
                match connect(&self.options).await {
                    Ok(connected) => {
                        self.pid.store(connected.pid, Ordering::Relaxed);
                        *self.pool.lock() = connected.pool.clone();
                        current = Some(connected);
                        pause = Duration::from_millis(50);
                        tracing::info!("notices from other instances: listening again");
                        if self.tx.send(Heard::Reconnected).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "notices: cannot reconnect yet");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MOST_PAUSE);
                    }
                }
                continue;
            };
            let lost = match tokio::time::timeout(SILENCE, connected.listener.try_recv()).await {
                Ok(Ok(Some(notice))) if notice.channel() == PING => None,
                Ok(Ok(Some(notice))) => {
                    if self.tx.send(Heard::Notice(notice)).await.is_err() {
                        return;
                    }
                    None
                }
                Ok(Ok(None)) => Some("connection closed".to_owned()),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("nothing heard for {SILENCE:?}")),
            };
            if let Some(why) = lost {
                tracing::warn!(why, "notices from other instances: connection lost");
                // Left behind: closing it may wait on a silent peer.
                current = None;
            }
        }
    }
}
