//! The console: Leptos server-side rendering of `herald-app`'s routes, and the
//! site built by `scripts/build-site.sh` (WASM, JS, CSS, public files),
//! embedded in the binary so that `herald` runs from any directory.
//!
//! Routing: the app's own routes render the app; anything else falls back to
//! an unknown-API answer (`404 M_UNRECOGNIZED`) for API paths, to an embedded
//! file, or to the app's 404 page.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use rust_embed::RustEmbed;

use super::{is_api_path, unrecognized};

/// `target/site` as it was when the server was compiled. With `allow_missing`
/// the server still compiles before the site is built; it then serves pages
/// that never hydrate.
#[derive(RustEmbed)]
#[folder = "../target/site/"]
#[allow_missing = true]
struct Site;

/// What the console's pages are rendered with: the Leptos options and
/// whether Herald is attached to a Synapse (said in every page).
#[derive(Clone)]
struct Pages {
    options: LeptosOptions,
    attached: bool,
}

impl axum::extract::FromRef<Pages> for LeptosOptions {
    fn from_ref(site: &Pages) -> LeptosOptions {
        site.options.clone()
    }
}

/// The console's routes plus the fallback described in the module header;
/// `attached`: whether Herald is attached to a Synapse.
pub fn router(options: LeptosOptions, attached: bool) -> Router {
    let routes = generate_route_list(herald_app::App);
    let site = Pages { options, attached };
    let shell_site = site.clone();
    Router::new()
        .leptos_routes(&site, routes, move || {
            super::security::set_page_policy();
            herald_app::shell_for(for_this_page(&shell_site.options), shell_site.attached)
        })
        .fallback(fallback)
        .with_state(site)
}

/// The options with the bundle this request's page loads: the first
/// (`herald`) for the pages an admin opens first, the second
/// (`herald_full`) for the others (`herald_app::bundle_for`).
fn for_this_page(options: &LeptosOptions) -> LeptosOptions {
    let mut options = options.clone();
    if let Some(parts) = leptos::prelude::use_context::<axum::http::request::Parts>() {
        options.output_name = herald_app::bundle_for(parts.uri.path()).into();
    }
    options
}

async fn fallback(State(site): State<Pages>, req: Request) -> Response {
    let path = req.uri().path();
    if is_api_path(path) {
        return unrecognized();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    if let Some(response) = embedded_file(path, req.headers()) {
        return response;
    }
    not_found_page(site, req).await
}

/// The app rendered for a path it does not know: its 404 page, status 404.
async fn not_found_page(site: Pages, req: Request) -> Response {
    let render = leptos_axum::render_app_to_stream(move || {
        super::security::set_page_policy();
        herald_app::shell_for(for_this_page(&site.options), site.attached)
    });
    let mut response = render(req).await;
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// An embedded file, if `path` names one: with its Content-Type, an ETag
/// (answering `If-None-Match` with 304), and the gzip copy that the site
/// build writes next to large files when the browser accepts gzip.
fn embedded_file(path: &str, headers: &HeaderMap) -> Option<Response> {
    let name = path.strip_prefix('/')?;
    if name.is_empty() || name.ends_with('/') {
        return None;
    }
    let file = Site::get(name)?;
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mime = mime_guess::from_path(name).first_or_octet_stream();

    let mut response = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzipped = accepts_gzip(headers)
            .then(|| Site::get(&format!("{name}.gz")))
            .flatten();
        match gzipped {
            Some(gz) => {
                let mut r = Response::new(Body::from(gz.data.into_owned()));
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            None => Response::new(Body::from(file.data.into_owned())),
        }
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // File names carry no hash: let browsers keep them, but ask every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(response)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0"
        )])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etag_matching() {
        let etag = "\"abc\"";
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "\"x\", \"abc\"")]),
            etag
        ));
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "W/\"abc\"")]),
            etag
        ));
        assert!(if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "*")]),
            etag
        ));
        assert!(!if_none_match(
            &headers(&[(header::IF_NONE_MATCH, "\"abd\"")]),
            etag
        ));
        assert!(!if_none_match(&HeaderMap::new(), etag));
    }

    #[test]
    fn only_files_are_served() {
        assert!(embedded_file("/", &HeaderMap::new()).is_none());
        assert!(embedded_file("/pkg/", &HeaderMap::new()).is_none());
        assert!(embedded_file("/no-such-file.txt", &HeaderMap::new()).is_none());
    }
}
