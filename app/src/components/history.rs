//! A destination's history on its page: two timelines of up and down (the
//! last 24 hours and the last 30 days, hand-drawn SVG with a text
//! alternative) and the entries as text, newest first, with an "Older
//! entries" button for one more page of Herald's
//! `GET /_herald/admin/v1/federation/destinations/<d>/history`
//! ([`newest_pages`]). Markup only: the page fetches (with its details) and
//! handles the button, like its other controls, which keeps the WASM small.
//!
//! The timelines are computed from the entries loaded so far ([`outages`],
//! [`segments`]): a `failing` entry opens an outage at its `ts`, the next
//! newer `recovered` entry closes it; an outage still open is down until now
//! if the destination still fails, else until its last recorded failure.
//! While older entries are not loaded, the time before the oldest loaded
//! entry is drawn as "not loaded" rather than guessed. Hand-drawn because
//! the chart is a row of rectangles: a charting crate would cost the WASM
//! more than the whole page.

use std::fmt::Write;

use herald_shared::{HistoryEntry, HistoryEvent, HistoryPage};

use crate::api::{self, ApiError};
use crate::{format, html};
use herald_shared::Action::HistoryOlder;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The two timelines: their id, what they span, and their heading.
pub const WINDOWS: [(&str, i64, &str); 2] = [
    ("timeline-day", DAY_MS, "Last 24 hours"),
    ("timeline-month", 30 * DAY_MS, "Last 30 days"),
];

/// The SVG's width in user units (the drawing is stretched to the page).
/// Coordinates are integers: formatting floats would cost the WASM more
/// than the rest of this module.
const WIDTH: i64 = 10_000;

/// The narrowest a down segment is drawn, in user units, so that a minute's
/// outage still shows on a 30-day timeline.
const MIN_DOWN_WIDTH: i64 = 20;

/// The outages the entries (newest first, as the API gives them) tell of,
/// oldest first, as `(start, end)` in ms; `failing_now` is whether the
/// destination still fails at `now`.
pub fn outages(entries: &[HistoryEntry], failing_now: bool, now: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    // The open outage: its start and its last recorded failure.
    let mut open: Option<(i64, i64)> = None;
    for e in entries.iter().rev() {
        match e.event {
            HistoryEvent::Failing => {
                let last = e.last_ts.unwrap_or(e.ts).max(e.ts);
                open = Some(match open {
                    Some((start, seen)) => (start, seen.max(last)),
                    None => (e.ts, last),
                });
            }
            HistoryEvent::Recovered => {
                let start = match open.take() {
                    Some((start, _)) => start,
                    // Its `failing` entry is on a page not loaded.
                    None => e.ts.saturating_sub(e.outage_ms.unwrap_or(0)),
                };
                if e.ts > start {
                    out.push((start, e.ts));
                }
            }
            // Forgetting ends an outage as the server counts them.
            HistoryEvent::Forgotten => {
                if let Some((start, last)) = open.take() {
                    out.push((start, last.max(start)));
                }
            }
            _ => {}
        }
    }
    if let Some((start, last)) = open {
        let end = if failing_now { now.max(last) } else { last };
        out.push((start, end.max(start)));
    }
    out
}

/// What a stretch of a timeline shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    /// Before the oldest entry loaded, while older ones exist.
    NotLoaded,
}

impl State {
    fn key(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::NotLoaded => "not-loaded",
        }
    }
}

/// The window `[from, to]` cut into stretches, oldest first: `known_from`
/// is where the loaded history begins when older entries exist (the time
/// before it is [`State::NotLoaded`]); `outages` as [`outages`] gives them.
pub fn segments(
    outages: &[(i64, i64)],
    known_from: Option<i64>,
    from: i64,
    to: i64,
) -> Vec<(i64, i64, State)> {
    let mut out = Vec::new();
    let mut cursor = from;
    if let Some(known) = known_from.filter(|&k| k > from) {
        let end = known.min(to);
        out.push((from, end, State::NotLoaded));
        cursor = end;
    }
    for &(start, end) in outages {
        let (start, end) = (start.max(cursor), end.min(to));
        if end <= start {
            continue;
        }
        if start > cursor {
            out.push((cursor, start, State::Up));
        }
        out.push((start, end, State::Down));
        cursor = end;
    }
    if cursor < to {
        out.push((cursor, to, State::Up));
    }
    out
}

