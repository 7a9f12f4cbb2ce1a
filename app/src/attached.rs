//! Whether the server is attached to a Synapse (`[synapse]`), and which.
//! The server renders `<meta name="herald-synapse" content="<url>">` into
//! every page when attached ([`crate::shell_for`]); the browser reads it back
//! ([`Attached::from_page`]), so the server's HTML and the hydrated page
//! agree without an API call.

use leptos::prelude::*;

/// Synapse's base URL when attached; `None` when Herald is the sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached(pub Option<String>);

/// The `<meta>` name the server writes and the browser reads.
pub const META: &str = "herald-synapse";

impl Attached {
    /// What the server rendered into the page (`None` outside a browser).
    pub fn from_page() -> Attached {
        #[cfg(feature = "hydrate")]
        {
            let url = document()
                .query_selector(&format!("meta[name=\"{META}\"]"))
                .ok()
                .flatten()
                .and_then(|m| m.get_attribute("content"));
            Attached(url)
        }
        #[cfg(not(feature = "hydrate"))]
        Attached(None)
    }

    /// The value for this render: the server's context, else the page's.
    pub fn provide() -> Attached {
        let attached = use_context::<Attached>().unwrap_or_else(Attached::from_page);
        provide_context(attached.clone());
        attached
    }
}

/// Synapse's URL if the console runs attached.
pub fn use_attached() -> Option<String> {
    use_context::<Attached>().and_then(|a| a.0)
}
