//! The HTTP layer, every route Herald serves: the admin API (`admin`), the
//! login routes (`login`), the intake API (`intake`), `GET /metrics`
//! (`metrics`), the key server (`key_server`, on the federation listener)
//! and the console (Leptos SSR + the embedded site, `site`), with the Matrix
//! error body they all answer with (`error`). Here: the admin listener's
//! router and what Synapse does around every API request: CORS headers,
//! `204` for any `OPTIONS`, JSON `404 M_UNRECOGNIZED` for unknown paths and
//! `405` for wrong methods.

pub mod admin;
pub mod error;
pub mod intake;
pub mod key_server;
pub mod login;
pub mod metrics;
pub mod site;

use std::net::SocketAddr;

use axum::body::Body;
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
    ["/_matrix", "/_synapse", "/_herald"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
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

/// The whole application.
pub fn router(state: AppState, listen: SocketAddr) -> Router {
    let api = Router::new()
        .merge(crate::http::admin::router())
        .merge(crate::http::login::router())
        .merge(metrics::router())
        .merge(intake::router())
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state);
    api.merge(site::router(leptos_options(listen)))
        .layer(middleware::from_fn(synapse_conventions))
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
