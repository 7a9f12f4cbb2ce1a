//! Whether the server is attached to a Synapse (`[synapse]`). The server
//! renders `<meta name="herald-synapse" content="attached">` into every page
//! when attached ([`crate::shell_for`]); the browser reads it back
//! ([`Attached::from_page`]), so the server's HTML and the hydrated page
//! agree without an API call. Synapse's address is not in the page: every
//! visitor, signed in or not, gets the page.

use leptos::prelude::*;

/// Whether Herald is attached to a Synapse (its own sender off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attached(pub bool);

/// The `<meta>` name the server writes and the browser reads.
pub const META: &str = "herald-synapse";

impl Attached {
    /// What the server rendered into the page (`None` outside a browser).
    pub fn from_page() -> Attached {
        #[cfg(feature = "hydrate")]
        {
            let meta = document()
                .query_selector(&format!("meta[name=\"{META}\"]"))
                .ok()
                .flatten();
            Attached(meta.is_some())
        }
        #[cfg(not(feature = "hydrate"))]
        Attached(false)
    }

    /// The value for this render: the server's context, else the page's.
    pub fn provide() -> Attached {
        let attached = use_context::<Attached>().unwrap_or_else(Attached::from_page);
        provide_context(attached);
        attached
    }
}

/// Whether the console runs attached to a Synapse.
pub fn use_attached() -> bool {
    use_context::<Attached>().is_some_and(|a| a.0)
}
