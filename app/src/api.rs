//! The HTTP calls the console makes: Matrix login/logout and the federation
//! admin API. They run in the browser only (gloo-net over `fetch`); on the
//! server every call fails with [`ApiError::Network`], and no page calls them
//! there, since data is fetched after hydration.

use herald_shared::{
    percent_encode, DestinationDetails, DestinationHealth, DestinationHealthPage, DestinationQueue,
    DestinationsPage, DestinationsQuery, FederationSummary, Forgotten, HistoryPage,
    InstancesOverview, LoginResponse, MatrixError, PasswordLogin, RoomsPage, RoomsQuery,
    SenderOverview,
};

pub const LOGIN_PATH: &str = "/_matrix/client/v3/login";
pub const LOGOUT_PATH: &str = "/_matrix/client/v3/logout";
pub const DESTINATIONS_PATH: &str = "/_synapse/admin/v1/federation/destinations";
pub const SUMMARY_PATH: &str = "/_herald/admin/v1/federation/summary";
pub const SENDER_PATH: &str = "/_herald/admin/v1/federation/sender";
pub const INSTANCES_PATH: &str = "/_herald/admin/v1/instances";
/// Herald's own list and details: Synapse's fields plus health.
pub const HEALTH_PATH: &str = "/_herald/admin/v1/federation/destinations";

/// The wire names of the API's enums, in the order of their `ALL`, so that
/// reading an answer indexes `ALL` with one non-generic lookup
/// (`crate::json`). A unit test keeps them equal to the enums' own names.
pub const STATUSES: [&str; 5] = [
    "healthy",
    "backing_off",
    "retry_due",
    "never_reached",
    "unknown",
];
pub const KINDS: [&str; 8] = [
    "dns",
    "blocked",
    "connect",
    "tls",
    "timeout",
    "http",
    "invalid_response",
    "pdu_rejected",
];
pub const EVENTS: [&str; 7] = [
    "failing",
    "recovered",
    "reset",
    "catch_up_entered",
    "catch_up_left",
    "queue_dropped",
    "forgotten",
];

/// History entries asked for per page.
pub const HISTORY_PAGE: u64 = 50;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The server answered with a Matrix error body.
    Matrix { status: u16, error: MatrixError },
    /// The server answered with an error status and no Matrix error body.
    Status(u16),
    /// The request did not get an answer (server down, network gone).
    Network(String),
    /// A success answer whose body was not what the API promises.
    Decode(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Matrix { status, .. } | ApiError::Status(status) => Some(*status),
            _ => None,
        }
    }

    pub fn errcode(&self) -> Option<&str> {
        match self {
            ApiError::Matrix { error, .. } => Some(&error.errcode),
            _ => None,
        }
    }

    /// The token is missing, unknown or expired: the admin must sign in again.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// The user is known but may not use the admin API.
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// What to tell the admin: the server's own `error` text when it gave one.
    pub fn message(&self) -> String {
        match self {
            ApiError::Matrix { error, .. } if !error.error.is_empty() => error.error.clone(),
            ApiError::Matrix { status, error } => format!("{} (HTTP {status})", error.errcode),
            ApiError::Status(status) => format!("The server answered HTTP {status}"),
            ApiError::Network(e) => format!("Could not reach the server: {e}"),
            ApiError::Decode(e) => format!("Unexpected answer from the server: {e}"),
        }
    }
}

/// The message shown when an admin API call is refused with 403.
pub const NOT_ADMIN: &str = "This account is not a server admin";

/// [`ApiError::message`], but a 403 from the admin API says what it means.
pub fn admin_error_message(e: &ApiError) -> String {
    if e.is_forbidden() {
        NOT_ADMIN.to_owned()
    } else {
        e.message()
    }
}

/// The URL of one page of the destinations list.
pub fn destinations_url(query: &DestinationsQuery) -> String {
    let qs = query.to_query_string();
    if qs.is_empty() {
        DESTINATIONS_PATH.to_owned()
    } else {
        format!("{DESTINATIONS_PATH}?{qs}")
    }
}

/// The URL of one destination (`what` is empty, `/rooms` or
/// `/reset_connection`); the name is percent-encoded (`[::1]:8448`).
pub fn destination_url(name: &str, what: &str) -> String {
    format!("{DESTINATIONS_PATH}/{}{what}", percent_encode(name))
}

