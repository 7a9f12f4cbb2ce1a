//! One module per route; each page fetches what it shows and hands the
//! drawing to [`crate::components`].

pub mod destination;
pub mod destinations;
pub mod home;
pub mod login;
pub mod not_found;
pub mod sender;

use leptos_router::NavigateOptions;

/// Navigation that replaces the current history entry (redirects).
pub(crate) fn replace() -> NavigateOptions {
    NavigateOptions {
        replace: true,
        ..Default::default()
    }
}
