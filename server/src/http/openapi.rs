//! `GET /_herald/openapi.json`: the OpenAPI 3.1 document of every HTTP API
//! on the admin listener (Synapse-compatible admin, Herald admin, login,
//! intake, metrics). It is written by hand in `openapi.json` next to this
//! file, because the handlers parse raw queries and bodies in Synapse's
//! order (so no derive could describe them), and is kept true by
//! `tests/openapi.rs`, which checks its routes against the router's, and by
//! schemathesis in `make test`, which checks the answers against it.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// Where the document is served.
pub const PATH: &str = "/_herald/openapi.json";

const SOURCE: &str = include_str!("openapi.json");

/// The document with this build's version filled in.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    match serde_json::from_str::<serde_json::Value>(SOURCE) {
        Ok(mut doc) => {
            doc["info"]["version"] = env!("CARGO_PKG_VERSION").into();
            doc.to_string()
        }
        // Unreachable with the committed file (a unit test parses it).
        Err(_) => SOURCE.to_owned(),
    }
});

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(document))
}

async fn document() -> Response {
    let mut response = DOCUMENT.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json_with_this_version() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc["paths"].as_object().unwrap().contains_key(PATH));
    }
}
