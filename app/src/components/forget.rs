//! Forgetting a destination from its page: the "Forget…" button, the
//! confirmation dialog naming what goes (the rooms recorded for it, from
//! the rooms list's total, and the PDUs and EDUs queued for it, from the
//! queue view), Herald's `DELETE /_herald/admin/v1/federation/destinations/<d>`,
//! then back to the list, which shows what was removed
//! ([`take_notice`]). Markup only: the destination page runs it with its
//! other controls. Bulk forget lives with bulk reset
//! ([`crate::components::bulk_reset`]), sharing its selection and dialog.

use std::sync::Mutex;

use herald_shared::Forgotten;

use crate::{format, html};
use herald_shared::Action::{ForgetAsk, ForgetCancel, ForgetConfirm};

/// The dialog's id.
pub const DIALOG: &str = "forget-dialog";

/// What the last forget removed, for the list to tell once. (The console
/// runs on one thread; the lock is never contended.)
static NOTICE: Mutex<Option<Forgotten>> = Mutex::new(None);

/// Leaves `removed` for the list page to show.
pub fn leave_notice(removed: Forgotten) {
    if let Ok(mut n) = NOTICE.lock() {
        *n = Some(removed);
    }
}

/// What the last forget removed, if the list has not shown it yet.
pub fn take_notice() -> Option<Forgotten> {
    NOTICE.lock().ok()?.take()
}

/// The list's notice after a forget.
pub fn notice_html(f: &Forgotten) -> String {
    format!(
        r#"<p id="forget-notice" class="notice" role="status">Forgot <strong>{}</strong>: removed {}, {} and {}.</p>"#,
        html::escape(&f.destination),
        format::plural(f.rooms as usize, "room"),
        format::plural(f.queued_pdus as usize, "queued PDU"),
        format::plural(f.queued_edus as usize, "queued EDU"),
    )
}

/// What the page knows will be removed: the rooms' total and the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rooms: Option<u64>,
    /// Queued PDUs and EDUs.
    pub queued: Option<(u64, u64)>,
}

/// The confirmation dialog's inside.
pub fn dialog_html(name: &str, counts: Counts, running: bool) -> String {
    let rooms = match counts.rooms {
        Some(n) => format!("the {} recorded for it", format::plural(n as usize, "room")),
        None => "the rooms recorded for it".to_owned(),
    };
    let queued = match counts.queued {
        Some((pdus, edus)) => format!(
            "the {} and {} queued for it",
            format::plural(pdus as usize, "PDU"),
            format::plural(edus as usize, "EDU")
        ),
        None => "the PDUs and EDUs queued for it".to_owned(),
    };
    let (disabled, label) = if running {
        (" disabled", "Forgetting…")
    } else {
        ("", "Forget")
    };
    format!(
        r#"<h2 id="forget-title">Forget this destination?</h2><p id="forget-what">Herald removes <strong>{}</strong>, {rooms} and {queued}. This cannot be undone.</p><div class="actions"><button type="button" id="forget-confirm" class="danger" data-action="{ForgetConfirm}"{disabled}>{label}</button><button type="button" id="forget-cancel" class="secondary" data-action="{ForgetCancel}" autofocus{disabled}>Cancel</button></div>"#,
        html::escape(name)
    )
}

/// The Forget button (disabled while a forget is under way).
pub fn button_html(running: bool) -> String {
    let disabled = if running { " disabled" } else { "" };
    format!(
        r#"<div class="toolbar"><button type="button" id="forget" class="danger" data-action="{ForgetAsk}"{disabled}>Forget…</button><span class="muted">Removes it, its rooms and its queues.</span></div>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialog_names_what_goes() {
        let counts = Counts {
            rooms: Some(30),
            queued: Some((1200, 1)),
        };
        let html = dialog_html("<x>.org", counts, false);
        assert!(html.contains("Herald removes <strong>&lt;x&gt;.org</strong>, the 30 rooms recorded for it and the 1,200 PDUs and 1 EDU queued for it."), "{html}");
        assert!(html.contains(
            r#"id="forget-confirm" class="danger" data-action="forget-confirm">Forget<"#
        ));
        let html = dialog_html("a.org", Counts::default(), true);
        assert!(html.contains("the rooms recorded for it and the PDUs and EDUs queued for it"));
        assert!(html.contains(r#"data-action="forget-confirm" disabled>Forgetting…<"#));
    }

    #[test]
    fn the_list_is_told_once_what_was_removed() {
        assert_eq!(take_notice(), None);
        leave_notice(Forgotten {
            destination: "a.org".into(),
            rooms: 1,
            queued_pdus: 2,
            queued_edus: 0,
        });
        let f = take_notice().unwrap();
        assert_eq!(take_notice(), None);
        assert_eq!(
            notice_html(&f),
            r#"<p id="forget-notice" class="notice" role="status">Forgot <strong>a.org</strong>: removed 1 room, 2 queued PDUs and 0 queued EDUs.</p>"#
        );
        assert!(button_html(true).contains(r#"data-action="forget-ask" disabled>"#));
    }
}
