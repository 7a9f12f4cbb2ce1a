//! The Matrix login routes an admin tool needs: versions, login (password),
//! whoami, logout, and Synapse's `server_version`. `r0` paths answer as `v3`.
//! A login's client address (for its rate limits and logs) is the TCP peer's,
//! or with `x_forwarded` the first `X-Forwarded-For` value, as Synapse.
//! Attached to a Synapse, a password login is checked here (Synapse's
//! order and texts, Herald's login limits, since Synapse sees every login
//! come from Herald's address) and then forwarded to Synapse, whose answer
//! (its token, or its refusal) is passed on; whoami and logout are
//! Synapse's too.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_shared::{LoginResponse, WhoAmI};
use serde_json::{json, Value};

use crate::auth::password::VerifyError;
use crate::auth::{access_token, authenticate, require_user, token};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    let mut router = Router::new()
        .route("/_matrix/client/versions", get(versions))
        .route("/_synapse/admin/v1/server_version", get(server_version));
    for v in ["v3", "r0"] {
        router = router
            .route(
                &format!("/_matrix/client/{v}/login"),
                get(login_flows).post(login),
            )
            .route(&format!("/_matrix/client/{v}/account/whoami"), get(whoami))
            .route(&format!("/_matrix/client/{v}/logout"), post(logout));
    }
    router
}

async fn versions() -> impl axum::response::IntoResponse {
    let headers = [
        (
            axum::http::header::CACHE_CONTROL,
            "public, max-age=600, s-maxage=3600, stale-while-revalidate=600",
        ),
        (axum::http::header::VARY, "Authorization"),
    ];
    (
        headers,
        Json(json!({
            "versions": [
                "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
                "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
                "v1.11", "v1.12"
            ],
            "unstable_features": {}
        })),
    )
}

async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": concat!("Herald ", env!("CARGO_PKG_VERSION")) }))
}

async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

/// Parses a request body as a JSON object, with Synapse's errors.
pub fn json_object(body: &[u8]) -> ApiResult<serde_json::Map<String, Value>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_json("Content not JSON."))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Content must be a JSON object.",
        )),
    }
}

/// The localpart a login names: `name` or `@name:<our server>`.
fn localpart<'a>(user: &'a str, server_name: &str) -> Option<&'a str> {
    match user.strip_prefix('@') {
        Some(rest) => {
            let (local, server) = rest.split_once(':')?;
            (server == server_name).then_some(local)
        }
        None => Some(user),
    }
}

/// The client address of a request: the TCP peer's, or with `x_forwarded`
/// the first (leftmost) value of the first `X-Forwarded-For` header, as
/// Synapse's `XForwardedForRequest` takes it. A header whose first value is
/// not an IP address leaves the peer's address (Synapse would key by the raw
/// text; an address is what the limits and logs need).
fn client_address(peer: SocketAddr, headers: &HeaderMap, x_forwarded: bool) -> IpAddr {
    let forwarded = x_forwarded
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse::<IpAddr>().ok());
    match forwarded {
        Some(address) => address,
        None => {
            if x_forwarded && headers.contains_key("x-forwarded-for") {
                tracing::debug!(%peer, "an X-Forwarded-For without an IP address first");
            }
            peer.ip()
        }
    }
}

/// The key of an account's login limits: the user ID, lower-cased whole
/// (server name included), as Synapse's `qualified_user_id.lower()`.
fn account_key(user: &str, server_name: &str) -> String {
    if user.starts_with('@') {
        user.to_lowercase()
    } else {
        format!("@{user}:{server_name}").to_lowercase()
    }
}

const PASSWORD_LOGIN: &str = "m.login.password";

/// `retry_after_ms` when every password thread is busy and the queue full.
const BUSY_RETRY_MS: u64 = 1000;

fn bad_request(errcode: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, errcode, message)
}

/// A password login, validated in Synapse's order and with its texts.
struct LoginRequest {
    user: String,
    password: String,
}

