//! `/destinations/:name`: one destination — its health from Herald's details
//! endpoint (the list's columns, the last error in full, the last delivery,
//! the next retry, the sender's queue), the Reset connection button (enabled
//! in backoff, asking first), the Forget button
//! ([`crate::components::forget`]), its history
//! ([`crate::components::history`]), and the rooms Herald has sent it
//! events in, a page at a time.
//!
//! The name is the path's last segment, percent-decoded (`[::1]:8448` is
//! `/destinations/%5B%3A%3A1%5D%3A8448`). The rooms table's paging and
//! direction live in the query string (`from`, `limit`, `dir`, as the admin
//! API spells them).

use herald_shared::{
    percent_decode_path, DestinationHealth, DestinationStatus, Forgotten, RoomsPage, RoomsQuery,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::{use_location, use_navigate};

use crate::api::{self, ApiError};
use crate::components::destinations_table::sort_header;
use crate::components::diagnose::DiagnosePanel;
use crate::components::forget::{self, Counts};
use crate::components::history;
use crate::components::pager::{self, pager};
use crate::session::use_session;
use crate::{dom, format, html};
use herald_shared::Action::{
    ForgetAsk, ForgetCancel, ForgetConfirm, HistoryOlder, ResetAsk, ResetCancel, ResetConfirm,
};

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

/// What the last reset (or forget) did: nothing yet, under way, or its
/// outcome.
#[derive(Debug, Clone, PartialEq)]
enum Reset {
    Idle,
    Running,
    Done(Result<(), String>),
}

/// What the page runs in the background. One `spawn_local` runs both, so
/// that the WASM holds one state machine for them.
enum Task {
    Reset,
    Forget,
}

/// What a [`Task`] answered.
enum Done {
    Reset(Result<(), ApiError>),
    Forget(Result<Forgotten, ApiError>),
}

impl Done {
    fn error(&self) -> Option<&ApiError> {
        match self {
            Done::Reset(r) => r.as_ref().err(),
            Done::Forget(r) => r.as_ref().err(),
        }
    }
}

/// The last error in full (kind, message, address, when); the table above
/// shows it cut, with the last delivery and the next retry. The message
/// comes from a remote server: escaped text only.
fn last_error_html(h: &DestinationHealth, now: i64) -> String {
    let Some(e) = &h.extras.last_error else {
        return r#"<p id="last-error" data-kind=""><strong>Last error:</strong> none recorded.</p>"#
            .to_owned();
    };
    let address = e
        .address
        .as_deref()
        .map(|a| format!("Address tried: {} · ", html::escape(a)))
        .unwrap_or_default();
    format!(
        r#"<p id="last-error" data-kind="{}"><strong>Last error:</strong> {}: <span class="msg">{}</span><br><span class="muted">{address}{} ({})</span></p>"#,
        e.kind.as_str(),
        e.kind.label(),
        html::escape(&e.message),
        format::timestamp(e.ts),
        format::relative(e.ts, now)
    )
}

/// Attached to a Synapse: what Herald cannot know, in place of the last
/// error and the sender's queue.
const ATTACHED_NOTE: &str = r#"<p id="last-error" data-kind="" class="muted"><strong>Last error:</strong> not available: Herald is attached to Synapse, which sends this traffic and does not keep why a destination fails. Diagnose below checks it from this host.</p>"#;

/// The details table and the Reset connection button, enabled in backoff
/// while no reset is under way, and the Forget button (not when attached to
/// a Synapse, whose database Herald only reads).
fn details_html(
    h: &DestinationHealth,
    now: i64,
    running: bool,
    forgetting: bool,
    attached: bool,
) -> String {
    let row = h.details.as_row();
    let status = DestinationStatus::of(&row, now);
    let (disabled, hint) = match (status.in_backoff(), running) {
        (true, false) if attached => (
            "",
            "Clears the backoff in Synapse, which tries again with the next thing it sends.",
        ),
        (true, false) => (
            "",
            "Clears the backoff: Herald tries again at once if anything is queued for it.",
        ),
        (true, true) => (" disabled", "Resetting…"),
        (false, _) => (" disabled", "Not in backoff: there is nothing to reset."),
    };
    format!(
        r#"<div class="table-wrap">{}</div>{}{}<div class="toolbar"><button type="button" id="reset-connection" class="danger" data-status="{}" data-action="{ResetAsk}"{disabled}>Reset connection…</button><span class="muted">{hint}</span></div>{}"#,
        html::details(h, now),
        if attached {
            ATTACHED_NOTE.to_owned()
        } else {
            last_error_html(h, now)
        },
        if attached {
            String::new()
        } else {
            html::queue(&h.queue, now)
        },
        status.key(),
        if attached {
            String::new()
        } else {
            forget::button_html(forgetting)
        }
    )
}

/// What the reset said, and why a forget failed if it did.
fn outcome_html(reset: &Reset, forget: &Reset, attached: bool) -> String {
    let mut out = match reset {
        Reset::Done(Ok(())) if attached => r#"<p id="reset-result" class="notice" role="status">Connection reset by Synapse: it tries this destination again with the next thing it sends.</p>"#.to_owned(),
        Reset::Done(Ok(())) => r#"<p id="reset-result" class="notice" role="status">Connection reset: Herald tries this destination again now if anything is queued for it, otherwise with the next thing it sends.</p>"#.to_owned(),
        Reset::Done(Err(e)) => html::error("reset-error", e),
        _ => String::new(),
    };
    if let Reset::Done(Err(e)) = forget {
        out.push_str(&html::error("forget-error", e));
    }
    out
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
    let attached = crate::attached::use_attached();
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

    // Herald's details and the newest `history_pages` pages of history,
    // asked for at once. "Older entries" asks for one page more: the pages
    // are read again with it (a few local requests), which keeps the page
    // to one resource and the WASM small.
    let reloads = RwSignal::new(0u32);
    let history_pages = RwSignal::new(1u32);
    let details = LocalResource::new(move || {
        let token = session.token();
        let name = name.get();
        let pages = history_pages.get();
        reloads.track();
        async move {
            let token = token?;
            let (details, history) = futures_util::future::join(
                api::health(&token, &name),
                history::newest_pages(&token, &name, pages),
            )
            .await;
            Some((details, history, dom::now_ms()))
        }
    });
    let rooms = LocalResource::new(move || {
        let token = session.token();
        let (name, query) = (name.get(), rooms_query.get());
        async move { Some((api::rooms(&token?, &name, &query).await, query)) }
    });

    let go = {
        let navigate = navigate.clone();
        StoredValue::new_local(move |url: String| navigate(&url, Default::default()))
    };
    let go = move |url: String| go.with_value(|go| go(url));
    let go_rooms = move |q: RoomsQuery| go(page_url(&name.get_untracked(), &q));
    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    Effect::new(move |_| {
        // The history is read with the same token as the details.
        let d = details.get().flatten().and_then(|(r, _, _)| r.err());
        let r = rooms.get().flatten().and_then(|(r, _)| r.err());
        if [d, r].iter().flatten().any(|e| e.is_unauthorized()) {
            session.clear();
        }
    });

    let reset = RwSignal::new(Reset::Idle);
    let forgetting = RwSignal::new(Reset::Idle);
    let running = move || reset.with(|r| *r == Reset::Running);
    let busy = move || running() || forgetting.with(|r| *r == Reset::Running);

    let finish = move |done: Done| {
        if done.error().is_some_and(ApiError::is_unauthorized) {
            session.clear();
        }
        match done {
            Done::Reset(result) => {
                dom::close_modal(DIALOG);
                reset.set(Reset::Done(
                    result.map_err(|e| api::admin_error_message(&e)),
                ));
                reloads.update(|n| *n += 1);
                // And again once the retry the reset started has had its moment.
                set_timeout(
                    move || reloads.update(|n| *n += 1),
                    std::time::Duration::from_millis(1500),
                );
            }
            Done::Forget(Ok(removed)) => {
                dom::close_modal(forget::DIALOG);
                forgetting.set(Reset::Idle);
                forget::leave_notice(removed);
                go("/destinations".to_owned());
            }
            Done::Forget(Err(e)) => {
                dom::close_modal(forget::DIALOG);
                forgetting.set(Reset::Done(Err(api::admin_error_message(&e))));
            }
        }
    };
    let start = move |task: Task| {
        let Some(token) = session.token_untracked() else {
            return;
        };
        let name = name.get_untracked();
        match &task {
            Task::Reset => reset.set(Reset::Running),
            Task::Forget => forgetting.set(Reset::Running),
        }
        spawn_local(async move {
            let done = match task {
                Task::Reset => Done::Reset(api::reset_connection(&token, &name).await),
                Task::Forget => Done::Forget(api::forget(&token, &name).await),
            };
            finish(done);
        });
    };
    // Every control below is drawn as markup and handled here.
    let act = move |action: herald_shared::Action, arg: String, ev: &leptos::ev::Event| {
        let q = rooms_query.get_untracked();
        match action {
            ResetAsk => dom::show_modal(DIALOG),
            ResetConfirm => start(Task::Reset),
            ResetCancel => dom::close_modal(DIALOG),
            ForgetAsk => dom::show_modal(forget::DIALOG),
            ForgetConfirm => start(Task::Forget),
            ForgetCancel => dom::close_modal(forget::DIALOG),
            HistoryOlder => history_pages.update(|n| *n += 1),
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
    // Escape cancels a question, not a reset or forget under way.
    let on_cancel = move |ev: leptos::ev::Event| {
        if busy() {
            ev.prevent_default();
        }
    };

    let details_view = move || match details.get() {
        Some(Some((Ok(d), _, now))) => details_html(
            &d,
            now,
            running(),
            forgetting.with(|f| *f == Reset::Running),
            attached,
        ),
        Some(Some((Err(e), _, _))) => {
            html::error("destination-error", &api::admin_error_message(&e))
        }
        _ => html::loading("destination-loading"),
    };
    let history_view = move || match details.get() {
        Some(Some((d, Ok(first), now))) => {
            // An open outage runs until now while it is in backoff (the
            // server's status).
            let failing = d.is_ok_and(|h| h.status.in_backoff());
            let note = if attached {
                r#"<p id="history-attached" class="muted">Attached to Synapse: Herald's history holds the resets made through Herald; Synapse keeps no history of its own.</p>"#
            } else {
                ""
            };
            note.to_owned()
                + &history::history_html(&first.entries, first.next_token.is_some(), failing, now)
        }
        Some(Some((_, Err(e), _))) => html::error("history-error", &api::admin_error_message(&e)),
        _ => html::loading("history-loading"),
    };
    let rooms_view = move || match rooms.get() {
        Some(Some((Ok(p), q))) => rooms_html(&p, &q),
        Some(Some((Err(e), _))) => html::error("rooms-error", &api::admin_error_message(&e)),
        _ => html::loading("rooms-loading"),
    };
    // What Forget names: the rooms' total and what is queued.
    let forget_dialog = move || {
        let counts = Counts {
            rooms: rooms
                .get()
                .flatten()
                .and_then(|(r, _)| r.ok().map(|p| p.total)),
            queued: details
                .get()
                .flatten()
                .and_then(|(r, _, _)| r.ok())
                .map(|h| (h.queue.queued_pdus, h.queue.queued_edus)),
        };
        forget::dialog_html(
            &name.get(),
            counts,
            forgetting.with(|f| *f == Reset::Running),
        )
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
            <div id="reset-outcome" inner_html=move || forgetting.with(|f| reset.with(|r| outcome_html(r, f, attached)))></div>
            <DiagnosePanel name=name />
            <h2 id="history-title">"History"</h2>
            <div id="history-region" role="region" aria-labelledby="history-title" inner_html=history_view></div>
            <h2>"Rooms"</h2>
            <div id="rooms-region" inner_html=rooms_view></div>
            <dialog
                id=DIALOG
                aria-labelledby="reset-title"
                on:cancel=on_cancel
                inner_html=move || dialog_html(&name.get(), running())
            ></dialog>
            <dialog
                id=forget::DIALOG
                aria-labelledby="forget-title"
                on:cancel=on_cancel
                inner_html=forget_dialog
            ></dialog>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::{DestinationQueue, DestinationRoom, Direction};

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

    fn details(retry_last_ts: i64) -> DestinationHealth {
        let details = herald_shared::DestinationDetails {
            destination: "a.org".into(),
            last_successful_stream_ordering: Some(3),
            failure_ts: (retry_last_ts != 0).then_some(retry_last_ts),
            retry_last_ts,
            retry_interval: Some(60_000),
        };
        let row = details.as_row();
        DestinationHealth {
            status: DestinationStatus::of(&row, retry_last_ts),
            next_retry_ts: herald_shared::next_retry_ts(&row),
            details,
            extras: Default::default(),
            queue: DestinationQueue {
                destination: "a.org".into(),
                state: herald_shared::SenderState::Idle,
                queued_pdus: 0,
                queued_edus: 0,
                oldest_queued_ts: None,
            },
        }
    }

    #[test]
    fn attached_there_is_no_last_error_queue_or_forget() {
        let now = 1_700_000_000_000;
        let html = details_html(&details(now - 1000), now, false, false, true);
        assert!(
            html.contains("not available: Herald is attached to Synapse"),
            "{html}"
        );
        assert!(!html.contains(r#"id="forget""#), "{html}");
        assert!(!html.contains(r#"id="destination-queue""#), "{html}");
        assert!(html.contains("Clears the backoff in Synapse"), "{html}");
        assert!(outcome_html(&Reset::Done(Ok(())), &Reset::Idle, true).contains("reset by Synapse"));
    }

    #[test]
    fn reset_is_offered_only_in_backoff_and_not_twice() {
        let now = 1_700_000_000_000;
        let html = details_html(&details(now - 1000), now, false, false, false);
        assert!(html.contains(r#"data-status="backing_off" data-action="reset-ask">"#));
        let html = details_html(&details(now - 1000), now, true, false, false);
        assert!(html.contains(r#"data-action="reset-ask" disabled>"#));
        let html = details_html(&details(0), now, false, false, false);
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
        let mut h = details(now - 1000);
        h.queue = queue.clone();
        let html = details_html(&h, now, false, false, false);
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
        let mut h = details(0);
        h.queue = idle;
        let html = details_html(&h, now, false, false, false);
        assert!(html.contains("Idle · nothing queued."), "{html}");
    }

    #[test]
    fn the_last_error_is_shown_whole_under_the_table() {
        let now = 1_700_000_000_000;
        let mut h = details(now - 1000);
        h.extras.last_error = Some(herald_shared::LastError {
            ts: now - 3_000,
            kind: herald_shared::FailureKind::Connect,
            message: "Connection refused <script>".into(),
            address: Some("127.0.0.1:1".into()),
        });
        h.extras.last_delivered_ts = Some(now - 5 * 60_000);
        let html = details_html(&h, now, false, false, false);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains(r#"<p id="last-error" data-kind="connect"><strong>Last error:</strong> Connection: <span class="msg">Connection refused &lt;script&gt;</span><br><span class="muted">Address tried: 127.0.0.1:1 · 2023-11-14 22:13:17 UTC (3 s ago)</span></p>"#), "{html}");
        // The table has the last delivery and the next retry, exact on hover.
        assert!(html.contains(r#"<td data-col="last_delivered_ts" data-value="1699999700000" title="2023-11-14 22:08:20 UTC" class="num">5 min ago</td>"#), "{html}");
        assert!(html.contains(r#"<td data-col="next_retry" data-value="1700000059000" title="2023-11-14 22:14:19 UTC" class="num">in 59 s</td>"#), "{html}");
        let html = details_html(&details(0), now, false, false, false);
        assert!(html.contains(
            r#"<p id="last-error" data-kind=""><strong>Last error:</strong> none recorded.</p>"#
        ));
    }

    #[test]
    fn the_outcome_and_the_dialog_say_what_happened() {
        assert_eq!(outcome_html(&Reset::Idle, &Reset::Idle, false), "");
        assert!(outcome_html(&Reset::Done(Ok(())), &Reset::Idle, false)
            .contains(r#"id="reset-result""#));
        assert!(outcome_html(
            &Reset::Done(Err("Unknown <x>".into())),
            &Reset::Running,
            false
        )
        .contains(r#"<p id="reset-error" class="error" role="alert">Unknown &lt;x&gt;</p>"#));
        assert_eq!(
            outcome_html(&Reset::Idle, &Reset::Done(Err("Unknown <x>".into())), false),
            r#"<p id="forget-error" class="error" role="alert">Unknown &lt;x&gt;</p>"#
        );
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
