//! `GET /metrics` on the admin listener: OpenMetrics text with Synapse's
//! federation client series and the destinations in backoff, counted from
//! the same rows the admin API serves.
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
