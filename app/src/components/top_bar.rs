//! The bar above every page: the console's name, the links to the
//! destinations and the sender page, who is signed in, the sign-out
//! button, and when attached, that the destinations are a Synapse's.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::attached::use_attached;
use crate::session::use_session;

#[component]
pub fn TopBar() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let signing_out = RwSignal::new(false);
    let attached = use_attached().then(|| {
        view! {
            <span id="attached-to" class="muted" title="Herald reads Synapse's database and signs in and resets through Synapse; its own sender is off">
                "Attached to Synapse"
            </span>
        }
    });

    let sign_out = move |_| {
        let Some(token) = session.token_untracked() else {
            return;
        };
        signing_out.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            // The token goes either way; a failed logout only leaves a token
            // on the server that this browser no longer knows.
            let _ = api::logout(&token).await;
            session.clear();
            signing_out.set(false);
            navigate("/login", crate::pages::replace());
        });
    };

    view! {
        <header id="top-bar">
            <a href="/" class="brand">
                "Herald"
            </a>
            {attached}
            <nav>
                {move || {
                    session
                        .user_id()
                        .map(|user| {
                            view! {
                                <a href="/destinations">"Destinations"</a>
                                <a href="/sender">"Sender"</a>
                                <a href="/instances">"Instances"</a>
                                <span id="signed-in-user" class="muted">
                                    {user}
                                </span>
                                <button
                                    id="sign-out"
                                    type="button"
                                    class="secondary"
                                    disabled=move || signing_out.get()
                                    on:click=sign_out.clone()
                                >
                                    "Sign out"
                                </button>
                            }
                        })
                }}
            </nav>
        </header>
    }
}
