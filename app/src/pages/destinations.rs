//! `/destinations`: the federation destinations, a page at a time, with a
//! health summary above them.
//!
//! Sorting, filter and paging live in the page's query string (`from`,
//! `limit`, `order_by`, `dir`, `destination`, as the admin API spells them),
//! so a reload, the back button or a shared link shows the same page. The
//! data is fetched in the browser with the session's token; the server
//! renders the loading state. A 401 drops the session (back to sign-in).
//! Auto-refresh reloads the same page every 10 s; the bulk-reset selection
//! survives paging, sorting and refreshes. The rows come from Herald's list
//! (Synapse's rows plus the last error and the last delivery time); after a
//! forget on a destination's page, a notice says what was removed.

use std::time::Duration;

use herald_shared::{Action, DestinationsQuery, OrderBy};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_location, use_navigate};

use crate::api;
use crate::components::bulk_reset::{self, BulkReset};
use crate::components::destinations_table::{self, sorted_by};
use crate::components::forget;
use crate::components::pager::{self, pager};
use crate::session::use_session;
use crate::{dom, format, html};

/// How long the filter waits after the last keystroke.
const FILTER_DELAY: Duration = Duration::from_millis(300);

/// How often auto-refresh reloads the page.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The console URL that shows `query`.
pub fn page_url(query: &DestinationsQuery) -> String {
    let qs = query.to_query_string();
    if qs.is_empty() {
        "/destinations".to_owned()
    } else {
        format!("/destinations?{qs}")
    }
}

