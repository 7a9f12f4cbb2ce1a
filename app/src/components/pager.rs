//! First / previous / next and the page size under a paginated table (the
//! destinations list and a destination's rooms).

use leptos::prelude::*;

/// The page sizes offered.
pub const PAGE_SIZES: [u64; 4] = [25, 50, 100, 500];

/// Where each button goes: `(from, limit)` of the first, previous and next
/// page, and whether previous and next exist.
pub fn targets(from: u64, limit: u64, shown: usize, total: u64) -> [(u64, bool); 3] {
    let has_prev = from > 0;
    let next = from + shown as u64;
    [
        (0, has_prev),
        (from.saturating_sub(limit.max(1)), has_prev),
        (next, shown != 0 && next < total),
    ]
}

#[component]
pub fn Pager(
    /// The `<nav>`'s id.
    id: &'static str,
    from: u64,
    limit: u64,
    shown: usize,
    total: u64,
    /// Called with the `(from, limit)` asked for.
    on_page: UnsyncCallback<(u64, u64)>,
) -> impl IntoView {
    let sizes: String = PAGE_SIZES
        .iter()
        .map(|&n| {
            let selected = if n == limit { " selected" } else { "" };
            format!(r#"<option value="{n}"{selected}>{n}</option>"#)
        })
        .collect();
    let buttons = ["page-first", "page-prev", "page-next"]
        .into_iter()
        .zip(["« First", "‹ Previous", "Next ›"])
        .zip(targets(from, limit, shown, total))
        .map(|((id, label), (to, enabled))| {
            view! {
                <button
                    type="button"
                    id=id
                    disabled=!enabled
                    on:click=move |_| on_page.run((to, limit))
                >
                    {label}
                </button>
            }
        })
        .collect_view();
    view! {
        <nav id=id class="pager" aria-label="Pages">
            {buttons}
            <label>
                "Per page "
                <select
                    id="page-size"
                    inner_html=sizes
                    on:change=move |ev| {
                        let size = event_target_value(&ev).parse().unwrap_or(limit);
                        on_page.run((0, size));
                    }
                ></select>
            </label>
        </nav>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_go_to_the_neighbouring_pages() {
        // Rows 51–100 of 120 at 50 a page.
        assert_eq!(
            targets(50, 50, 50, 120),
            [(0, true), (0, true), (100, true)]
        );
        // The first page has no previous; the last no next.
        assert_eq!(targets(0, 50, 50, 120)[1], (0, false));
        assert_eq!(targets(100, 50, 20, 120)[2], (120, false));
        // A from that is not a multiple of the limit steps back a full page.
        assert_eq!(targets(30, 25, 25, 120)[1], (5, true));
        // An empty page past the end offers no next.
        assert_eq!(targets(500, 50, 0, 120)[2], (500, false));
    }
}
