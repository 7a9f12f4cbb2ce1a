//! The first bundle's stand-in for the pages only the second bundle has
//! (`herald_full`: a destination's page, the sender page). Reached by a
//! link inside the first bundle, it asks the server for that page, which
//! loads the second bundle; the server never renders it (it has every
//! page).

use leptos::prelude::*;
use leptos_router::hooks::use_location;

#[component]
pub fn LoadFull() -> impl IntoView {
    let location = use_location();
    Effect::new(move |_| {
        // The path the router matched (the browser's address may not have
        // changed yet when this runs).
        let search = location.search.get_untracked();
        let search = search.trim_start_matches('?');
        let mut target = location.pathname.get_untracked();
        if !search.is_empty() {
            target.push('?');
            target.push_str(search);
        }
        // Never the page this already is (no reload loop).
        let here = window().location();
        let current = format!(
            "{}{}",
            here.pathname().unwrap_or_default(),
            here.search().unwrap_or_default()
        );
        if current != target {
            let _ = here.assign(&target);
        }
    });
    view! { <p class="loading">"Loading…"</p> }
}
