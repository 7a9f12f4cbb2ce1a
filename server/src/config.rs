//! Herald's configuration: one TOML file with flat keys named as Synapse
//! names them, every key optional. It is read and validated once at start-up;
//! an unknown key or a bad value stops start-up with a message naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use herald_federation::ip_filter::IpFilter;
use herald_federation::resolve::ServerName;
use herald_federation::{BackoffPolicy, ClientSettings, FederationSettings};
use herald_keys::OldSigningKey;
use herald_sender::SenderSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A secret from the config (`sender_api_token`): usable as a `&str`, never
/// shown by `Debug` (configs are logged and printed in errors).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret(text.to_owned())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

/// A duration written as Synapse writes them: a number of milliseconds, or a
/// string such as `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"1d"`, `"1w"`, `"1y"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn parse(s: &str) -> Result<ConfigDuration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration such as \"10m\" or \"1d\""))?;
        let ms_per: u64 = match unit {
            "" | "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit (use ms, s, m, h, d, w or y)"
                ))
            }
        };
        n.checked_mul(ms_per)
            .map(|ms| ConfigDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("`{s}` is too long"))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(ConfigDuration(Duration::from_millis(ms))),
            Raw::Text(s) => ConfigDuration::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A rate limit as Synapse's `rc_*` options: a bucket of `burst_count`
/// refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: f64,
}

/// `[rc_login]`: Synapse's login rate limits, with Synapse's names, meanings
/// and defaults, and one of Herald's own (`global_failed_attempts`). How they
/// combine, and where Herald departs from Synapse (a correct password from an
/// address that has not failed is not held back by the account's
/// `failed_attempts`), is in `auth::ratelimit`.
#[derive(Debug, Clone, PartialEq)]
pub struct RcLogin {
    /// Every login attempt, per client address.
    pub address: RateLimit,
    /// Successful logins, per account.
    pub account: RateLimit,
    /// Failed logins, per account.
    pub failed_attempts: RateLimit,
    /// Failed logins, all accounts and addresses together (Herald's own).
    pub global_failed_attempts: RateLimit,
}

impl Default for RcLogin {
    fn default() -> Self {
        // Synapse 1.163's defaults (synapse/config/ratelimiting.py).
        let synapse_login = RateLimit {
            per_second: 0.003,
            burst_count: 5.0,
        };
        RcLogin {
            address: synapse_login,
            account: synapse_login,
            failed_attempts: RateLimit {
                per_second: 0.17,
                burst_count: 3.0,
            },
            // About one failed login a second over any length of time:
            // Argon2 work an attacker with many addresses can cause.
            global_failed_attempts: RateLimit {
                per_second: 1.0,
                burst_count: 50.0,
            },
        }
    }
}

/// A limit as written in the file: as in Synapse, a key left out takes that
/// limit's default.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialRateLimit {
    per_second: Option<f64>,
    burst_count: Option<f64>,
}

impl PartialRateLimit {
    fn or(self, default: RateLimit) -> RateLimit {
        RateLimit {
            per_second: self.per_second.unwrap_or(default.per_second),
            burst_count: self.burst_count.unwrap_or(default.burst_count),
        }
    }
}

impl<'de> Deserialize<'de> for RcLogin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Raw {
            address: PartialRateLimit,
            account: PartialRateLimit,
            failed_attempts: PartialRateLimit,
            global_failed_attempts: PartialRateLimit,
        }
        let raw = Raw::deserialize(d)?;
        let default = RcLogin::default();
        Ok(RcLogin {
            address: raw.address.or(default.address),
            account: raw.account.or(default.account),
            failed_attempts: raw.failed_attempts.or(default.failed_attempts),
            global_failed_attempts: raw
                .global_failed_attempts
                .or(default.global_failed_attempts),
        })
    }
}

/// `[federation]`: as Synapse's `federation:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSection {
    pub client_timeout: ConfigDuration,
    /// Time allowed to open a connection (TCP and TLS handshake) to one of
    /// a destination's addresses before the next address is tried.
    pub connect_timeout: ConfigDuration,
    pub max_short_retries: u32,
    pub max_long_retries: u32,
    pub max_short_retry_delay: ConfigDuration,
    pub max_long_retry_delay: ConfigDuration,
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            client_timeout: ConfigDuration(Duration::from_secs(60)),
            connect_timeout: ConfigDuration(Duration::from_secs(5)),
            max_short_retries: 3,
            max_long_retries: 10,
            max_short_retry_delay: ConfigDuration(Duration::from_secs(2)),
            max_long_retry_delay: ConfigDuration(Duration::from_secs(60)),
        }
    }
}

