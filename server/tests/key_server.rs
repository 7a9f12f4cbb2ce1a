//! The federation listener: the key server and version routes over real
//! TLS on 127.0.0.1 (a self-signed certificate from rcgen), kept apart from
//! the admin listener; the signing key file's life across restarts; and
//! start-up errors for TLS files, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald::config::Config;
use herald::serve::Addresses;
use herald_keys::key_file::read_key_file;
use herald_keys::{verify_json, OldSigningKey, SigningKey, VerifyKey};
use herald_store::Store;
use serde_json::Value;

const SERVER_NAME: &str = "herald.test";
const REFRESH: Duration = Duration::from_secs(2 * 3600);

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM.
struct Tls {
    cert_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn write_tls(dir: &Path) -> Tls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let cert_pem = certified.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    Tls {
        cert_pem,
        cert,
        key,
    }
}

fn config(dir: &Path, tls: &Tls) -> Config {
    let mut config = Config::loopback(SERVER_NAME, dir.join("herald.db"));
    config.federation_listen = Some("127.0.0.1:0".into());
    config.tls_certificate_path = Some(tls.cert.clone());
    config.tls_private_key_path = Some(tls.key.clone());
    config.key_refresh_interval = herald::config::ConfigDuration(REFRESH);
    config
}

async fn start(config: Config) -> Addresses {
    let store = Store::open_target(&config.database.target())
        .await
        .expect("open store");
    herald::serve::spawn_all(store, config)
        .await
        .expect("serve")
}

/// A client trusting only our test certificate.
fn https_client(tls: &Tls) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap())
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Option<String>, Value) {
    let response = client.get(&url).send().await.expect(&url);
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{url}: status {status}: not JSON: {text:?}"));
    (status, content_type, body)
}

fn now_ms() -> u64 {
    herald::http::key_server::now_ms()
}

/// Checks a key server body: self-signed with the key it publishes, for our
/// name, with `key_id` current; returns `valid_until_ts`.
fn check_key_body(body: &Value, key_id: &str) -> u64 {
    assert_eq!(body["server_name"], SERVER_NAME, "{body}");
    let published = body["verify_keys"][key_id]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("{key_id} not in {body}"));
    let verify_key = VerifyKey::from_base64(published).unwrap();
    verify_json(SERVER_NAME, key_id, &verify_key, body).expect("self-signature verifies");
    body["valid_until_ts"].as_u64().expect("valid_until_ts")
}

