//! First / previous / next and the page size under a paginated table (the
//! destinations list and a destination's rooms), drawn as markup: the
//! buttons have `data-action="page"` and the first row to show as
//! `data-arg`; the size select has `data-action="size"`.

use std::fmt::Write;

use herald_shared::Action;

/// The page sizes offered.
pub const PAGE_SIZES: [u64; 4] = [25, 50, 100, 500];

/// Where each button goes: the `from` of the first, previous and next page,
/// and whether that button is enabled.
pub fn targets(from: u64, limit: u64, shown: usize, total: u64) -> [(u64, bool); 3] {
    let has_prev = from > 0;
    let next = from + shown as u64;
    [
        (0, has_prev),
        (from.saturating_sub(limit.max(1)), has_prev),
        (next, shown != 0 && next < total),
    ]
}

/// The `(from, limit)` a pager control asks for: `page` keeps the limit,
/// `size` starts again from the first row; `None` for other actions or
/// values that are not numbers.
pub fn requested(action: Action, arg: &str, value: &str, limit: u64) -> Option<(u64, u64)> {
    match action {
        Action::Page => arg.parse().ok().map(|from| (from, limit)),
        Action::Size => value.parse().ok().map(|size| (0, size)),
        _ => None,
    }
}

/// The pager under a table showing `shown` rows from `from` of `total`.
pub fn pager(id: &str, from: u64, limit: u64, shown: usize, total: u64) -> String {
    let mut out = format!(r#"<nav id="{id}" class="pager" aria-label="Pages">"#);
    let buttons = [
        ("page-first", "« First"),
        ("page-prev", "‹ Previous"),
        ("page-next", "Next ›"),
    ];
    for ((button, label), (to, enabled)) in
        buttons.into_iter().zip(targets(from, limit, shown, total))
    {
        let disabled = if enabled { "" } else { " disabled" };
        let page = Action::Page;
        let _ = write!(
            out,
            r#"<button type="button" id="{button}" data-action="{page}" data-arg="{to}"{disabled}>{label}</button>"#
        );
    }
    let _ = write!(
        out,
        r#"<label>Per page <select id="page-size" data-action="{}">"#,
        Action::Size
    );
    for n in PAGE_SIZES {
        let selected = if n == limit { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{n}"{selected}>{n}</option>"#);
    }
    out.push_str("</select></label></nav>");
    out
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

    #[test]
    fn controls_ask_for_a_page_or_a_size() {
        assert_eq!(requested(Action::Page, "50", "", 25), Some((50, 25)));
        assert_eq!(requested(Action::Size, "", "500", 25), Some((0, 500)));
        assert_eq!(requested(Action::Size, "", "lots", 25), None);
        assert_eq!(requested(Action::Sort, "50", "", 25), None);
    }

    #[test]
    fn the_markup_disables_what_does_not_exist() {
        let html = pager("pager", 0, 25, 25, 30);
        assert!(html.contains(
            r#"<button type="button" id="page-prev" data-action="page" data-arg="0" disabled>"#
        ));
        assert!(html.contains(
            r#"<button type="button" id="page-next" data-action="page" data-arg="25">Next ›</button>"#
        ));
        assert!(html.contains(r#"<option value="25" selected>25</option>"#));
        assert_eq!(html.matches("selected").count(), 1);
    }
}
