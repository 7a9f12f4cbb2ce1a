//! The HTTP layer, every route Herald serves: the admin API (`admin`), a
//! destination's diagnosis (`diagnose`), the login routes (`login`), the
//! intake API (`intake`), the sender page's figures (`sender`), `GET
//! /metrics` (`metrics`), the key server (`key_server`, on the federation
//! listener) and the console (Leptos SSR + the embedded site, `site`), with the Matrix
//! error body they all answer with (`error`). Here: the admin listener's
//! router and what Synapse does around every API request: CORS headers,
//! `204` for any `OPTIONS`, JSON `404 M_UNRECOGNIZED` for unknown paths and
//! `405` for wrong methods. Two layers wrap every answer: `json_errors`
//! turns any error an API path answers without a Matrix body (an extractor's
//! rejection, a body limit) into one, and `security_headers` adds the headers
//! a browser needs to keep the console's token safe (see `security`).

pub mod admin;
pub mod diagnose;
pub mod error;
pub mod health;
pub mod instances;
pub mod intake;
pub mod key_server;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod security;
pub mod sender;
pub mod site;

use std::net::SocketAddr;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::config::LeptosOptions;

use crate::http::error::ApiError;
use crate::state::AppState;

/// True for paths that belong to an API rather than to the console; unknown
/// ones answer `404 M_UNRECOGNIZED` in JSON instead of the console's 404 page.
pub fn is_api_path(path: &str) -> bool {
    ["/_matrix", "/_synapse", "/_herald"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Synapse's answer for an unknown API path.
pub fn unrecognized() -> Response {
    ApiError::unrecognized().into_response()
}

/// The Leptos options for the embedded site.
pub fn leptos_options(listen: SocketAddr) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("herald")
        .site_pkg_dir("pkg")
        .site_root("target/site")
        .site_addr(listen)
        .build()
}

/// Every API route of the admin listener (what `openapi.json` documents).
pub fn api_router() -> Router<AppState> {
    Router::new()
        .merge(crate::http::admin::router())
        .merge(health::router())
        .merge(diagnose::router())
        .merge(crate::http::login::router())
        .merge(metrics::router())
        .merge(intake::router())
        .merge(openapi::router())
        .merge(sender::router())
        .merge(instances::router())
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
}

/// The whole application.
pub fn router(state: AppState, listen: SocketAddr) -> Router {
    let attached = state.synapse.is_some();
    let api = api_router().with_state(state);
    api.merge(site::router(leptos_options(listen), attached))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(synapse_conventions))
        .layer(middleware::from_fn(security::headers))
}

/// Every error on an API path is a Matrix JSON body, whoever raised it: a
/// handler's `ApiError` already is one; anything else (axum's extractor
/// rejections such as "Failed to buffer the request body", written as
/// `text/plain`) is rewritten here with the errcode its status means, keeping
/// the original text as the message.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let api = is_api_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !api || !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, 1024)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty());
    let mut error = ApiError::for_status(status, text);
    if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
        if let Some(secs) = retry.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            error = error.with("retry_after_ms", secs.saturating_mul(1000).into());
        }
    }
    let mut rewritten = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Synapse's CORS headers on API responses, and `204` for every `OPTIONS`.
async fn synapse_conventions(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS;
    let api = preflight || is_api_path(request.uri().path());
    let mut response = if preflight {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else {
        next.run(request).await
    };
    if api {
        let headers = response.headers_mut();
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, HEAD, POST, PUT, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "X-Requested-With, Content-Type, Authorization, Date",
            ),
            (
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Synapse-Trace-Id, Server",
            ),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if !preflight {
            headers
                .entry(header::CACHE_CONTROL)
                .or_insert(HeaderValue::from_static(
                    "no-cache, no-store, must-revalidate",
                ));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_api_path;

    #[test]
    fn api_paths_are_the_three_prefixes_and_what_is_below_them() {
        for path in [
            "/_matrix",
            "/_matrix/client/versions",
            "/_synapse/admin",
            "/_herald/",
        ] {
            assert!(is_api_path(path), "{path}");
        }
        for path in [
            "/",
            "/_matrixx",
            "/_heraldic/x",
            "/destinations",
            "/pkg/herald.js",
        ] {
            assert!(!is_api_path(path), "{path}");
        }
    }
}
