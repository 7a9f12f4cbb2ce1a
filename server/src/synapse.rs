//! Attached mode's side of the conversation with Synapse (`[synapse] url`):
//! password logins forwarded to it, its verdict on an access token (valid,
//! and a server admin's) kept for `token_cache`, logouts and
//! `reset_connection` forwarded with the admin's own token, and the
//! start-up check that `url` is a Synapse. Destinations themselves are read
//! from Synapse's database by `herald_store` (`Store::open_attached`).
//!
//! Every answer Synapse gives is passed on as Synapse gave it (status and
//! Matrix body); Synapse down or answering something that is not Matrix JSON
//! is a `502 M_UNKNOWN` naming `[synapse] url`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::http::error::ApiError;

/// Time allowed for one request to Synapse.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read from Synapse.
const MAX_ANSWER: usize = 64 * 1024;
/// Verdicts kept at most; beyond, expired ones go first, then all.
const MAX_VERDICTS: usize = 10_000;
/// Token checks sent to Synapse at once; more wait their turn.
const MAX_CHECKS: usize = 16;

/// Why a request to Synapse got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum SynapseError {
    #[error("Synapse at {url} ([synapse] url) does not answer: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} ([synapse] url) answered {status} with no Matrix JSON: it does not look like Synapse")]
    NotMatrix { url: String, status: StatusCode },
    #[error("cannot build the HTTP client for [synapse] url: {0}")]
    Client(String),
}

impl From<SynapseError> for ApiError {
    /// The detail (Synapse's address, the network error) goes to the log;
    /// whoever asked, signed in or not, is told only which setting to check.
    fn from(e: SynapseError) -> Self {
        tracing::warn!(error = %e, "Synapse gave no usable answer");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            "Synapse ([synapse] url) did not answer as Synapse does; Herald's log says why",
        )
    }
}

/// An answer from Synapse: its status and JSON body, to pass on.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Synapse's answer as a Herald error (for a non-2xx answer): the same
    /// status, errcode and text.
    pub fn into_error(self) -> ApiError {
        let errcode = match self.body.get("errcode").and_then(Value::as_str) {
            Some(code) => known_errcode(code),
            None => "M_UNKNOWN",
        };
        let message = self
            .body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("Synapse refused the request")
            .to_owned();
        let mut error = ApiError::new(self.status, errcode, message);
        for key in ["retry_after_ms", "soft_logout"] {
            if let Some(v) = self.body.get(key) {
                error = error.with(key, v.clone());
            }
        }
        error
    }
}

/// The errcode Synapse gave, as one of the static names Herald's errors
/// carry (an unknown one becomes `M_UNKNOWN`).
fn known_errcode(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "M_FORBIDDEN",
        "M_UNKNOWN_TOKEN",
        "M_MISSING_TOKEN",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_NOT_FOUND",
        "M_LIMIT_EXCEEDED",
        "M_USER_DEACTIVATED",
        "M_INVALID_PARAM",
        "M_MISSING_PARAM",
        "M_UNRECOGNIZED",
        "M_USER_LOCKED",
        "M_USER_SUSPENDED",
        "M_UNKNOWN",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("M_UNKNOWN")
}

/// Who Synapse says a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub user_id: String,
    pub device_id: Option<String>,
    pub admin: bool,
}

/// Synapse's answer about a token: whose it is, or that it is not valid
/// (with Synapse's error, passed on as it gave it).
#[derive(Debug, Clone)]
pub enum TokenCheck {
    Valid(Verdict),
    Refused(Answer),
}

/// Synapse's verdicts by token hash, with when each was given.
type Verdicts = Arc<Mutex<HashMap<[u8; 32], (Instant, TokenCheck)>>>;

/// The client for one Synapse, with the token verdicts it gave lately.
#[derive(Clone)]
pub struct SynapseApi {
    base: Arc<str>,
    http: reqwest::Client,
    token_cache: Duration,
    verdicts: Verdicts,
    checks: Arc<tokio::sync::Semaphore>,
}

