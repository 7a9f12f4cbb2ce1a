//! The Herald that the sending benchmarks (`sender`, `hostile`) run in
//! their own process: a fresh SQLite file, the federation listener on a free
//! loopback port with the shared loopback certificate (which the simulated
//! homeservers trust and Herald trusts back), loopback whitelisted, and the
//! intake API on with `token`; and the chat message they hand it. Each bench
//! then changes what it measures. `HERALD_BENCH_DATABASE=postgresql://…`
//! runs Herald's store on that PostgreSQL database instead (a new, empty
//! one each run: the bench fills it).

use herald::config::Config;
use herald::demo::tls::LoopbackCert;
use herald_store::{DatabaseTarget, Store};
use serde_json::{json, Value};

pub struct Sending {
    /// Holds the database and the certificate; removed when dropped.
    pub dir: tempfile::TempDir,
    pub cert: LoopbackCert,
    pub store: Store,
    pub config: Config,
}

pub async fn sending_herald(token: &str) -> Sending {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = LoopbackCert::generate(dir.path()).expect("certificate");
    let db = match std::env::var("HERALD_BENCH_DATABASE") {
        Ok(url) if !url.is_empty() => DatabaseTarget::Postgres(url),
        _ => DatabaseTarget::Sqlite(dir.path().join("herald.db")),
    };
    let store = Store::open_target(&db).await.expect("store");
    let name = format!("127.0.0.1:{}", free_port());
    let setting = match &db {
        DatabaseTarget::Sqlite(path) => path.display().to_string(),
        DatabaseTarget::Postgres(url) => url.clone(),
    };
    let mut config = Config::loopback(&name, setting);
    config.signing_key_path = Some(dir.path().join("signing.key"));
    config.federation_listen = Some(name);
    config.tls_certificate_path = Some(cert.cert_path.clone());
    config.tls_private_key_path = Some(cert.key_path.clone());
    config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
    config.federation_custom_ca_list = Some(vec![cert.cert_path.clone()]);
    config.sender_api_token = Some(token.into());
    Sending {
        dir,
        cert,
        store,
        config,
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One intake entry: a short chat message `id` in `room` for `destinations`.
pub fn event(id: &str, room: &str, destinations: &[String]) -> Value {
    json!({
        "event_id": id,
        "room_id": room,
        "pdu": {"event_id": id, "room_id": room, "type": "m.room.message",
                "sender": "@bench:herald.bench", "origin_server_ts": 0,
                "content": {"msgtype": "m.text", "body": "benchmark message, about the size of a short chat line"}},
        "destinations": destinations,
    })
}