#[component]
pub fn DestinationsPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let location = use_location();
    let query =
        Memo::new(move |_| DestinationsQuery::parse(&location.search.get()).unwrap_or_default());

    // The table and pager are redrawn with each page, so the control that
    // asked for it (a header, a pager button) is focused again afterwards.
    let refocus = StoredValue::new_local(None::<String>);
    let go = {
        let navigate = navigate.clone();
        StoredValue::new_local(move |q: DestinationsQuery| {
            refocus.set_value(dom::focused_control());
            navigate(&page_url(&q), Default::default())
        })
    };
    let go = move |q: DestinationsQuery| go.with_value(|go| go(q));

    // Bumped to reload the same page (auto-refresh, after a bulk reset).
    let reloads = RwSignal::new(0u32);
    let reload = move || reloads.update(|n| *n += 1);
    let auto_refresh = RwSignal::new(false);
    let ticker = StoredValue::new_local(None::<IntervalHandle>);
    let stop_ticker = move || {
        if let Some(h) = ticker.get_value() {
            h.clear();
            ticker.set_value(None);
        }
    };
    Effect::new(move |_| {
        stop_ticker();
        if auto_refresh.get() {
            ticker.set_value(set_interval_with_handle(reload, REFRESH_EVERY).ok());
        }
    });
    on_cleanup(stop_ticker);

    let bulk = BulkReset::new(session);

    // One resource for the page and the summary, asked for at once: a single
    // request state to show, and the summary is as fresh as the rows. A reload keeps
    // showing the previous answer until the new one is in.
    let page = LocalResource::new(move || {
        let token = session.token();
        let query = query.get();
        reloads.track();
        async move {
            let token = token?;
            let (rows, summary) =
                futures_util::future::join(api::health_list(&token, &query), api::summary(&token))
                    .await;
            Some((rows, summary, query, dom::now_ms()))
        }
    });

    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    Effect::new(move |_| {
        if let Some(Some((rows, summary, _, _))) = page.get() {
            if [rows.err(), summary.err()]
                .iter()
                .flatten()
                .any(|e| e.is_unauthorized())
            {
                session.clear();
            }
        }
    });

    Effect::new(move |_| {
        let drawn = matches!(page.get(), Some(Some((_, _, q, _))) if q == query.get_untracked());
        if drawn {
            if let Some(selector) = refocus.get_value() {
                refocus.set_value(None);
                dom::focus(&selector);
            }
        }
    });

    // The filter navigates once typing has paused.
    let timer = StoredValue::new_local(None::<TimeoutHandle>);
    let on_filter = move |ev: leptos::ev::Event| {
        let value = event_target_value(&ev);
        if let Some(h) = timer.get_value() {
            h.clear();
        }
        let handle = set_timeout_with_handle(
            move || {
                let current = query.get_untracked();
                let destination = (!value.is_empty()).then_some(value);
                if destination != current.destination {
                    go(DestinationsQuery {
                        from: 0,
                        destination,
                        ..current
                    });
                }
            },
            FILTER_DELAY,
        );
        timer.set_value(handle.ok());
    };

    // Every control below is drawn as markup and handled here.
    let act = move |action: Action, arg: String, ev: &leptos::ev::Event| {
        let q = query.get_untracked();
        match action {
            Action::Sort => {
                if let Some(order) = OrderBy::parse(&arg) {
                    go(sorted_by(&q, order));
                }
            }
            Action::Page | Action::Size => {
                let value = event_target_value(ev);
                if let Some((from, limit)) = pager::requested(action, &arg, &value, q.limit) {
                    go(DestinationsQuery { from, limit, ..q });
                }
            }
            _ => {
                let checked = event_target_checked(ev);
                bulk.act(action, arg, checked, q.destination, reload);
            }
        }
    };
    let (on_click, on_change) = dom::delegate(act);
    // Escape closes the dialog only when no reset is under way.
    let on_cancel = move |ev: leptos::ev::Event| {
        ev.prevent_default();
        bulk.close(reload);
    };

    let summary = move || {
        page.get()
            .flatten()
            .and_then(|(_, summary, _, _)| summary.ok())
            .map(|s| html::summary(&s))
            .unwrap_or_default()
    };

    let list = move || match page.get() {
        Some(Some((Ok(p), _, q, now))) => {
            let (total, shown) = (p.total, p.destinations.len());
            let table = bulk.selected.with_untracked(|chosen| {
                destinations_table::table(&p.destinations, &q, now, chosen)
            });
            format!(
                r#"<p id="destinations-total" data-total="{total}" aria-live="polite">{}</p>{table}{}"#,
                format::range(q.from, shown, total),
                pager("pager", q.from, q.limit, shown, total)
            )
        }
        Some(Some((Err(e), _, _, _))) => {
            html::error("destinations-error", &api::admin_error_message(&e))
        }
        _ => html::loading("destinations-loading"),
    };

    let notice = forget::take_notice()
        .map(|f| forget::notice_html(&f))
        .unwrap_or_default();

    view! {
        <Title text="Destinations · Herald" />
        <section id="destinations-page" class="page" on:click=on_click on:change=on_change>
            <h1>"Destinations"</h1>
            <div id="notices" inner_html=notice></div>
            <section id="health-summary" class="card" aria-label="Health summary" inner_html=summary></section>
            <div class="toolbar">
                <label for="destinations-filter">"Filter"</label>
                <input
                    id="destinations-filter"
                    type="search"
                    placeholder="Destination contains…"
                    autocomplete="off"
                    prop:value=move || query.get().destination.unwrap_or_default()
                    on:input=on_filter
                />
                <label class="toggle">
                    <input
                        type="checkbox"
                        id="auto-refresh"
                        prop:checked=auto_refresh
                        on:change=move |ev| auto_refresh.set(event_target_checked(&ev))
                    />
                    "Auto-refresh (10 s)"
                </label>
            </div>
            <div id="bulk-bar" inner_html=move || bulk.bar(query.with(|q| q.destination.is_some()))></div>
            <div id="destinations-list" inner_html=list></div>
            <dialog id=bulk_reset::DIALOG aria-labelledby="bulk-title" on:cancel=on_cancel inner_html=move || bulk.dialog()></dialog>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls_keep_the_query() {
        assert_eq!(page_url(&DestinationsQuery::default()), "/destinations");
        let q = DestinationsQuery::parse(
            "from=50&limit=25&order_by=failure_ts&dir=b&destination=a%20b",
        )
        .unwrap();
        let url = page_url(&q);
        assert_eq!(
            DestinationsQuery::parse(url.split_once('?').unwrap().1).unwrap(),
            q
        );
    }
}
