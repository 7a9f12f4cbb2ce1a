//! A real Herald server on 127.0.0.1 and a temp SQLite file (or, with
//! [`TestServer::start_on`], a PostgreSQL database), seeded with known
//! rows, plus a small HTTP client for the tests; and [`spawn_sending`], a
//! Herald that sends over TLS to loopback receivers.
#![allow(dead_code)]

pub mod backend;
pub mod oracle;
pub mod postgres;
pub mod synapse_db;

use std::net::SocketAddr;
use std::path::PathBuf;

use herald::config::Config;
use herald_shared::DestinationRoom;
use herald_store::{DestinationRow, Store};
use serde_json::Value;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const USER: &str = "alice";
pub const USER_PASSWORD: &str = "alice-secret";
pub const SERVER_NAME: &str = "herald.test";

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub store: Store,
    /// The SQLite file (on PostgreSQL, a path that does not exist: use `db`).
    pub db_path: PathBuf,
    /// The database, on either backend.
    pub db: backend::TestDb,
    pub client: reqwest::Client,
}

pub fn row(
    name: &str,
    last: Option<i64>,
    interval: Option<i64>,
    fail: Option<i64>,
    so: Option<i64>,
) -> DestinationRow {
    DestinationRow::new(name, last, interval, fail, so)
}

/// `store` holds what an import of the seeded Synapse database brings:
/// every seeded row (indexed and in SQL) and `b.org`'s 15 rooms.
pub async fn assert_holds_the_seed(store: &Store) {
    assert_eq!(store.destinations.destination_count(), 11);
    for r in seed_rows() {
        assert_eq!(store.destinations.indexed(&r.destination), Some(r.clone()));
        assert_eq!(
            store
                .destinations
                .destination(&r.destination)
                .await
                .unwrap(),
            Some(r)
        );
    }
    let rooms = store
        .destinations
        .destination_rooms("b.org", herald_shared::RoomsQuery::default())
        .await
        .unwrap();
    assert_eq!(rooms.total, 15);
}

/// The known destinations: NULLs in every nullable column, ties in every
/// sort column, names that differ by case, ports, an IPv6 literal, and names
/// with `%` and `_`.
pub fn seed_rows() -> Vec<DestinationRow> {
    vec![
        row("a.org", Some(0), Some(0), None, Some(100)),
        row(
            "b.org",
            Some(1_700_000_000_000),
            Some(600_000),
            Some(1_699_000_000_000),
            Some(50),
        ),
        row(
            "B.org",
            Some(1_700_000_000_000),
            Some(1_200_000),
            Some(1_699_500_000_000),
            None,
        ),
        row("never.example", None, None, None, None),
        row(
            "matrix.example.org:8448",
            Some(1_600_000_000_000),
            Some(86_400_000),
            Some(1_500_000_000_000),
            Some(7),
        ),
        row("[::1]:8448", Some(0), Some(0), None, Some(100)),
        row("UPPER.Example.COM", Some(0), Some(0), Some(123), Some(3)),
        row("pct%sign.org", Some(5), None, Some(5), Some(9)),
        row("under_score.org", Some(5), Some(600_000), None, Some(9)),
        row("underXscore.org", Some(5), Some(600_000), None, Some(9)),
        row("zeta.example", Some(0), Some(0), None, Some(1)),
    ]
}