fn parse_login(body: &serde_json::Map<String, Value>) -> ApiResult<LoginRequest> {
    let kind = body
        .get("type")
        .ok_or_else(|| bad_request("M_UNKNOWN", "Missing JSON keys."))?
        .as_str()
        .ok_or_else(|| bad_request("M_INVALID_PARAM", "Bad parameter: type"))?;
    let password = match kind {
        PASSWORD_LOGIN => Some(
            body.get("password")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_request("M_INVALID_PARAM", "Bad parameter: password"))?,
        ),
        _ => None,
    };
    // A truthy legacy `user` wins over `identifier`.
    let legacy = body.get("user").filter(|u| match u {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(true) => true,
    });
    let no_type = || bad_request("M_MISSING_PARAM", "'identifier' dict has no key 'type'");
    let user = match (legacy, body.get("identifier")) {
        (Some(user), _) => Some(user),
        (None, None) => return Err(bad_request("M_INVALID_PARAM", "Invalid login submission")),
        (None, Some(Value::Object(id))) => match id.get("type") {
            None => return Err(no_type()),
            Some(t) if t == "m.id.user" => id.get("user"),
            Some(_) => return Err(bad_request("M_UNKNOWN", "Unknown login identifier type")),
        },
        (None, Some(_)) => return Err(no_type()),
    };
    let user = match user {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad_request("M_INVALID_PARAM", "Bad parameter: user")),
    }
    .ok_or_else(|| bad_request("M_UNKNOWN", "User identifier is missing 'user' key"))?;
    match password {
        Some(password) => Ok(LoginRequest {
            user,
            password: password.to_owned(),
        }),
        None => Err(bad_request(
            "M_UNKNOWN",
            format!("Unknown login type {kind}"),
        )),
    }
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let body = json_object(&body)?;
    let request = parse_login(&body)?;
    if state.synapse.is_some() {
        return login_through_synapse(&state, peer, &headers, &body, &request.user).await;
    }
    Ok(herald_login(&state, peer, &headers, &body, request)
        .await?
        .into_response())
}

/// Attached: Synapse checks the password and gives the token. Herald's
/// limits apply first, as to its own logins, and count Synapse's verdict.
async fn login_through_synapse(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &serde_json::Map<String, Value>,
    user: &str,
) -> ApiResult<Response> {
    let Some(synapse) = &state.synapse else {
        return Err(ApiError::internal());
    };
    let address = client_address(peer, headers, state.config.x_forwarded);
    let account = account_key(user, &state.config.server_name);
    if let Err(wait) = state.login_limits.before_verify(&account, address) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        return Err(ApiError::limit_exceeded(wait));
    }
    let answer = match synapse.login(body).await {
        Ok(answer) => answer,
        Err(e) => {
            state.login_limits.refund_attempt(address);
            return Err(e.into());
        }
    };
    match answer.status {
        StatusCode::OK => {
            if let Err(wait) = state.login_limits.succeeded(&account) {
                // Refused after Synapse gave a token: that token (and its
                // device) must not stay behind in Synapse.
                if let Some(token) = answer.body.get("access_token").and_then(Value::as_str) {
                    if let Err(e) = synapse.logout(token).await {
                        tracing::warn!(error = %e, "cannot log out a token Herald refused");
                    }
                }
                return Err(ApiError::limit_exceeded(wait));
            }
            tracing::info!(user = ?user, %address, "logged in through Synapse");
            Ok((StatusCode::OK, Json(answer.body)).into_response())
        }
        StatusCode::FORBIDDEN => {
            state.login_limits.failed(&account, address);
            tracing::info!(user = ?user, %address, "failed login (Synapse refused it)");
            Err(answer.into_error())
        }
        _ => {
            state.login_limits.refund_attempt(address);
            Err(answer.into_error())
        }
    }
}

