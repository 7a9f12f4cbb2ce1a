//! `/destinations`: the first page of the federation destinations.
//!
//! The list is fetched in the browser with the session's token; the server
//! renders the loading state. A 401 drops the session (back to sign-in).

use herald_shared::DestinationsQuery;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::components::destinations_table::DestinationsTable;
use crate::components::error_message::ErrorMessage;
use crate::session::use_session;

#[component]
pub fn DestinationsPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    // The next step reads sorting, filter and paging from the URL here.
    let query = DestinationsQuery::default();

    let page = LocalResource::new(move || {
        let token = session.token();
        let query = query.clone();
        async move {
            match token {
                Some(token) => Some(api::destinations(&token, &query).await),
                None => None,
            }
        }
    });

    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    Effect::new(move |_| {
        if let Some(Some(Err(e))) = page.get() {
            if e.is_unauthorized() {
                session.clear();
            }
        }
    });

    view! {
        <Title text="Destinations · Herald" />
        <section id="destinations-page" class="page">
            <h1>"Destinations"</h1>
            {move || match page.get() {
                Some(Some(Ok(p))) => view! { <DestinationsTable page=p /> }.into_any(),
                Some(Some(Err(e))) => {
                    view! {
                        <ErrorMessage id="destinations-error" message=api::admin_error_message(&e) />
                    }
                        .into_any()
                }
                _ => view! { <p id="destinations-loading" class="muted">"Loading…"</p> }.into_any(),
            }}
        </section>
    }
}
