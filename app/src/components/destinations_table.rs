//! One page of destinations (Herald's list: Synapse's rows with the last
//! error and the last delivery time) as a table: sortable column headers, a checkbox
//! on each row in backoff (and one in the header for the whole page), the
//! rows from [`crate::html::rows`]. Drawn as markup; the page listens for
//! its controls (`data-action` `sort`, `select`, `select-page`).

use std::collections::BTreeSet;
use std::fmt::Write;

use herald_shared::{DestinationHealthRow, DestinationsQuery, Direction, OrderBy};

use crate::html;
use herald_shared::Action::{SelectPage, Sort};

/// The columns in the order they are shown: the API's field name (or a
/// derived column's name), the header, and the order it sorts by if any.
pub const COLUMNS: [(&str, &str, Option<OrderBy>); 9] = [
    ("destination", "Destination", Some(OrderBy::Destination)),
    ("status", "Status", None),
    ("last_error", "Last error", None),
    ("retry_last_ts", "Last retry", Some(OrderBy::RetryLastTs)),
    (
        "retry_interval",
        "Retry interval",
        Some(OrderBy::RetryInterval),
    ),
    ("next_retry", "Next retry", None),
    ("failure_ts", "Failing since", Some(OrderBy::FailureTs)),
    ("last_delivered_ts", "Last delivered", None),
    (
        "last_successful_stream_ordering",
        "Delivered up to",
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

/// A header that sorts: a button with `data-action="sort"`, and `aria-sort`
/// on the active one.
pub fn sort_header(out: &mut String, field: &str, label: &str, active: Option<Direction>) {
    let (aria, arrow) = match active {
        None => ("", ""),
        Some(Direction::Forwards) => (r#" aria-sort="ascending""#, " ▲"),
        Some(Direction::Backwards) => (r#" aria-sort="descending""#, " ▼"),
    };
    let _ = write!(
        out,
        r#"<th data-col="{field}" scope="col"{aria}><button type="button" class="sort" data-sort="{field}" data-action="{Sort}" data-arg="{field}">{label}<span aria-hidden="true">{arrow}</span></button></th>"#
    );
}

/// The whole table for one page of the list at `now`; rows whose
/// destination is in `selected` have their checkbox checked.
pub fn table(
    destinations: &[DestinationHealthRow],
    query: &DestinationsQuery,
    now: i64,
    selected: &BTreeSet<String>,
) -> String {
    let mut out = format!(
        r#"<div class="table-wrap"><table id="destinations-table"><thead><tr><th class="select" scope="col"><input type="checkbox" id="select-page" data-action="{SelectPage}" aria-label="Select every destination in backoff on this page"></th>"#,
    );
    for (field, label, order) in COLUMNS {
        match order {
            Some(order) => {
                let active = (query.order_by == order).then_some(query.dir);
                sort_header(&mut out, field, label, active);
            }
            None => {
                let _ = write!(out, r#"<th data-col="{field}" scope="col">{label}</th>"#);
            }
        }
    }
    out.push_str("</tr></thead><tbody>");
    out.push_str(&html::rows(
        destinations,
        now,
        query.destination.is_some(),
        COLUMNS.len() + 1,
        selected,
    ));
    out.push_str("</tbody></table></div>");
    out
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

    #[test]
    fn the_active_header_says_its_direction() {
        let q = DestinationsQuery {
            order_by: OrderBy::RetryInterval,
            dir: Direction::Backwards,
            ..Default::default()
        };
        let html = table(&[], &q, 0, &BTreeSet::new());
        assert!(html.contains(r#"<th data-col="retry_interval" scope="col" aria-sort="descending"><button type="button" class="sort" data-sort="retry_interval" data-action="sort" data-arg="retry_interval">Retry interval<span aria-hidden="true"> ▼</span></button></th>"#));
        assert_eq!(html.matches("aria-sort").count(), 1);
        assert_eq!(html.matches(r#"data-action="sort""#).count(), 5);
        assert!(html.contains(r#"<th data-col="status" scope="col">Status</th>"#));
        assert!(html.contains(r#"colspan="10""#));
        assert!(html.contains(r#"<th data-col="last_error" scope="col">Last error</th>"#));
        assert!(
            html.contains(r#"<th data-col="last_delivered_ts" scope="col">Last delivered</th>"#)
        );
    }
}
