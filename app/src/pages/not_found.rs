//! Any path the console does not know (the server answers it with 404).

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFoundPage() -> impl IntoView {
    view! {
        <Title text="Not found · Herald" />
        <section id="not-found-page" class="page">
            <h1>"Page not found"</h1>
            <p>
                "There is nothing here. " <a href="/">"Back to the console"</a> "."
            </p>
        </section>
    }
}