/// The URL of one page of Herald's list (the same query as Synapse's).
pub fn health_list_url(query: &DestinationsQuery) -> String {
    let qs = query.to_query_string();
    if qs.is_empty() {
        HEALTH_PATH.to_owned()
    } else {
        format!("{HEALTH_PATH}?{qs}")
    }
}

/// The URL of Herald's view of one destination (`what` is empty or
/// `/history`); the name is percent-encoded.
pub fn health_url(name: &str, what: &str) -> String {
    format!("{HEALTH_PATH}/{}{what}", percent_encode(name))
}

/// The URL of one page of a destination's history: the newest
/// [`HISTORY_PAGE`] entries, or those older than `from` (a `next_token`).
pub fn history_url(name: &str, from: Option<&str>) -> String {
    let url = health_url(name, "/history");
    match from {
        Some(token) => format!("{url}?from={}&limit={HISTORY_PAGE}", percent_encode(token)),
        None => format!("{url}?limit={HISTORY_PAGE}"),
    }
}

/// The URL of Herald's queue view of a destination.
pub fn queue_url(name: &str) -> String {
    format!(
        "/_herald/admin/v1/federation/destinations/{}/queue",
        percent_encode(name)
    )
}

/// The URL of one page of a destination's rooms.
pub fn rooms_url(name: &str, query: &RoomsQuery) -> String {
    let url = destination_url(name, "/rooms");
    let qs = query.to_query_string();
    if qs.is_empty() {
        url
    } else {
        format!("{url}?{qs}")
    }
}

/// `POST /_matrix/client/v3/login` with `m.login.password`.
pub async fn login(user: &str, password: &str) -> Result<LoginResponse, ApiError> {
    http::post_json(LOGIN_PATH, None, &PasswordLogin::new(user, password)).await
}

/// `POST /_matrix/client/v3/logout`: invalidates the token on the server.
pub async fn logout(token: &str) -> Result<(), ApiError> {
    post_empty(LOGOUT_PATH, token).await
}

/// A POST with an empty JSON object whose answer has nothing to read.
async fn post_empty(url: &str, token: &str) -> Result<(), ApiError> {
    http::post_json::<()>(url, Some(token), &Empty {}).await
}

/// `{}`.
#[derive(serde::Serialize)]
struct Empty {}

/// `GET /_synapse/admin/v1/federation/destinations`.
pub async fn destinations(
    token: &str,
    query: &DestinationsQuery,
) -> Result<DestinationsPage, ApiError> {
    http::get_json(&destinations_url(query), token).await
}

/// `GET /_synapse/admin/v1/federation/destinations/<destination>`.
pub async fn destination(token: &str, name: &str) -> Result<DestinationDetails, ApiError> {
    http::get_json(&destination_url(name, ""), token).await
}

/// `GET .../destinations/<destination>/rooms`.
pub async fn rooms(token: &str, name: &str, query: &RoomsQuery) -> Result<RoomsPage, ApiError> {
    http::get_json(&rooms_url(name, query), token).await
}

/// `POST .../destinations/<destination>/reset_connection`: clears the
/// backoff so that the next send is tried at once.
pub async fn reset_connection(token: &str, name: &str) -> Result<(), ApiError> {
    post_empty(&destination_url(name, "/reset_connection"), token).await
}

/// `GET /_herald/admin/v1/federation/sender`: the sender page's figures.
pub async fn sender(token: &str) -> Result<SenderOverview, ApiError> {
    http::get_json(SENDER_PATH, token).await
}

/// `GET /_herald/admin/v1/instances`: the instances page's table.
pub async fn instances(token: &str) -> Result<InstancesOverview, ApiError> {
    http::get_json(INSTANCES_PATH, token).await
}

/// `GET /_herald/admin/v1/federation/destinations/<destination>/queue`:
/// what the sender holds for it.
pub async fn queue(token: &str, name: &str) -> Result<DestinationQueue, ApiError> {
    http::get_json(&queue_url(name), token).await
}

