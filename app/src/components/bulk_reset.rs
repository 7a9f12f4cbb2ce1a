//! Bulk reset: the bar above the destinations table that counts the chosen
//! destinations, chooses every one in backoff that matches the filter, and
//! resets them after one confirmation — through the same per-destination
//! `reset_connection` endpoint as the destination page, a few at a time,
//! with a progress bar and the list of any that failed.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;
use std::rc::Rc;

use herald_shared::{DestinationStatus, DestinationsQuery, Direction, OrderBy};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError};
use crate::components::error_message::ErrorMessage;
use crate::session::use_session;
use crate::{dom, format, html};

/// Resets in flight at once.
const AT_ONCE: usize = 4;

/// The most destinations "select all" chooses (10,000 resets is already a
/// long wait; an admin with more can repeat).
pub const SELECT_AT_MOST: usize = 10_000;

/// Rows asked for per page while choosing.
const SELECT_PAGE: u64 = 500;

const DIALOG: &str = "bulk-dialog";

/// The table's row checkboxes.
pub const ROW_BOXES: &str = "#destinations-table input[data-select]";

/// Where a bulk reset is.
#[derive(Debug, Clone, Default, PartialEq)]
struct Progress {
    total: usize,
    done: usize,
    /// Destination and the server's error text.
    failed: Vec<(String, String)>,
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
        let page = api::destinations(token, &query).await?;
        let shown = page.destinations.len();
        for d in page.destinations {
            if !DestinationStatus::of(&d, now).in_backoff() || names.len() == SELECT_AT_MOST {
                return Ok(names);
            }
            names.insert(d.destination);
        }
        if shown == 0 || page.next_token.is_none() {
            return Ok(names);
        }
        query.from += shown as u64;
    }
}

/// The failures as list items.
fn failures_html(failed: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, error) in failed {
        let _ = write!(
            out,
            r#"<li data-destination="{n}"><a href="{}">{n}</a>: {}</li>"#,
            html::escape(&html::destination_href(name)),
            html::escape(error),
            n = html::escape(name),
        );
    }
    out
}

