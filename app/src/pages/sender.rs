//! `/sender`: what the federation sender is doing as a whole, from
//! `GET /_herald/admin/v1/federation/sender` — transactions and PDUs per
//! second over the last five minutes as a small chart (hand-drawn SVG: a
//! chart library would cost the console more than the whole page), what is
//! queued, destinations per state, the oldest undelivered event's age and
//! the destinations with the most queued, each linking to its page.
//! Reloads every [`REFRESH_EVERY`] while open.

use std::fmt::Write as _;
use std::time::Duration;

use herald_shared::{SenderOverview, SenderState};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::session::use_session;
use crate::{format, html};

/// How often the page reloads its figures.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The chart's drawing area, in view-box units (as in `chart`'s markup).
const CHART_W: f64 = 3000.0;
const CHART_H: f64 = 1000.0;
/// The time the chart spans: the API's five minutes of history.
const CHART_SPAN_MS: f64 = 300_000.0;

/// `v` rounded to tenths, as `12.3`. Written with integers: formatting an
/// `f64` would pull the float formatter into the WASM (about 20 KB gzip).
fn tenths(v: f64) -> String {
    let t = (v * 10.0).round().max(0.0) as u64;
    format!("{}.{}", t / 10, t % 10)
}

/// A rate as shown: `0`, `0.4`, `12`, `1,250`.
fn rate(per_sec: f64) -> String {
    if per_sec >= 10.0 {
        format::count(per_sec.round() as u64)
    } else if per_sec <= 0.0 {
        "0".to_owned()
    } else {
        tenths(per_sec)
    }
}

/// The polyline points of one series, in tenths of the view box's units
/// (integers: no float formatting in the WASM): time left to right over the
/// last five minutes, 0 at the bottom, `peak` near the top.
fn points(o: &SenderOverview, peak: f64, value: fn(&herald_shared::RateSample) -> f64) -> String {
    let start = o.now_ts as f64 - CHART_SPAN_MS;
    let mut out = String::new();
    for r in &o.rates {
        let x = ((r.end_ts as f64 - start) / CHART_SPAN_MS * CHART_W).clamp(0.0, CHART_W);
        let y = CHART_H - value(r) / peak * (CHART_H - 100.0);
        let _ = write!(out, "{},{} ", x.round() as u32, y.round() as u32);
    }
    out.trim_end().to_owned()
}

/// The chart of transactions and PDUs per second, with its scale and
/// legend; the figures are in its label for screen readers.
fn chart(o: &SenderOverview) -> String {
    let peak = o.peak_rate();
    let last = o.rates.last();
    let (txn, pdu) = last.map_or((0.0, 0.0), |r| (r.transactions_per_sec, r.pdus_per_sec));
    let label = format!(
        "Transactions and PDUs per second, last 5 minutes: now {} and {}, peak {}",
        rate(txn),
        rate(pdu),
        rate(peak)
    );
    let mut out = format!(
        r#"<figure id="sender-chart" class="card"><svg viewBox="0 0 3000 1000" preserveAspectRatio="none" role="img" aria-label="{label}"><line class="grid" x1="0" y1="100" x2="3000" y2="100"></line>"#
    );
    if o.rates.len() > 1 {
        let _ = write!(
            out,
            r#"<polyline class="line-p" points="{}"></polyline><polyline class="line-t" points="{}"></polyline>"#,
            points(o, peak, |r| r.pdus_per_sec),
            points(o, peak, |r| r.transactions_per_sec)
        );
    }
    let _ = write!(
        out,
        r#"</svg><figcaption><span class="muted">Top line: {}/s, last 5 min</span><span class="key-t">Transactions/s</span><span class="key-p">PDUs/s</span></figcaption></figure>"#,
        rate(peak)
    );
    out
}

/// One figure of the summary.
fn figure(out: &mut String, key: &str, label: &str, value: &str) {
    let _ = write!(
        out,
        r#"<div class="figure" data-figure="{key}"><dt>{label}</dt><dd>{value}</dd></div>"#
    );
}

/// The state of a destination as the table shows it.
fn state_text(state: SenderState) -> &'static str {
    match state {
        SenderState::Idle => "Idle",
        SenderState::Sending => "Sending",
        SenderState::BackingOff => "Backing off",
        SenderState::CatchingUp => "Catching up",
    }
}

