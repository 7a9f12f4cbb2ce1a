//! Herald's admin console, written with Leptos.
//!
//! This crate owns everything the browser shows: the HTML document
//! ([`shell`]), the routes and pages ([`App`], [`pages`]), the pieces pages are
//! made of ([`components`]), the signed-in session kept in `localStorage`
//! ([`session`]) and the HTTP calls to the Matrix login API and the
//! Synapse-compatible federation admin API ([`api`]).
//!
//! It is built twice: as a library with feature `ssr`, which the server uses
//! to render pages, and as a `cdylib` with feature `hydrate`, which becomes
//! the WASM module that takes over the server-rendered page ([`hydrate`]).
//! Data is only ever fetched in the browser, with the admin's access token;
//! the server renders the page frame and a loading state.

#![recursion_limit = "256"]
// The first bundle leaves out the pages behind feature `full`; what only
// they call is unused there.
#![cfg_attr(not(feature = "full"), allow(dead_code))]

pub mod api;
pub mod attached;
pub mod components;
pub mod dom;
pub mod format;
pub mod html;
#[cfg(feature = "hydrate")]
pub mod json;
pub mod pages;
pub mod session;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

use components::top_bar::TopBar;
#[cfg(not(feature = "full"))]
use pages::load_full::{
    LoadFull as DestinationPage, LoadFull as InstancesPage, LoadFull as SenderPage,
};
#[cfg(feature = "full")]
use pages::{destination::DestinationPage, instances::InstancesPage, sender::SenderPage};
use pages::{
    destinations::DestinationsPage, home::HomePage, login::LoginPage, not_found::NotFoundPage,
};
use session::Session;

/// Whether `path` is a page of the second bundle (feature `full`): a
/// destination's page (`/destinations/<name>`), the sender page or the
/// instances page. The
/// first page an admin opens (sign-in, the list) loads only the first.
pub fn needs_full_bundle(path: &str) -> bool {
    // The router matches a path with one trailing slash as without it.
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    path.strip_prefix("/destinations/")
        .is_some_and(|rest| !rest.is_empty())
        || path == "/sender"
        || path == "/instances"
}

/// The bundle a path loads: `herald` (WASM + JS) for the pages an admin
/// opens first, `herald_full` for the rest (see [`needs_full_bundle`]).
pub fn bundle_for(path: &str) -> &'static str {
    if needs_full_bundle(path) {
        "herald_full"
    } else {
        "herald"
    }
}

/// The whole HTML document, rendered on the server around [`App`].
/// `options.output_name` names the bundle the page loads (the server sets
/// it with [`bundle_for`]).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    shell_for(options, false)
}

/// [`shell`], saying whether Herald is attached to a Synapse (for
/// [`attached::Attached`]).
pub fn shell_for(options: LeptosOptions, attached: bool) -> impl IntoView {
    provide_context(attached::Attached(attached));
    let meta = attached.then(|| view! { <meta name=attached::META content="attached" /> });
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.ico" />
                {meta}
                <link rel="stylesheet" href="/pkg/herald.css" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The console: a top bar and one page per route.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let session = Session::provide();
    attached::Attached::provide();

    // Effects run only in the browser, once the WASM has taken over the page.
    Effect::new(move |_| {
        session.load();
        mark_hydrated();
    });

    view! {
        <Title text="Herald" />
        <Router>
            <TopBar />
            <main id="main">
                <Routes fallback=NotFoundPage>
                    <Route path=path!("/") view=HomePage />
                    <Route path=path!("/login") view=LoginPage />
                    <Route path=path!("/destinations") view=DestinationsPage />
                    <Route path=path!("/destinations/:name") view=DestinationPage />
                    <Route path=path!("/sender") view=SenderPage />
                    <Route path=path!("/instances") view=InstancesPage />
                </Routes>
            </main>
        </Router>
    }
}

/// Sets `<body data-hydrated="true">` so that tests (and curious admins) can
/// tell that the WASM module runs.
fn mark_hydrated() {
    #[cfg(feature = "hydrate")]
    if let Some(body) = document().body() {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}

/// The WASM entry point: hydrates the server-rendered `<body>`.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_page_loads_the_first_bundle_and_the_others_the_second() {
        for path in [
            "/",
            "/login",
            "/destinations",
            "/destinations/",
            "/no/such/page",
        ] {
            assert_eq!(bundle_for(path), "herald", "{path}");
        }
        for path in [
            "/destinations/a.org",
            "/destinations/a.org/",
            "/sender",
            "/sender/",
            "/instances",
        ] {
            assert_eq!(bundle_for(path), "herald_full", "{path}");
        }
    }
}
