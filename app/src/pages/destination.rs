//! `/destinations/:name`: one destination — its health with the list's
//! derived status, the Reset connection button (enabled in backoff, asking
//! first), and the rooms Herald has sent it events in, a page at a time.
//!
//! The name is the path's last segment, percent-decoded (`[::1]:8448` is
//! `/destinations/%5B%3A%3A1%5D%3A8448`). The rooms table's paging and
//! direction live in the query string (`from`, `limit`, `dir`, as the admin
//! API spells them).

use herald_shared::{
    percent_decode_path, DestinationDetails, DestinationQueue, DestinationStatus, RoomsPage,
    RoomsQuery,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::{use_location, use_navigate};

use crate::api;
use crate::components::destinations_table::sort_header;
use crate::components::diagnose::DiagnosePanel;
use crate::components::pager::{self, pager};
use crate::session::use_session;
use crate::{dom, format, html};
use herald_shared::Action::{ResetAsk, ResetCancel, ResetConfirm};

const DIALOG: &str = "reset-dialog";

/// The destination a console path names, if it is a destination page.
pub fn name_of(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/destinations/")?;
    (!segment.is_empty() && !segment.contains('/')).then(|| percent_decode_path(segment))
}

/// The console URL of `name`'s page showing `query`'s rooms.
pub fn page_url(name: &str, query: &RoomsQuery) -> String {
    let path = html::destination_href(name);
    let qs = query.to_query_string();
    if qs.is_empty() {
        path
    } else {
        format!("{path}?{qs}")
    }
}

/// What the last reset did: nothing yet, under way, or its outcome.
#[derive(Debug, Clone, PartialEq)]
enum Reset {
    Idle,
    Running,
    Done(Result<(), String>),
}

/// The details table and the Reset connection button, enabled in backoff
/// while no reset is under way.
fn details_html(
    d: &DestinationDetails,
    queue: Option<&DestinationQueue>,
    now: i64,
    running: bool,
) -> String {
    let row = d.as_row();
    let status = DestinationStatus::of(&row, now);
    let (disabled, hint) = match (status.in_backoff(), running) {
        (true, false) => (
            "",
            "Clears the backoff: Herald tries again at once if anything is queued for it.",
        ),
        (true, true) => (" disabled", "Resetting…"),
        (false, _) => (" disabled", "Not in backoff: there is nothing to reset."),
    };
    format!(
        r#"<div class="table-wrap">{}</div>{}<div class="toolbar"><button type="button" id="reset-connection" class="danger" data-status="{}" data-action="{ResetAsk}"{disabled}>Reset connection…</button><span class="muted">{hint}</span></div>"#,
        html::details(&row, now),
        queue.map(|q| html::queue(q, now)).unwrap_or_default(),
        status.key()
    )
}

/// What the reset said.
fn outcome_html(reset: &Reset) -> String {
    match reset {
        Reset::Done(Ok(())) => r#"<p id="reset-result" class="notice" role="status">Connection reset: Herald tries this destination again now if anything is queued for it, otherwise with the next thing it sends.</p>"#.to_owned(),
        Reset::Done(Err(e)) => html::error("reset-error", e),
        _ => String::new(),
    }
}

/// The confirmation dialog's inside.
fn dialog_html(name: &str, running: bool) -> String {
    let (disabled, label) = if running {
        (" disabled", "Resetting…")
    } else {
        ("", "Reset connection")
    };
    format!(
        r#"<h2 id="reset-title">Reset connection?</h2><p>Herald forgets the backoff of <strong>{}</strong> and tries it again at once if anything is queued for it.</p><div class="actions"><button type="button" id="reset-confirm" class="danger" data-action="{ResetConfirm}"{disabled}>{label}</button><button type="button" id="reset-cancel" class="secondary" data-action="{ResetCancel}" autofocus{disabled}>Cancel</button></div>"#,
        html::escape(name)
    )
}

/// One page of rooms: the range, the table (its header flips the order),
/// the pager.
fn rooms_html(p: &RoomsPage, q: &RoomsQuery) -> String {
    let mut out = format!(
        r#"<p id="rooms-total" data-total="{}" aria-live="polite">{}</p><div class="table-wrap"><table id="rooms-table"><thead><tr>"#,
        p.total,
        format::range(q.from, p.rooms.len(), p.total)
    );
    sort_header(&mut out, "room_id", "Room", Some(q.dir));
    out.push_str(r#"<th scope="col" data-col="stream_ordering">Last sent (stream ordering)</th></tr></thead><tbody>"#);
    out.push_str(&html::rooms(&p.rooms));
    out.push_str("</tbody></table></div>");
    out.push_str(&pager(
        "rooms-pager",
        q.from,
        q.limit,
        p.rooms.len(),
        p.total,
    ));
    out
}

#[component]
pub fn DestinationPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let location = use_location();
    // Leaving the page changes the path before the page is gone: keep the
    // name, so that nothing is fetched for a path that names no destination.
    let name = Memo::new(move |prev: Option<&String>| {
        location
            .pathname
            .with(|p| name_of(p))
            .or_else(|| prev.cloned())
            .unwrap_or_default()
    });
    let rooms_query =
        Memo::new(move |_| RoomsQuery::parse(&location.search.get()).unwrap_or_default());

    let reloads = RwSignal::new(0u32);
    let details = LocalResource::new(move || {
        let token = session.token();
        let name = name.get();
        reloads.track();
        async move {
            let token = token?;
            let (details, queue) = futures_util::future::join(
                api::destination(&token, &name),
                api::queue(&token, &name),
            )
            .await;
            Some((details, queue.ok(), dom::now_ms()))
        }
    });
    let rooms = LocalResource::new(move || {
        let token = session.token();
        let (name, query) = (name.get(), rooms_query.get());
        async move { Some((api::rooms(&token?, &name, &query).await, query)) }
    });

    let go_rooms = {
        let navigate = navigate.clone();
        StoredValue::new_local(move |q: RoomsQuery| {
            navigate(&page_url(&name.get_untracked(), &q), Default::default())
        })
    };
    let go_rooms = move |q: RoomsQuery| go_rooms.with_value(|go| go(q));
    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    Effect::new(move |_| {
        let d = details.get().flatten().and_then(|(r, _, _)| r.err());
        let r = rooms.get().flatten().and_then(|(r, _)| r.err());
        if [d, r].iter().flatten().any(|e| e.is_unauthorized()) {
            session.clear();
        }
    });

    let reset = RwSignal::new(Reset::Idle);
    let running = move || reset.with(|r| *r == Reset::Running);
    let confirm = move || {
        let Some(token) = session.token_untracked() else {
            return;
        };
        reset.set(Reset::Running);
        let name = name.get_untracked();
        spawn_local(async move {
            let result = api::reset_connection(&token, &name).await;
            dom::close_modal(DIALOG);
            if result.as_ref().is_err_and(|e| e.is_unauthorized()) {
                session.clear();
            }
            reset.set(Reset::Done(
                result.map_err(|e| api::admin_error_message(&e)),
            ));
            reloads.update(|n| *n += 1);
            // And again once the retry the reset started has had its moment.
            set_timeout(
                move || reloads.update(|n| *n += 1),
                std::time::Duration::from_millis(1500),
            );
        });
    };

    // Every control below is drawn as markup and handled here.
    let act = move |action: herald_shared::Action, arg: String, ev: &leptos::ev::Event| {
        let q = rooms_query.get_untracked();
        match action {
            ResetAsk => dom::show_modal(DIALOG),
            ResetConfirm => confirm(),
            ResetCancel => dom::close_modal(DIALOG),
            herald_shared::Action::Sort => go_rooms(RoomsQuery {
                from: 0,
                dir: q.dir.flip(),
                ..q
            }),
            _ => {
                let value = event_target_value(ev);
                if let Some((from, limit)) = pager::requested(action, &arg, &value, q.limit) {
                    go_rooms(RoomsQuery { from, limit, ..q });
                }
            }
        }
    };
    let (on_click, on_change) = dom::delegate(act);
    // Escape cancels the question, not a reset under way.
    let on_cancel = move |ev: leptos::ev::Event| {
        if running() {
            ev.prevent_default();
        }
    };

    let details_view = move || match details.get() {
        Some(Some((Ok(d), q, now))) => details_html(&d, q.as_ref(), now, running()),
        Some(Some((Err(e), _, _))) => {
            html::error("destination-error", &api::admin_error_message(&e))
        }
        _ => html::loading("destination-loading"),
    };
    let rooms_view = move || match rooms.get() {
        Some(Some((Ok(p), q))) => rooms_html(&p, &q),
        Some(Some((Err(e), _))) => html::error("rooms-error", &api::admin_error_message(&e)),
        _ => html::loading("rooms-loading"),
    };

    view! {
        <Title text=move || format!("{} · Herald", name.get()) />
        <section id="destination-page" class="page" on:click=on_click on:change=on_change>
            <p class="crumbs">
                <a href="/destinations">"Destinations"</a>
                " /"
            </p>
            <h1 id="destination-name">{name}</h1>
            <div id="destination-region" inner_html=details_view></div>
            <div id="reset-outcome" inner_html=move || reset.with(outcome_html)></div>
            <DiagnosePanel name=name />
            <h2>"Rooms"</h2>
            <div id="rooms-region" inner_html=rooms_view></div>
            <dialog
                id=DIALOG
                aria-labelledby="reset-title"
                on:cancel=on_cancel
                inner_html=move || dialog_html(&name.get(), running())
            ></dialog>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::{DestinationRoom, Direction};

    #[test]
    fn the_name_comes_from_the_path_decoded() {
        assert_eq!(name_of("/destinations/a.org").as_deref(), Some("a.org"));
        assert_eq!(
            name_of("/destinations/%5B%3A%3A1%5D%3A8448").as_deref(),
            Some("[::1]:8448")
        );
        assert_eq!(name_of("/destinations/"), None);
        assert_eq!(name_of("/destinations"), None);
        assert_eq!(name_of("/destinations/a/b"), None);
    }

    #[test]
    fn page_urls_carry_the_rooms_query() {
        assert_eq!(
            page_url("a.org:8448", &RoomsQuery::default()),
            "/destinations/a.org%3A8448"
        );
        let q = RoomsQuery {
            from: 20,
            limit: 10,
            dir: Direction::Backwards,
        };
        assert_eq!(
            page_url("a.org", &q),
            "/destinations/a.org?from=20&limit=10&dir=b"
        );
    }

    fn details(retry_last_ts: i64) -> DestinationDetails {
        DestinationDetails {
            destination: "a.org".into(),
            last_successful_stream_ordering: Some(3),
            failure_ts: (retry_last_ts != 0).then_some(retry_last_ts),
            retry_last_ts,
            retry_interval: Some(60_000),
        }
    }

    #[test]
    fn reset_is_offered_only_in_backoff_and_not_twice() {
        let now = 1_700_000_000_000;
        let html = details_html(&details(now - 1000), None, now, false);
        assert!(html.contains(r#"data-status="backing_off" data-action="reset-ask">"#));
        let html = details_html(&details(now - 1000), None, now, true);
        assert!(html.contains(r#"data-action="reset-ask" disabled>"#));
        let html = details_html(&details(0), None, now, false);
        assert!(html.contains(r#"data-status="healthy" data-action="reset-ask" disabled>"#));
        assert!(html.contains("nothing to reset"));
    }

    #[test]
    fn the_senders_view_is_shown_under_the_details() {
        let now = 1_700_000_000_000;
        let queue = DestinationQueue {
            destination: "a.org".into(),
            state: herald_shared::SenderState::CatchingUp,
            queued_pdus: 1200,
            queued_edus: 3,
            oldest_queued_ts: Some(now - 5 * 60_000),
        };
        let html = details_html(&details(now - 1000), Some(&queue), now, false);
        assert!(
            html.contains(r#"<p id="destination-queue" data-state="catching_up">"#),
            "{html}"
        );
        assert!(html.contains("Catching up"), "{html}");
        assert!(
            html.contains("1,200 PDUs and 3 EDUs queued, the oldest accepted 5 min ago"),
            "{html}"
        );
        let idle = DestinationQueue {
            state: herald_shared::SenderState::Idle,
            queued_pdus: 0,
            queued_edus: 0,
            oldest_queued_ts: None,
            ..queue
        };
        let html = details_html(&details(0), Some(&idle), now, false);
        assert!(html.contains("Idle · nothing queued."), "{html}");
    }

    #[test]
    fn the_outcome_and_the_dialog_say_what_happened() {
        assert_eq!(outcome_html(&Reset::Idle), "");
        assert!(outcome_html(&Reset::Done(Ok(()))).contains(r#"id="reset-result""#));
        assert!(outcome_html(&Reset::Done(Err("Unknown <x>".into())))
            .contains(r#"<p id="reset-error" class="error" role="alert">Unknown &lt;x&gt;</p>"#));
        assert!(dialog_html("<b>", false).contains("<strong>&lt;b&gt;</strong>"));
        assert!(dialog_html("a.org", true)
            .contains(r#"data-action="reset-confirm" disabled>Resetting…"#));
    }

    #[test]
    fn a_rooms_page_has_its_range_order_and_pager() {
        let page = RoomsPage {
            rooms: vec![DestinationRoom {
                room_id: "!r:a.org".into(),
                stream_ordering: 9,
            }],
            total: 3,
            next_token: None,
        };
        let q = RoomsQuery {
            from: 2,
            limit: 1,
            dir: Direction::Backwards,
        };
        let html = rooms_html(&page, &q);
        assert!(
            html.contains(r#"<p id="rooms-total" data-total="3" aria-live="polite">3–3 of 3</p>"#)
        );
        assert!(html.contains(r#"aria-sort="descending""#));
        assert!(html.contains(r#"<tr data-room="!r:a.org">"#));
        assert!(html.contains(r#"id="page-next" data-action="page" data-arg="3" disabled>"#));
        assert!(html.contains(r#"id="page-prev" data-action="page" data-arg="1">"#));
    }
}