/// `[connections]`: what one client may hold on either listener (the
/// admin/console `listen` and `federation_listen`), so that slow or idle
/// connections cannot use up the open-files limit (see `crate::accept`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsSection {
    /// Time for a request's head (request line and headers) to arrive,
    /// counted from when the connection opened (after its TLS handshake) or,
    /// on a kept-alive HTTP/1.1 connection, from the previous answer: hyper
    /// times the wait for every HTTP/1.1 head, so an idle kept-alive
    /// HTTP/1.1 connection is closed after this, not after `idle_timeout`.
    pub header_read_timeout: ConfigDuration,
    /// An HTTP/2 connection with no request under way for this long is
    /// closed (HTTP/1.1 ones wait at most `header_read_timeout` for their
    /// next request).
    pub idle_timeout: ConfigDuration,
    /// Time for a client to finish its TLS handshake (`federation_listen`).
    pub tls_handshake_timeout: ConfigDuration,
    /// TLS handshakes under way at once; more wait their turn (within
    /// `tls_handshake_timeout`).
    pub max_tls_handshakes: usize,
    /// Open connections per listener; absent = a quarter of the open-files
    /// limit each, so both listeners together use at most half of it and
    /// the rest stays for outbound connections, DNS and the database.
    pub max_connections: Option<usize>,
    /// Time for each piece of a request body to arrive, and for the client
    /// to take each piece of an answer: a body that stalls longer fails (the
    /// request gets `400 M_NOT_JSON`), an answer the client stops reading
    /// ends its connection.
    pub body_timeout: ConfigDuration,
    /// On shutdown, how long the requests under way may take to finish
    /// before Herald stops anyway (and closes its database).
    pub drain_timeout: ConfigDuration,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            header_read_timeout: ConfigDuration(Duration::from_secs(10)),
            idle_timeout: ConfigDuration(Duration::from_secs(60)),
            tls_handshake_timeout: ConfigDuration(Duration::from_secs(10)),
            max_tls_handshakes: 64,
            max_connections: None,
            body_timeout: ConfigDuration(Duration::from_secs(30)),
            drain_timeout: ConfigDuration(Duration::from_secs(10)),
        }
    }
}

/// `[diagnose]`: the bounds of `POST …/destinations/<d>/diagnose` and
/// `herald federation diagnose` (see `herald_federation::diagnose`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnoseSection {
    /// Time allowed for each step (a DNS look-up, a connect, a handshake, a
    /// request and its answer).
    pub step_timeout: ConfigDuration,
    /// Addresses connected to, at most, per diagnosis.
    pub max_addresses: usize,
    /// Diagnoses under way at once through the API, all destinations
    /// together; more are answered `429 M_LIMIT_EXCEEDED`.
    pub max_concurrent: usize,
}

impl Default for DiagnoseSection {
    fn default() -> Self {
        DiagnoseSection {
            step_timeout: ConfigDuration(Duration::from_secs(10)),
            max_addresses: 4,
            max_concurrent: 4,
        }
    }
}

/// `database`: Herald's own store. A path is an SQLite file (the default,
/// `herald.db`); a `postgresql://` or `postgres://` URL is a PostgreSQL
/// database. `Debug` never shows a URL's password.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Database(PathBuf);

impl Database {
    /// Which store it names.
    pub fn target(&self) -> herald_store::DatabaseTarget {
        match self.0.to_str() {
            Some(text) => herald_store::DatabaseTarget::parse(text),
            None => herald_store::DatabaseTarget::Sqlite(self.0.clone()),
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn shown(&self) -> String {
        self.target().shown()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.target(), herald_store::DatabaseTarget::Postgres(_))
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Database {
        Database(path)
    }
}

impl From<String> for Database {
    fn from(text: String) -> Database {
        Database(PathBuf::from(text))
    }
}

impl From<&str> for Database {
    fn from(text: &str) -> Database {
        Database(PathBuf::from(text))
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Database").field(&self.shown()).finish()
    }
}

/// `[synapse]`: attached mode. Herald reads the destinations of a Synapse
/// it does not replace (`database`, read-only), signs admins in through it
/// and forwards resets to it (`url`); its own sender is off.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynapseSection {
    /// Synapse's database: an SQLite file or a `postgresql://` URL. Only
    /// read (`destinations`, `destination_rooms`), never written.
    pub database: String,
    /// Synapse's client and admin API, e.g. `http://localhost:8008`.
    pub url: String,
    /// How often Synapse's `destinations` table is checked for changes.
    #[serde(default = "SynapseSection::default_refresh_interval")]
    pub refresh_interval: ConfigDuration,
    /// How long Synapse's verdict on an access token (valid, an admin) is
    /// kept: a token Synapse revokes works on Herald for at most this long.
    #[serde(default = "SynapseSection::default_token_cache")]
    pub token_cache: ConfigDuration,
}

/// `Debug` without the database URL's password.
impl std::fmt::Debug for SynapseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseSection")
            .field(
                "database",
                &herald_store::synapse::without_password(&self.database),
            )
            .field("url", &self.url)
            .field("refresh_interval", &self.refresh_interval)
            .field("token_cache", &self.token_cache)
            .finish()
    }
}

impl SynapseSection {
    fn default_refresh_interval() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(2))
    }
    fn default_token_cache() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }

    /// Checks the section's values, naming the key at fault.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.database.trim().is_empty() {
            return invalid(
                "synapse.database",
                "must name Synapse's database: an SQLite file or a postgresql:// URL".into(),
            );
        }
        match url_base(&self.url) {
            Some(_) => {}
            None => {
                return invalid(
                    "synapse.url",
                    format!(
                        "`{}` is not Synapse's base URL such as http://localhost:8008",
                        self.url
                    ),
                )
            }
        }
        let refresh = self.refresh_interval.0;
        if refresh < Duration::from_millis(100) || refresh > Duration::from_secs(3600) {
            return invalid(
                "synapse.refresh_interval",
                "must be between 100ms and 1h".into(),
            );
        }
        if self.token_cache.0 > Duration::from_secs(3600) {
            return invalid("synapse.token_cache", "must be at most 1h".into());
        }
        Ok(())
    }

    /// Synapse's base URL without a trailing `/`.
    pub fn base_url(&self) -> String {
        url_base(&self.url).unwrap_or_default()
    }
}

