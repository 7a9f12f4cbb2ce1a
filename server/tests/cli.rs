//! The `herald` binary itself: `user add`, `serve`, `demo`, `federation
//! request`, and refusing databases and configs it must not use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "common/postgres.rs"]
mod postgres;
mod process;

use process::{free_port, Process};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(HERALD)
        .args(args)
        .output()
        .expect("run herald")
}

/// Starts `herald ARGS` and waits for its "listening" log line and, when
/// `stdout_until` is given, for a line of its standard output containing it;
/// returns the address and the standard output read so far.
fn spawn_listening(args: &[&str], stdout_until: Option<&str>) -> (Process, String, Vec<String>) {
    let mut child = Command::new(HERALD)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end (so the child never blocks on a full pipe), even
        // once nobody listens.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("address=") {
                let addr = line[i + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("herald did not start listening");
    let mut out: Vec<String> = lines_rx.try_iter().collect();
    if let Some(marker) = stdout_until {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !out.iter().any(|l| l.contains(marker)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(e) => panic!("no {marker:?} on standard output ({e}): {out:?}"),
            }
        }
    }
    (Process(child), addr, out)
}

fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_response(stream)
}

fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(stream)
}

fn read_response(mut stream: std::net::TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Bodies may be chunked; the JSON object is what lies between the braces.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_owned(),
        _ => body,
    };
    (status, body)
}

