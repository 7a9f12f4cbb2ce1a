//! `/destinations`: the federation destinations, a page at a time, with a
//! health summary above them.
//!
//! Sorting, filter and paging live in the page's query string (`from`,
//! `limit`, `order_by`, `dir`, `destination`, as the admin API spells them),
//! so a reload, the back button or a shared link shows the same page. The
//! data is fetched in the browser with the session's token; the server
//! renders the loading state. A 401 drops the session (back to sign-in).

use std::time::Duration;

use herald_shared::DestinationsQuery;
use leptos::either::EitherOf3;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_location, use_navigate};

use crate::api;
use crate::components::destinations_table::DestinationsTable;
use crate::components::error_message::ErrorMessage;
use crate::components::health_summary::HealthSummary;
use crate::format;
use crate::session::use_session;

/// The page sizes offered.
pub const PAGE_SIZES: [u64; 4] = [25, 50, 100, 500];

/// How long the filter waits after the last keystroke.
const FILTER_DELAY: Duration = Duration::from_millis(300);

/// The console URL that shows `query`.
pub fn page_url(query: &DestinationsQuery) -> String {
    let qs = query.to_query_string();
    if qs.is_empty() {
        "/destinations".to_owned()
    } else {
        format!("/destinations?{qs}")
    }
}

/// The query of the page at `from`, everything else kept.
fn at(query: &DestinationsQuery, from: u64) -> DestinationsQuery {
    DestinationsQuery {
        from,
        ..query.clone()
    }
}

/// Milliseconds since the epoch, by the browser's clock (or the server's).
fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_now() as i64
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
    fn js_now() -> f64;
}

/// A selector for the focused element: a sort button or an element with an id.
#[cfg(feature = "hydrate")]
fn focused_control() -> Option<String> {
    let el = document().active_element()?;
    if let Some(field) = el.get_attribute("data-sort") {
        return Some(format!("button[data-sort=\"{field}\"]"));
    }
    let id = el.id();
    (!id.is_empty()).then(|| format!("#{id}"))
}

#[cfg(feature = "hydrate")]
fn focus(selector: &str) {
    use wasm_bindgen::JsCast;
    if let Ok(Some(el)) = document().query_selector(selector) {
        if let Ok(el) = el.dyn_into::<web_sys::HtmlElement>() {
            let _ = el.focus();
        }
    }
}

#[cfg(not(feature = "hydrate"))]
fn focused_control() -> Option<String> {
    None
}

#[cfg(not(feature = "hydrate"))]
fn focus(_selector: &str) {}

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
        UnsyncCallback::new(move |q: DestinationsQuery| {
            refocus.set_value(focused_control());
            navigate(&page_url(&q), Default::default())
        })
    };

    // One resource for the page and the summary: a single request state to
    // show, and the summary is as fresh as the rows under it.
    let page = LocalResource::new(move || {
        let token = session.token();
        let query = query.get();
        async move {
            let token = token?;
            let rows = api::destinations(&token, &query).await;
            let summary = api::summary(&token).await;
            Some((rows, summary, query, now_ms()))
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
                focus(&selector);
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
                    go.run(DestinationsQuery {
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

    // Shown once loaded; a failure is told by the list below.
    let summary_view = move || {
        page.get()
            .flatten()
            .and_then(|(_, summary, _, _)| summary.ok())
            .map(|s| view! { <HealthSummary summary=s /> })
    };

    let list_view = move || match page.get() {
        Some(Some((Ok(p), _, q, now))) => {
            let total = p.total;
            let shown = p.destinations.len();
            let has_next = q.from + (shown as u64) < total && shown != 0;
            let has_prev = q.from > 0;
            let (first, prev, next) = (
                at(&q, 0),
                at(&q, q.from.saturating_sub(q.limit.max(1))),
                at(&q, q.from + shown as u64),
            );
            let size_q = q.clone();
            let sizes: String = PAGE_SIZES
                .iter()
                .map(|&n| {
                    let selected = if n == q.limit { " selected" } else { "" };
                    format!(r#"<option value="{n}"{selected}>{n}</option>"#)
                })
                .collect();
            EitherOf3::A(view! {
                <p id="destinations-total" data-total=total.to_string() aria-live="polite">
                    {format::range(q.from, shown, total)}
                </p>
                <DestinationsTable destinations=p.destinations query=q now on_sort=go />
                <nav id="pager" aria-label="Pages">
                    <button
                        type="button"
                        id="page-first"
                        disabled=!has_prev
                        on:click=move |_| go.run(first.clone())
                    >
                        "« First"
                    </button>
                    <button
                        type="button"
                        id="page-prev"
                        disabled=!has_prev
                        on:click=move |_| go.run(prev.clone())
                    >
                        "‹ Previous"
                    </button>
                    <button
                        type="button"
                        id="page-next"
                        disabled=!has_next
                        on:click=move |_| go.run(next.clone())
                    >
                        "Next ›"
                    </button>
                    <label>
                        "Per page "
                        <select
                            id="page-size"
                            inner_html=sizes
                            on:change=move |ev| {
                                let limit = event_target_value(&ev).parse().unwrap_or(size_q.limit);
                                go.run(DestinationsQuery {
                                    from: 0,
                                    limit,
                                    ..size_q.clone()
                                });
                            }
                        >
                        </select>
                    </label>
                </nav>
            })
        }
        Some(Some((Err(e), _, _, _))) => EitherOf3::B(view! {
            <ErrorMessage id="destinations-error" message=api::admin_error_message(&e) />
        }),
        _ => EitherOf3::C(
            view! { <p id="destinations-loading" class="muted" aria-busy="true">"Loading…"</p> },
        ),
    };

    view! {
        <Title text="Destinations · Herald" />
        <section id="destinations-page" class="page">
            <h1>"Destinations"</h1>
            {summary_view}
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
            </div>
            {list_view}
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
        assert_eq!(at(&q, 0).from, 0);
        assert_eq!(at(&q, 0).limit, 25);
    }
}
