//! One page of destinations as a table, with the total that matched.
//!
//! Each row carries `data-destination`, each cell `data-col` (the API's field
//! name) and `data-value` (the raw number, empty for null), so tests and
//! scripts do not depend on how values are formatted.

use herald_shared::{Destination, DestinationsPage};
use leptos::prelude::*;

use crate::format;

/// The API's field names, in the order the columns are shown.
pub const COLUMNS: [(&str, &str); 5] = [
    ("destination", "Destination"),
    ("retry_last_ts", "Last retry"),
    ("retry_interval", "Retry interval"),
    ("failure_ts", "Failing since"),
    ("last_successful_stream_ordering", "Last delivered"),
];

#[component]
pub fn DestinationsTable(page: DestinationsPage) -> impl IntoView {
    let total = page.total;
    let shown = page.destinations.len();
    let body = if page.destinations.is_empty() {
        view! {
            <tr>
                <td colspan="5" id="destinations-empty" class="muted">
                    "No destinations yet."
                </td>
            </tr>
        }
        .into_any()
    } else {
        page.destinations
            .into_iter()
            .map(|d| view! { <DestinationRow d /> })
            .collect_view()
            .into_any()
    };

    view! {
        <p id="destinations-total" data-total=total.to_string()>
            {format!("{total} destination{}", if total == 1 { "" } else { "s" })}
            {((shown as u64) < total).then(|| format!(", showing the first {shown}"))}
        </p>
        <div class="table-wrap">
            <table id="destinations-table">
                <thead>
                    <tr>
                        {COLUMNS
                            .iter()
                            .map(|(field, label)| view! { <th data-col=*field scope="col">{*label}</th> })
                            .collect_view()}
                    </tr>
                </thead>
                <tbody>{body}</tbody>
            </table>
        </div>
    }
}

#[component]
fn DestinationRow(d: Destination) -> impl IntoView {
    let raw = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    view! {
        <tr data-destination=d.destination.clone()>
            <th scope="row" data-col="destination" data-value=d.destination.clone()>
                {d.destination.clone()}
            </th>
            <td data-col="retry_last_ts" data-value=d.retry_last_ts.to_string() class="num">
                {format::optional_timestamp(Some(d.retry_last_ts))}
            </td>
            <td data-col="retry_interval" data-value=d.retry_interval.to_string() class="num">
                {format::duration(d.retry_interval)}
            </td>
            <td data-col="failure_ts" data-value=raw(d.failure_ts) class="num">
                {format::optional_timestamp(d.failure_ts)}
            </td>
            <td
                data-col="last_successful_stream_ordering"
                data-value=raw(d.last_successful_stream_ordering)
                class="num"
            >
                {d.last_successful_stream_ordering.map(|v| v.to_string()).unwrap_or_else(|| "—".into())}
            </td>
        </tr>
    }
}
