//! What the tests and benches that run the real `herald` binary share: a
//! free loopback port to give it, and the child process, killed (SIGKILL)
//! and reaped when dropped so that a failing test leaves nothing running;
//! its config, its start and its log; the body its intake API takes; the
//! wait until receivers hold every event it acknowledged; and the seed of a
//! test's random choices.

// Each test or bench that includes this module uses what it needs of it.
#![allow(dead_code)]

use std::process::Child;

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `herald` child, killed and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The config of a `herald serve` that sends: federation over TLS with the
/// loopback certificate `cert_path` (its key `key_path`), loopback
/// whitelisted, the intake API on with `token`, its database in `dir`;
/// `extra` is appended (more top-level keys, then any sections).
pub fn sending_config(
    dir: &std::path::Path,
    (cert_path, key_path): (&std::path::Path, &std::path::Path),
    (admin_port, federation_port): (u16, u16),
    token: &str,
    extra: &str,
) -> String {
    format!(
        "server_name = \"127.0.0.1:{federation_port}\"\n\
         database = {db:?}\n\
         listen = \"127.0.0.1:{admin_port}\"\n\
         federation_listen = \"127.0.0.1:{federation_port}\"\n\
         tls_certificate_path = {cert_path:?}\n\
         tls_private_key_path = {key_path:?}\n\
         ip_range_whitelist = [\"127.0.0.0/8\"]\n\
         federation_custom_ca_list = [{cert_path:?}]\n\
         sender_api_token = \"{token}\"\n{extra}",
        db = dir.join("herald.db"),
    )
}

/// Starts `herald serve --config <config>` with its log (`RUST_LOG=info`)
/// in `log`, and waits (up to 30 s) until `admin` accepts connections; on
/// failure, the log's last lines.
pub async fn start_serve(
    config: &std::path::Path,
    log: &std::path::Path,
    admin: &str,
) -> Result<Process, String> {
    let file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("spawn herald: {e}"))?;
    let process = Process(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        if std::time::Instant::now() >= deadline {
            return Err(format!("herald did not start:\n{}", log_tail(log, 30)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(process)
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(log: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// [`sending_config`] on `database` (an SQLite path or a `postgresql://`
/// URL) instead of the file in `dir`, with the signing key in `dir` (on
/// PostgreSQL there is no database directory to put it beside), so that
/// configs differing only in `database` are the same server.
pub fn sending_config_on(
    database: &str,
    dir: &std::path::Path,
    cert: (&std::path::Path, &std::path::Path),
    ports: (u16, u16),
    token: &str,
    extra: &str,
) -> String {
    let text = sending_config(dir, cert, ports, token, extra);
    let file = format!("database = {:?}\n", dir.join("herald.db"));
    let own = format!(
        "database = {database:?}\nsigning_key_path = {:?}\n",
        dir.join("herald.signing.key")
    );
    text.replace(&file, &own)
}

/// One event of the intake API's body: an `m.room.message` `id` in `room`
/// (its body the ID), for `destinations`.
pub fn intake_event(
    id: &str,
    room: &str,
    destinations: &(impl serde::Serialize + ?Sized),
) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "room_id": room,
        "pdu": {"event_id": id, "room_id": room,
                "type": "m.room.message", "content": {"body": id}},
        "destinations": destinations,
    })
}

/// The intake API's body (`POST /_herald/v1/send/pdus`): an
/// [`intake_event`] for each of `ids`, each for `destinations`.
pub fn intake_body(
    ids: &[String],
    room: &str,
    destinations: &(impl serde::Serialize + ?Sized),
) -> serde_json::Value {
    let events: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| intake_event(id, room, destinations))
        .collect();
    serde_json::json!({ "events": events })
}

/// Waits (bounded by `within`) until each of `receivers` holds every event
/// of `expected`; else fails naming the receiver, how many it is missing,
/// a few of them, and `logs()` (the servers' last log lines).
pub async fn wait_delivered_within(
    receivers: &[&herald::demo::homeserver::Homeserver],
    expected: &std::collections::HashSet<String>,
    within: std::time::Duration,
    logs: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + within;
    for rx in receivers {
        loop {
            let got: std::collections::HashSet<String> =
                rx.received().event_ids().into_iter().collect();
            let missing: Vec<&String> = expected.difference(&got).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} is missing {} of {} acknowledged events, e.g. {:?}\n{}",
                rx.name(),
                missing.len(),
                expected.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The seed of a test's random choices: the environment variable `var`
/// when set (to replay a failure), else the clock; printed either way.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("random seed {seed} (replay with {var}={seed})");
    seed
}
