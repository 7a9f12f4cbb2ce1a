//! The demo's seeded data: a fresh database filled with realistic destinations in
//! every state an admin meets (healthy, never contacted, backing off for
//! minutes or for days, retry due, never reached, recovered), each with rooms.

use herald_shared::DestinationRoom;
use rand::{Rng, SeedableRng};

use herald_store::{now_ms, DestinationRow, Store, StoreError};

/// The demo's data is the same on every run.
pub const SEED: u64 = 0x4e52_414c_4421;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const HOSTS: &[&str] = &[
    "matrix", "chat", "synapse", "im", "hs", "m", "conduit", "dendrite", "talk", "comms",
];
const DOMAINS: &[&str] = &[
    "example.org",
    "example.com",
    "example.net",
    "fediverse.example",
    "uni-example.edu",
    "hackerspace.example",
    "riot-users.example",
    "opensource.example",
    "town.example",
    "family-home.example",
    "gaming.example",
    "cafe.example",
    "research.example",
];

/// The rows the demo seeds: `count` destinations spread over every state.
pub fn destinations(count: usize, seed: u64) -> Vec<(DestinationRow, Vec<DestinationRoom>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = now_ms();
    let mut out = Vec::with_capacity(count);
    let mut stream = 1_000i64;
    let mut taken = std::collections::HashSet::new();
    for i in 0..count {
        let host = HOSTS[rng.gen_range(0..HOSTS.len())];
        let domain = DOMAINS[rng.gen_range(0..DOMAINS.len())];
        let mut destination = match i % 17 {
            0 => format!("{host}.{domain}:8448"),
            9 => format!("127.0.0.{}:{}", i % 250 + 2, 8448 + i % 7),
            _ => format!("{host}{i}.{domain}"),
        };
        if i == 5 {
            destination = "[::1]:8448".into();
        }
        if !taken.insert(destination.clone()) {
            destination = format!("{host}{i}.{domain}");
            taken.insert(destination.clone());
        }
        stream += rng.gen_range(1..500);
        let last_ok = Some(stream);
        let (retry_last_ts, retry_interval, failure_ts, last_successful) = match i % 10 {
            // Healthy: delivered recently, no backoff.
            0..=3 => (Some(0), Some(0), None, last_ok),
            // Never contacted: a row with nothing but its name.
            4 => (None, None, None, None),
            // Backing off for minutes.
            5 => {
                let interval = rng.gen_range(10..60) * MINUTE;
                let last = now - rng.gen_range(1..interval / MINUTE) * MINUTE;
                (
                    Some(last),
                    Some(interval),
                    Some(last - rng.gen_range(1..6) * HOUR),
                    last_ok,
                )
            }
            // Backing off for days.
            6 => {
                let interval = rng.gen_range(2..7) * DAY;
                let last = now - rng.gen_range(1..40) * HOUR;
                (
                    Some(last),
                    Some(interval),
                    Some(last - rng.gen_range(5..30) * DAY),
                    last_ok,
                )
            }
            // Retry due: the backoff ended, the next attempt is pending.
            7 => {
                let interval = rng.gen_range(10..120) * MINUTE;
                let last = now - interval - rng.gen_range(1..30) * MINUTE;
                (Some(last), Some(interval), Some(last - 2 * HOUR), last_ok)
            }
            // Never reached: failing since the first try.
            8 => {
                let interval = rng.gen_range(1..7) * DAY;
                let last = now - rng.gen_range(1..24) * HOUR;
                (
                    Some(last),
                    Some(interval),
                    Some(last - rng.gen_range(1..60) * DAY),
                    None,
                )
            }
            // Recovered: was failing, a later send succeeded.
            _ => (Some(0), Some(0), None, Some(stream)),
        };
        let room_count = match i % 10 {
            4 => 0,
            _ if i == 0 => 240,
            _ => rng.gen_range(1..25),
        };
        let rooms = (0..room_count)
            .map(|r| DestinationRoom {
                room_id: format!(
                    "!{}{r}:{}",
                    random_localpart(&mut rng),
                    DOMAINS[r % DOMAINS.len()]
                ),
                stream_ordering: stream - rng.gen_range(0..stream.min(5_000)),
            })
            .collect();
        out.push((
            DestinationRow {
                destination,
                retry_last_ts,
                retry_interval,
                failure_ts,
                last_successful_stream_ordering: last_successful,
            },
            rooms,
        ));
    }
    out
}

fn random_localpart(rng: &mut impl Rng) -> String {
    (0..18)
        .map(|_| {
            let c = rng.gen_range(0..52u8);
            (if c < 26 { b'a' + c } else { b'A' + c - 26 }) as char
        })
        .collect()
}

/// Writes the demo rows into `store`.
pub async fn seed(store: &Store, count: usize) -> Result<(), StoreError> {
    let data = destinations(count, SEED);
    let rows: Vec<DestinationRow> = data.iter().map(|(r, _)| r.clone()).collect();
    store.destinations.put_destinations(&rows).await?;
    for (row, rooms) in &data {
        if !rooms.is_empty() {
            store
                .destinations
                .put_destination_rooms(&row.destination, rooms)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_state() {
        let data = destinations(240, SEED);
        let now = now_ms();
        let rows: Vec<&DestinationRow> = data.iter().map(|(r, _)| r).collect();
        let in_backoff = |r: &&&DestinationRow| r.retry_last_ts.is_some_and(|t| t != 0);
        assert!(
            rows.iter().any(|r| r.retry_last_ts.is_none()),
            "never contacted"
        );
        assert!(rows
            .iter()
            .any(|r| r.retry_last_ts == Some(0) && r.last_successful_stream_ordering.is_some()));
        assert!(rows
            .iter()
            .filter(in_backoff)
            .any(|r| r.retry_interval.unwrap() < HOUR));
        assert!(rows
            .iter()
            .filter(in_backoff)
            .any(|r| r.retry_interval.unwrap() >= 2 * DAY));
        assert!(rows
            .iter()
            .filter(in_backoff)
            .any(|r| r.retry_last_ts.unwrap() + r.retry_interval.unwrap() < now));
        assert!(rows
            .iter()
            .filter(in_backoff)
            .any(|r| r.last_successful_stream_ordering.is_none()));
        let mut names: Vec<&str> = rows.iter().map(|r| r.destination.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 240, "names are unique");
    }
}