#[component]
pub fn BulkReset(
    /// The chosen destinations (the table's checkboxes write it too).
    selected: RwSignal<BTreeSet<String>>,
    /// The list's current filter.
    filter: Signal<Option<String>>,
    /// Called when the dialog closes after a reset, to reload the list.
    on_done: UnsyncCallback<()>,
) -> impl IntoView {
    let session = use_session();
    let choosing = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let progress = RwSignal::new(None::<Progress>);
    let count = move || selected.with(|s| s.len());

    let select_all = move |_| {
        let Some(token) = session.token_untracked() else {
            return;
        };
        choosing.set(true);
        error.set(None);
        let filter = filter.get_untracked();
        spawn_local(async move {
            match in_backoff(&token, filter).await {
                Ok(names) => {
                    dom::set_checked(ROW_BOXES, &|name| names.contains(name));
                    selected.set(names);
                }
                Err(e) if e.is_unauthorized() => session.clear(),
                Err(e) => error.set(Some(api::admin_error_message(&e))),
            }
            choosing.set(false);
        });
    };

    let clear = move |_| {
        dom::set_checked(ROW_BOXES, &|_| false);
        dom::set_checked("#select-page", &|_| false);
        selected.set(BTreeSet::new());
    };

    let ask = move |_| {
        progress.set(None);
        dom::show_modal(DIALOG);
    };

    let start = move |_| {
        let Some(token) = session.token_untracked() else {
            return;
        };
        let queue: VecDeque<String> = selected.get_untracked().into_iter().collect();
        progress.set(Some(Progress {
            total: queue.len(),
            ..Default::default()
        }));
        let queue = Rc::new(RefCell::new(queue));
        for _ in 0..AT_ONCE {
            let (queue, token) = (queue.clone(), token.clone());
            spawn_local(async move {
                loop {
                    let next = queue.borrow_mut().pop_front();
                    let Some(name) = next else { break };
                    let result = api::reset_connection(&token, &name).await;
                    if result.as_ref().is_err_and(|e| e.is_unauthorized()) {
                        session.clear();
                    }
                    let failure = result.err().map(|e| api::admin_error_message(&e));
                    if failure.is_none() {
                        selected.update(|s| {
                            s.remove(&name);
                        });
                    }
                    progress.update(|p| {
                        if let Some(p) = p {
                            p.done += 1;
                            p.failed.extend(failure.map(|e| (name, e)));
                        }
                    });
                }
            });
        }
    };

    let close = move || {
        let ran = progress.get_untracked().is_some();
        dom::close_modal(DIALOG);
        if ran {
            progress.set(None);
            on_done.run(());
        }
    };
    // Escape cancels the question, but not a reset under way.
    let on_cancel = move |ev: leptos::ev::Event| {
        match progress.get_untracked() {
            Some(p) if !p.finished() => ev.prevent_default(),
            Some(_) => {
                ev.prevent_default();
                close();
            }
            None => {}
        }
    };

    let body = move || match progress.get() {
        None => {
            let n = count();
            view! {
                <p>
                    {format!(
                        "Reset the connection to {}? Herald forgets their backoff and tries each one again with the next thing it sends.",
                        format::plural(n, "destination"),
                    )}
                </p>
                <div class="actions">
                    <button type="button" id="bulk-confirm" class="danger" on:click=start>
                        {format!("Reset {n}")}
                    </button>
                    <button type="button" id="bulk-cancel" class="secondary" on:click=move |_| close()>
                        "Cancel"
                    </button>
                </div>
            }
            .into_any()
        }
        Some(p) => {
            let status = if p.finished() {
                format!(
                    "Done: {} reset, {} failed.",
                    p.total - p.failed.len(),
                    p.failed.len()
                )
            } else {
                format!("{} of {} done…", p.done, p.total)
            };
            view! {
                <progress id="bulk-progress" max=p.total value=p.done></progress>
                <p id="bulk-status" aria-live="polite" data-done=p.done data-failed=p.failed.len()>
                    {status}
                </p>
                <ul id="bulk-failures" inner_html=failures_html(&p.failed)></ul>
                <div class="actions">
                    <button
                        type="button"
                        id="bulk-close"
                        disabled=!p.finished()
                        on:click=move |_| close()
                    >
                        "Close"
                    </button>
                </div>
            }
            .into_any()
        }
    };

    view! {
        <div id="bulk-bar" class="toolbar">
            <span id="bulk-count" data-count=count aria-live="polite">
                {move || format!("{} selected", format::count(count() as u64))}
            </span>
            <button
                type="button"
                id="bulk-select-all"
                class="secondary"
                disabled=choosing
                on:click=select_all
            >
                {move || {
                    if filter.with(Option::is_some) {
                        "Select all in backoff matching the filter"
                    } else {
                        "Select all in backoff"
                    }
                }}
            </button>
            <button
                type="button"
                id="bulk-clear"
                class="secondary"
                disabled=move || count() == 0
                on:click=clear
            >
                "Clear selection"
            </button>
            <button
                type="button"
                id="bulk-reset"
                class="danger"
                disabled=move || count() == 0
                on:click=ask
            >
                "Reset selected…"
            </button>
        </div>
        {move || error.get().map(|e| view! { <ErrorMessage id="bulk-error" message=e /> })}
        <dialog id=DIALOG aria-labelledby="bulk-title" on:cancel=on_cancel>
            <h2 id="bulk-title">"Reset connections"</h2>
            {body}
        </dialog>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_listed_escaped_with_links() {
        let html = failures_html(&[("[::1]:8448".into(), "Unknown <destination>".into())]);
        assert_eq!(
            html,
            r#"<li data-destination="[::1]:8448"><a href="/destinations/%5B%3A%3A1%5D%3A8448">[::1]:8448</a>: Unknown &lt;destination&gt;</li>"#
        );
    }

    #[test]
    fn progress_is_finished_when_every_reset_answered() {
        let mut p = Progress {
            total: 2,
            ..Default::default()
        };
        assert!(!p.finished());
        p.done = 2;
        assert!(p.finished());
    }
}
