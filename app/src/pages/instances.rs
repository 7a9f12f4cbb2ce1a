//! `/instances`: the Herald instances sharing this database, from
//! `GET /_herald/admin/v1/instances` — each one's name, start, last
//! heartbeat, whether it is live and the shards of destinations it holds
//! (as ranges), the instance answering marked. Reloads every
//! [`REFRESH_EVERY`] while open.

use std::fmt::Write as _;
use std::time::Duration;

use herald_shared::InstancesOverview;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

use crate::api;
use crate::session::use_session;
use crate::{format, html};

/// How often the page reloads.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Shards as ranges: `0–127, 200, 250–255`; none as a dash.
pub fn shard_ranges(shards: &[u16]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}–{end}");
        }
        i += 1;
    }
    if out.is_empty() {
        "—".to_owned()
    } else {
        out
    }
}

/// The table of instances.
pub fn instances_html(o: &InstancesOverview) -> String {
    let mut out = format!(
        r#"<p id="instances-this" class="muted">This page was answered by <strong>{}</strong>; destinations are split into {} shards.</p><div class="table-wrap"><table id="instances"><thead><tr><th scope="col">Instance</th><th scope="col">Live</th><th scope="col">Started</th><th scope="col">Last heartbeat</th><th scope="col" class="num">Shards</th><th scope="col">Shards held</th></tr></thead><tbody>"#,
        html::escape(&o.this_instance),
        o.shards_total
    );
    if o.instances.is_empty() {
        out.push_str(r#"<tr><td colspan="6" class="muted">No instance has run yet.</td></tr>"#);
    }
    for i in &o.instances {
        let name = html::escape(&i.name);
        let this = if i.name == o.this_instance {
            r#" <span class="muted">(this one)</span>"#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<tr data-instance="{name}"><td>{name}{this}</td><td data-live="{}">{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            i.live,
            if i.live { "Live" } else { "Gone" },
            format::timestamp(i.started_ts),
            format::timestamp(i.heartbeat_ts),
            i.shard_count,
            shard_ranges(&i.shards)
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

#[component]
pub fn InstancesPage() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if session.is_signed_out() {
            navigate("/login", super::replace());
        }
    });
    // As the sender page: each answer arms the next reload.
    let reloads = RwSignal::new(0u32);
    let shown = LocalResource::new(move || {
        let token = session.token();
        reloads.track();
        async move {
            let result = api::instances(&token?).await;
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
                Ok(o) => instances_html(&o),
                Err(e) => html::error("instances-error", &api::admin_error_message(&e)),
            })
        }
    });
    let view = move || {
        shown
            .get()
            .flatten()
            .unwrap_or_else(|| html::loading("instances-loading"))
    };
    view! {
        <Title text="Instances · Herald" />
        <section id="instances-page" class="page">
            <h1>"Instances"</h1>
            <p class="muted">
                "The Herald instances sharing this database and the shards of destinations each sends, refreshed every second."
            </p>
            <div id="instances-region" inner_html=view></div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::InstanceRow;

    #[test]
    fn shards_show_as_ranges() {
        assert_eq!(shard_ranges(&[]), "—");
        assert_eq!(shard_ranges(&[5]), "5");
        let mut shards: Vec<u16> = (0..128).collect();
        shards.extend([200, 250, 251, 252]);
        assert_eq!(shard_ranges(&shards), "0–127, 200, 250–252");
    }

    #[test]
    fn instances_are_drawn_escaped() {
        let o = InstancesOverview {
            this_instance: "a<b".into(),
            shards_total: 256,
            instances: vec![
                InstanceRow {
                    name: "a<b".into(),
                    started_ts: 0,
                    heartbeat_ts: 1_000,
                    live: true,
                    shard_count: 2,
                    shards: vec![0, 1],
                },
                InstanceRow {
                    name: "gone".into(),
                    started_ts: 0,
                    heartbeat_ts: 0,
                    live: false,
                    shard_count: 0,
                    shards: vec![],
                },
            ],
        };
        let html = instances_html(&o);
        assert!(html.contains(r#"<tr data-instance="a&lt;b"><td>a&lt;b <span class="muted">(this one)</span></td><td data-live="true">Live</td>"#), "{html}");
        assert!(
            html.contains(r#"<td class="num">2</td><td>0–1</td>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<td data-live="false">Gone</td>"#),
            "{html}"
        );
        assert!(!html.contains("a<b"));
    }
}