/// Whether `name` may be an `instance_name`: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_instance_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The host name (the kernel's), or `main` when it is unknown or not a
/// valid instance name.
fn default_instance_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| valid_instance_name(h))
        .unwrap_or_else(|| "main".to_owned())
}

/// `http(s)://host[:port][/prefix]` without a trailing `/`, or `None` when
/// `url` is not such a URL (no query, no fragment, no user info).
fn url_base(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || url.contains(['?', '#', ' ', '@']) {
        return None;
    }
    Some(url.trim_end_matches('/').to_owned())
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server_name: String,
    pub database: Database,
    /// This Herald's name among the instances sharing a PostgreSQL
    /// `database` (each sends the destinations of the shards it holds);
    /// 1–64 of `A-Z a-z 0-9 . _ -`. Default: the host name, or `main`.
    /// On SQLite there is one instance, holding every shard.
    pub instance_name: String,
    pub listen: String,
    /// Where the federation listener (key server) listens, e.g.
    /// `"0.0.0.0:8448"`; absent = no federation listener. It is never the
    /// admin/console listener: as Synapse's federation port, it serves only
    /// federation routes.
    pub federation_listen: Option<String>,
    /// PEM certificate chain and private key for `federation_listen`; both or
    /// neither.
    pub tls_certificate_path: Option<PathBuf>,
    pub tls_private_key_path: Option<PathBuf>,
    /// Whether `federation_listen` speaks TLS (default true, and then both TLS
    /// paths are required). `false` serves plain HTTP, for a reverse proxy
    /// that terminates TLS in front of Herald (Synapse's `tls: false`
    /// federation listener); the TLS paths must then be absent.
    pub federation_tls: bool,
    /// Synapse's key file; absent = `<server_name>.signing.key` next to the
    /// database (see [`Config::signing_key_path`]). Created 0600 if missing.
    pub signing_key_path: Option<PathBuf>,
    /// Keys we signed with before, still published with their expiry:
    /// `[old_signing_keys."ed25519:a_old1"]` `key = "<base64>"`, `expired_ts = <ms>`.
    pub old_signing_keys: BTreeMap<String, OldSigningKey>,
    /// How long the keys we publish stay valid (`valid_until_ts`).
    pub key_refresh_interval: ConfigDuration,
    pub federation_domain_whitelist: Option<Vec<String>>,
    pub federation_verify_certificates: bool,
    pub federation_custom_ca_list: Option<Vec<PathBuf>>,
    pub ip_range_blacklist: Option<Vec<String>>,
    pub ip_range_whitelist: Vec<String>,
    pub destination_min_retry_interval: ConfigDuration,
    pub destination_retry_multiplier: f64,
    pub destination_max_retry_interval: ConfigDuration,
    pub sender_api_token: Option<Secret>,
    /// A backoff longer than this sends a destination into catch-up (the
    /// newest event of each room instead of everything it missed; presence,
    /// typing and receipts dropped). Synapse: one hour.
    pub sender_catch_up_after: ConfigDuration,
    /// How long an access token from `/login` stays valid; absent = until logout.
    pub access_token_lifetime: Option<ConfigDuration>,
    pub federation: FederationSection,
    pub rc_login: RcLogin,
    /// Synapse's listener option `x_forwarded`: take the client address of a
    /// request on `listen` from the first (leftmost) `X-Forwarded-For` value
    /// instead of the TCP peer, for the login limits and the logs. Only for a
    /// reverse proxy that sets that header itself (default false).
    pub x_forwarded: bool,
    pub connections: ConnectionsSection,
    pub diagnose: DiagnoseSection,
    /// Attached mode: the Synapse whose destinations Herald shows.
    pub synapse: Option<SynapseSection>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_name: "localhost".into(),
            database: Database::from("herald.db"),
            instance_name: default_instance_name(),
            listen: "127.0.0.1:8008".into(),
            federation_listen: None,
            tls_certificate_path: None,
            tls_private_key_path: None,
            federation_tls: true,
            signing_key_path: None,
            old_signing_keys: BTreeMap::new(),
            key_refresh_interval: ConfigDuration(Duration::from_secs(86_400)),
            federation_domain_whitelist: None,
            federation_verify_certificates: true,
            federation_custom_ca_list: None,
            ip_range_blacklist: None,
            ip_range_whitelist: Vec::new(),
            destination_min_retry_interval: ConfigDuration(Duration::from_secs(600)),
            destination_retry_multiplier: 2.0,
            destination_max_retry_interval: ConfigDuration(Duration::from_secs(7 * 86_400)),
            sender_api_token: None,
            sender_catch_up_after: ConfigDuration(Duration::from_secs(3600)),
            access_token_lifetime: None,
            federation: FederationSection::default(),
            rc_login: RcLogin::default(),
            x_forwarded: false,
            connections: ConnectionsSection::default(),
            diagnose: DiagnoseSection::default(),
            synapse: None,
        }
    }
}

