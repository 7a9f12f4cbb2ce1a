//! The first bundle's stand-in for the pages only the second bundle has
//! (`herald_full`: a destination's page, the sender page). Reached by a
//! link inside the first bundle, it asks the server for the page itself,
//! which loads the second bundle; the server never renders it (it has
//! every page).

use leptos::prelude::*;

#[component]
pub fn LoadFull() -> impl IntoView {
    Effect::new(move |_| {
        let _ = window().location().reload();
    });
    view! { <p class="loading">"Loading…"</p> }
}
