//! A failed-login flood against the release binary (finding 1 of issue 11):
//! 600 wrong passwords from 200 loopback addresses (127.0.0.2–201, three
//! each, every one for a user of its own), 32 at a time, while an admin
//! lists destinations every 20 ms. Prints the server's peak RSS (VmHWM) and
//! the list latency quiet and during the flood, twice: with the default
//! `rc_login` limits, and with `global_failed_attempts` lifted so that every
//! attempt reaches the password threads (the worst case for memory).
//!
//! Run: `cargo bench -p herald --bench login_flood`
//! (`HERALD_FLOOD_ADDRESSES`, `HERALD_FLOOD_PER_ADDRESS`,
//! `HERALD_FLOOD_CONCURRENCY` change the flood.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod flood;
mod host;
#[path = "../tests/process/mod.rs"]
mod process;

use flood::Flood;
use host::{env_number, machine};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// The limit the target allows the server's peak RSS during the flood.
const PEAK_TARGET_MB: f64 = 150.0;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then there is nothing to measure.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let flood = Flood {
        addresses: env_number("HERALD_FLOOD_ADDRESSES", 200) as usize,
        per_address: env_number("HERALD_FLOOD_PER_ADDRESS", 3) as usize,
        concurrency: env_number("HERALD_FLOOD_CONCURRENCY", 32) as usize,
    };
    println!("{}; binary {HERALD}", machine());
    println!(
        "flood: {} failed logins from {} addresses, {} at a time",
        flood.addresses * flood.per_address,
        flood.addresses,
        flood.concurrency
    );
    let mut over = false;
    for (name, config) in [
        ("default rc_login", ""),
        (
            "global_failed_attempts lifted",
            "[rc_login.global_failed_attempts]\nper_second = 100000\nburst_count = 100000\n",
        ),
    ] {
        let run = flood::run(HERALD, config, &flood, 100).await;
        println!("{}", run.summary(name));
        over |= run.peak_kb as f64 / 1024.0 > PEAK_TARGET_MB;
    }
    if over {
        println!("peak RSS over the {PEAK_TARGET_MB} MB target");
        std::process::exit(1);
    }
}
