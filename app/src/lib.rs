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

pub mod api;
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
use pages::{
    destination::DestinationPage, destinations::DestinationsPage, home::HomePage, login::LoginPage,
    not_found::NotFoundPage, sender::SenderPage,
};
use session::Session;

/// The whole HTML document, rendered on the server around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.ico" />
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
