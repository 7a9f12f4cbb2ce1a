//! Several `herald serve` processes (the real binary) on one PostgreSQL
//! database from the tests' shared cluster, receivers the demo's simulated
//! homeservers (HTTPS on 127.0.0.1, verifying signatures, counting the
//! transactions they handle at once): two instances split the 256 shards
//! and deliver every event once whichever instance took it in; `kill -9`
//! of one and the other takes its shards over within 10 s (the time is
//! printed) and sends its destinations, a stopped one hands them over at
//! once; an instance joining under load
//! gets its share without a receiver ever seeing two transactions at once;
//! a network cut between one instance and PostgreSQL (a loopback proxy that
//! stops forwarding) makes it stop sending before the other claims its
//! shards, and it gets a share back when the link returns. On SQLite the
//! one instance holds every shard.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "common/backend.rs"]
pub mod backend;
#[path = "common/postgres.rs"]
pub mod postgres;
mod process;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

#[path = "common/instances.rs"]
mod instances;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backend::Backend;
use herald::demo::homeserver::{Behaviour, Homeserver};
use instances::{assert_never_two_in_flight, ids, logs_of, names, wait_delivered, Cluster, HERALD};
use serde_json::Value;
use tcp_proxy::TcpProxy;

#[tokio::test]
async fn two_instances_split_the_shards_and_deliver_every_event_once() {
    let mut cluster = Cluster::new().await;
    let (a, b) = cluster.start_pair(None).await;
    // Both endpoints agree, and each names itself.
    assert_eq!(cluster.instances(&b).await.this_instance, "beta");
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    let mut all = HashSet::new();
    for round in 0..10 {
        let batch = ids(&format!("split{round}_"), 0..5);
        let via = if round % 2 == 0 { &a } else { &b };
        via.post(&cluster.http, &batch, &to).await;
        all.extend(batch);
    }
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    for rx in &receivers {
        let got = rx.received().event_ids();
        assert_eq!(got.len(), all.len(), "{} got an event twice", rx.name());
    }
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // Each sent its own half.
    assert!(a.sent_transactions(&cluster.http).await > 0);
    assert!(b.sent_transactions(&cluster.http).await > 0);
    let metrics = a.metrics(&cluster.http).await;
    assert!(metrics.contains("herald_shards_held 128"), "{metrics}");
    assert!(
        metrics.contains("herald_instance_info{instance=\"alpha\"} 1"),
        "{metrics}"
    );
}