/// A login with Herald's own accounts.
async fn herald_login(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &serde_json::Map<String, Value>,
    request: LoginRequest,
) -> ApiResult<Json<LoginResponse>> {
    let LoginRequest { user, password } = request;
    let name = localpart(&user, &state.config.server_name)
        .unwrap_or(&user)
        .to_lowercase();
    let address = client_address(peer, headers, state.config.x_forwarded);
    let account = account_key(&user, &state.config.server_name);
    let limited = |wait| async move {
        // Synapse answers a rate-limited login after half a second.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        ApiError::limit_exceeded(wait)
    };
    if let Err(wait) = state.login_limits.before_verify(&account, address) {
        return Err(limited(wait).await);
    }

    let stored = match localpart(&user, &state.config.server_name) {
        Some(_) => match state.store.users.user(&name).await {
            Ok(stored) => stored,
            Err(e) => {
                state.login_limits.refund_attempt(address);
                return Err(e.into());
            }
        },
        None => None,
    };
    let hash = stored.as_ref().map(|u| u.password_hash.clone());
    let matches = match state.passwords.verify(password, hash).await {
        Ok(matches) => matches,
        Err(VerifyError::Busy) => {
            // Every password thread busy and the queue full: not the
            // client's fault, so its address gets the attempt back; refused
            // as a rate-limited login is, pause included, so a flood cannot
            // spin.
            state.login_limits.refund_attempt(address);
            return Err(limited(BUSY_RETRY_MS).await);
        }
        Err(VerifyError::Failed) => {
            // Logged by the password thread; not a wrong password.
            state.login_limits.refund_attempt(address);
            tracing::error!(user = ?name, %address, "login failed: the password check failed");
            return Err(ApiError::internal());
        }
    };
    let Some(user) = stored.filter(|_| matches) else {
        state.login_limits.failed(&account, address);
        tracing::info!(user = ?name, %address, "failed login");
        return Err(ApiError::forbidden("Invalid username or password"));
    };
    if let Err(wait) = state.login_limits.succeeded(&account) {
        return Err(limited(wait).await);
    }

    let device_id = match body.get("device_id").and_then(Value::as_str) {
        Some(d) if d.chars().count() > 512 => {
            return Err(bad_request(
                "M_INVALID_PARAM",
                "device_id cannot be longer than 512 characters.",
            ))
        }
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => token::device_id(),
    };
    let access_token = token::generate();
    let expires = state
        .config
        .access_token_lifetime
        .map(|d| herald_store::now_ms().saturating_add(d.0.as_millis() as i64));
    state
        .store
        .users
        .insert_token(&token::hash(&access_token), &user.name, &device_id, expires)
        .await?;
    tracing::info!(user = ?user.name, %address, "logged in");
    Ok(Json(LoginResponse {
        access_token,
        user_id: format!("@{}:{}", user.name, state.config.server_name),
        device_id,
        home_server: state.config.server_name.clone(),
    }))
}

async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<WhoAmI>> {
    let owner = require_user(&state, &headers, &uri).await?;
    Ok(Json(WhoAmI {
        user_id: state.user_id(&owner),
        device_id: Some(owner.device_id),
        is_guest: false,
    }))
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    if let Some(synapse) = &state.synapse {
        let answer = synapse.logout(&access_token(&headers, &uri)?).await?;
        if !answer.status.is_success() {
            return Err(answer.into_error());
        }
        return Ok(Json(json!({})));
    }
    let (_, hash) = authenticate(&state.store, &headers, &uri).await?;
    state.store.users.delete_token(&hash).await?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::localpart;

    #[test]
    fn localparts() {
        assert_eq!(localpart("admin", "h.test"), Some("admin"));
        assert_eq!(localpart("@admin:h.test", "h.test"), Some("admin"));
        assert_eq!(localpart("@admin:other.test", "h.test"), None);
        assert_eq!(localpart("@admin", "h.test"), None);
    }

    #[test]
    fn the_account_key_is_the_whole_user_id_lower_cased() {
        use super::account_key;
        for user in ["admin", "ADMIN", "@admin:herald.test", "@Admin:HERALD.test"] {
            assert_eq!(account_key(user, "Herald.Test"), "@admin:herald.test");
        }
        assert_eq!(account_key("@a:Other.Test", "h.test"), "@a:other.test");
    }

    #[test]
    fn the_client_address_follows_x_forwarded() {
        use super::client_address;
        use axum::http::{HeaderMap, HeaderValue};
        let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let with = |value: &'static [u8]| {
            let mut headers = HeaderMap::new();
            headers.append("x-forwarded-for", HeaderValue::from_bytes(value).unwrap());
            headers
        };
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Off: the header is ignored.
        assert_eq!(
            client_address(peer, &with(b"10.0.0.1"), false),
            ip("127.0.0.1")
        );
        // On: the first value of the first header, as Synapse.
        let mut two = with(b" 10.0.0.1 , 10.0.0.2");
        two.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        assert_eq!(client_address(peer, &two, true), ip("10.0.0.1"));
        assert_eq!(
            client_address(peer, &with(b"2001:db8::1"), true),
            ip("2001:db8::1")
        );
        // Absent, or not an address: the peer's.
        assert_eq!(
            client_address(peer, &HeaderMap::new(), true),
            ip("127.0.0.1")
        );
        for bad in [&b"unknown"[..], b"", b"10.0.0.1\xff"] {
            assert_eq!(client_address(peer, &with(bad), true), ip("127.0.0.1"));
        }
    }
}
