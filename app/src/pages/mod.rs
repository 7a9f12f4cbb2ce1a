//! One module per route; each page fetches what it shows and hands the
//! drawing to [`crate::components`].

#[cfg(feature = "full")]
pub mod destination;
pub mod destinations;
pub mod home;
#[cfg(feature = "full")]
pub mod instances;
#[cfg(not(feature = "full"))]
pub mod load_full;
pub mod login;
pub mod not_found;
#[cfg(feature = "full")]
pub mod sender;

use leptos_router::NavigateOptions;

/// Navigation that replaces the current history entry (redirects).
pub(crate) fn replace() -> NavigateOptions {
    NavigateOptions {
        replace: true,
        ..Default::default()
    }
}