/// On SQLite the one instance holds every shard and says so.
#[tokio::test]
async fn on_sqlite_the_one_instance_holds_every_shard() {
    let mut cluster = Cluster::on(Backend::Sqlite).await;
    let mut a = cluster.instance("solo", true, None);
    a.start().await;
    // Admin only, refused as a Matrix error.
    let anonymous = cluster
        .http
        .get(format!("http://{}/_herald/admin/v1/instances", a.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
    let overview = cluster.instances(&a).await;
    assert_eq!(overview.this_instance, "solo");
    assert_eq!(overview.instances.len(), 1);
    let solo = &overview.instances[0];
    assert!(solo.live && solo.shard_count == 256 && solo.shards.len() == 256);
    let rx = cluster.receiver(Behaviour::healthy()).await;
    let batch = ids("solo", 0..3);
    a.post(&cluster.http, &batch, &[rx.name()]).await;
    wait_delivered(&[rx], &batch.into_iter().collect(), &[&a]).await;
}

#[tokio::test]
async fn a_killed_instances_shards_are_taken_over_within_10_s() {
    let mut cluster = Cluster::new().await;
    let (a, mut b) = cluster.start_pair(None).await;
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    // Every receiver has the shared key cached, and beta's queues fill
    // while they fail.
    let first = ids("before", 0..3);
    b.post(&cluster.http, &first, &to).await;
    wait_delivered(&receivers, &first.iter().cloned().collect(), &[&a, &b]).await;
    for rx in &receivers {
        rx.force_status(Some(500));
    }
    let queued = ids("queued", 0..5);
    b.post(&cluster.http, &queued, &to).await;
    b.kill();
    let killed = Instant::now();
    for rx in &receivers {
        rx.force_status(None);
    }
    let deadline = killed + Duration::from_secs(20);
    loop {
        if cluster.shard_counts(&a).await.get("alpha") == Some(&256) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover\n{}",
            logs_of(&[&a, &b])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {} ms", takeover.as_millis());
    assert!(
        takeover <= Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    // The dead one's destinations resume from the shared queue.
    let after = ids("after", 0..3);
    a.post(&cluster.http, &after, &to).await;
    let all: HashSet<String> = first.into_iter().chain(queued).chain(after).collect();
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
}

/// A stopped (SIGTERM) instance frees its shards on the way out: the
/// other holds them all within a few rounds, not after the leases lapse.
#[tokio::test]
async fn a_stopped_instance_hands_its_shards_over_at_once() {
    let mut cluster = Cluster::new().await;
    let (a, mut b) = cluster.start_pair(None).await;
    let stopping = Instant::now();
    b.stop().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a, &b]).await;
    let handover = stopping.elapsed();
    eprintln!("handover after SIGTERM: {} ms", handover.as_millis());
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("shard leases freed"), "{}", logs_of(&[&b]));
    // Freed rows are claimed at alpha's next round: well under a lapse.
    assert!(
        handover < Duration::from_secs(5),
        "handover took {handover:?}"
    );
}

#[tokio::test]
async fn an_instance_joining_under_load_never_overlaps_the_other() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    let mut b = cluster.instance("beta", false, None);
    a.start().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
    let slow = Behaviour {
        delay: Duration::from_millis(150),
        ..Behaviour::healthy()
    };
    let receivers: Vec<Homeserver> = {
        let mut r = Vec::new();
        for _ in 0..8 {
            r.push(cluster.receiver(slow.clone()).await);
        }
        r
    };
    let to = names(&receivers);
    let mut all = HashSet::new();
    // Bounded load: 40 small batches, about 100 ms apart, beta joining
    // after the tenth.
    for round in 0..40 {
        let batch = ids(&format!("join{round}_"), 0..2);
        a.post(&cluster.http, &batch, &to).await;
        all.extend(batch);
        if round == 10 {
            b.start().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_halves(&a, &b).await;
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // The joining one did send (its share of the receivers got work).
    let owners = cluster.owners(&a, &receivers).await;
    if owners.iter().any(|o| o == "beta") {
        let more = ids("joined", 0..2);
        a.post(&cluster.http, &more, &to).await;
        all.extend(more);
        wait_delivered(&receivers, &all, &[&a, &b]).await;
        assert!(
            b.sent_transactions(&cluster.http).await > 0,
            "{}",
            logs_of(&[&a, &b])
        );
    }
    assert_never_two_in_flight(&receivers, &[&a, &b]);
}

#[tokio::test]
async fn a_network_cut_stops_the_cut_instance_before_the_other_takes_over() {
    let mut cluster = Cluster::new().await;
    let TestDbUrl { direct, port } = url_parts(&cluster.db.setting());
    let proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let through_proxy = direct.replace(&format!("127.0.0.1:{port}"), &proxy.addr().to_string());
    let (a, b) = cluster.start_pair(Some(through_proxy)).await;
    let receivers = cluster
        .receivers_on_each(&a, &["alpha", "beta"], &Behaviour::healthy())
        .await;
    let to = names(&receivers);
    let mut all: HashSet<String> = ids("warm", 0..2).into_iter().collect();
    a.post(&cluster.http, &ids("warm", 0..2), &to).await;
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    // Transactions that would stay in flight for 10 s: beta's are in
    // flight when its link is cut, and must be dropped before alpha takes
    // its shards over (about 5 s later) and sends the same queues.
    let hanging = Behaviour {
        delay: Duration::from_secs(10),
        ..Behaviour::healthy()
    };
    let attempts: Vec<usize> = receivers
        .iter()
        .map(|r| r.received().attempts.len())
        .collect();
    for rx in &receivers {
        rx.set_behaviour(hanging.clone());
    }
    let held = ids("held", 0..2);
    a.post(&cluster.http, &held, &to).await;
    all.extend(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (rx, before) in receivers.iter().zip(attempts) {
        while rx.received().attempts.len() == before {
            assert!(
                Instant::now() < deadline,
                "{} got no transaction\n{}",
                rx.name(),
                logs_of(&[&a, &b])
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    proxy.cut();
    let cut = Instant::now();
    // New transactions are answered quickly again.
    for rx in &receivers {
        rx.set_behaviour(Behaviour::healthy());
    }
    // alpha holds everything while beta cannot reach the database.
    cluster.wait_split(&a, &[("alpha", 256)], &[&a, &b]).await;
    eprintln!("takeover after the cut: {} ms", cut.elapsed().as_millis());
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    // The link returns: beta gets a share again and sends it.
    proxy.restore();
    cluster.wait_halves(&a, &b).await;
    let sent_before = b.sent_transactions(&cluster.http).await;
    let after = ids("restored", 0..4);
    b.post(&cluster.http, &after, &to).await;
    all.extend(after);
    wait_delivered(&receivers, &all, &[&a, &b]).await;
    assert_never_two_in_flight(&receivers, &[&a, &b]);
    assert!(
        b.sent_transactions(&cluster.http).await > sent_before,
        "beta sends its share again\n{}",
        logs_of(&[&a, &b])
    );
}

struct TestDbUrl {
    direct: String,
    port: u16,
}

/// The URL and PostgreSQL's port in it (`postgresql://herald@127.0.0.1:PORT/db`).
fn url_parts(url: &str) -> TestDbUrl {
    let port = url
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    TestDbUrl {
        direct: url.to_owned(),
        port,
    }
}

/// Every instance must sign with the same key (remote servers fetch it
/// from whichever instance answers): one with another key file is refused
/// at start-up, naming `signing_key_path` and the instance it differs from.
#[tokio::test]
async fn an_instance_with_another_signing_key_is_refused() {
    let mut cluster = Cluster::new().await;
    let mut a = cluster.instance("alpha", true, None);
    a.start().await;
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
    let b = cluster.instance("beta", false, None);
    let shared_key = cluster.dir.path().join("herald.signing.key");
    let other_key = cluster.dir.path().join("other.signing.key");
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace(&format!("{shared_key:?}"), &format!("{other_key:?}"));
    std::fs::write(&b.config, text).unwrap();
    let log = std::fs::File::create(&b.log).unwrap();
    let mut child = Command::new(HERALD)
        .args(["serve", "--config", b.config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("beta was not refused: {}", logs_of(&[&b]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        err.contains("`signing_key_path`") && err.contains("\"alpha\""),
        "{err}"
    );
    // Nothing was taken from alpha, which still sends everything.
    cluster.wait_split(&a, &[("alpha", 256)], &[&a]).await;
}