#[tokio::test]
async fn key_server_over_tls_is_self_signed_and_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_tls(dir.path());
    let old = SigningKey::generate("a_old1").unwrap();
    let mut config = config(dir.path(), &tls);
    config.old_signing_keys = BTreeMap::from([(
        old.key_id(),
        OldSigningKey {
            key: old.verify_key().to_base64(),
            expired_ts: 1_600_000_000_000,
        },
    )]);
    let key_file = config.signing_key_path();
    let addrs = start(config).await;
    let federation = addrs.federation.expect("federation listener");
    assert_ne!(federation, addrs.admin);
    let client = https_client(&tls);

    let key_id = read_key_file(&key_file).unwrap()[0].key_id();
    let before = now_ms();
    let (status, content_type, body) = get(
        &client,
        format!("https://{federation}/_matrix/key/v2/server"),
    )
    .await;
    let after = now_ms();
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let valid_until = check_key_body(&body, &key_id);
    let refresh = REFRESH.as_millis() as u64;
    assert!(
        (before + refresh..=after + refresh).contains(&valid_until),
        "valid_until_ts {valid_until} not now + 2h ({before}..{after})"
    );
    assert_eq!(body["verify_keys"].as_object().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["old_verify_keys"][old.key_id()],
        serde_json::json!({ "key": old.verify_key().to_base64(), "expired_ts": 1_600_000_000_000_u64 })
    );

    // The pre-Matrix-1.6 form with a key id answers the same body, as Synapse.
    let (status, _, legacy) = get(
        &client,
        format!("https://{federation}/_matrix/key/v2/server/{key_id}"),
    )
    .await;
    assert_eq!(status, 200, "{legacy}");
    check_key_body(&legacy, &key_id);
    // A key id that is not UTF-8 once decoded is only logged: same body,
    // never a text/plain rejection.
    let (status, content_type, legacy) = get(
        &client,
        format!("https://{federation}/_matrix/key/v2/server/%FF%FE"),
    )
    .await;
    assert_eq!(status, 200, "{legacy}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    check_key_body(&legacy, &key_id);

    // localhost is in the certificate too.
    let (status, _, _) = get(
        &client,
        format!(
            "https://localhost:{}/_matrix/federation/v1/version",
            federation.port()
        ),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn version_and_nothing_else_on_the_federation_port() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_tls(dir.path());
    let addrs = start(config(dir.path(), &tls)).await;
    let federation = addrs.federation.unwrap();
    let client = https_client(&tls);

    let (status, content_type, body) = get(
        &client,
        format!("https://{federation}/_matrix/federation/v1/version"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(
        body,
        serde_json::json!({"server": {"name": "Herald", "version": env!("CARGO_PKG_VERSION")}})
    );

    // The admin API, login and console are not on the federation port...
    for path in [
        "/_synapse/admin/v1/federation/destinations",
        "/_matrix/client/v3/login",
        "/",
        "/_matrix/key/v2/nope",
    ] {
        let (status, _, body) = get(&client, format!("https://{federation}{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{path}: {body}");
    }
    let response = client
        .post(format!("https://{federation}/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);

    // ...and the key server is not on the admin port (plain HTTP).
    let plain = reqwest::Client::new();
    let admin = addrs.admin;
    for path in ["/_matrix/key/v2/server", "/_matrix/federation/v1/version"] {
        let (status, _, body) = get(&plain, format!("http://{admin}{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["errcode"], "M_UNRECOGNIZED", "{path}: {body}");
    }
    // The federation port speaks only TLS.
    assert!(plain
        .get(format!("http://{federation}/_matrix/federation/v1/version"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn plain_http_only_when_federation_tls_is_false() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::loopback(SERVER_NAME, dir.path().join("herald.db"));
    config.federation_listen = Some("127.0.0.1:0".into());
    config.federation_tls = false;
    config.validate().unwrap();
    let addrs = start(config).await;
    let federation = addrs.federation.unwrap();
    let (status, _, body) = get(
        &reqwest::Client::new(),
        format!("http://{federation}/_matrix/key/v2/server"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let key_id = body["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    check_key_body(&body, &key_id);
}

#[tokio::test]
async fn first_start_creates_the_key_file_0600_and_restarts_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_tls(dir.path());
    let config = config(dir.path(), &tls);
    let key_file = config.signing_key_path();
    assert_eq!(key_file, dir.path().join("herald.test.signing.key"));
    assert!(!key_file.exists());
    let client = https_client(&tls);
    let served_key_id = |body: &Value| -> Vec<String> {
        body["verify_keys"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };

    let first = start(config.clone()).await;
    let keys = read_key_file(&key_file).expect("key file created");
    assert_eq!(keys.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let url = |a: Addresses| format!("https://{}/_matrix/key/v2/server", a.federation.unwrap());
    let (_, _, body) = get(&client, url(first)).await;
    assert_eq!(served_key_id(&body), vec![keys[0].key_id()]);

    let second = start(config).await;
    assert_eq!(
        read_key_file(&key_file).unwrap()[0].key_id(),
        keys[0].key_id()
    );
    let (_, _, body) = get(&client, url(second)).await;
    assert_eq!(served_key_id(&body), vec![keys[0].key_id()]);
    check_key_body(&body, &keys[0].key_id());
}

/// `herald serve --config` with `toml` appended to a config for `dir`: its
/// exit status and standard error.
fn serve_fails(dir: &Path, toml: &str) -> String {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "server_name = \"{SERVER_NAME}\"\ndatabase = \"{}\"\nlisten = \"127.0.0.1:0\"\n\
             federation_listen = \"127.0.0.1:0\"\n{toml}",
            dir.join("herald.db").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .expect("run herald");
    assert!(!out.status.success(), "herald serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_tls_files_stop_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_tls(dir.path());
    let missing = dir.path().join("missing.pem");
    let err = serve_fails(
        dir.path(),
        &format!(
            "tls_certificate_path = \"{}\"\ntls_private_key_path = \"{}\"\n",
            missing.display(),
            tls.key.display()
        ),
    );
    assert!(
        err.contains(&format!(
            "cannot read TLS certificate file {}",
            missing.display()
        )),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = serve_fails(
        dir.path(),
        &format!(
            "tls_certificate_path = \"{}\"\ntls_private_key_path = \"{}\"\n",
            garbage.display(),
            tls.key.display()
        ),
    );
    assert!(
        err.contains(&format!("TLS certificate file {}", garbage.display())),
        "{err}"
    );

    // A certificate where the key should be.
    let err = serve_fails(
        dir.path(),
        &format!(
            "tls_certificate_path = \"{}\"\ntls_private_key_path = \"{}\"\n",
            tls.cert.display(),
            tls.cert.display()
        ),
    );
    assert!(
        err.contains(&format!("TLS private key file {}", tls.cert.display())),
        "{err}"
    );

    let err = serve_fails(dir.path(), "");
    assert!(err.contains("`tls_certificate_path`"), "{err}");
}