/// `GET /_herald/admin/v1/federation/destinations`: Synapse's rows plus
/// status, next retry, last error and last delivery time.
pub async fn health_list(
    token: &str,
    query: &DestinationsQuery,
) -> Result<DestinationHealthPage, ApiError> {
    http::get_json(&health_list_url(query), token).await
}

/// `GET /_herald/admin/v1/federation/destinations/<destination>`: Synapse's
/// details plus health and the queue view.
pub async fn health(token: &str, name: &str) -> Result<DestinationHealth, ApiError> {
    http::get_json(&health_url(name, ""), token).await
}

/// `GET .../destinations/<destination>/history`, newest first.
pub async fn history(token: &str, name: &str, from: Option<&str>) -> Result<HistoryPage, ApiError> {
    http::get_json(&history_url(name, from), token).await
}

/// `DELETE /_herald/admin/v1/federation/destinations/<destination>`:
/// removes it, its rooms and its queues; says how many of each.
pub async fn forget(token: &str, name: &str) -> Result<Forgotten, ApiError> {
    http::delete_json(&health_url(name, ""), token).await
}

#[cfg(feature = "full")]
/// `POST /_herald/admin/v1/federation/destinations/<destination>/diagnose`:
/// the destination checked step by step from the server.
pub async fn diagnose(
    token: &str,
    name: &str,
) -> Result<crate::components::diagnose::Diagnosis, ApiError> {
    let url = format!(
        "/_herald/admin/v1/federation/destinations/{}/diagnose",
        percent_encode(name)
    );
    http::post_json(&url, Some(token), &Empty {}).await
}

/// `GET /_herald/admin/v1/federation/summary`: destinations per status.
pub async fn summary(token: &str) -> Result<FederationSummary, ApiError> {
    http::get_json(SUMMARY_PATH, token).await
}

#[cfg(feature = "hydrate")]
mod http {
    use super::ApiError;
    use crate::json::FromJs;
    use gloo_net::http::{Request, RequestBuilder, Response};
    use herald_shared::MatrixError;
    use serde::Serialize;

    fn authorized(req: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub async fn post_json<T: FromJs>(
        url: &str,
        token: Option<&str>,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let req = authorized(Request::post(url), token)
            .json(body)
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        decode(send(req.send()).await?)
    }

    pub async fn get_json<T: FromJs>(url: &str, token: &str) -> Result<T, ApiError> {
        decode(send(authorized(Request::get(url), Some(token)).send()).await?)
    }

    pub async fn delete_json<T: FromJs>(url: &str, token: &str) -> Result<T, ApiError> {
        decode(send(authorized(Request::delete(url), Some(token)).send()).await?)
    }

    fn decode<T: FromJs>(body: wasm_bindgen::JsValue) -> Result<T, ApiError> {
        T::from_js(&body).map_err(ApiError::Decode)
    }

    /// The parsed body of a success answer. Not generic, so that the
    /// WASM holds its state machine once rather than once per answer type.
    async fn send(
        sent: impl std::future::Future<Output = Result<Response, gloo_net::Error>>,
    ) -> Result<wasm_bindgen::JsValue, ApiError> {
        read(sent.await).await
    }

    /// The body parsed by the browser, or `None` if it is not JSON.
    async fn parsed(resp: web_sys::Response) -> Option<wasm_bindgen::JsValue> {
        let promise = resp.json().ok()?;
        wasm_bindgen_futures::JsFuture::from(promise).await.ok()
    }

    async fn read(
        resp: Result<Response, gloo_net::Error>,
    ) -> Result<wasm_bindgen::JsValue, ApiError> {
        let resp = resp.map_err(|e| ApiError::Network(e.to_string()))?;
        let (ok, status) = (resp.ok(), resp.status());
        let body = parsed(resp.into()).await;
        if ok {
            return body.ok_or_else(|| ApiError::Decode("the answer is not JSON".into()));
        }
        Err(match body.map(|b| MatrixError::from_js(&b)) {
            Some(Ok(error)) => ApiError::Matrix { status, error },
            _ => ApiError::Status(status),
        })
    }
}

#[cfg(not(feature = "hydrate"))]
mod http {
    use super::ApiError;
    use serde::Serialize;

    fn unavailable() -> ApiError {
        ApiError::Network("the console calls the API from the browser only".into())
    }

