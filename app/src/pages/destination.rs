//! `/destinations/:name`: one destination — its health with the list's
//! derived status, the Reset connection button (enabled in backoff, asking
//! first), and the rooms Herald has sent it events in, a page at a time.
//!
//! The name is the path's last segment, percent-decoded (`[::1]:8448` is
//! `/destinations/%5B%3A%3A1%5D%3A8448`). The rooms table's paging and
//! direction live in the query string (`from`, `limit`, `dir`, as the admin
//! API spells them).

use herald_shared::{percent_decode_path, DestinationStatus, Direction, RoomsQuery};
use leptos::either::EitherOf3;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::{use_location, use_navigate};

use crate::api;
use crate::components::error_message::ErrorMessage;
use crate::components::pager::Pager;
use crate::session::use_session;
use crate::{dom, format, html};

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

#[component]
pub fn DestinationPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let location = use_location();
    let name = Memo::new(move |_| location.pathname.with(|p| name_of(p)).unwrap_or_default());
    let rooms_query =
        Memo::new(move |_| RoomsQuery::parse(&location.search.get()).unwrap_or_default());

    let reloads = RwSignal::new(0u32);
    let details = LocalResource::new(move || {
        let token = session.token();
        let name = name.get();
        reloads.track();
        async move { Some((api::destination(&token?, &name).await, dom::now_ms())) }
    });
    let rooms = LocalResource::new(move || {
        let token = session.token();
        let (name, query) = (name.get(), rooms_query.get());
        async move { Some((api::rooms(&token?, &name, &query).await, query)) }
    });

    {
        let navigate = navigate.clone();
        Effect::new(move |_| {
            if session.is_signed_out() {
                navigate("/login", super::replace());
            }
        });
    }
    Effect::new(move |_| {
        let d = details.get().flatten().and_then(|(r, _)| r.err());
        let r = rooms.get().flatten().and_then(|(r, _)| r.err());
        if [d, r].iter().flatten().any(|e| e.is_unauthorized()) {
            session.clear();
        }
    });

    let reset = RwSignal::new(Reset::Idle);
    let confirm = move |_| {
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
            reset.set(Reset::Done(result.map_err(|e| api::admin_error_message(&e))));
            reloads.update(|n| *n += 1);
        });
    };
    // Escape cancels the question, not a reset under way.
    let on_cancel = move |ev: leptos::ev::Event| {
        if reset.get_untracked() == Reset::Running {
            ev.prevent_default();
        }
    };

    let details_view = move || match details.get() {
        Some(Some((Ok(d), now))) => {
            let row = d.as_row();
            let status = DestinationStatus::of(&row, now);
            let can_reset = status.in_backoff();
            EitherOf3::A(view! {
                <div class="table-wrap" inner_html=html::details(&row, now)></div>
                <div class="toolbar">
                    <button
                        type="button"
                        id="reset-connection"
                        class="danger"
                        data-status=status.key()
                        disabled=move || !can_reset || reset.get() == Reset::Running
                        on:click=move |_| dom::show_modal(DIALOG)
                    >
                        "Reset connection…"
                    </button>
                    <span class="muted">
                        {if can_reset {
                            "Clears the backoff so that Herald tries again with the next thing it sends."
                        } else {
                            "Not in backoff: there is nothing to reset."
                        }}
                    </span>
                </div>
            })
        }
        Some(Some((Err(e), _))) => EitherOf3::B(view! {
            <ErrorMessage id="destination-error" message=api::admin_error_message(&e) />
        }),
        _ => EitherOf3::C(
            view! { <p id="destination-loading" class="muted" aria-busy="true">"Loading…"</p> },
        ),
    };

    let outcome = move || match reset.get() {
        Reset::Done(Ok(())) => Some(
            view! {
                <p id="reset-result" class="notice" role="status">
                    "Connection reset: Herald tries this destination again with the next thing it sends."
                </p>
            }
            .into_any(),
        ),
        Reset::Done(Err(e)) => Some(view! { <ErrorMessage id="reset-error" message=e /> }.into_any()),
        _ => None,
    };

    let go_rooms = {
        let navigate = navigate.clone();
        UnsyncCallback::new(move |q: RoomsQuery| {
            navigate(&page_url(&name.get_untracked(), &q), Default::default())
        })
    };

    let rooms_view = move || match rooms.get() {
        Some(Some((Ok(p), q))) => {
            let shown = p.rooms.len();
            let (aria, arrow) = match q.dir {
                Direction::Forwards => ("ascending", " ▲"),
                Direction::Backwards => ("descending", " ▼"),
            };
            let flipped = RoomsQuery {
                from: 0,
                dir: q.dir.flip(),
                ..q
            };
            EitherOf3::A(view! {
                <p id="rooms-total" data-total=p.total.to_string() aria-live="polite">
                    {format::range(q.from, shown, p.total)}
                </p>
                <div class="table-wrap">
                    <table id="rooms-table">
                        <thead>
                            <tr>
                                <th scope="col" aria-sort=aria>
                                    <button
                                        type="button"
                                        class="sort"
                                        id="rooms-dir"
                                        on:click=move |_| go_rooms.run(flipped)
                                    >
                                        "Room"
                                        <span aria-hidden="true">{arrow}</span>
                                    </button>
                                </th>
                                <th scope="col" class="num">"Last sent (stream ordering)"</th>
                            </tr>
                        </thead>
                        <tbody inner_html=html::rooms(&p.rooms)></tbody>
                    </table>
                </div>
                <Pager
                    id="rooms-pager"
                    from=q.from
                    limit=q.limit
                    shown
                    total=p.total
                    on_page=UnsyncCallback::new(move |(from, limit)| {
                        go_rooms.run(RoomsQuery { from, limit, ..q })
                    })
                />
            })
        }
        Some(Some((Err(e), _))) => EitherOf3::B(view! {
            <ErrorMessage id="rooms-error" message=api::admin_error_message(&e) />
        }),
        _ => EitherOf3::C(
            view! { <p id="rooms-loading" class="muted" aria-busy="true">"Loading…"</p> },
        ),
    };

    view! {
        <Title text=move || format!("{} · Herald", name.get()) />
        <section id="destination-page" class="page">
            <p class="crumbs">
                <a href="/destinations">"Destinations"</a>
                " /"
            </p>
            <h1 id="destination-name">{name}</h1>
            {details_view}
            {outcome}
            <h2>"Rooms"</h2>
            {rooms_view}
            <dialog id=DIALOG aria-labelledby="reset-title" on:cancel=on_cancel>
                <h2 id="reset-title">"Reset connection?"</h2>
                <p>
                    "Herald forgets the backoff of " <strong>{name}</strong>
                    " and tries it again with the next thing it sends."
                </p>
                <div class="actions">
                    <button
                        type="button"
                        id="reset-confirm"
                        class="danger"
                        disabled=move || reset.get() == Reset::Running
                        on:click=confirm
                    >
                        {move || {
                            if reset.get() == Reset::Running {
                                "Resetting…"
                            } else {
                                "Reset connection"
                            }
                        }}
                    </button>
                    <button
                        type="button"
                        id="reset-cancel"
                        class="secondary"
                        disabled=move || reset.get() == Reset::Running
                        on:click=move |_| dom::close_modal(DIALOG)
                    >
                        "Cancel"
                    </button>
                </div>
            </dialog>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
