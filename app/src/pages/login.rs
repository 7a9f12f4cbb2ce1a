//! `/login`: the sign-in form. A successful login is checked against the
//! admin API before it is kept, so a user who is not a server admin is told
//! so here and their new token is logged out again.

use herald_shared::{DestinationsQuery, LoginResponse};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

use crate::api::{self, ApiError};
use crate::components::error_message::ErrorMessage;
use crate::session::{use_session, SessionState};

#[component]
pub fn LoginPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let user = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);

    // Signed in (now or from an earlier visit): on to the console.
    Effect::new(move |_| {
        if matches!(session.state(), SessionState::SignedIn { .. }) {
            navigate("/destinations", super::replace());
        }
    });

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if pending.get_untracked() {
            return;
        }
        pending.set(true);
        error.set(None);
        let (u, p) = (user.get_untracked(), password.get_untracked());
        spawn_local(async move {
            match sign_in(u.trim(), &p).await {
                Ok(login) => {
                    password.set(String::new());
                    session.sign_in(login.access_token, login.user_id);
                }
                Err(message) => error.set(Some(message)),
            }
            pending.set(false);
        });
    };

    // Until the WASM runs (session unknown) the button stays disabled, so the
    // form is never posted the old-fashioned way.
    let ready = move || session.is_known() && !pending.get();

    view! {
        <Title text="Sign in · Herald" />
        <section id="login-page" class="page narrow">
            <h1>"Sign in"</h1>
            <form id="login-form" class="card" method="post" on:submit=on_submit>
                <label for="login-user">"User"</label>
                <input
                    id="login-user"
                    name="user"
                    type="text"
                    autocomplete="username"
                    required
                    bind:value=user
                />
                <label for="login-password">"Password"</label>
                <input
                    id="login-password"
                    name="password"
                    type="password"
                    autocomplete="current-password"
                    required
                    bind:value=password
                />
                <button id="login-submit" type="submit" disabled=move || !ready()>
                    {move || if pending.get() { "Signing in…" } else { "Sign in" }}
                </button>
                {move || error.get().map(|m| view! { <ErrorMessage id="login-error" message=m /> })}
            </form>
        </section>
    }
}

/// Logs in and makes sure the account may use the admin API.
async fn sign_in(user: &str, password: &str) -> Result<LoginResponse, String> {
    let login = api::login(user, password).await.map_err(|e| e.message())?;
    let probe = DestinationsQuery {
        limit: 1,
        ..Default::default()
    };
    match api::health_list(&login.access_token, &probe).await {
        Err(e) if e.is_forbidden() => {
            // Do not leave an unused token behind on the server.
            let _ = api::logout(&login.access_token).await;
            Err(api::admin_error_message(&e))
        }
        Err(ApiError::Network(e)) => Err(format!("Could not reach the server: {e}")),
        // Anything else is the destinations page's business.
        _ => Ok(login),
    }
}
