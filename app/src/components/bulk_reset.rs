//! Bulk reset and bulk forget: the bar above the destinations table that
//! counts the chosen destinations, chooses every one in backoff that matches
//! the filter, and resets or forgets them after one confirmation — through
//! the same per-destination endpoints as the destination page
//! (`reset_connection`, Herald's `DELETE`), a few at a time, with a progress
//! bar and the list of any that failed. Both share the selection, the
//! dialog and the progress; [`Mode`] says which one runs.
//!
//! [`BulkReset`] holds the state; the bar and the dialog are drawn as markup
//! and their controls (`data-action` `bulk-…`, `select`, `select-page`) are
//! handed to [`BulkReset::act`] by the page.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;
use std::rc::Rc;

use herald_shared::{Action, DestinationStatus, DestinationsQuery, Direction, Forgotten, OrderBy};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError};
use crate::session::Session;
use crate::{dom, format, html};
use herald_shared::Action::{
    BulkAsk, BulkClear, BulkClose, BulkForgetAsk, BulkSelectAll, BulkStart,
};

/// Resets in flight at once.
const AT_ONCE: usize = 4;

/// The most destinations "select all" chooses (10,000 resets is already a
/// long wait; an admin with more can repeat).
pub const SELECT_AT_MOST: usize = 10_000;

/// Rows asked for per page while choosing.
const SELECT_PAGE: u64 = 500;

/// The dialog's id.
pub const DIALOG: &str = "bulk-dialog";

/// The table's row checkboxes (their `data-action` is [`Action::Select`]).
const ROW_BOXES: &str = r#"#destinations-table input[data-action="select"]"#;

/// What the bulk action does to each chosen destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// `reset_connection`: clear the backoff.
    #[default]
    Reset,
    /// Herald's `DELETE`: remove it, its rooms and its queues.
    Forget,
}

/// Where a bulk reset or forget is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    total: usize,
    done: usize,
    /// Destination and the server's error text.
    failed: Vec<(String, String)>,
    /// What the forgets removed, added up (rooms, queued PDUs, queued EDUs).
    removed: (u64, u64, u64),
}

impl Progress {
    fn finished(&self) -> bool {
        self.done == self.total
    }
}

/// Every destination in backoff whose name contains `filter`, up to
/// [`SELECT_AT_MOST`]: the list sorted by `retry_last_ts` descending puts
/// them first, so the pages are read until the first one not in backoff.
async fn in_backoff(token: &str, filter: Option<String>) -> Result<BTreeSet<String>, ApiError> {
    let now = dom::now_ms();
    let mut names = BTreeSet::new();
    let mut query = DestinationsQuery {
        from: 0,
        limit: SELECT_PAGE,
        order_by: OrderBy::RetryLastTs,
        dir: Direction::Backwards,
        destination: filter,
    };
    loop {
        let page = api::health_list(token, &query).await?;
        let shown = page.destinations.len();
        for d in page.destinations {
            if !DestinationStatus::of(&d.row, now).in_backoff() || names.len() == SELECT_AT_MOST {
                return Ok(names);
            }
            names.insert(d.row.destination);
        }
        if shown == 0 || page.next_token.is_none() {
            return Ok(names);
        }
        query.from += shown as u64;
    }
}

/// The bar: how many are chosen and the four buttons.
pub fn bar(count: usize, choosing: bool, filtered: bool) -> String {
    let none = if count == 0 { " disabled" } else { "" };
    let busy = if choosing { " disabled" } else { "" };
    let all = if filtered {
        "Select all in backoff matching the filter"
    } else {
        "Select all in backoff"
    };
    format!(
        r#"<div class="toolbar"><span id="bulk-count" data-count="{count}" aria-live="polite">{} selected</span><button type="button" id="bulk-select-all" class="secondary" data-action="{BulkSelectAll}"{busy}>{all}</button><button type="button" id="bulk-clear" class="secondary" data-action="{BulkClear}"{none}>Clear selection</button><button type="button" id="bulk-reset" class="danger" data-action="{BulkAsk}"{none}>Reset selected…</button><button type="button" id="bulk-forget" class="danger" data-action="{BulkForgetAsk}"{none}>Forget selected…</button></div>"#,
        format::count(count as u64)
    )
}

