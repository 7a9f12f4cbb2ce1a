//! Text from the network cannot forge lines in the real binary's log:
//! `herald serve` as a child process sends a PDU to a simulated homeserver
//! (HTTPS on 127.0.0.1, verifying Herald's signature) whose answer refuses
//! it under a name with a newline in it (the PDU's own `event_id` field,
//! which the remote echoes as the key of its answer); Herald logs the refusal with that
//! name, read from the remote's answer, escaped on one line. (The login
//! user name, from a client, is covered in `tests/login_flood.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod process;

use process::{free_port, sending_config, Process};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use serde_json::json;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
const TOKEN: &str = "log-injection-secret";

#[tokio::test]
async fn a_remote_answer_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let (admin_port, federation_port) = (free_port(), free_port());
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        sending_config(
            dir.path(),
            (&cert.cert_path, &cert.key_path),
            (admin_port, federation_port),
            TOKEN,
            "",
        ),
    )
    .unwrap();
    let forged = "$x\nFORGED 2026-01-01T00:00:00Z  INFO herald: admin logged in";
    let rx = Homeserver::start_with_cert(
        Behaviour {
            refuse_event_ids: HashSet::from([forged.to_owned()]),
            ..Behaviour::healthy()
        },
        &cert,
    )
    .await
    .unwrap();

    let log_path = dir.path().join("herald.log");
    let _herald = Process(
        Command::new(HERALD)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let admin = format!("127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&admin).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "herald did not start:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let events = json!({"events": [{
        "event_id": "$refused",
        "room_id": "!r:herald.test",
        "pdu": {"event_id": forged, "room_id": "!r:herald.test",
                "type": "m.room.message", "content": {"body": "hi"}},
        "destinations": [rx.name()],
    }]});
    let resp = reqwest::Client::new()
        .post(format!("http://{admin}/_herald/v1/send/pdus"))
        .bearer_auth(TOKEN)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // The refusal is logged once the answer is read: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = log();
        if text.contains("destination refused a PDU") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no `destination refused a PDU` line (received: {:?}):\n{text}",
            rx.received().event_ids()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rx.received().event_ids(), [forged], "sent as given");
    let line = text
        .lines()
        .find(|l| l.contains("destination refused a PDU"))
        .unwrap();
    assert!(line.contains(r#"event_id="$x\nFORGED"#), "{line}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{text}"
    );
}
