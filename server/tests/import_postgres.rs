//! `herald import-synapse` into a Herald store on PostgreSQL (the binary,
//! `--database postgresql://…`): Synapse's rows and rooms arrive, the index
//! is what was imported, a second import needs `--replace`, and new events
//! get stream orderings above the imported ones. (Synapse's side, SQLite or
//! PostgreSQL, is `tests/synapse_attached.rs`'s.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::backend::{Backend, TestDb};
use common::synapse_db::SynapseDb;
use common::{assert_holds_the_seed, seed_rooms, seed_rows};
use herald_store::NewEvent;

#[tokio::test]
async fn import_synapse_into_herald_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let syn = SynapseDb::sqlite(dir.path()).await;
    for r in seed_rows() {
        syn.put_row(&r).await;
    }
    syn.put_rooms("b.org", &seed_rooms()).await;
    syn.close().await;
    let own = TestDb::new(Backend::Postgres).await;
    let import = |replace: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["import-synapse", "--from", &syn.setting(), "--database"])
            .arg(own.setting());
        if replace {
            cmd.arg("--replace");
        }
        cmd.output().unwrap()
    };
    let out = import(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 11 destinations and 15 destination rooms"),
        "{stdout}"
    );
    let out = import(false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds 11 destinations"), "{stderr}");
    assert!(import(true).status.success());

    let store = own.open().await;
    assert_holds_the_seed(&store).await;
    let max = seed_rooms()
        .iter()
        .map(|r| r.stream_ordering)
        .max()
        .unwrap();
    let orderings = store
        .outbox
        .enqueue_pdus(vec![NewEvent {
            event_id: "$after".into(),
            room_id: "!r:x".into(),
            pdu_json: "{}".into(),
            destinations: vec!["b.org".into()],
        }])
        .await
        .unwrap();
    assert!(orderings[0] > max, "{orderings:?} after {max}");
    store.close().await;
}
