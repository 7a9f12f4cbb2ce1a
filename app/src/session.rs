//! The signed-in admin: an access token (and the user id it belongs to) kept
//! in `localStorage`, so that a reload keeps the session.
//!
//! The server cannot see `localStorage`, so every page starts in
//! [`SessionState::Unknown`] — on the server and during hydration alike — and
//! the browser reads the stored token once the page is live ([`Session::load`]).

use leptos::prelude::*;

const TOKEN_KEY: &str = "herald.access_token";
const USER_KEY: &str = "herald.user_id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Not yet read from the browser's storage (server rendering, hydration).
    Unknown,
    SignedOut,
    SignedIn {
        token: String,
        user_id: String,
    },
}

/// The session, shared through context (see [`use_session`]).
#[derive(Debug, Clone, Copy)]
pub struct Session(RwSignal<SessionState>);

impl Session {
    /// Creates the session in the `Unknown` state and provides it to the app.
    pub fn provide() -> Session {
        let session = Session(RwSignal::new(SessionState::Unknown));
        provide_context(session);
        session
    }

    pub fn state(&self) -> SessionState {
        self.0.get()
    }

    /// The access token, if signed in (tracked).
    pub fn token(&self) -> Option<String> {
        self.0.with(|s| match s {
            SessionState::SignedIn { token, .. } => Some(token.clone()),
            _ => None,
        })
    }

    /// The token without subscribing to changes (for event handlers).
    pub fn token_untracked(&self) -> Option<String> {
        self.0.with_untracked(|s| match s {
            SessionState::SignedIn { token, .. } => Some(token.clone()),
            _ => None,
        })
    }

    pub fn user_id(&self) -> Option<String> {
        self.0.with(|s| match s {
            SessionState::SignedIn { user_id, .. } => Some(user_id.clone()),
            _ => None,
        })
    }

    /// True once the browser has read its storage (so the page is live).
    pub fn is_known(&self) -> bool {
        self.0.with(|s| *s != SessionState::Unknown)
    }

    pub fn is_signed_out(&self) -> bool {
        self.0.with(|s| *s == SessionState::SignedOut)
    }

    /// Reads the stored session (browser only).
    pub fn load(&self) {
        let state = match (storage::get(TOKEN_KEY), storage::get(USER_KEY)) {
            (Some(token), user_id) if !token.is_empty() => SessionState::SignedIn {
                token,
                user_id: user_id.unwrap_or_default(),
            },
            _ => SessionState::SignedOut,
        };
        self.0.set(state);
    }

    /// Remembers a fresh login.
    pub fn sign_in(&self, token: String, user_id: String) {
        storage::set(TOKEN_KEY, &token);
        storage::set(USER_KEY, &user_id);
        self.0.set(SessionState::SignedIn { token, user_id });
    }

    /// Forgets the token (after signing out, or when the server refused it).
    pub fn clear(&self) {
        storage::remove(TOKEN_KEY);
        storage::remove(USER_KEY);
        self.0.set(SessionState::SignedOut);
    }
}

/// The session provided by [`App`](crate::App).
pub fn use_session() -> Session {
    expect_context::<Session>()
}

#[cfg(feature = "hydrate")]
mod storage {
    fn local() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    pub fn get(key: &str) -> Option<String> {
        local()?.get_item(key).ok()?
    }

    pub fn set(key: &str, value: &str) {
        if let Some(s) = local() {
            let _ = s.set_item(key, value);
        }
    }

    pub fn remove(key: &str) {
        if let Some(s) = local() {
            let _ = s.remove_item(key);
        }
    }
}

/// The server has no browser storage: nobody is signed in there.
#[cfg(not(feature = "hydrate"))]
mod storage {
    pub fn get(_key: &str) -> Option<String> {
        None
    }

    pub fn set(_key: &str, _value: &str) {}

    pub fn remove(_key: &str) {}
}
