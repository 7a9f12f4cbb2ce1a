//! The security headers on every answer of the admin listener. The console
//! keeps the admin's access token in `localStorage`, so a script injected
//! into a page could read it: pages are served with a Content-Security-Policy
//! that lets only Herald's own script files, the page's own hydration
//! scripts (carrying the per-response nonce Leptos writes into them) and the
//! WASM (`'wasm-unsafe-eval'`) run, and no page may be framed. Everything
//! else (API answers, files) gets a policy that allows nothing at all.
//! `nosniff`, `no-referrer` and `X-Frame-Options: DENY` go on every answer.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The policy for everything that is not a console page.
pub const LOCKED_DOWN: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
                               form-action 'none'";

/// The policy of a console page whose inline scripts carry `nonce`.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
}

/// Sets the page's policy on the answer being rendered, from inside the
/// Leptos render (where the nonce it writes into its scripts is known). A
/// page rendered without a nonce keeps `LOCKED_DOWN`'s script rule: it shows
/// but never hydrates, which fails safe.
pub fn set_page_policy() {
    let nonce = leptos::nonce::use_nonce();
    let options = leptos::prelude::use_context::<leptos_axum::ResponseOptions>();
    if let (Some(nonce), Some(options)) = (nonce, options) {
        if let Ok(value) = HeaderValue::from_str(&page_policy(&nonce.to_string())) {
            options.insert_header(header::CONTENT_SECURITY_POLICY, value);
        }
    }
}

/// The layer: adds the headers every answer carries, and `LOCKED_DOWN` to
/// any answer that does not set its own policy.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(LOCKED_DOWN));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
