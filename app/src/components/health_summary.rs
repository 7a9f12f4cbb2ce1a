//! The destinations per status, as counts and a stacked bar (markup from
//! [`crate::html::summary`]).

use herald_shared::FederationSummary;
use leptos::prelude::*;

use crate::html;

#[component]
pub fn HealthSummary(summary: FederationSummary) -> impl IntoView {
    view! {
        <section
            id="health-summary"
            class="card"
            aria-label="Health summary"
            inner_html=html::summary(&summary)
        ></section>
    }
}