/// The whole page's figures.
pub fn overview_html(o: &SenderOverview) -> String {
    let last = o.rates.last();
    let mut out = String::from(r#"<dl id="sender-figures" class="card">"#);
    figure(
        &mut out,
        "transactions_per_sec",
        "Transactions/s",
        &rate(last.map_or(0.0, |r| r.transactions_per_sec)),
    );
    figure(
        &mut out,
        "pdus_per_sec",
        "PDUs/s",
        &rate(last.map_or(0.0, |r| r.pdus_per_sec)),
    );
    figure(
        &mut out,
        "queued_pdus",
        "Queued PDUs",
        &format::count(o.queued_pdus),
    );
    figure(
        &mut out,
        "queued_edus",
        "Queued EDUs",
        &format::count(o.queued_edus),
    );
    figure(
        &mut out,
        "sending",
        "Sending",
        &format::count(o.destinations.sending),
    );
    figure(
        &mut out,
        "backing_off",
        "Backing off",
        &format::count(o.destinations.backing_off),
    );
    figure(
        &mut out,
        "catching_up",
        "Catching up",
        &format::count(o.destinations.catching_up),
    );
    let oldest = if o.queued_pdus == 0 {
        "nothing queued".to_owned()
    } else {
        format::duration((o.oldest_undelivered_age_secs * 1000.0) as i64)
    };
    figure(
        &mut out,
        "oldest_undelivered",
        "Oldest undelivered event",
        &oldest,
    );
    out.push_str("</dl>");
    out.push_str(&chart(o));
    out.push_str(r#"<h2>Most queued</h2><div class="table-wrap"><table id="sender-top"><thead><tr><th scope="col">Destination</th><th scope="col">State</th><th scope="col" class="num">Queued PDUs</th><th scope="col" class="num">Queued EDUs</th></tr></thead><tbody>"#);
    if o.top_destinations.is_empty() {
        out.push_str(
            r#"<tr><td colspan="4" id="sender-top-empty" class="muted">Nothing queued.</td></tr>"#,
        );
    }
    for d in &o.top_destinations {
        let name = html::escape(&d.destination);
        let _ = write!(
            out,
            r#"<tr data-destination="{name}"><td><a href="{}">{name}</a></td><td data-state="{}">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            html::escape(&html::destination_href(&d.destination)),
            d.state.as_str(),
            state_text(d.state),
            format::count(d.queued_pdus),
            format::count(d.queued_edus)
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

#[component]
pub fn SenderPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    if crate::attached::use_attached() {
        return view! {
            <Title text="Sender · Herald" />
            <section id="sender-page" class="page">
                <h1>"Sender"</h1>
                <p id="sender-off" class="notice">
                    "Herald's sender is off: it is attached to Synapse, which sends its own federation traffic. Synapse's metrics show its sender (synapse_federation_client_sent_transactions_total and the rest)."
                </p>
            </section>
        }
        .into_any();
    }

    // Each answer arms the next reload (no interval to keep and clear: once
    // the page is gone, the resource is too, and the last timer's update of
    // the disposed signal does nothing).
    let reloads = RwSignal::new(0u32);
    // The markup is built as the answer comes in: one resource of text, no
    // other signal (each reactive type costs the WASM bytes). A reload keeps
    // the previous figures on screen until the new ones are in.
    let shown = LocalResource::new(move || {
        let token = session.token();
        reloads.track();
        async move {
            let result = api::sender(&token?).await;
            if result.as_ref().is_err_and(|e| e.is_unauthorized()) {
                session.clear();
            }
            set_timeout(
                move || {
                    reloads.try_update(|n| *n += 1);
                },
                REFRESH_EVERY,
            );
            Some(match result {
                Ok(o) => overview_html(&o),
                Err(e) => html::error("sender-error", &api::admin_error_message(&e)),
            })
        }
    });
    let view = move || {
        shown
            .get()
            .flatten()
            .unwrap_or_else(|| html::loading("sender-loading"))
    };

    view! {
        <Title text="Sender · Herald" />
        <section id="sender-page" class="page">
            <h1>"Sender"</h1>
            <p class="muted">"What Herald is sending, refreshed every 5 seconds."</p>
            <div id="sender-region" inner_html=view></div>
        </section>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::{QueuedDestination, RateSample, SenderStateCounts};

    fn overview() -> SenderOverview {
        let now = 1_700_000_000_000;
        SenderOverview {
            now_ts: now,
            interval_ms: 5_000,
            rates: vec![
                RateSample {
                    end_ts: now - 300_000,
                    duration_ms: 5_000,
                    transactions_per_sec: 0.0,
                    pdus_per_sec: 0.0,
                    edus_per_sec: 0.0,
                },
                RateSample {
                    end_ts: now,
                    duration_ms: 5_000,
                    transactions_per_sec: 2.0,
                    pdus_per_sec: 45.0,
                    edus_per_sec: 0.0,
                },
            ],
            queued_pdus: 1200,
            queued_edus: 3,
            destinations: SenderStateCounts {
                idle: 5,
                sending: 2,
                backing_off: 1,
                catching_up: 0,
            },
            oldest_undelivered_age_secs: 125.0,
            top_destinations: vec![QueuedDestination {
                destination: "<b>.org:8448".into(),
                queued_pdus: 1200,
                queued_edus: 3,
                state: SenderState::BackingOff,
            }],
        }
    }

    #[test]
    fn the_figures_chart_and_top_destinations_are_drawn_escaped() {
        let html = overview_html(&overview());
        assert!(
            html.contains(r#"data-figure="queued_pdus"><dt>Queued PDUs</dt><dd>1,200</dd>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-figure="pdus_per_sec"><dt>PDUs/s</dt><dd>45</dd>"#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"data-figure="transactions_per_sec"><dt>Transactions/s</dt><dd>2.0</dd>"#
            ),
            "{html}"
        );
        assert!(html.contains(r#"<dd>2 min 5 s</dd>"#), "{html}");
        // Oldest point at the left edge and the bottom, newest at the right
        // and near the top (45 is the peak).
        assert!(
            html.contains(r#"class="line-p" points="0,1000 3000,100""#),
            "{html}"
        );
        assert!(
            html.contains(r#"class="line-t" points="0,1000 3000,960""#),
            "{html}"
        );
        assert!(html.contains(r#"<tr data-destination="&lt;b&gt;.org:8448"><td><a href="/destinations/%3Cb%3E.org%3A8448">&lt;b&gt;.org:8448</a></td><td data-state="backing_off">Backing off</td>"#), "{html}");
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn an_idle_sender_says_so() {
        let mut o = overview();
        o.rates.truncate(1);
        o.queued_pdus = 0;
        o.queued_edus = 0;
        o.top_destinations.clear();
        let html = overview_html(&o);
        assert!(html.contains("Nothing queued."));
        assert!(html.contains("<dd>nothing queued</dd>"));
        assert!(!html.contains("polyline"), "one sample draws no line");
    }
}