/// The sentence a screen reader hears for a timeline (and the text under
/// it): how long it was down in how many outages.
pub fn summary(label: &str, segments: &[(i64, i64, State)]) -> String {
    let total = |state| -> i64 {
        segments
            .iter()
            .filter(|s| s.2 == state)
            .map(|s| s.1 - s.0)
            .sum()
    };
    let outages = segments.iter().filter(|s| s.2 == State::Down).count();
    let (down, missing) = (total(State::Down), total(State::NotLoaded));
    let mut out = if outages == 0 {
        format!("{label}: up throughout, no failure recorded")
    } else {
        format!(
            "{label}: down for {} in {}, up the rest",
            format::duration(down),
            format::plural(outages, "outage")
        )
    };
    if missing > 0 {
        let _ = write!(out, " (the first {} not loaded)", format::duration(missing));
    }
    out.push('.');
    out
}

/// One timeline: a heading, the SVG (its `aria-label` is the summary) and
/// the summary as text, with its start and end times.
pub fn timeline(
    id: &str,
    label: &str,
    segments: &[(i64, i64, State)],
    from: i64,
    to: i64,
) -> String {
    let text = summary(label, segments);
    let span = (to - from).max(1);
    let x = |t: i64| (t - from).clamp(0, span).saturating_mul(WIDTH) / span;
    let mut out = format!(
        r#"<figure class="timeline" id="{id}"><svg viewBox="0 0 {WIDTH} 10" preserveAspectRatio="none" role="img" aria-label="{}">"#,
        html::escape(&text)
    );
    for &(start, end, state) in segments {
        let mut width = x(end) - x(start);
        if state == State::Down {
            width = width.max(MIN_DOWN_WIDTH);
        }
        let _ = write!(
            out,
            r#"<rect class="tl-{}" data-start="{start}" data-end="{end}" x="{}" y="0" width="{width}" height="10"></rect>"#,
            state.key(),
            x(start).min(WIDTH - width)
        );
    }
    let _ = write!(
        out,
        r#"</svg><figcaption><span class="tl-from">{}</span><span class="tl-text">{}</span><span class="tl-to">now</span></figcaption></figure>"#,
        html::escape(&format::timestamp(from)),
        html::escape(&text)
    );
    out
}

/// One entry as a sentence. Messages come from remote servers: escaped.
pub fn entry_text(e: &HistoryEntry) -> String {
    let kind = e.kind.map(|k| k.label()).unwrap_or("Failure");
    let message = e.message.as_deref().unwrap_or("");
    let actor = e.actor.as_deref().unwrap_or("an admin");
    let text = match e.event {
        HistoryEvent::Failing => {
            let count = e.count.unwrap_or(1).max(1) as usize;
            let mut t = format!("Failing: {kind}");
            if !message.is_empty() {
                let _ = write!(t, ": {message}");
            }
            let _ = write!(t, " — {}", format::plural(count, "failure"));
            if let Some(last) = e.last_ts.filter(|&l| count > 1 && l != e.ts) {
                let _ = write!(t, ", the last at {}", format::timestamp(last));
            }
            t
        }
        HistoryEvent::Recovered => match e.outage_ms {
            Some(ms) => format!("Recovered after {} down", format::duration(ms)),
            None => "Recovered".to_owned(),
        },
        HistoryEvent::Reset => format!("Backoff reset by {actor}"),
        HistoryEvent::CatchUpEntered => {
            "Catch-up entered: too much missed, the newest event of each room is sent".to_owned()
        }
        HistoryEvent::CatchUpLeft => "Catch-up left: up to date".to_owned(),
        HistoryEvent::QueueDropped => {
            let mut t = format!(
                "Queue dropped: {}",
                format::plural(e.count.unwrap_or(0).max(0) as usize, "item")
            );
            if !message.is_empty() {
                let _ = write!(t, " ({message})");
            }
            t
        }
        HistoryEvent::Forgotten => format!("Forgotten by {actor}"),
    };
    html::escape(&text)
}

/// The entries as a list, newest first, each with its time.
pub fn entries_html(entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return r#"<p id="history-empty" class="muted">Nothing recorded for this destination yet.</p>"#.to_owned();
    }
    let mut out = String::from(r#"<ol id="history-entries" class="history">"#);
    for e in entries {
        let _ = write!(
            out,
            r#"<li data-event="{}" data-id="{}"><span class="when">{}</span> {}</li>"#,
            e.event.as_str(),
            e.id,
            format::timestamp(e.ts),
            entry_text(e)
        );
    }
    out.push_str("</ol>");
    out
}

