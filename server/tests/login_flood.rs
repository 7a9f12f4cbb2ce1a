//! The login route against the real binary (`herald serve` as a child
//! process, the test profile's build, whose Argon2 is optimised as in a
//! release: see `[profile.dev.package.argon2]`): a flood of failed logins
//! from many addresses keeps the server's memory bounded, and a user name
//! cannot forge lines in the server's log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "../benches/flood/mod.rs"]
mod flood;
mod process;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flood::{Flood, Herald};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// 600 wrong passwords from 200 addresses, 32 at a time, with the global
/// failed-login limit lifted so that every attempt reaches the password
/// threads: the server's peak RSS stays under 150 MB (it reached 5.3 GB
/// when Argon2 ran on tokio's blocking threads), every answer is 403 or 429
/// `M_LIMIT_EXCEEDED`, and the admin's list requests go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_flood_keeps_memory_bounded() {
    let flood = Flood {
        addresses: 200,
        per_address: 3,
        concurrency: 32,
    };
    let run = flood::run(
        HERALD,
        "[rc_login.global_failed_attempts]\nper_second = 100000\nburst_count = 100000\n",
        &flood,
        30,
    )
    .await;
    let summary = run.summary("test profile binary");
    eprintln!("{summary}");
    let answered: usize = run.flood.answers.values().sum();
    assert_eq!(answered, 600, "{summary}");
    for (status, errcode) in run.flood.answers.keys() {
        assert!(
            (*status, errcode.as_str()) == (403, "M_FORBIDDEN")
                || (*status, errcode.as_str()) == (429, "M_LIMIT_EXCEEDED"),
            "{summary}"
        );
    }
    assert!(
        run.flood.answers.get(&(403, "M_FORBIDDEN".into())) >= Some(&20),
        "the passwords were checked: {summary}"
    );
    assert!(run.peak_kb < 150 * 1024, "{summary}");
    // The password threads still answer after the flood (not wedged).
    assert_eq!(run.admin_after, 200, "{summary}");
    // The admin's list kept answering during the flood (a loose bound: the
    // machine is shared; the bench records the figures).
    assert!(!run.loaded.0.is_empty(), "{summary}");
    assert!(run.loaded.percentile(0.5) < 100.0, "{summary}");
}

/// A failed login's user name is logged escaped: a newline or NUL in it
/// cannot start a line of its own in the server's log.
#[tokio::test]
async fn a_user_name_cannot_forge_log_lines() {
    let herald = Herald::start(HERALD, "").await;
    let forged = "x\nFORGED line 2026-01-01T00:00:00Z  INFO herald: admin logged in\0";
    let client = flood::client_from(IpAddr::from([127, 0, 0, 1]));
    let (status, body) = herald.login(&client, forged, "wrong").await;
    assert_eq!(status, 403, "{body}");
    // The log line is written as the answer goes out: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = herald.log_text();
        if log.contains("failed login") {
            break log;
        }
        assert!(Instant::now() < deadline, "no `failed login` line:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Logged lower-cased, as the account is looked up.
    let escaped = r#"user="x\nforged line 2026-01-01t00:00:00z  info herald: admin logged in\0""#;
    let line = log.lines().find(|l| l.contains("failed login")).unwrap();
    assert!(line.contains(escaped), "{line}");
    assert!(
        !log.lines().any(|l| l.starts_with("forged")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\0'), "a NUL in the log:\n{log:?}");
}
