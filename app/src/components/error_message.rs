//! A failed request, told to the admin.

use leptos::prelude::*;

#[component]
pub fn ErrorMessage(
    /// The element id, for tests and links.
    #[prop(into)]
    id: String,
    #[prop(into)] message: String,
) -> impl IntoView {
    view! {
        <p id=id class="error" role="alert">
            {message}
        </p>
    }
}
