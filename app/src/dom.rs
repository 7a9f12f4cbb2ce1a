//! The few things the console asks of the browser directly: the clock, focus,
//! the control an event came from, checkboxes drawn as markup, and modal
//! dialogs. On the server (feature `ssr`) they do nothing, since no page
//! calls them before hydration.
//!
//! Pages draw their controls as markup (see [`crate::html`]) and listen once
//! for all of them: a control says what it does with `data-action` and, if it
//! needs one, `data-arg`; [`action`] reads them off an event.

use herald_shared::Action;

/// The click and change listeners of a page whose controls are markup: both
/// call `act(action, arg, event)` for the control an event came from.
pub fn delegate<F>(
    act: F,
) -> (
    impl Fn(leptos::ev::MouseEvent) + Copy,
    impl Fn(leptos::ev::Event) + Copy,
)
where
    F: Fn(Action, String, &leptos::ev::Event) + Copy + 'static,
{
    (
        move |ev: leptos::ev::MouseEvent| {
            if let Some((action, arg)) = action(&ev) {
                act(action, arg, &ev);
            }
        },
        move |ev: leptos::ev::Event| {
            if let Some((action, arg)) = action(&ev) {
                act(action, arg, &ev);
            }
        },
    )
}

/// Milliseconds since the epoch, by the browser's clock (or the server's).
pub fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys_now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn js_sys_now() -> f64;
}

#[cfg(feature = "hydrate")]
mod browser {
    use herald_shared::Action;
    use leptos::prelude::document;
    use wasm_bindgen::JsCast;
    use web_sys::{HtmlDialogElement, HtmlElement, HtmlInputElement};

    fn find<T: JsCast>(selector: &str) -> Option<T> {
        document().query_selector(selector).ok()??.dyn_into().ok()
    }

    /// The `data-action` and `data-arg` of the enabled control `ev` came
    /// from (the target or its closest ancestor with a `data-action`).
    pub fn action(ev: &web_sys::Event) -> Option<(Action, String)> {
        let target: web_sys::Element = ev.target()?.dyn_into().ok()?;
        let el = target.closest("[data-action]").ok()??;
        if el.has_attribute("disabled") {
            return None;
        }
        let action = Action::parse(&el.get_attribute("data-action")?)?;
        Some((action, el.get_attribute("data-arg").unwrap_or_default()))
    }

    /// A selector for the focused control: a sort button or an element
    /// with an id.
    pub fn focused_control() -> Option<String> {
        let el = document().active_element()?;
        if let Some(field) = el.get_attribute("data-sort") {
            return Some(format!("button[data-sort=\"{field}\"]"));
        }
        let id = el.id();
        (!id.is_empty()).then(|| format!("#{id}"))
    }

    /// Focuses the element matching `selector` once the markup changed in
    /// this turn is drawn (effects may run before the markup is replaced).
    pub fn focus(selector: &str) {
        let selector = selector.to_owned();
        leptos::prelude::request_animation_frame(move || {
            if let Some(el) = find::<HtmlElement>(&selector) {
                let _ = el.focus();
            }
        });
    }

    /// Checks each checkbox matching `selector` whose `data-arg` value
    /// `check` accepts and unchecks the others; returns their values.
    pub fn set_checked(selector: &str, check: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut names = Vec::new();
        let Ok(list) = document().query_selector_all(selector) else {
            return names;
        };
        for i in 0..list.length() {
            if let Some(input) = list
                .get(i)
                .and_then(|n| n.dyn_into::<HtmlInputElement>().ok())
            {
                let name = input.get_attribute("data-arg").unwrap_or_default();
                input.set_checked(check(&name));
                names.push(name);
            }
        }
        names
    }

    /// Opens the `<dialog>` with this id as a modal: the rest of the page is
    /// inert, Tab stays inside, Escape cancels.
    pub fn show_modal(id: &str) {
        if let Some(d) = find::<HtmlDialogElement>(&format!("#{id}")) {
            if !d.open() {
                let _ = d.show_modal();
            }
        }
    }

    pub fn close_modal(id: &str) {
        if let Some(d) = find::<HtmlDialogElement>(&format!("#{id}")) {
            d.close();
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod browser {
    pub fn action(_ev: &leptos::web_sys::Event) -> Option<(herald_shared::Action, String)> {
        None
    }
    pub fn focused_control() -> Option<String> {
        None
    }
    pub fn focus(_selector: &str) {}
    pub fn set_checked(_selector: &str, _check: &dyn Fn(&str) -> bool) -> Vec<String> {
        Vec::new()
    }
    pub fn show_modal(_id: &str) {}
    pub fn close_modal(_id: &str) {}
}

pub use browser::*;
