//! One page of destinations as a table, with sortable column headers and a
//! checkbox on each row in backoff (the rows' markup comes from
//! [`crate::html::rows`]; one `change` listener on the table serves every
//! checkbox).
//!
//! Each row carries `data-destination` and `data-status`, each cell `data-col`
//! (the API's field name, or `status` / `next_retry`) and `data-value` (the
//! raw number, empty for null), so tests and scripts do not depend on how
//! values are formatted. Times are shown relative to `now`, with the exact
//! UTC time in the cell's `title`.

use std::collections::BTreeSet;

use herald_shared::{Destination, DestinationsQuery, Direction, OrderBy};
use leptos::either::Either;
use leptos::prelude::*;

use crate::html;

/// The columns in the order they are shown: the API's field name (or a
/// derived column's name), the header, and the order it sorts by if any.
pub const COLUMNS: [(&str, &str, Option<OrderBy>); 7] = [
    ("destination", "Destination", Some(OrderBy::Destination)),
    ("status", "Status", None),
    ("retry_last_ts", "Last retry", Some(OrderBy::RetryLastTs)),
    (
        "retry_interval",
        "Retry interval",
        Some(OrderBy::RetryInterval),
    ),
    ("next_retry", "Next retry", None),
    ("failure_ts", "Failing since", Some(OrderBy::FailureTs)),
    (
        "last_successful_stream_ordering",
        "Last delivered",
        Some(OrderBy::LastSuccessfulStreamOrdering),
    ),
];

/// The query that sorts by `order`: the other direction if it is already the
/// order, ascending otherwise; back to the first page either way.
pub fn sorted_by(query: &DestinationsQuery, order: OrderBy) -> DestinationsQuery {
    let dir = if query.order_by == order {
        query.dir.flip()
    } else {
        Direction::Forwards
    };
    DestinationsQuery {
        from: 0,
        order_by: order,
        dir,
        ..query.clone()
    }
}

#[component]
pub fn DestinationsTable(
    destinations: Vec<Destination>,
    query: DestinationsQuery,
    now: i64,
    /// Called with the query a click on a header asks for.
    on_sort: UnsyncCallback<DestinationsQuery>,
    /// The destinations chosen for a bulk reset, across pages.
    selected: RwSignal<BTreeSet<String>>,
) -> impl IntoView {
    let body = selected.with_untracked(|chosen| {
        html::rows(
            &destinations,
            now,
            query.destination.is_some(),
            COLUMNS.len() + 1,
            chosen,
        )
    });

    // A row's checkbox adds or removes its destination; the header's
    // checkbox does so for every row of the page that has one.
    let on_change = move |ev: leptos::ev::Event| {
        let checked = event_target_checked(&ev);
        let target = event_target::<leptos::web_sys::Element>(&ev);
        let names = if target.id() == "select-page" {
            crate::dom::set_checked(super::bulk_reset::ROW_BOXES, &|_| checked)
        } else {
            target.get_attribute("data-select").into_iter().collect()
        };
        selected.update(|chosen| {
            for name in names {
                if checked {
                    chosen.insert(name);
                } else {
                    chosen.remove(&name);
                }
            }
        });
    };

    let headers = COLUMNS
        .iter()
        .map(|(field, label, order)| {
            let Some(order) = *order else {
                return Either::Left(view! { <th data-col=*field scope="col">{*label}</th> });
            };
            let active = query.order_by == order;
            let aria = active.then_some(match query.dir {
                Direction::Forwards => "ascending",
                Direction::Backwards => "descending",
            });
            let arrow = match (active, query.dir) {
                (false, _) => "",
                (true, Direction::Forwards) => " ▲",
                (true, Direction::Backwards) => " ▼",
            };
            let next = sorted_by(&query, order);
            Either::Right(view! {
                <th data-col=*field scope="col" aria-sort=aria>
                    <button
                        type="button"
                        class="sort"
                        data-sort=*field
                        on:click=move |_| on_sort.run(next.clone())
                    >
                        {*label}
                        <span aria-hidden="true">{arrow}</span>
                    </button>
                </th>
            })
        })
        .collect_view();

    view! {
        <div class="table-wrap">
            <table id="destinations-table" on:change=on_change>
                <thead>
                    <tr>
                        <th class="select" scope="col">
                            <input
                                type="checkbox"
                                id="select-page"
                                aria-label="Select every destination in backoff on this page"
                            />
                        </th>
                        {headers}
                    </tr>
                </thead>
                <tbody inner_html=body></tbody>
            </table>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clicking_a_header_sorts_by_it_then_flips() {
        let q = DestinationsQuery {
            from: 50,
            destination: Some("ex".into()),
            ..Default::default()
        };
        let a = sorted_by(&q, OrderBy::FailureTs);
        assert_eq!(
            (a.order_by, a.dir, a.from),
            (OrderBy::FailureTs, Direction::Forwards, 0)
        );
        assert_eq!(a.destination.as_deref(), Some("ex"));
        let b = sorted_by(&a, OrderBy::FailureTs);
        assert_eq!(b.dir, Direction::Backwards);
        assert_eq!(sorted_by(&b, OrderBy::FailureTs).dir, Direction::Forwards);
        assert_eq!(
            sorted_by(&q, OrderBy::Destination).dir,
            Direction::Backwards
        );
    }
}
