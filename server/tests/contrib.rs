//! The shipped alert rules (`contrib/prometheus/herald-alerts.yml`) and
//! Grafana dashboard (`contrib/grafana/herald.json`) read only series Herald
//! exports: every `herald_*` and `synapse_*` name in them must be in a
//! scrape of `GET /metrics` of the real binary (`herald serve` as a child
//! process on 127.0.0.1, after it has delivered a PDU and an EDU to a
//! simulated homeserver, so that labelled families have samples), as a
//! sample or as a family its `# TYPE` line declares. `promtool check
//! rules` checks the rules' syntax (`make alerts`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod process;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald::demo::homeserver::{Behaviour, Homeserver};
use herald::demo::tls::LoopbackCert;
use process::{free_port, sending_config, Process};
use serde_json::json;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// Every series name a scrape offers: samples' names, and for each `# TYPE`
/// line the names its samples would have.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

/// The `herald_*` and `synapse_*` names a PromQL text uses.
fn used(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("herald_") || t.starts_with("synapse_"))
        .map(str::to_owned)
        .collect()
}

/// Every string value under the keys `expr`, `query` and `definition` of
/// the dashboard (its panels' queries and its variables').
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// A scrape of the binary after it has delivered a PDU and an EDU to a
/// simulated homeserver (so that its labelled families have samples).
async fn scrape_the_binary() -> String {
    const TOKEN: &str = "contrib-intake-token";
    let dir = tempfile::tempdir().unwrap();
    let cert = LoopbackCert::generate(dir.path()).unwrap();
    let receiver = Homeserver::start_with_cert(Behaviour::healthy(), &cert)
        .await
        .unwrap();
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
    let _child = Process(
        Command::new(HERALD)
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/_matrix/client/versions"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "herald serve did not answer on {base}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to = receiver.name();
    for (path, body) in [
        (
            "pdus",
            json!({"events": [{"event_id": "$contrib", "room_id": "!r:contrib.test",
                   "pdu": {"event_id": "$contrib", "room_id": "!r:contrib.test", "type": "m.room.message"},
                   "destinations": [to]}]}),
        ),
        (
            "edus",
            json!({"edus": [{"edu_type": "m.typing", "content": {}, "destinations": [to]}]}),
        ),
    ] {
        let response = client
            .post(format!("{base}/_herald/v1/send/{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    loop {
        let received = receiver.received();
        let edus: usize = received
            .transactions
            .iter()
            .map(|t| t.edu_types.len())
            .sum();
        if received.event_ids().len() == 1 && edus == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing delivered: {received:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The metrics are counted once the transaction's answer is recorded;
    // the PDU and the EDU may travel in two transactions.
    loop {
        let response = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if text.contains("herald_sender_pdus_sent_total 1\n")
            && text.contains("herald_sender_edus_sent_total 1\n")
        {
            return text;
        }
        assert!(Instant::now() < deadline, "no transaction counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_alert_rules_and_the_dashboard_use_only_series_herald_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = std::fs::read_to_string(root.join("contrib/prometheus/herald-alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("contrib/grafana/herald.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:?}");

    let exported = exported(&scrape_the_binary().await);
    // What the scrape must hold for the check to mean anything.
    assert!(
        exported.contains("herald_sender_transactions_total"),
        "{exported:?}"
    );
    assert!(exported.contains("synapse_federation_client_sent_transactions_total"));

    let from_rules = used(&rules);
    let from_dashboard: BTreeSet<String> = queries.iter().flat_map(|q| used(q)).collect();
    // The rules cover the sender, failures, the oldest event and intake.
    for name in [
        "herald_destinations_in_backoff",
        "herald_sender_destinations",
        "herald_sender_transactions_total",
        "herald_sender_oldest_undelivered_age_seconds",
        "herald_intake_requests_total",
    ] {
        assert!(from_rules.contains(name), "the rules do not use {name}");
    }
    assert!(rules.contains("up{job=\"herald\"}"), "no Herald-down rule");
    assert!(from_dashboard.len() >= 10, "{from_dashboard:?}");
    for (what, names) in [
        ("the alert rules", &from_rules),
        ("the dashboard", &from_dashboard),
    ] {
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} use series Herald does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn names_are_read_from_samples_type_lines_and_queries() {
    let scrape = "# TYPE a counter\n# TYPE h histogram\nb_total{x=\"1\"} 2\ng 1\n# EOF\n";
    let names = exported(scrape);
    for n in ["a_total", "h_bucket", "h_sum", "h_count", "b_total", "g"] {
        assert!(names.contains(n), "{n}: {names:?}");
    }
    assert!(!names.contains("a"));
    assert_eq!(
        used("sum(rate(herald_x_total{a=\"synapse_no\"}[5m])) / synapse_y"),
        // A label value that looks like a name is read as one: stricter.
        ["herald_x_total", "synapse_no", "synapse_y"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}