/// The whole section's inside at `now`: both timelines, the entries, and
/// the button for older ones when there are more.
pub fn history_html(entries: &[HistoryEntry], more: bool, failing_now: bool, now: i64) -> String {
    let found = outages(entries, failing_now, now);
    // With older pages unloaded, the history is known from its oldest entry.
    let known_from = if more {
        entries.last().map(|e| e.ts)
    } else {
        None
    };
    let mut out = String::new();
    for (id, span, label) in WINDOWS {
        let from = now - span;
        out.push_str(&timeline(
            id,
            label,
            &segments(&found, known_from, from, now),
            from,
            now,
        ));
    }
    out.push_str(r#"<p class="legend" aria-hidden="true"><span class="dot tl-up"></span> up <span class="dot tl-down"></span> down <span class="dot tl-not-loaded"></span> not loaded</p>"#);
    out.push_str(&entries_html(entries));
    if more {
        let _ = write!(
            out,
            r#"<div class="toolbar"><button type="button" id="history-older" class="secondary" data-action="{HistoryOlder}">Older entries</button></div>"#
        );
    }
    out
}

/// The newest `pages` pages of `name`'s history as one: their entries,
/// newest first, and the token of the next older page if there is one.
pub async fn newest_pages(token: &str, name: &str, pages: u32) -> Result<HistoryPage, ApiError> {
    let mut all = api::history(token, name, None).await?;
    for _ in 1..pages {
        let Some(from) = all.next_token.take() else {
            break;
        };
        let older = api::history(token, name, Some(&from)).await?;
        all.entries.extend(older.entries);
        all.next_token = older.next_token;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::FailureKind;

    const NOW: i64 = 1_700_000_000_000;

    fn entry(id: i64, ts: i64, event: HistoryEvent) -> HistoryEntry {
        HistoryEntry {
            id,
            ts,
            event,
            last_ts: None,
            count: None,
            kind: None,
            message: None,
            outage_ms: None,
            actor: None,
        }
    }

    fn failing(id: i64, ts: i64, last_ts: i64, count: i64) -> HistoryEntry {
        HistoryEntry {
            last_ts: Some(last_ts),
            count: Some(count),
            kind: Some(FailureKind::Connect),
            message: Some("Connection refused".into()),
            ..entry(id, ts, HistoryEvent::Failing)
        }
    }

    fn recovered(id: i64, ts: i64, outage_ms: i64) -> HistoryEntry {
        HistoryEntry {
            outage_ms: Some(outage_ms),
            ..entry(id, ts, HistoryEvent::Recovered)
        }
    }

    #[test]
    fn forgetting_ends_an_outage_as_the_server_counts_them() {
        let entries = [
            failing(3, NOW - HOUR_MS, NOW - HOUR_MS + 60_000, 2),
            entry(2, NOW - 2 * HOUR_MS, HistoryEvent::Forgotten),
            failing(1, NOW - 3 * HOUR_MS, NOW - 150 * 60_000, 5),
        ];
        assert_eq!(
            outages(&entries, true, NOW),
            vec![
                (NOW - 3 * HOUR_MS, NOW - 150 * 60_000),
                (NOW - HOUR_MS, NOW)
            ]
        );
    }

    #[test]
    fn a_recovered_entry_closes_the_outage_its_failing_entry_opened() {
        // Newest first, as the API answers.
        let entries = [
            recovered(4, NOW - HOUR_MS, 2 * HOUR_MS),
            entry(3, NOW - 2 * HOUR_MS, HistoryEvent::Reset),
            failing(2, NOW - 3 * HOUR_MS, NOW - 90 * 60_000, 12),
            recovered(1, NOW - 5 * DAY_MS, 60_000),
        ];
        assert_eq!(
            outages(&entries, false, NOW),
            vec![
                // Its failing entry is not loaded: the outage length says.
                (NOW - 5 * DAY_MS - 60_000, NOW - 5 * DAY_MS),
                // A reset does not end an outage; the recovery does.
                (NOW - 3 * HOUR_MS, NOW - HOUR_MS),
            ]
        );
    }

    #[test]
    fn an_open_outage_lasts_until_now_only_while_it_still_fails() {
        let entries = [failing(1, NOW - 2 * HOUR_MS, NOW - HOUR_MS, 5)];
        assert_eq!(outages(&entries, true, NOW), vec![(NOW - 2 * HOUR_MS, NOW)]);
        assert_eq!(
            outages(&entries, false, NOW),
            vec![(NOW - 2 * HOUR_MS, NOW - HOUR_MS)]
        );
        assert_eq!(outages(&[], true, NOW), vec![]);
    }

    #[test]
    fn segments_cover_the_window_and_clip_the_outages() {
        let from = NOW - DAY_MS;
        let found = [
            (NOW - 30 * HOUR_MS, NOW - 20 * HOUR_MS),
            (NOW - 2 * HOUR_MS, NOW - HOUR_MS),
        ];
        let s = segments(&found, None, from, NOW);
        assert_eq!(
            s,
            vec![
                (from, NOW - 20 * HOUR_MS, State::Down),
                (NOW - 20 * HOUR_MS, NOW - 2 * HOUR_MS, State::Up),
                (NOW - 2 * HOUR_MS, NOW - HOUR_MS, State::Down),
                (NOW - HOUR_MS, NOW, State::Up),
            ]
        );
        assert_eq!(
            summary("Last 24 hours", &s),
            "Last 24 hours: down for 5 h in 2 outages, up the rest."
        );
        assert_eq!(segments(&[], None, from, NOW), vec![(from, NOW, State::Up)]);
        assert_eq!(
            summary("Last 24 hours", &segments(&[], None, from, NOW)),
            "Last 24 hours: up throughout, no failure recorded."
        );
    }

    #[test]
    fn time_before_the_loaded_entries_is_not_guessed() {
        let from = NOW - 30 * DAY_MS;
        let found = [(NOW - 3 * DAY_MS, NOW - 2 * DAY_MS)];
        let s = segments(&found, Some(NOW - 10 * DAY_MS), from, NOW);
        assert_eq!(s[0], (from, NOW - 10 * DAY_MS, State::NotLoaded));
        assert_eq!(s[1], (NOW - 10 * DAY_MS, NOW - 3 * DAY_MS, State::Up));
        assert_eq!(s[2], (NOW - 3 * DAY_MS, NOW - 2 * DAY_MS, State::Down));
        assert!(summary("Last 30 days", &s)
            .ends_with("down for 1 d in 1 outage, up the rest (the first 20 d not loaded)."));
    }

    #[test]
    fn the_svg_is_labelled_and_a_short_outage_still_shows() {
        let entries = [
            recovered(2, NOW - DAY_MS, 60_000),
            failing(1, NOW - DAY_MS - 60_000, NOW - DAY_MS - 30_000, 2),
        ];
        let html = history_html(&entries, false, false, NOW);
        assert!(html.contains(r#"<figure class="timeline" id="timeline-day">"#));
        assert!(
            html.contains(
                r#"role="img" aria-label="Last 30 days: down for 1 min in 1 outage, up the rest.""#
            ),
            "{html}"
        );
        // One minute of 30 days is 0.2 units wide: drawn at the minimum.
        assert!(html.contains(&format!(
            r#"<rect class="tl-down" data-start="{}" data-end="{}" x="9666" y="0" width="20" height="10">"#,
            NOW - DAY_MS - 60_000,
            NOW - DAY_MS
        )), "{html}");
        // The day's window starts after it: all up.
        assert!(html.contains(r#"aria-label="Last 24 hours: up throughout, no failure recorded.""#));
        assert!(!html.contains("history-older"));
    }

    #[test]
    fn entries_are_sentences_with_remote_text_escaped() {
        let mut f = failing(1, NOW - HOUR_MS, NOW - 60_000, 3);
        f.kind = Some(FailureKind::Http);
        f.message = Some("401 M_UNAUTHORIZED: <b>Invalid signature</b>".into());
        let html = entries_html(&[
            HistoryEntry {
                actor: Some("@admin:example.org".into()),
                ..entry(3, NOW, HistoryEvent::Reset)
            },
            recovered(2, NOW - 1000, HOUR_MS),
            f,
        ]);
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains(r#"<li data-event="reset" data-id="3">"#));
        assert!(html.contains("Backoff reset by @admin:example.org"));
        assert!(html.contains("Recovered after 1 h down"));
        assert!(html.contains("Failing: HTTP error: 401 M_UNAUTHORIZED: &lt;b&gt;Invalid signature&lt;/b&gt; — 3 failures, the last at 2023-11-14 22:12:20 UTC"), "{html}");
        assert!(entries_html(&[]).contains("Nothing recorded"));
    }

    #[test]
    fn older_entries_are_offered_while_there_are_more() {
        let entries = [failing(5, NOW - 2 * DAY_MS, NOW - DAY_MS, 40)];
        let html = history_html(&entries, true, true, NOW);
        assert!(html.contains(
            r#"id="history-older" class="secondary" data-action="history-older">Older entries<"#
        ));
        assert!(html.contains("not loaded)."), "{html}");
    }
}