/// The dialog's inside: the question, or the progress and the failures.
pub fn dialog(mode: Mode, count: usize, progress: Option<&Progress>) -> String {
    let title = match mode {
        Mode::Reset => "Reset connections",
        Mode::Forget => "Forget destinations",
    };
    let mut out = format!(r#"<h2 id="bulk-title">{title}</h2>"#);
    let Some(p) = progress else {
        let n = format::plural(count, "destination");
        let (question, verb) = match mode {
            Mode::Reset => (
                format!("Reset the connection to {n}? Herald forgets their backoff and tries each one again with the next thing it sends."),
                "Reset",
            ),
            Mode::Forget => (
                format!("Forget {n}? Herald removes each, with its rooms and the PDUs and EDUs queued for it. This cannot be undone."),
                "Forget",
            ),
        };
        let _ = write!(
            out,
            r#"<p>{question}</p><div class="actions"><button type="button" id="bulk-confirm" class="danger" data-action="{BulkStart}">{verb} {count}</button><button type="button" id="bulk-cancel" class="secondary" data-action="{BulkClose}" autofocus>Cancel</button></div>"#,
        );
        return out;
    };
    let failed = p.failed.len();
    let status = if p.finished() {
        match mode {
            Mode::Reset => format!("Done: {} reset, {failed} failed.", p.total - failed),
            Mode::Forget => {
                let (rooms, pdus, edus) = p.removed;
                format!(
                    "Done: {} forgotten, {failed} failed; removed {}, {} and {}.",
                    p.total - failed,
                    format::plural(rooms as usize, "room"),
                    format::plural(pdus as usize, "queued PDU"),
                    format::plural(edus as usize, "queued EDU"),
                )
            }
        }
    } else {
        format!("{} of {} done…", p.done, p.total)
    };
    let _ = write!(
        out,
        r#"<progress id="bulk-progress" max="{}" value="{}"></progress><p id="bulk-status" aria-live="polite" data-done="{}" data-failed="{failed}">{status}</p><ul id="bulk-failures">"#,
        p.total.max(1),
        p.done,
        p.done
    );
    for (name, error) in &p.failed {
        let _ = write!(
            out,
            r#"<li data-destination="{n}"><a href="{}">{n}</a>: {}</li>"#,
            html::escape(&html::destination_href(name)),
            html::escape(error),
            n = html::escape(name),
        );
    }
    let disabled = if p.finished() { "" } else { " disabled" };
    let _ = write!(
        out,
        r#"</ul><div class="actions"><button type="button" id="bulk-close" data-action="{BulkClose}"{disabled}>Close</button></div>"#
    );
    out
}

/// The chosen destinations and the state of choosing and resetting them.
#[derive(Clone, Copy)]
pub struct BulkReset {
    session: Session,
    /// The chosen destinations; the page draws their checkboxes checked.
    pub selected: RwSignal<BTreeSet<String>>,
    choosing: RwSignal<bool>,
    /// Why choosing failed.
    error: RwSignal<Option<String>>,
    progress: RwSignal<Option<Progress>>,
    mode: RwSignal<Mode>,
}

impl BulkReset {
    pub fn new(session: Session) -> BulkReset {
        BulkReset {
            session,
            selected: RwSignal::new(BTreeSet::new()),
            choosing: RwSignal::new(false),
            error: RwSignal::new(None),
            progress: RwSignal::new(None),
            mode: RwSignal::new(Mode::Reset),
        }
    }

    /// The bar's markup and why choosing failed, if it did (tracked).
    pub fn bar(&self, filtered: bool) -> String {
        let mut out = bar(
            self.selected.with(|s| s.len()),
            self.choosing.get(),
            filtered,
        );
        if let Some(e) = self.error.get() {
            out.push_str(&html::error("bulk-error", &e));
        }
        out
    }

    /// The dialog's markup (tracked).
    pub fn dialog(&self) -> String {
        self.progress
            .with(|p| dialog(self.mode.get(), self.selected.with(|s| s.len()), p.as_ref()))
    }

    /// Runs control `action` if it is one of bulk reset's; `checked` is a
    /// checkbox's new state, `filter` the list's, `reload` reloads the list.
    /// Returns whether the action was one of bulk reset's.
    pub fn act(
        &self,
        action: Action,
        arg: String,
        checked: bool,
        filter: Option<String>,
        reload: impl Fn() + 'static,
    ) -> bool {
        match action {
            Action::Select => self.choose([arg], checked),
            Action::SelectPage => self.choose(dom::set_checked(ROW_BOXES, &|_| checked), checked),
            Action::BulkSelectAll => self.select_all(filter),
            Action::BulkClear => {
                dom::set_checked(ROW_BOXES, &|_| false);
                dom::set_checked("#select-page", &|_| false);
                self.selected.set(BTreeSet::new());
            }
            Action::BulkAsk => self.ask(Mode::Reset),
            Action::BulkForgetAsk => self.ask(Mode::Forget),
            Action::BulkStart => self.start(),
            Action::BulkClose => self.close(reload),
            _ => return false,
        }
        true
    }

    fn ask(&self, mode: Mode) {
        if self.progress.with_untracked(Option::is_none) {
            self.mode.set(mode);
        }
        dom::show_modal(DIALOG);
    }

    fn choose(&self, names: impl IntoIterator<Item = String>, chosen: bool) {
        self.selected.update(|s| {
            for name in names {
                if chosen {
                    s.insert(name);
                } else {
                    s.remove(&name);
                }
            }
        });
    }

    fn select_all(&self, filter: Option<String>) {
        let Some(token) = self.session.token_untracked() else {
            return;
        };
        let this = *self;
        this.choosing.set(true);
        this.error.set(None);
        spawn_local(async move {
            match in_backoff(&token, filter).await {
                Ok(names) => {
                    dom::set_checked(ROW_BOXES, &|name| names.contains(name));
                    this.selected.set(names);
                }
                Err(e) if e.is_unauthorized() => this.session.clear(),
                Err(e) => this.error.set(Some(api::admin_error_message(&e))),
            }
            this.choosing.set(false);
        });
    }

    fn start(&self) {
        let Some(token) = self.session.token_untracked() else {
            return;
        };
        let queue: VecDeque<String> = self.selected.get_untracked().into_iter().collect();
        self.progress.set(Some(Progress {
            total: queue.len(),
            ..Default::default()
        }));
        let queue = Rc::new(RefCell::new(queue));
        let this = *self;
        let mode = self.mode.get_untracked();
        for _ in 0..AT_ONCE {
            let (queue, token) = (queue.clone(), token.clone());
            spawn_local(async move {
                loop {
                    let next = queue.borrow_mut().pop_front();
                    let Some(name) = next else { break };
                    let result = match mode {
                        Mode::Reset => api::reset_connection(&token, &name).await.map(|()| None),
                        Mode::Forget => api::forget(&token, &name).await.map(Some),
                    };
                    if result.as_ref().is_err_and(ApiError::is_unauthorized) {
                        this.session.clear();
                    }
                    let (removed, failure) = match result {
                        Ok(removed) => (removed, None),
                        Err(e) => (None, Some(api::admin_error_message(&e))),
                    };
                    if failure.is_none() {
                        this.choose([name.clone()], false);
                    }
                    this.progress.update(|p| {
                        if let Some(p) = p {
                            p.done += 1;
                            p.failed.extend(failure.map(|e| (name, e)));
                            if let Some(Forgotten {
                                rooms,
                                queued_pdus,
                                queued_edus,
                                ..
                            }) = removed
                            {
                                p.removed.0 += rooms;
                                p.removed.1 += queued_pdus;
                                p.removed.2 += queued_edus;
                            }
                        }
                    });
                    if this
                        .progress
                        .with_untracked(|p| p.as_ref().is_some_and(Progress::finished))
                    {
                        dom::focus("#bulk-close");
                    }
                }
            });
        }
    }

    /// Closes the dialog unless a reset is under way; after a reset, the
    /// list is reloaded.
    pub fn close(&self, reload: impl Fn()) {
        match self.progress.get_untracked() {
            Some(p) if !p.finished() => {}
            Some(_) => {
                dom::close_modal(DIALOG);
                self.progress.set(None);
                reload();
            }
            None => dom::close_modal(DIALOG),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_disables_what_cannot_be_done() {
        let html = bar(0, false, true);
        assert!(html.contains(r#"data-count="0""#));
        assert!(html.contains(r#"data-action="bulk-ask" disabled>"#));
        assert!(html.contains(r#"data-action="bulk-forget-ask" disabled>"#));
        assert!(html.contains("matching the filter"));
        let html = bar(1234, true, false);
        assert!(html.contains("1,234 selected"));
        assert!(html.contains(r#"data-action="bulk-select-all" disabled>Select all in backoff<"#));
        assert!(html.contains(r#"data-action="bulk-ask">"#));
        assert!(html.contains(
            r#"id="bulk-forget" class="danger" data-action="bulk-forget-ask">Forget selected…<"#
        ));
    }

    #[test]
    fn the_forget_dialog_names_what_goes_and_adds_up_what_went() {
        let html = dialog(Mode::Forget, 2, None);
        assert!(html.contains("Forget destinations"), "{html}");
        assert!(html.contains("Forget 2 destinations? Herald removes each, with its rooms"));
        assert!(html.contains(r#"data-action="bulk-start">Forget 2<"#));
        let p = Progress {
            total: 2,
            done: 2,
            failed: vec![],
            removed: (3, 1200, 1),
        };
        let html = dialog(Mode::Forget, 0, Some(&p));
        assert!(
            html.contains(
                "Done: 2 forgotten, 0 failed; removed 3 rooms, 1,200 queued PDUs and 1 queued EDU."
            ),
            "{html}"
        );
    }

    #[test]
    fn the_dialog_asks_then_shows_progress_and_failures() {
        assert!(dialog(Mode::Reset, 3, None).contains("Reset the connection to 3 destinations?"));
        let mut p = Progress {
            total: 3,
            done: 1,
            failed: vec![("[::1]:8448".into(), "Unknown <destination>".into())],
            removed: (0, 0, 0),
        };
        let html = dialog(Mode::Reset, 3, Some(&p));
        assert!(html.contains(r#"<progress id="bulk-progress" max="3" value="1">"#));
        assert!(html.contains("1 of 3 done…"));
        assert!(html.contains(r#"<li data-destination="[::1]:8448"><a href="/destinations/%5B%3A%3A1%5D%3A8448">[::1]:8448</a>: Unknown &lt;destination&gt;</li>"#));
        assert!(html.contains(r#"data-action="bulk-close" disabled>"#));
        p.done = 3;
        let html = dialog(Mode::Reset, 3, Some(&p));
        assert!(html.contains("Done: 2 reset, 1 failed."));
        assert!(html.contains(r#"data-action="bulk-close">Close<"#));
    }
}