fn login(addr: &str, user: &str, password: &str) -> String {
    let body = serde_json::to_string(&herald_shared::PasswordLogin::new(user, password)).unwrap();
    let (status, body) = http_post(addr, "/_matrix/client/v3/login", &body);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn user_add_then_serve_then_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let db = db.to_str().unwrap();
    let out = herald(&[
        "user",
        "add",
        "Admin",
        "--password",
        "pw1",
        "--admin",
        "--database",
        db,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@admin:localhost"));
    // `--password -` reads standard input.
    let mut child = Command::new(HERALD)
        .args(["user", "add", "bob", "--password", "-", "--database", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // A second account with the same name is refused.
    let out = herald(&["user", "add", "admin", "--password", "x", "--database", db]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let (_server, addr, _) = spawn_listening(
        &["serve", "--database", db, "--listen", "127.0.0.1:0"],
        None,
    );
    let token = login(&addr, "admin", "pw1");
    let (status, body) = http_get(
        &addr,
        "/_synapse/admin/v1/federation/destinations",
        Some(&token),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"total\":0"), "{body}");
    let bob = login(&addr, "bob", "from-stdin");
    let (status, _) = http_get(
        &addr,
        "/_synapse/admin/v1/federation/destinations",
        Some(&bob),
    );
    assert_eq!(status, 403);

    // A second server on the same database is refused, naming `database`
    // (after waiting for the first to go, which it does not); the first
    // goes on answering, and other commands still run beside it.
    let out = herald(&["serve", "--database", db, "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("served by another Herald") && err.contains("`database`"),
        "{err}"
    );
    let out = herald(&["user", "add", "carol", "--password", "x", "--database", db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = http_get(
        &addr,
        "/_synapse/admin/v1/federation/destinations",
        Some(&token),
    );
    assert_eq!(status, 200);
}

/// The same on PostgreSQL: `--database postgresql://…` on every command;
/// messages name the database without its password, and one that does not
/// answer stops start-up naming `database`.
#[test]
fn user_add_and_serve_on_postgresql() {
    let cluster = postgres::PgCluster::start();
    // (Trust authentication: the password is never asked for, only shown.)
    let url = format!(
        "postgresql://herald:pw-secret@127.0.0.1:{}/postgres",
        cluster.port
    );
    let out = herald(&[
        "user",
        "add",
        "Admin",
        "--password",
        "pw1",
        "--admin",
        "--database",
        &url,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("@admin:localhost"), "{stdout}");
    assert!(stdout.contains("herald:***@127.0.0.1"), "{stdout}");
    assert!(!stdout.contains("pw-secret"), "{stdout}");
    let out = herald(&[
        "user",
        "add",
        "admin",
        "--password",
        "x",
        "--database",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // `serve` with the URL in a config file (and its signing key, which
    // would default to the working directory, in a temp dir).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "database = {url:?}\nsigning_key_path = {:?}\n",
            dir.path().join("localhost.signing.key")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    {
        let (_server, addr, _) = spawn_listening(
            &["serve", "--config", config, "--listen", "127.0.0.1:0"],
            None,
        );
        let token = login(&addr, "admin", "pw1");
        let (status, body) = http_get(
            &addr,
            "/_synapse/admin/v1/federation/destinations",
            Some(&token),
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"total\":0"), "{body}");
    }
    let port = cluster.port;
    drop(cluster);
    let out = herald(&["serve", "--config", config, "--listen", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`database`"), "{stderr}");
    assert!(
        stderr.contains(&format!("herald:***@127.0.0.1:{port}/postgres")),
        "{stderr}"
    );
    assert!(stderr.contains("does not answer"), "{stderr}");
    assert!(!stderr.contains("pw-secret"), "{stderr}");
}

#[test]
fn serve_reads_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    let db = dir.path().join("from-config.db");
    std::fs::write(
        &config,
        format!(
            "server_name = \"conf.test\"\ndatabase = \"{}\"\nlisten = \"127.0.0.1:1\"\n",
            db.display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    assert!(herald(&[
        "user",
        "add",
        "root",
        "--password",
        "pw",
        "--admin",
        "--config",
        c
    ])
    .status
    .success());
    assert!(db.exists(), "user add used the config's database");
    let (_server, addr, _) =
        spawn_listening(&["serve", "--config", c, "--listen", "127.0.0.1:0"], None);
    let (status, body) = http_post(
        &addr,
        "/_matrix/client/v3/login",
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"root"},"password":"pw"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("@root:conf.test"), "{body}");
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("server_nmae = \"x\"\n", "server_nmae"),
        (
            "destination_max_retry_interval = \"forever\"\n",
            "destination_max_retry_interval",
        ),
        ("listen = \"here\"\n", "listen"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let out = herald(&["serve", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn refuses_foreign_and_newer_databases_without_touching_them() {
    let dir = tempfile::tempdir().unwrap();
    // A Synapse-like database: ours, then our marker dropped and a table added.
    let foreign = dir.path().join("synapse.db");
    add_user(&foreign);
    rewrite(
        &foreign,
        &[
            "DROP TABLE herald_meta",
            "CREATE TABLE events (event_id TEXT)",
        ],
    );
    assert_refused(&foreign, "not a Herald database");

    // A database a newer Herald migrated.
    let newer = dir.path().join("newer.db");
    add_user(&newer);
    rewrite(
        &newer,
        &["INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
           VALUES (999999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)"],
    );
    assert_refused(&newer, "newer Herald");

    // Not SQLite at all.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, [b'x'; 200]).unwrap();
    assert_refused(&garbage, "garbage.db");
}

fn add_user(db: &Path) {
    let out = herald(&[
        "user",
        "add",
        "x",
        "--password",
        "x",
        "--database",
        db.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `herald serve` on `db` fails with `message` and leaves the file as it was.
fn assert_refused(db: &Path, message: &str) {
    let before = std::fs::read(db).unwrap();
    let out = herald(&[
        "serve",
        "--database",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "{message}: {err}");
    assert_eq!(
        std::fs::read(db).unwrap(),
        before,
        "{} was changed",
        db.display()
    );
}

/// Applies SQL to a closed database file with a throwaway runtime.
fn rewrite(path: &Path, statements: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        for s in statements {
            sqlx::query(s).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    });
}

#[test]
fn demo_prints_a_login_that_works_and_serves_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started = Instant::now();
    // The demo prints its login before it listens; its last line:
    let (_demo, addr, out) = spawn_listening(
        &[
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        Some("Press Ctrl-C to stop."),
    );
    let out = out.join("\n");
    let password = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Pass"))
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no password printed: {out}"));
    assert!(out.contains(&format!("http://{addr}/")), "{out}");
    let token = login(&addr, "admin", &password);
    let (status, body) = http_get(
        &addr,
        "/_synapse/admin/v1/federation/destinations?limit=1000",
        Some(&token),
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = v["destinations"].as_array().unwrap();
    assert!(v["total"].as_u64().unwrap() >= 240, "{}", v["total"]);
    assert!(
        rows.iter().any(|r| r["retry_last_ts"] != 0),
        "some in backoff"
    );
    assert!(
        rows.iter()
            .any(|r| r["last_successful_stream_ordering"].is_null() && r["retry_last_ts"] == 0),
        "never contacted"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // The live part: simulated homeservers on loopback receive events
    // through the sender (a delivery sets `last_successful_stream_ordering`)
    // and the rejecting one backs off.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(
            &addr,
            "/_synapse/admin/v1/federation/destinations?limit=1000",
            Some(&token),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let live: Vec<&serde_json::Value> = v["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["destination"].as_str().unwrap().starts_with("127.0.0.1:"))
            .collect();
        let delivered = live
            .iter()
            .any(|r| r["last_successful_stream_ordering"].is_i64());
        let backing_off = live.iter().any(|r| r["retry_interval"].as_i64() > Some(0));
        if delivered && backing_off {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no live delivery and backoff yet: {live:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // An admin resets the rejecting homeserver: Herald tries it again at
    // once (and records the new failure).
    let rejecting = out
        .lines()
        .find(|l| l.contains("rejecting"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rejecting homeserver listed: {out}"))
        .to_owned();
    let details = format!("/_synapse/admin/v1/federation/destinations/{rejecting}");
    let retry_last_ts = || -> i64 {
        let (status, body) = http_get(&addr, &details, Some(&token));
        if status == 404 {
            // Not known yet: the generator has sent it nothing so far.
            return 0;
        }
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["retry_last_ts"].as_i64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while retry_last_ts() == 0 {
        assert!(Instant::now() < deadline, "{rejecting} never backed off");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reset_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let reset_at = Instant::now();
    let (status, body) = http_post(
        &addr,
        &format!("{details}/reset_connection?access_token={token}"),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    while retry_last_ts() < reset_ms {
        assert!(
            reset_at.elapsed() < Duration::from_secs(3),
            "{rejecting} not retried after the reset"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("retried {:?} after the reset", reset_at.elapsed());
}

#[test]
fn federation_request_prints_a_remote_servers_answer() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();

    // The remote server: another Herald with its federation port over TLS.
    let port = free_port();
    let receiver = dir.path().join("receiver.toml");
    std::fs::write(
        &receiver,
        format!(
            "server_name = \"receiver.test\"\ndatabase = {:?}\nlisten = \"127.0.0.1:0\"\n\
             federation_listen = \"127.0.0.1:{port}\"\ntls_certificate_path = {:?}\n\
             tls_private_key_path = {:?}\n",
            dir.path().join("receiver.db"),
            cert,
            key
        ),
    )
    .unwrap();
    let (_remote, _, _) = spawn_listening(&["serve", "--config", receiver.to_str().unwrap()], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "federation port never opened");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Us: loopback allowed (the default blacklist refuses it), the test
    // certificate trusted.
    let sender = dir.path().join("sender.toml");
    std::fs::write(
        &sender,
        format!(
            "server_name = \"sender.test\"\ndatabase = {:?}\n\
             ip_range_whitelist = [\"127.0.0.0/8\"]\nfederation_custom_ca_list = [{:?}]\n",
            dir.path().join("sender.db"),
            cert
        ),
    )
    .unwrap();
    let remote = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| {
        let mut all = vec!["federation", "request"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", sender.to_str().unwrap()]);
        herald(&all)
    };

    let out = run(&["GET", &remote, "/_matrix/key/v2/server"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(body["server_name"], "receiver.test");
    assert!(body["verify_keys"]
        .as_object()
        .is_some_and(|k| !k.is_empty()));
    let out = run(&["get", &remote, "/_matrix/federation/v1/version"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(body["server"]["name"], "Herald");

    // Errors: a clear message and a non-zero exit, nothing on stdout.
    let out = run(&["GET", &remote, "/_matrix/federation/v1/nothing"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("federation request to {remote} failed")),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
    let out = run(&["PUT", &remote, "/x", "--data", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data is not JSON"));
    let out = run(&["PATCH", &remote, "/x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported method \"PATCH\""));
}