impl SynapseApi {
    /// A client for Synapse at `base` (no trailing `/`), with TLS as
    /// `tls` says.
    pub fn new(
        base: &str,
        token_cache: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<SynapseApi, SynapseError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SynapseError::Client(e.to_string()))?;
        Ok(SynapseApi {
            base: base.into(),
            http,
            token_cache,
            verdicts: Arc::new(Mutex::new(HashMap::new())),
            checks: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS)),
        })
    }

    /// Synapse's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Checks at start-up that `url` answers as a Synapse does:
    /// `GET /_synapse/admin/v1/server_version` with a `server_version`.
    pub async fn check(&self) -> Result<String, SynapseError> {
        let answer = self
            .send(
                reqwest::Method::GET,
                "/_synapse/admin/v1/server_version",
                None,
                None,
            )
            .await?;
        match answer.body.get("server_version").and_then(Value::as_str) {
            Some(version) if answer.status == StatusCode::OK => Ok(version.to_owned()),
            _ => Err(SynapseError::NotMatrix {
                url: self.base.to_string(),
                status: answer.status,
            }),
        }
    }

    /// A password login, forwarded as the client sent it.
    pub async fn login(&self, body: &Map<String, Value>) -> Result<Answer, SynapseError> {
        self.send(
            reqwest::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(&Value::Object(body.clone())),
        )
        .await
    }

    /// Logs `token` out on Synapse and forgets its verdict.
    pub async fn logout(&self, token: &str) -> Result<Answer, SynapseError> {
        self.verdicts.lock().remove(&key(token));
        let answer = self
            .send(
                reqwest::Method::POST,
                "/_matrix/client/v3/logout",
                Some(token),
                Some(&Value::Object(Map::new())),
            )
            .await;
        // Again: a check under way meanwhile may have stored a verdict.
        self.verdicts.lock().remove(&key(token));
        answer
    }

    /// `reset_connection` for `destination`, on Synapse, as the admin whose
    /// token this is.
    pub async fn reset_connection(
        &self,
        token: &str,
        destination: &str,
    ) -> Result<Answer, SynapseError> {
        let path = format!(
            "/_synapse/admin/v1/federation/destinations/{}/reset_connection",
            encode_segment(destination)
        );
        self.send(
            reqwest::Method::POST,
            &path,
            Some(token),
            Some(&Value::Object(Map::new())),
        )
        .await
    }

    /// Synapse's verdict on `token`: from the cache if it is younger than
    /// `token_cache`, else asked (`whoami`, then whether that user is an
    /// admin through Synapse's admin API, which refuses non-admins).
    pub async fn check_token(&self, token: &str) -> Result<TokenCheck, SynapseError> {
        let key = key(token);
        if let Some(check) = self.cached(&key) {
            return Ok(check);
        }
        let _turn = self.checks.acquire().await;
        if let Some(check) = self.cached(&key) {
            return Ok(check);
        }
        let check = self.ask(token).await?;
        let mut verdicts = self.verdicts.lock();
        if verdicts.len() >= MAX_VERDICTS {
            let now = Instant::now();
            verdicts.retain(|_, (at, _)| now.duration_since(*at) < self.token_cache);
            if verdicts.len() >= MAX_VERDICTS {
                verdicts.clear();
            }
        }
        // A verdict is kept; Synapse failing to answer (a 5xx) is not.
        let verdict = match &check {
            TokenCheck::Valid(_) => true,
            TokenCheck::Refused(answer) => answer.status == StatusCode::UNAUTHORIZED,
        };
        if verdict && !self.token_cache.is_zero() {
            verdicts.insert(key, (Instant::now(), check.clone()));
        }
        Ok(check)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<TokenCheck> {
        let verdicts = self.verdicts.lock();
        let (at, check) = verdicts.get(key)?;
        (at.elapsed() < self.token_cache).then(|| check.clone())
    }

    async fn ask(&self, token: &str) -> Result<TokenCheck, SynapseError> {
        let whoami = self
            .send(
                reqwest::Method::GET,
                "/_matrix/client/v3/account/whoami",
                Some(token),
                None,
            )
            .await?;
        if whoami.status != StatusCode::OK {
            return Ok(TokenCheck::Refused(whoami));
        }
        let Some(user_id) = whoami.body.get("user_id").and_then(Value::as_str) else {
            return Err(SynapseError::NotMatrix {
                url: self.base.to_string(),
                status: whoami.status,
            });
        };
        let device_id = whoami
            .body
            .get("device_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let path = format!("/_synapse/admin/v1/users/{}/admin", encode_segment(user_id));
        let admin = self
            .send(reqwest::Method::GET, &path, Some(token), None)
            .await?;
        let admin = match admin.status {
            StatusCode::OK => admin.body.get("admin").and_then(Value::as_bool) == Some(true),
            // Synapse's admin API refuses whoever is not a server admin.
            StatusCode::FORBIDDEN => false,
            _ => return Ok(TokenCheck::Refused(admin)),
        };
        Ok(TokenCheck::Valid(Verdict {
            user_id: user_id.to_owned(),
            device_id,
            admin,
        }))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, SynapseError> {
        let unreachable = |detail: String| SynapseError::Unreachable {
            url: self.base.to_string(),
            detail,
        };
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| unreachable(error_text(&e)))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(error_text(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(SynapseError::NotMatrix {
                    url: self.base.to_string(),
                    status,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(body @ Value::Object(_)) => Ok(Answer { status, body }),
            _ => Err(SynapseError::NotMatrix {
                url: self.base.to_string(),
                status,
            }),
        }
    }
}

/// A reqwest error with its causes (the first line alone says only "error
/// sending request").
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The cache key of a token: its SHA-256 (the token itself is not kept).
fn key(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// One path segment, percent-encoded (a destination or user ID may hold
/// `:`, `[`, `]`, `@` or anything a caller typed).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a.example:8448"), "a.example:8448");
        assert_eq!(encode_segment("[::1]:8448"), "%5B::1%5D:8448");
        assert_eq!(encode_segment("a/b?c#d %"), "a%2Fb%3Fc%23d%20%25");
        assert_eq!(encode_segment("@admin:h"), "@admin:h");
    }

    #[test]
    fn synapse_errors_keep_their_code_and_text() {
        let e = Answer {
            status: StatusCode::FORBIDDEN,
            body: serde_json::json!({"errcode": "M_FORBIDDEN", "error": "Invalid username or password"}),
        }
        .into_error();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.errcode, "M_FORBIDDEN");
        assert_eq!(e.message, "Invalid username or password");
        let e = Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: serde_json::json!({"errcode": "M_WEIRD", "retry_after_ms": 500}),
        }
        .into_error();
        assert_eq!(e.errcode, "M_UNKNOWN");
        assert!(e.extra.iter().any(|(k, _)| *k == "retry_after_ms"));
    }
}