pub fn seed_rooms() -> Vec<DestinationRoom> {
    (0..15)
        .map(|i| DestinationRoom {
            room_id: format!(
                "!{}room{i:02}:herald.test",
                if i % 3 == 0 { "A" } else { "a" }
            ),
            stream_ordering: 1000 + i,
        })
        .collect()
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_on(backend::Backend::Sqlite, tweak).await
    }

    /// [`TestServer::start_with`] on the backend given.
    pub async fn start_on(
        backend: backend::Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let db = backend::TestDb::new(backend).await;
        let db_path = match &db.target {
            herald_store::DatabaseTarget::Sqlite(path) => path.clone(),
            herald_store::DatabaseTarget::Postgres(_) => PathBuf::from("/nonexistent/herald.db"),
        };
        let mut config = Config::loopback(SERVER_NAME, db.setting());
        // Where SQLite's default puts it (on PostgreSQL the default is the
        // working directory).
        config.signing_key_path = Some(db.dir().join(format!("{SERVER_NAME}.signing.key")));
        tweak(&mut config);
        let store = db.open().await;
        for (name, password, admin) in [(ADMIN, ADMIN_PASSWORD, true), (USER, USER_PASSWORD, false)]
        {
            let hash = herald::auth::password::hash(password).expect("hash");
            store
                .users
                .create_user(name, &hash, admin)
                .await
                .expect("create user");
        }
        store
            .destinations
            .put_destinations(&seed_rows())
            .await
            .expect("seed");
        store
            .destinations
            .put_destination_rooms("b.org", &seed_rooms())
            .await
            .expect("rooms");
        let addr = herald::serve::spawn(store.clone(), config)
            .await
            .expect("serve");
        TestServer {
            addr,
            base: format!("http://{addr}"),
            store,
            db_path,
            db,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Logs in with the Matrix password flow and returns the access token.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .post_json("/_matrix/client/v3/login", None, login_body(user, password))
            .await;
        assert_eq!(status, 200, "login failed: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN, ADMIN_PASSWORD).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.expect("request")).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.expect("request")).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: &'static str,
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_json(req.send().await.expect("request")).await
    }

    /// GET with raw `Authorization` header values, as many as given.
    pub async fn get_with_auth_headers(&self, path: &str, values: &[&str]) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        for v in values {
            req = req.header("Authorization", *v);
        }
        into_json(req.send().await.expect("request")).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }
}

pub async fn into_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
    (status, body)
}

/// Asserts a Matrix error body.
pub fn assert_error(got: &(u16, Value), status: u16, errcode: &str, error: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
    assert_eq!(got.1["error"], error, "{}", got.1);
}

/// 401 `M_MISSING_TOKEN` "Missing access token".
pub fn assert_missing_token(got: &(u16, Value)) {
    assert_error(got, 401, "M_MISSING_TOKEN", "Missing access token");
}

/// 403 for a valid token of a user who is not an admin.
pub fn assert_not_admin(got: &(u16, Value)) {
    assert_error(got, 403, "M_FORBIDDEN", "You are not a server admin");
}

/// A password login request, as `herald_shared::PasswordLogin` shapes it.
pub fn login_body(user: &str, password: &str) -> Value {
    serde_json::to_value(herald_shared::PasswordLogin::new(user, password)).expect("login body")
}

/// A connection pool of the test's own on a Herald SQLite file, to look at
/// rows as an admin's `sqlite3` would (the store hands out no pool).
pub async fn sql_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(10));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("open the database file")
}

/// Spawns Herald in this process on `store` (its `database` setting), so
/// that it sends over TLS: server name and federation listener
/// `127.0.0.1:<a free port>`, `cert` served and trusted, loopback
/// whitelisted, no long retries; then `tweak` (given the server name) sets
/// the rest. A port taken meanwhile is picked again, up to 5 tries. Its
/// server name and the base URL of its admin listener.
pub async fn spawn_sending(
    store: &Store,
    database: impl Into<herald::config::Database> + Clone,
    cert: &herald::demo::tls::LoopbackCert,
    tweak: impl Fn(&mut Config, &str),
) -> (String, String) {
    for attempt in 1.. {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let name = format!("127.0.0.1:{port}");
        let mut config = Config::loopback(&name, database.clone());
        config.federation_listen = Some(name.clone());
        config.tls_certificate_path = Some(cert.cert_path.clone());
        config.tls_private_key_path = Some(cert.key_path.clone());
        config.ip_range_whitelist = vec!["127.0.0.0/8".into()];
        config.federation_custom_ca_list = Some(vec![cert.cert_path.clone()]);
        config.federation.max_long_retries = 0;
        tweak(&mut config, &name);
        config.validate().unwrap();
        match herald::serve::spawn_all(store.clone(), config).await {
            Ok(addresses) => return (name, format!("http://{}", addresses.admin)),
            Err(e) if attempt < 5 => eprintln!("port {port} taken, again: {e}"),
            Err(e) => panic!("herald did not start: {e}"),
        }
    }
    unreachable!()
}
