//! `/`: sends the admin on to the destinations when signed in, else to sign-in.

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use crate::session::{use_session, SessionState};

#[component]
pub fn HomePage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    Effect::new(move |_| match session.state() {
        SessionState::SignedIn { .. } => navigate("/destinations", super::replace()),
        SessionState::SignedOut => navigate("/login", super::replace()),
        SessionState::Unknown => {}
    });

    view! {
        <section id="home-page" class="page">
            <h1>"Herald"</h1>
            <p>
                "The federation admin console. "
                <a href="/login">"Sign in"</a>
                " or go to the "
                <a href="/destinations">"destinations"</a>
                "."
            </p>
        </section>
    }
}
