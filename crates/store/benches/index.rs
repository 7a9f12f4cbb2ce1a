//! The destinations index alone, in memory, at 1M rows (`HERALD_BENCH_ROWS`
//! to change): the time to build it through `IndexBuilder`, and the median
//! time of a filtered first page for needles from common to missing (a new
//! filter: the arena scanned), and of the next pages of the same filter
//! (its match set reused), the match counts checked against a plain scan of
//! the names.
//!
//! Run: `cargo bench -p herald-store --bench index` (`HERALD_BENCH_NAMES=FILE`
//! for a list of names of your own, one a line).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches may panic

use std::time::Instant;

use herald_shared::{DestinationsQuery, Direction, OrderBy};
use herald_store::{DestinationIndex, NullsOrder};

/// splitmix64: deterministic and dependency-free.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const WORDS: &[&str] = &[
    "alpha", "aurora", "beacon", "birch", "cobalt", "comet", "coral", "delta", "ember", "fable",
    "falcon", "fjord", "garnet", "harbor", "hazel", "indigo", "iris", "jade", "juniper", "kelp",
    "lantern", "lumen", "maple", "meadow", "nebula", "nimbus", "oasis", "onyx", "orbit", "pixel",
];
const TLDS: &[&str] = &[
    "org", "org", "org", "com", "com", "net", "de", "de", "fr", "io", "chat",
];

/// Names shaped as the admin API bench's: ~70% `matrix<i>.<w>-<w>.<tld>`.
fn name(i: usize, state: &mut u64) -> String {
    let mut pick = |items: &[&'static str]| items[(next(state) % items.len() as u64) as usize];
    let (w1, w2, tld) = (pick(WORDS), pick(WORDS), pick(TLDS));
    match next(state) % 100 {
        0..=69 => format!("matrix{i}.{w1}-{w2}.{tld}"),
        70..=84 => format!("chat{i}.{w1}.{tld}"),
        _ => format!("{w1}{i}.{w2}.{tld}"),
    }
}

fn main() {
    let n: usize = std::env::var("HERALD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut state = 0x4845_5241_4c44;
    // `HERALD_BENCH_NAMES=FILE`: the names of FILE (one a line, in that
    // order) instead, e.g. `sqlite3 herald.db 'SELECT destination FROM
    // destinations ORDER BY rowid' > FILE`.
    let names: Vec<String> = match std::env::var("HERALD_BENCH_NAMES") {
        Ok(file) => std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(_) => (0..n).map(|i| name(i, &mut state)).collect(),
    };
    let n = names.len();
    let t = Instant::now();
    let mut builder = DestinationIndex::builder(NullsOrder::Smallest);
    for (i, d) in names.iter().enumerate() {
        let v = (i as i64).wrapping_mul(2_654_435_761) % 1_000_000;
        let column = |k: i64| (v % k != 0).then_some(v * k);
        builder.push_columns(d, [column(3), column(5), column(7), column(11)], 0);
    }
    let pushed = t.elapsed();
    let index = builder.finish();
    println!(
        "{n} rows: pushed in {:.0} ms, finished (sorted, hashed) in {:.0} ms",
        pushed.as_secs_f64() * 1e3,
        (t.elapsed() - pushed).as_secs_f64() * 1e3
    );
    println!("| needle | hits | order | new filter: median ms | min ms | next pages: median ms |");
    println!("|---|---:|---|---:|---:|---:|");
    // Each timed first page follows an untimed page of another needle, so
    // it scans (the index keeps only the last filter's match set); the
    // next pages (`from` = 100, 200, ...) of the same needle reuse it.
    let evict = DestinationsQuery {
        destination: Some("evict-the-last-filter".into()),
        ..Default::default()
    };
    for needle in [
        "matrix", ".com", "net", "meadow", "9999", "quokka", "xqzjvw",
    ] {
        let hits = names
            .iter()
            .filter(|d| d.to_ascii_lowercase().contains(needle))
            .count() as u64;
        for (order_by, dir) in [
            (OrderBy::Destination, Direction::Forwards),
            (OrderBy::RetryLastTs, Direction::Backwards),
        ] {
            let q = |from: u64| DestinationsQuery {
                from,
                destination: Some(needle.into()),
                order_by,
                dir,
                ..Default::default()
            };
            let time = |from: u64| {
                let t = Instant::now();
                let page = index.page(&q(from));
                let took = t.elapsed().as_secs_f64() * 1e3;
                assert_eq!(page.total, hits, "{needle}");
                assert_eq!(
                    page.destinations.len() as u64,
                    hits.saturating_sub(from).min(100)
                );
                took
            };
            let mut first: Vec<f64> = (0..31)
                .map(|_| {
                    assert_eq!(index.page(&evict).total, 0);
                    time(0)
                })
                .collect();
            let mut next: Vec<f64> = (1..=31).map(|k| time(100 * k)).collect();
            first.sort_by(f64::total_cmp);
            next.sort_by(f64::total_cmp);
            println!(
                "| {needle} | {hits} | {order_by:?} {dir:?} | {:.2} | {:.2} | {:.3} |",
                first[first.len() / 2],
                first[0],
                next[next.len() / 2],
            );
        }
    }
}
