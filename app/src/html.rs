//! Display-only markup built as text: the tables' rows, a destination's
//! details and the health summary. They carry no event handlers of their own
//! (a table listens once for all its rows) and are never hydrated (they
//! appear after the data is fetched), so building them as one `inner_html`
//! string keeps the WASM small. Every value from the server is escaped.

use std::collections::BTreeSet;
use std::fmt::Write;

use herald_shared::{
    next_retry_ts, percent_encode, Destination, DestinationExtras, DestinationHealth,
    DestinationHealthRow, DestinationQueue, DestinationRoom, DestinationStatus, FederationSummary,
    LastError, SenderState,
};

use crate::components::destinations_table::COLUMNS;
use crate::format;
use herald_shared::Action::Select;

/// Escapes text for an HTML text node or a double-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One data cell: `data-col`, `data-value` (the raw value), an optional
/// `title`, and the shown text.
fn cell(out: &mut String, col: &str, value: &str, title: Option<String>, text: &str) {
    let _ = write!(
        out,
        r#"<td data-col="{col}" data-value="{}""#,
        escape(value)
    );
    if let Some(t) = title {
        let _ = write!(out, r#" title="{}""#, escape(&t));
    }
    let _ = write!(out, r#" class="num">{}</td>"#, escape(text));
}

fn raw(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A timestamp cell: relative text, exact UTC time as its title.
fn time_cell(out: &mut String, col: &str, ms: Option<i64>, now: i64) {
    let title = ms.filter(|&t| t != 0).map(format::timestamp);
    cell(
        out,
        col,
        &raw(ms),
        title,
        &format::optional_relative(ms, now),
    );
}

/// A failed request, told to the admin (`role="alert"`).
pub fn error(id: &str, message: &str) -> String {
    format!(
        r#"<p id="{id}" class="error" role="alert">{}</p>"#,
        escape(message)
    )
}

/// What a region shows while its data is on the way.
pub fn loading(id: &str) -> String {
    format!(r#"<p id="{id}" class="muted" aria-busy="true">Loading…</p>"#)
}

/// The console page of destination `name`.
pub fn destination_href(name: &str) -> String {
    format!("/destinations/{}", percent_encode(name))
}

/// A status badge.
pub fn badge(status: DestinationStatus) -> String {
    format!(
        r#"<span class="badge badge-{}">{}</span>"#,
        status.key(),
        status.label()
    )
}

/// The whole of a last error as text: the kind, the message, the address
/// tried and when (a cell's `title`).
pub fn last_error_title(e: &LastError) -> String {
    let mut out = format!("{}: {}", e.kind.label(), e.message);
    if let Some(a) = &e.address {
        let _ = write!(out, "\nAddress: {a}");
    }
    let _ = write!(out, "\nAt: {}", format::timestamp(e.ts));
    out
}

/// The last error cell: the kind's label and the message, which the style
/// cuts with an ellipsis; the whole of it on hover (`title`). The message
/// comes from a remote server: it is only ever escaped text.
fn last_error_cell(out: &mut String, e: Option<&LastError>) {
    match e {
        None => {
            out.push_str(r#"<td data-col="last_error" data-value="" class="last-error">—</td>"#)
        }
        Some(e) => {
            let _ = write!(
                out,
                r#"<td data-col="last_error" data-value="{}" title="{}" class="last-error"><span class="clip"><span class="kind">{}</span> <span class="msg">{}</span></span></td>"#,
                e.kind.as_str(),
                escape(&last_error_title(e)),
                e.kind.label(),
                escape(&e.message)
            );
        }
    }
}

/// The cells shared by a list row and the details: status, last error,
/// last retry, interval, next retry, failing since, last delivered (time
/// and stream ordering).
fn health_cells(out: &mut String, d: &Destination, extras: &DestinationExtras, now: i64) {
    let status = DestinationStatus::of(d, now);
    let _ = write!(
        out,
        r#"<td data-col="status" data-value="{}">{}</td>"#,
        status.key(),
        badge(status)
    );
    last_error_cell(out, extras.last_error.as_ref());
    time_cell(out, "retry_last_ts", Some(d.retry_last_ts), now);
    let interval = d.retry_interval.to_string();
    cell(
        out,
        "retry_interval",
        &interval,
        None,
        &format::duration(d.retry_interval),
    );
    let next = next_retry_ts(d);
    let next_title = next.map(format::timestamp);
    cell(
        out,
        "next_retry",
        &raw(next),
        next_title,
        &format::next_retry(next, now),
    );
    time_cell(out, "failure_ts", d.failure_ts, now);
    time_cell(out, "last_delivered_ts", extras.last_delivered_ts, now);
    let last = d.last_successful_stream_ordering;
    let last_text = last.map(|v| v.to_string()).unwrap_or_else(|| "—".into());
    cell(
        out,
        "last_successful_stream_ordering",
        &raw(last),
        None,
        &last_text,
    );
}

/// The `<tr>` of one destination at `now`: a checkbox when it is in backoff
/// (checked if `selected`), the name linking to its page, and its health.
pub fn row(out: &mut String, h: &DestinationHealthRow, now: i64, selected: bool) {
    let d = &h.row;
    let status = DestinationStatus::of(d, now);
    let (key, name) = (status.key(), escape(&d.destination));
    let _ = write!(
        out,
        r#"<tr data-destination="{name}" data-status="{key}"><td class="select">"#
    );
    if status.in_backoff() {
        let checked = if selected { " checked" } else { "" };
        let _ = write!(
            out,
            r#"<input type="checkbox" data-action="{Select}" data-arg="{name}" aria-label="Select {name}"{checked}>"#
        );
    }
    let _ = write!(
        out,
        r#"</td><th scope="row" data-col="destination" data-value="{name}"><a href="{}">{name}</a></th>"#,
        escape(&destination_href(&d.destination))
    );
    health_cells(out, d, &h.extras, now);
    out.push_str("</tr>");
}

/// The table body: one row per destination, or a row saying there are none.
pub fn rows(
    destinations: &[DestinationHealthRow],
    now: i64,
    filtered: bool,
    columns: usize,
    selected: &BTreeSet<String>,
) -> String {
    let mut out = String::new();
    if destinations.is_empty() {
        let text = if filtered {
            "No destinations match"
        } else {
            "No destinations yet."
        };
        let _ = write!(
            out,
            r#"<tr><td colspan="{columns}" id="destinations-empty" class="muted">{text}</td></tr>"#
        );
    }
    for d in destinations {
        row(&mut out, d, now, selected.contains(&d.row.destination));
    }
    out
}

/// One destination's health as a one-row table with the list's columns
/// (but the name).
pub fn details(h: &DestinationHealth, now: i64) -> String {
    let d = h.details.as_row();
    let mut out = String::from(r#"<table id="destination-details"><thead><tr>"#);
    for (field, label, _) in &COLUMNS[1..] {
        let _ = write!(out, r#"<th scope="col" data-col="{field}">{label}</th>"#);
    }
    out.push_str("</tr></thead><tbody><tr>");
    health_cells(&mut out, &d, &h.extras, now);
    out.push_str("</tr></tbody></table>");
    out
}

/// What the sender holds for a destination: its state and what is queued.
pub fn queue(q: &DestinationQueue, now: i64) -> String {
    let state = match q.state {
        SenderState::Sending => "Sending",
        SenderState::BackingOff => "Waiting for its backoff to end",
        SenderState::CatchingUp => "Catching up: the newest event of each room",
        SenderState::Idle => "Idle",
    };
    let queued = if q.queued_pdus == 0 && q.queued_edus == 0 {
        "nothing queued".to_owned()
    } else {
        format!(
            "{} PDUs and {} EDUs queued",
            format::count(q.queued_pdus),
            format::count(q.queued_edus)
        )
    };
    let oldest = q
        .oldest_queued_ts
        .map(|ts| format!(", the oldest accepted {}", format::relative(ts, now)))
        .unwrap_or_default();
    format!(
        r#"<p id="destination-queue" data-state="{}"><strong>Sender:</strong> {state} · {queued}{oldest}.</p>"#,
        q.state.as_str()
    )
}

/// The rooms of a destination, or a row saying there are none.
pub fn rooms(rooms: &[DestinationRoom]) -> String {
    let mut out = String::new();
    if rooms.is_empty() {
        out.push_str(
            r#"<tr><td colspan="2" id="rooms-empty" class="muted">No rooms recorded for this destination.</td></tr>"#,
        );
    }
    for r in rooms {
        let id = escape(&r.room_id);
        let _ = write!(
            out,
            r#"<tr data-room="{id}"><td data-col="room_id">{id}</td><td data-col="stream_ordering" class="num">{}</td></tr>"#,
            r.stream_ordering
        );
    }
    out
}

/// The inside of the health summary: the total, a bar with one segment per
/// status present (the view box is `total` wide, so widths are counts), and
/// the count of each status with `data-status` and `data-count`.
pub fn summary(s: &FederationSummary) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<p id="summary-total" data-count="{}">{} destinations</p><svg id="summary-bar" viewBox="0 0 {} 1" preserveAspectRatio="none" role="img" aria-label="Destinations per status">"#,
        s.total,
        format::count(s.total),
        s.total.max(1)
    );
    let mut x = 0;
    for st in DestinationStatus::ALL {
        let n = s.count(st);
        if n != 0 {
            let _ = write!(
                out,
                r#"<rect class="seg-{}" x="{x}" y="0" width="{n}" height="1"></rect>"#,
                st.key()
            );
            x += n;
        }
    }
    out.push_str(r#"</svg><ul class="counts">"#);
    for st in DestinationStatus::ALL {
        let n = s.count(st);
        let _ = write!(
            out,
            r#"<li data-status="{k}" data-count="{n}"><span class="dot seg-{k}" aria-hidden="true"></span><span class="n">{}</span> {}</li>"#,
            format::count(n),
            st.label(),
            k = st.key()
        );
    }
    out.push_str("</ul>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str) -> DestinationHealthRow {
        let row = Destination {
            destination: name.into(),
            retry_last_ts: 1_700_000_000_000,
            retry_interval: 3_600_000,
            failure_ts: Some(1_699_990_000_000),
            last_successful_stream_ordering: Some(7),
        };
        DestinationHealthRow {
            status: DestinationStatus::of(&row, 1_700_000_000_000),
            next_retry_ts: next_retry_ts(&row),
            row,
            extras: DestinationExtras::default(),
        }
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape("[2001:db8::1]:8448"), "[2001:db8::1]:8448");
    }

    #[test]
    fn a_row_escapes_the_name_and_shows_status_and_times() {
        let now = 1_700_000_000_000 + 2 * 3_600_000;
        let html = rows(&[dest("<b>evil</b>")], now, false, 8, &BTreeSet::new());
        assert!(!html.contains("<b>"));
        assert!(html.contains(r#"data-destination="&lt;b&gt;evil&lt;/b&gt;""#));
        assert!(html.contains(r#"data-status="retry_due""#));
        assert!(html.contains(r#"<span class="badge badge-retry_due">retry due</span>"#));
        assert!(html.contains(
            r#"<td data-col="retry_last_ts" data-value="1700000000000" title="2023-11-14 22:13:20 UTC" class="num">2 h ago</td>"#
        ));
        assert!(html.contains(r#"data-col="next_retry" data-value="1700003600000" title="2023-11-14 23:13:20 UTC" class="num">due now<"#));
        assert!(html.contains(r#"data-col="retry_interval" data-value="3600000" class="num">1 h<"#));
    }

    #[test]
    fn no_rows_say_so() {
        let none = BTreeSet::new();
        assert!(rows(&[], 0, true, 8, &none).contains("No destinations match"));
        assert!(rows(&[], 0, false, 8, &none).contains(r#"colspan="8""#));
        assert!(rooms(&[]).contains("No rooms recorded"));
    }

    #[test]
    fn rows_link_to_the_destination_and_offer_a_checkbox_in_backoff() {
        let now = 1_700_000_000_000;
        let mut healthy = dest("[::1]:8448");
        healthy.row.retry_last_ts = 0;
        let selected = BTreeSet::from(["b.org".to_owned()]);
        let html = rows(
            &[healthy, dest("a.org"), dest("b.org")],
            now,
            false,
            8,
            &selected,
        );
        assert!(html.contains(r#"<a href="/destinations/%5B%3A%3A1%5D%3A8448">[::1]:8448</a>"#));
        assert!(!html.contains(r#"data-arg="[::1]:8448""#));
        assert!(
            html.contains(r#"data-action="select" data-arg="a.org" aria-label="Select a.org">"#)
        );
        assert!(html.contains(r#"data-arg="b.org" aria-label="Select b.org" checked>"#));
    }

    #[test]
    fn the_last_error_is_short_in_the_cell_and_whole_on_hover() {
        let now = 1_700_000_000_000;
        let mut d = dest("a.org");
        d.extras.last_error = Some(LastError {
            ts: now - 3 * 60_000,
            kind: herald_shared::FailureKind::Http,
            message: r#"401 M_UNAUTHORIZED: Invalid signature <script>"#.into(),
            address: Some("127.0.0.1:8448".into()),
        });
        d.extras.last_delivered_ts = Some(now - 3_000);
        let html = rows(&[d], now, false, 10, &BTreeSet::new());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains(r#"<td data-col="last_error" data-value="http" title="HTTP error: 401 M_UNAUTHORIZED: Invalid signature &lt;script&gt;
Address: 127.0.0.1:8448
At: 2023-11-14 22:10:20 UTC" class="last-error"><span class="clip"><span class="kind">HTTP error</span> <span class="msg">401 M_UNAUTHORIZED: Invalid signature &lt;script&gt;</span></span></td>"#), "{html}");
        assert!(html.contains(r#"<td data-col="last_delivered_ts" data-value="1699999997000" title="2023-11-14 22:13:17 UTC" class="num">3 s ago</td>"#), "{html}");
        let html = rows(&[dest("b.org")], now, false, 10, &BTreeSet::new());
        assert!(
            html.contains(r#"<td data-col="last_error" data-value="" class="last-error">—</td>"#)
        );
        assert!(
            html.contains(r#"<td data-col="last_delivered_ts" data-value="" class="num">—</td>"#)
        );
    }

    #[test]
    fn details_have_the_lists_columns_but_the_name() {
        let d = dest("a.org");
        let h = DestinationHealth {
            details: herald_shared::DestinationDetails {
                destination: d.row.destination.clone(),
                last_successful_stream_ordering: d.row.last_successful_stream_ordering,
                failure_ts: d.row.failure_ts,
                retry_last_ts: d.row.retry_last_ts,
                retry_interval: Some(d.row.retry_interval),
            },
            status: d.status,
            next_retry_ts: d.next_retry_ts,
            extras: d.extras,
            queue: herald_shared::DestinationQueue {
                destination: "a.org".into(),
                state: SenderState::Idle,
                queued_pdus: 0,
                queued_edus: 0,
                oldest_queued_ts: None,
            },
        };
        let html = details(&h, 1_700_000_000_000);
        assert!(html.starts_with(r#"<table id="destination-details"><thead><tr><th scope="col" data-col="status">Status</th>"#));
        assert!(!html.contains(r#"data-col="destination""#));
        assert!(html.contains(r#"<td data-col="status" data-value="backing_off"><span class="badge badge-backing_off">backing off</span></td>"#));
        assert_eq!(html.matches("<td ").count(), COLUMNS.len() - 1);
    }

    #[test]
    fn rooms_are_escaped() {
        let html = rooms(&[DestinationRoom {
            room_id: "!<x>:a.org".into(),
            stream_ordering: 42,
        }]);
        assert!(html.contains(r#"<tr data-room="!&lt;x&gt;:a.org"><td data-col="room_id">!&lt;x&gt;:a.org</td><td data-col="stream_ordering" class="num">42</td></tr>"#));
    }

    #[test]
    fn the_summary_bar_is_as_wide_as_the_total() {
        let s = FederationSummary {
            total: 4,
            healthy: 2,
            retry_due: 1,
            unknown: 1,
            ..Default::default()
        };
        let html = summary(&s);
        assert!(html.contains(r#"viewBox="0 0 4 1""#));
        assert!(html.contains(r#"<rect class="seg-healthy" x="0" y="0" width="2""#));
        assert!(html.contains(r#"<rect class="seg-retry_due" x="2" y="0" width="1""#));
        assert!(html.contains(r#"<rect class="seg-unknown" x="3" y="0" width="1""#));
        assert_eq!(html.matches("<rect").count(), 3);
        assert!(html.contains(r#"<li data-status="backing_off" data-count="0">"#));
    }
}