    pub async fn post_json<T>(
        _url: &str,
        _token: Option<&str>,
        _body: &impl Serialize,
    ) -> Result<T, ApiError> {
        Err(unavailable())
    }

    pub async fn get_json<T>(_url: &str, _token: &str) -> Result<T, ApiError> {
        Err(unavailable())
    }

    pub async fn delete_json<T>(_url: &str, _token: &str) -> Result<T, ApiError> {
        Err(unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(status: u16, errcode: &str, error: &str) -> ApiError {
        ApiError::Matrix {
            status,
            error: MatrixError {
                errcode: errcode.into(),
                error: error.into(),
                retry_after_ms: None,
            },
        }
    }

    #[test]
    fn shows_the_servers_error_text() {
        let e = matrix(403, "M_FORBIDDEN", "Invalid username or password");
        assert_eq!(e.message(), "Invalid username or password");
        assert!(e.is_forbidden() && !e.is_unauthorized());
        assert_eq!(e.errcode(), Some("M_FORBIDDEN"));
        assert_eq!(
            matrix(500, "M_UNKNOWN", "").message(),
            "M_UNKNOWN (HTTP 500)"
        );
        assert_eq!(
            ApiError::Status(502).message(),
            "The server answered HTTP 502"
        );
    }

    #[test]
    fn a_403_from_the_admin_api_means_not_an_admin() {
        let e = matrix(403, "M_FORBIDDEN", "You are not a server admin");
        assert_eq!(admin_error_message(&e), NOT_ADMIN);
        let e = matrix(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.");
        assert!(e.is_unauthorized());
        assert_eq!(admin_error_message(&e), "Invalid access token passed.");
    }

    #[test]
    fn destination_urls_encode_the_name() {
        assert_eq!(
            destination_url("[::1]:8448", "/reset_connection"),
            format!("{DESTINATIONS_PATH}/%5B%3A%3A1%5D%3A8448/reset_connection")
        );
        let q = RoomsQuery {
            from: 10,
            limit: 10,
            dir: herald_shared::Direction::Backwards,
        };
        assert_eq!(
            rooms_url("a.org:8448", &q),
            format!("{DESTINATIONS_PATH}/a.org%3A8448/rooms?from=10&limit=10&dir=b")
        );
        assert_eq!(
            rooms_url("a.org", &RoomsQuery::default()),
            format!("{DESTINATIONS_PATH}/a.org/rooms")
        );
    }

    #[test]
    fn the_wire_name_lists_follow_the_enums() {
        use herald_shared::{DestinationStatus, FailureKind, HistoryEvent};
        assert_eq!(STATUSES, DestinationStatus::ALL.map(DestinationStatus::key));
        assert_eq!(KINDS, FailureKind::ALL.map(FailureKind::as_str));
        assert_eq!(EVENTS, HistoryEvent::ALL.map(HistoryEvent::as_str));
    }

    #[test]
    fn heralds_urls_share_the_query_and_encode_the_name() {
        let q = DestinationsQuery {
            from: 100,
            destination: Some("a b".into()),
            ..Default::default()
        };
        assert_eq!(
            health_list_url(&q),
            destinations_url(&q).replace(DESTINATIONS_PATH, HEALTH_PATH)
        );
        assert_eq!(health_list_url(&DestinationsQuery::default()), HEALTH_PATH);
        assert_eq!(
            health_url("[::1]:8448", ""),
            format!("{HEALTH_PATH}/%5B%3A%3A1%5D%3A8448")
        );
        assert_eq!(
            history_url("a.org", None),
            format!("{HEALTH_PATH}/a.org/history?limit=50")
        );
        assert_eq!(
            history_url("a.org", Some("17")),
            format!("{HEALTH_PATH}/a.org/history?from=17&limit=50")
        );
    }

    #[test]
    fn destinations_url_leaves_defaults_out() {
        assert_eq!(
            destinations_url(&DestinationsQuery::default()),
            DESTINATIONS_PATH
        );
        let q = DestinationsQuery {
            from: 100,
            ..Default::default()
        };
        assert_eq!(
            destinations_url(&q),
            format!("{DESTINATIONS_PATH}?from=100")
        );
    }
}
