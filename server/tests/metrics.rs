//! `GET /metrics` on the admin listener: OpenMetrics text with Synapse's
//! federation client series and the destinations in backoff, counted from
//! the same rows the admin API serves; every failure kind and Synapse's
//! sender series present from the start (their values under traffic:
//! `tests/sender_page.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::TestServer;
use herald::metrics::CONTENT_TYPE_OPENMETRICS;
use herald_shared::DestinationStatus;

#[tokio::test]
async fn metrics_count_the_destinations_in_backoff() {
    let server = TestServer::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let in_backoff = common::seed_rows()
        .iter()
        .filter(|r| {
            DestinationStatus::from_columns(
                r.retry_last_ts.unwrap_or(0),
                r.retry_interval.unwrap_or(0),
                r.failure_ts,
                r.last_successful_stream_ordering,
                now,
            )
            .in_backoff()
        })
        .count();
    assert!(in_backoff > 0);

    // No token needed, as Synapse's metrics listener.
    let resp = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ascii"),
        CONTENT_TYPE_OPENMETRICS
    );
    let text = resp.text().await.expect("body");
    assert!(
        text.contains(&format!("herald_destinations_in_backoff {in_backoff}\n")),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    // A reset takes one out of backoff.
    let token = server.admin_token().await;
    let (status, _) = server
        .post_json(
            "/_synapse/admin/v1/federation/destinations/b.org/reset_connection",
            Some(&token),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(text.contains(&format!(
        "herald_destinations_in_backoff {}\n",
        in_backoff - 1
    )));
}

/// Before anything is sent, a scrape already holds every failure kind at 0,
/// every transaction outcome at 0, and Synapse's sender series labelled with
/// our `server_name` (so that alert rules and dashboards find them).
#[tokio::test]
async fn every_failure_kind_and_synapses_sender_series_are_there_from_the_start() {
    let server = TestServer::start().await;
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    for kind in herald_shared::FailureKind::ALL {
        let line = format!(
            "herald_federation_failures_total{{kind=\"{}\"}} 0\n",
            kind.as_str()
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    for outcome in ["sent", "failed", "rejected"] {
        let line = format!("herald_sender_transactions_total{{outcome=\"{outcome}\"}} 0\n");
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    let label = format!("{{server_name=\"{}\"}}", common::SERVER_NAME);
    for series in [
        "synapse_federation_client_sent_transactions_total",
        "synapse_federation_client_sent_pdu_destinations_total",
        "synapse_federation_client_sent_pdu_destinations_count_total",
        "synapse_federation_client_sent_edus_total",
        "synapse_federation_transaction_queue_pending_destinations",
        "synapse_federation_transaction_queue_pending_pdus",
        "synapse_federation_transaction_queue_pending_edus",
    ] {
        let line = format!("{series}{label} 0\n");
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
}