impl Config {
    /// A config for local tools, tests and benchmarks: `server_name`, the
    /// database file, a free port on 127.0.0.1, and login limits high enough
    /// never to trigger.
    pub fn loopback(server_name: &str, database: impl Into<Database>) -> Config {
        let generous = RateLimit {
            per_second: 1000.0,
            burst_count: 1000.0,
        };
        Config {
            server_name: server_name.into(),
            database: database.into(),
            listen: "127.0.0.1:0".into(),
            rc_login: RcLogin {
                address: generous,
                account: generous,
                failed_attempts: generous,
                global_failed_attempts: generous,
            },
            ..Config::default()
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if !valid_instance_name(&self.instance_name) {
            return invalid(
                "instance_name",
                format!(
                    "{:?} is not an instance name: 1 to 64 of A-Z a-z 0-9 . _ -",
                    self.instance_name
                ),
            );
        }
        if self.server_name.is_empty() || self.server_name.contains(['/', ' ', '@']) {
            return invalid(
                "server_name",
                format!("`{}` is not a server name", self.server_name),
            );
        }
        if self.listen_addr().is_err() {
            return invalid(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:8008", self.listen),
            );
        }
        self.federation_listen_addr()?;
        match (&self.tls_certificate_path, &self.tls_private_key_path) {
            (Some(_), None) => {
                return invalid(
                    "tls_private_key_path",
                    "must be set when tls_certificate_path is".into(),
                )
            }
            (None, Some(_)) => {
                return invalid(
                    "tls_certificate_path",
                    "must be set when tls_private_key_path is".into(),
                )
            }
            (Some(_), Some(_)) if !self.federation_tls => {
                return invalid(
                    "federation_tls",
                    "is false but tls_certificate_path and tls_private_key_path are set: \
                     remove one or the other"
                        .into(),
                )
            }
            (None, None) if self.federation_tls && self.federation_listen.is_some() => {
                return invalid(
                    "tls_certificate_path",
                    "federation_listen needs tls_certificate_path and tls_private_key_path \
                     (or federation_tls = false to serve plain HTTP behind a TLS proxy)"
                        .into(),
                )
            }
            _ => {}
        }
        if matches!(&self.signing_key_path, Some(p) if p.as_os_str().is_empty()) {
            return invalid("signing_key_path", "must not be empty".into());
        }
        if let Err(e) = herald_keys::key_file::old_verify_keys(&self.old_signing_keys) {
            return invalid("old_signing_keys", e.to_string());
        }
        if self.key_refresh_interval.0 < Duration::from_secs(1) {
            return invalid("key_refresh_interval", "must be at least 1s".into());
        }
        if self.database.0.as_os_str().is_empty() {
            return invalid("database", "must not be empty".into());
        }
        if self.database.is_postgres() && self.synapse.is_some() {
            return invalid(
                "database",
                "is a PostgreSQL URL, but attached mode ([synapse]) keeps Herald's own tables \
                 in an SQLite file for now: set `database` to a path"
                    .into(),
            );
        }
        if !(self.destination_retry_multiplier >= 1.0
            && self.destination_retry_multiplier.is_finite())
        {
            return invalid(
                "destination_retry_multiplier",
                "must be a number of at least 1".into(),
            );
        }
        if self.destination_min_retry_interval.0 > self.destination_max_retry_interval.0 {
            return invalid(
                "destination_min_retry_interval",
                "must not exceed destination_max_retry_interval".into(),
            );
        }
        if let Err(e) = self.ip_filter() {
            return invalid(e.key, e.error.to_string());
        }
        if let Some(domains) = &self.federation_domain_whitelist {
            if let Some(bad) = domains.iter().find(|d| ServerName::parse(d).is_err()) {
                return invalid(
                    "federation_domain_whitelist",
                    format!("`{bad}` is not a server name"),
                );
            }
        }
        let empty_path = |p: &PathBuf| p.as_os_str().is_empty();
        if matches!(&self.federation_custom_ca_list, Some(list) if list.iter().any(empty_path)) {
            return invalid(
                "federation_custom_ca_list",
                "must not contain an empty path".into(),
            );
        }
        if self.federation.client_timeout.0.is_zero() {
            return invalid("federation.client_timeout", "must be more than 0".into());
        }
        if self.federation.connect_timeout.0.is_zero() {
            return invalid("federation.connect_timeout", "must be more than 0".into());
        }
        for (key, limit) in [
            ("rc_login.address", self.rc_login.address),
            ("rc_login.account", self.rc_login.account),
            ("rc_login.failed_attempts", self.rc_login.failed_attempts),
            (
                "rc_login.global_failed_attempts",
                self.rc_login.global_failed_attempts,
            ),
        ] {
            if !(limit.per_second > 0.0 && limit.per_second.is_finite() && limit.burst_count >= 1.0)
            {
                return Err(ConfigError::Invalid {
                    key,
                    message: "per_second must be above 0 and burst_count at least 1".into(),
                });
            }
        }
        let c = &self.connections;
        for (key, d) in [
            ("connections.header_read_timeout", c.header_read_timeout),
            ("connections.idle_timeout", c.idle_timeout),
            ("connections.tls_handshake_timeout", c.tls_handshake_timeout),
            ("connections.body_timeout", c.body_timeout),
        ] {
            if d.0.is_zero() {
                return invalid(key, "must be above 0".into());
            }
        }
        if c.max_tls_handshakes == 0 {
            return invalid(
                "connections.max_tls_handshakes",
                "must be at least 1".into(),
            );
        }
        if c.max_connections.is_some_and(|n| n == 0 || n > 1 << 20) {
            return invalid(
                "connections.max_connections",
                "must be between 1 and 1048576".into(),
            );
        }
        let d = &self.diagnose;
        if d.step_timeout.0.is_zero() || d.step_timeout.0 > Duration::from_secs(300) {
            return invalid(
                "diagnose.step_timeout",
                "must be above 0 and at most 5m".into(),
            );
        }
        if d.max_addresses == 0 || d.max_addresses > 64 {
            return invalid("diagnose.max_addresses", "must be between 1 and 64".into());
        }
        if d.max_concurrent == 0 || d.max_concurrent > 1024 {
            return invalid(
                "diagnose.max_concurrent",
                "must be between 1 and 1024".into(),
            );
        }
        if let Some(synapse) = &self.synapse {
            synapse.validate()?;
            if self.sender_api_token.is_some() {
                return invalid(
                    "sender_api_token",
                    "must not be set with [synapse]: attached, Herald's sender is off \
                     (Synapse sends its own federation traffic)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Whether Herald is attached to a Synapse (`[synapse]`).
    pub fn attached(&self) -> bool {
        self.synapse.is_some()
    }

    /// The federation listener's address, if one is configured.
    pub fn federation_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.federation_listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| ConfigError::Invalid {
                    key: "federation_listen",
                    message: format!("`{text}` is not an address such as 0.0.0.0:8448"),
                })
            })
            .transpose()
    }

    /// Where the signing key file is: `signing_key_path`, or else
    /// `<server_name>.signing.key` in the SQLite database's directory (so
    /// `--database` moves it along), or on PostgreSQL in the working
    /// directory.
    pub fn signing_key_path(&self) -> PathBuf {
        let file = format!("{}.signing.key", self.server_name);
        match (&self.signing_key_path, self.database.target()) {
            (Some(path), _) => path.clone(),
            (None, herald_store::DatabaseTarget::Sqlite(db)) => db.with_file_name(file),
            (None, herald_store::DatabaseTarget::Postgres(_)) => PathBuf::from(file),
        }
    }

    /// The federation client's retry settings (`[federation]`,
    /// `federation_domain_whitelist`).
    pub fn client_settings(&self) -> ClientSettings {
        let f = &self.federation;
        ClientSettings {
            client_timeout: f.client_timeout.0,
            connect_timeout: f.connect_timeout.0,
            max_short_retries: f.max_short_retries,
            max_long_retries: f.max_long_retries,
            max_short_retry_delay: f.max_short_retry_delay.0,
            max_long_retry_delay: f.max_long_retry_delay.0,
            domain_whitelist: self
                .federation_domain_whitelist
                .as_ref()
                .map(|list| list.iter().cloned().collect()),
            ..ClientSettings::default()
        }
    }

    /// The backoff policy (`destination_min_retry_interval`,
    /// `destination_retry_multiplier`, `destination_max_retry_interval`).
    pub fn backoff_policy(&self) -> BackoffPolicy {
        BackoffPolicy {
            min_interval: self.destination_min_retry_interval.0,
            multiplier: self.destination_retry_multiplier,
            max_interval: self.destination_max_retry_interval.0,
        }
    }

    /// Everything the federation client is built from.
    pub fn federation_settings(&self) -> FederationSettings {
        FederationSettings {
            client: self.client_settings(),
            backoff: self.backoff_policy(),
            verify_certificates: self.federation_verify_certificates,
            custom_ca_list: self.federation_custom_ca_list.clone(),
            ip_range_blacklist: self.ip_range_blacklist.clone(),
            ip_range_whitelist: self.ip_range_whitelist.clone(),
        }
    }

    /// The TLS client configuration (`federation_verify_certificates`,
    /// `federation_custom_ca_list`).
    pub fn tls_client_config(
        &self,
    ) -> Result<std::sync::Arc<rustls::ClientConfig>, herald_federation::connect::TlsConfigError>
    {
        self.federation_settings().tls_config()
    }

    /// The IP range filter (`ip_range_blacklist`, `ip_range_whitelist`).
    pub fn ip_filter(&self) -> Result<IpFilter, herald_federation::ip_filter::IpFilterError> {
        IpFilter::new(self.ip_range_blacklist.as_deref(), &self.ip_range_whitelist)
    }

    /// A diagnosis's bounds (`[diagnose]`).
    pub fn diagnose_settings(&self) -> herald_federation::diagnose::DiagnoseSettings {
        herald_federation::diagnose::DiagnoseSettings {
            step_timeout: self.diagnose.step_timeout.0,
            max_addresses: self.diagnose.max_addresses,
        }
    }

    /// What reading Synapse's database takes (`[synapse]`), if attached.
    pub fn synapse_settings(&self) -> Option<herald_store::SynapseSettings> {
        self.synapse
            .as_ref()
            .map(|s| herald_store::SynapseSettings {
                database: s.database.clone(),
                refresh_interval: s.refresh_interval.0,
            })
    }

    /// What the sender is built from.
    pub fn sender_settings(&self) -> SenderSettings {
        SenderSettings {
            server_name: self.server_name.clone(),
            domain_whitelist: self.federation_domain_whitelist.clone(),
            retry_rejected_after: self.destination_min_retry_interval.0,
            catch_up_after: self.sender_catch_up_after.0,
            instance_name: self.instance_name.clone(),
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            message: format!("`{}` is not an address such as 127.0.0.1:8008", self.listen),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Config::parse(r#"sender_api_token = "hunter2-intake-token""#).unwrap();
        assert_eq!(c.sender_api_token.as_deref(), Some("hunter2-intake-token"));
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(<redacted>)"), "{shown}");
    }

    #[test]
    fn a_postgresql_url_selects_postgresql_and_its_password_never_shows() {
        for url in [
            "postgresql://herald:pw-secret@127.0.0.1:5432/herald",
            "postgres://herald:pw-secret@127.0.0.1/herald",
        ] {
            let c = Config::parse(&format!("database = \"{url}\"")).unwrap();
            c.validate().unwrap();
            assert!(matches!(
                c.database.target(),
                herald_store::DatabaseTarget::Postgres(u) if u == url
            ));
            let shown = format!("{c:?} {c:#?} {}", c.database.shown());
            assert!(!shown.contains("pw-secret"), "{shown}");
            assert!(shown.contains("herald:***@127.0.0.1"), "{shown}");
        }
        let c = Config::parse("database = \"/var/lib/herald/herald.db\"").unwrap();
        assert_eq!(
            c.database.target(),
            herald_store::DatabaseTarget::Sqlite(PathBuf::from("/var/lib/herald/herald.db"))
        );
        // Attached mode keeps Herald's own tables in SQLite for now.
        let e = Config::parse(
            "database = \"postgresql://h@127.0.0.1/h\"\n\
             [synapse]\ndatabase = \"s.db\"\nurl = \"http://127.0.0.1:8008\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("database") && e.contains("attached"), "{e}");
    }

    #[test]
    fn instance_names_are_checked() {
        let c = Config::parse("instance_name = \"herald-2.eu_west\"").unwrap();
        assert_eq!(c.instance_name, "herald-2.eu_west");
        assert!(valid_instance_name(&Config::default().instance_name));
        for bad in ["", "a b", "ü", "x/y", &"a".repeat(65)] {
            let e = Config::parse(&format!("instance_name = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("instance_name"), "{e}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:8008");
        assert_eq!(c.database, Database::from("herald.db"));
    }

    #[test]
    fn reads_synapse_style_keys() {
        let c = Config::parse(
            r#"
            server_name = "example.org"
            destination_min_retry_interval = "5m"
            destination_max_retry_interval = 86400000
            federation_domain_whitelist = ["a.org"]
            [federation]
            client_timeout = "30s"
            [rc_login.failed_attempts]
            per_second = 1.0
            burst_count = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.server_name, "example.org");
        assert_eq!(c.destination_min_retry_interval.0, Duration::from_secs(300));
        assert_eq!(
            c.destination_max_retry_interval.0,
            Duration::from_secs(86_400)
        );
        assert_eq!(c.federation.client_timeout.0, Duration::from_secs(30));
        assert_eq!(c.federation.max_long_retries, 10);
        assert_eq!(c.rc_login.failed_attempts.burst_count, 10.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::parse("sevrer_name = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sevrer_name"), "{e}");
        let e = Config::parse("listen = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`listen`"), "{e}");
        let e = Config::parse("destination_min_retry_interval = \"10 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destination_min_retry_interval"), "{e}");
        let e = Config::parse("[federation]\nmax_short_retries = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_short_retries"), "{e}");
        let e = Config::parse("destination_retry_multiplier = 0.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destination_retry_multiplier"), "{e}");
    }

    #[test]
    fn federation_listener_keys() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.federation_listen_addr().unwrap(), None);
        assert!(c.federation_tls);
        assert_eq!(c.key_refresh_interval.0, Duration::from_secs(86_400));
        assert!(c.old_signing_keys.is_empty());
        let c = Config::parse(
            r#"
            federation_listen = "127.0.0.1:8448"
            tls_certificate_path = "cert.pem"
            tls_private_key_path = "key.pem"
            key_refresh_interval = "2h"
            [old_signing_keys."ed25519:a_old1"]
            key = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"
            expired_ts = 1600000000000
            "#,
        )
        .unwrap();
        assert_eq!(
            c.federation_listen_addr().unwrap(),
            Some("127.0.0.1:8448".parse().unwrap())
        );
        assert_eq!(c.key_refresh_interval.0, Duration::from_secs(7200));
        assert_eq!(
            c.old_signing_keys["ed25519:a_old1"].expired_ts,
            1_600_000_000_000
        );
        let plain =
            Config::parse("federation_listen = \"[::]:8448\"\nfederation_tls = false").unwrap();
        assert!(!plain.federation_tls);
    }

    #[test]
    fn bad_federation_listener_keys_name_the_key() {
        for (text, key) in [
            ("federation_listen = \"nowhere\"", "`federation_listen`"),
            ("federation_listen = \"0.0.0.0:8448\"", "`tls_certificate_path`"),
            ("tls_certificate_path = \"c.pem\"", "`tls_private_key_path`"),
            ("tls_private_key_path = \"k.pem\"", "`tls_certificate_path`"),
            (
                "federation_tls = false\ntls_certificate_path = \"c\"\ntls_private_key_path = \"k\"",
                "`federation_tls`",
            ),
            ("signing_key_path = \"\"", "`signing_key_path`"),
            ("key_refresh_interval = \"0s\"", "`key_refresh_interval`"),
            ("key_refresh_interval = \"soon\"", "key_refresh_interval"),
            (
                "[old_signing_keys.\"rsa:x\"]\nkey = \"AAAA\"\nexpired_ts = 1",
                "`old_signing_keys`",
            ),
            (
                "[old_signing_keys.\"ed25519:a_x\"]\nkey = \"not base64!\"\nexpired_ts = 1",
                "`old_signing_keys`",
            ),
            ("[old_signing_keys.\"ed25519:a_x\"]\nkey = \"AAAA\"", "expired_ts"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn federation_client_keys() {
        let c = Config::parse("").unwrap();
        assert!(c.federation_verify_certificates);
        assert_eq!(c.federation_custom_ca_list, None);
        assert_eq!(c.ip_range_blacklist, None);
        assert!(c.ip_range_whitelist.is_empty());
        assert_eq!(c.federation.max_short_retry_delay.0, Duration::from_secs(2));
        assert_eq!(c.federation.max_long_retry_delay.0, Duration::from_secs(60));
        let c = Config::parse(
            r#"
            federation_verify_certificates = false
            federation_custom_ca_list = ["ca.pem"]
            ip_range_blacklist = ["10.0.0.0/8", "fc00::/7"]
            ip_range_whitelist = ["127.0.0.1"]
            federation_domain_whitelist = ["a.org", "127.0.0.1:8448", "[::1]"]
            [federation]
            max_short_retries = 5
            max_short_retry_delay = "1s"
            max_long_retry_delay = "2m"
            "#,
        )
        .unwrap();
        assert!(!c.federation_verify_certificates);
        assert_eq!(
            c.federation_custom_ca_list,
            Some(vec![PathBuf::from("ca.pem")])
        );
        assert_eq!(c.federation.max_short_retries, 5);
        assert_eq!(
            c.federation.max_long_retry_delay.0,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn bad_federation_client_keys_name_the_key() {
        for (text, key) in [
            (
                "ip_range_blacklist = [\"10.0.0.0/40\"]",
                "`ip_range_blacklist`",
            ),
            (
                "ip_range_whitelist = [\"localhost\"]",
                "`ip_range_whitelist`",
            ),
            ("ip_range_whitelist = \"127.0.0.1\"", "ip_range_whitelist"),
            (
                "federation_domain_whitelist = [\"a b\"]",
                "`federation_domain_whitelist`",
            ),
            (
                "federation_custom_ca_list = [\"\"]",
                "`federation_custom_ca_list`",
            ),
            (
                "federation_verify_certificates = \"no\"",
                "federation_verify_certificates",
            ),
            (
                "[federation]\nclient_timeout = \"0s\"",
                "`federation.client_timeout`",
            ),
            (
                "[federation]\nmax_long_retry_delay = \"soon\"",
                "max_long_retry_delay",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn connection_limits() {
        let c = Config::parse("").unwrap();
        let limits = crate::accept::Limits::from_config(&c, 1024);
        assert_eq!(limits.max_connections, 256);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.body_timeout, Duration::from_secs(30));
        assert_eq!(limits.drain_timeout, Duration::from_secs(10));
        // A high hard limit does not make the derived cap huge.
        let limits = crate::accept::Limits::from_config(&c, 1 << 20);
        assert_eq!(limits.max_connections, 16_384);
        let c = Config::parse(
            "[connections]\nheader_read_timeout = \"2s\"\nmax_connections = 50\n\
             max_tls_handshakes = 8\ntls_handshake_timeout = 3000\nbody_timeout = \"5s\"\n\
             drain_timeout = \"1s\"",
        )
        .unwrap();
        let limits = crate::accept::Limits::from_config(&c, 1024);
        assert_eq!(limits.max_connections, 50);
        assert_eq!(limits.max_tls_handshakes, 8);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(3));
        assert_eq!(limits.body_timeout, Duration::from_secs(5));
        assert_eq!(limits.drain_timeout, Duration::from_secs(1));
        for (text, key) in [
            (
                "[connections]\nidle_timeout = \"0s\"",
                "connections.idle_timeout",
            ),
            (
                "[connections]\nmax_connections = 0",
                "connections.max_connections",
            ),
            (
                "[connections]\nbody_timeout = \"0s\"",
                "connections.body_timeout",
            ),
            (
                "[connections]\nmax_tls_handshakes = 0",
                "connections.max_tls_handshakes",
            ),
            ("[connections]\nslowloris = 1", "slowloris"),
        ] {
            let e = Config::parse(text)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn x_forwarded_is_off_unless_set() {
        assert!(!Config::parse("").unwrap().x_forwarded);
        assert!(Config::parse("x_forwarded = true").unwrap().x_forwarded);
        let e = Config::parse("x_forwarded = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x_forwarded"), "{e}");
    }

    #[test]
    fn rc_login_takes_synapse_names_and_defaults() {
        let c = Config::parse("").unwrap();
        let limit = |per_second, burst_count| RateLimit {
            per_second,
            burst_count,
        };
        assert_eq!(c.rc_login.address, limit(0.003, 5.0));
        assert_eq!(c.rc_login.account, limit(0.003, 5.0));
        assert_eq!(c.rc_login.failed_attempts, limit(0.17, 3.0));
        assert_eq!(c.rc_login.global_failed_attempts, limit(1.0, 50.0));
        // As Synapse's homeserver.yaml `rc_login:` section, in TOML; a key
        // left out keeps that limit's default.
        let c = Config::parse(
            r#"
            [rc_login.address]
            per_second = 0.5
            burst_count = 20
            [rc_login.account]
            per_second = 2
            [rc_login.failed_attempts]
            burst_count = 10
            [rc_login.global_failed_attempts]
            per_second = 5.0
            burst_count = 200
            "#,
        )
        .unwrap();
        assert_eq!(c.rc_login.address, limit(0.5, 20.0));
        assert_eq!(c.rc_login.account, limit(2.0, 5.0));
        assert_eq!(c.rc_login.failed_attempts, limit(0.17, 10.0));
        assert_eq!(c.rc_login.global_failed_attempts, limit(5.0, 200.0));
        for (text, key) in [
            ("[rc_login.account]\nper_second = 0", "`rc_login.account`"),
            (
                "[rc_login.address]\nburst_count = 0.5",
                "`rc_login.address`",
            ),
            ("[rc_login.failed_attempts]\nper_minute = 1", "per_minute"),
            ("[rc_login.acount]\nper_second = 1", "acount"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn federation_connect_timeout() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.federation.connect_timeout.0, Duration::from_secs(5));
        let c = Config::parse("[federation]\nconnect_timeout = \"750ms\"").unwrap();
        assert_eq!(c.federation.connect_timeout.0, Duration::from_millis(750));
        for text in [
            "[federation]\nconnect_timeout = \"0s\"",
            "[federation]\nconnect_timeout = \"soon\"",
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains("connect_timeout"), "{text}: {e}");
        }
    }

    #[test]
    fn the_signing_key_lives_next_to_the_database_by_default() {
        let mut c = Config::loopback("example.org", PathBuf::from("/var/lib/herald/herald.db"));
        assert_eq!(
            c.signing_key_path(),
            PathBuf::from("/var/lib/herald/example.org.signing.key")
        );
        c.database = Database::from("herald.db");
        assert_eq!(
            c.signing_key_path(),
            PathBuf::from("example.org.signing.key")
        );
        c.database = Database::from("postgresql://herald@db.example/herald");
        assert_eq!(
            c.signing_key_path(),
            PathBuf::from("example.org.signing.key")
        );
        c.signing_key_path = Some(PathBuf::from("/etc/herald/key"));
        assert_eq!(c.signing_key_path(), PathBuf::from("/etc/herald/key"));
    }

    #[test]
    fn diagnose_section() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.diagnose, DiagnoseSection::default());
        assert_eq!(c.diagnose_settings().step_timeout, Duration::from_secs(10));
        let c = Config::parse(
            "[diagnose]\nstep_timeout = \"2s\"\nmax_addresses = 2\nmax_concurrent = 8",
        )
        .unwrap();
        assert_eq!(c.diagnose_settings().step_timeout, Duration::from_secs(2));
        assert_eq!(c.diagnose_settings().max_addresses, 2);
        assert_eq!(c.diagnose.max_concurrent, 8);
        for (text, key) in [
            ("[diagnose]\nstep_timeout = \"0s\"", "diagnose.step_timeout"),
            ("[diagnose]\nstep_timeout = \"1h\"", "diagnose.step_timeout"),
            ("[diagnose]\nmax_addresses = 0", "diagnose.max_addresses"),
            ("[diagnose]\nmax_concurrent = 0", "diagnose.max_concurrent"),
            ("[diagnose]\nnope = 1", "nope"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn synapse_section() {
        let c = Config::parse("").unwrap();
        assert!(!c.attached());
        let c = Config::parse(
            "[synapse]\ndatabase = \"postgresql://herald@127.0.0.1/synapse\"\nurl = \"http://127.0.0.1:8008/\"",
        )
        .unwrap();
        assert!(c.attached());
        let s = c.synapse.as_ref().unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:8008");
        assert_eq!(s.refresh_interval.0, Duration::from_secs(2));
        assert_eq!(s.token_cache.0, Duration::from_secs(30));
        let c2 = Config::parse(
            "[synapse]\ndatabase = \"postgresql://r:pw-secret@127.0.0.1/synapse\"\nurl = \"http://127.0.0.1:8008\"",
        )
        .unwrap();
        assert!(!format!("{c2:?}").contains("pw-secret"));
        assert_eq!(
            c.synapse_settings().unwrap().database,
            "postgresql://herald@127.0.0.1/synapse"
        );
        for (text, key) in [
            ("[synapse]\nurl = \"http://x\"", "database"),
            ("[synapse]\ndatabase = \"a.db\"", "url"),
            (
                "[synapse]\ndatabase = \"\"\nurl = \"http://x\"",
                "synapse.database",
            ),
            (
                "[synapse]\ndatabase = \"a.db\"\nurl = \"ftp://x\"",
                "synapse.url",
            ),
            (
                "[synapse]\ndatabase = \"a.db\"\nurl = \"http://\"",
                "synapse.url",
            ),
            (
                "[synapse]\ndatabase = \"a.db\"\nurl = \"http://x\"\nrefresh_interval = \"0s\"",
                "synapse.refresh_interval",
            ),
            (
                "[synapse]\ndatabase = \"a.db\"\nurl = \"http://x\"\ntoken_cache = \"2h\"",
                "synapse.token_cache",
            ),
            (
                "[synapse]\ndatabase = \"a.db\"\nurl = \"http://x\"\nnope = 1",
                "nope",
            ),
            (
                "sender_api_token = \"t\"\n[synapse]\ndatabase = \"a.db\"\nurl = \"http://x\"",
                "sender_api_token",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
