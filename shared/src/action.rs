//! What a control in the console's markup asks for: the `data-action` of
//! buttons, checkboxes and selects that the pages draw as markup text and
//! handle with one delegated listener. The markup writes them with
//! `Display` and the listener reads them back with [`Action::parse`], so
//! both ends name the same set.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go to the page starting at `data-arg`.
    Page,
    /// The page size select changed.
    Size,
    /// Sort by the column in `data-arg` (or flip its direction).
    Sort,
    /// A row's checkbox (`data-arg`: the destination).
    Select,
    /// The checkbox selecting every row in backoff on the page.
    SelectPage,
    BulkSelectAll,
    BulkClear,
    /// Open the bulk reset confirmation.
    BulkAsk,
    BulkStart,
    BulkClose,
    /// Open a destination's reset confirmation.
    ResetAsk,
    ResetConfirm,
    ResetCancel,
    /// Open the bulk forget confirmation (same selection as bulk reset).
    BulkForgetAsk,
    /// Open a destination's forget confirmation.
    ForgetAsk,
    ForgetConfirm,
    ForgetCancel,
    /// Load the next older page of a destination's history.
    HistoryOlder,
}

impl Action {
    const ALL: [Action; 18] = [
        Action::Page,
        Action::Size,
        Action::Sort,
        Action::Select,
        Action::SelectPage,
        Action::BulkSelectAll,
        Action::BulkClear,
        Action::BulkAsk,
        Action::BulkStart,
        Action::BulkClose,
        Action::ResetAsk,
        Action::ResetConfirm,
        Action::ResetCancel,
        Action::BulkForgetAsk,
        Action::ForgetAsk,
        Action::ForgetConfirm,
        Action::ForgetCancel,
        Action::HistoryOlder,
    ];

    /// The `data-action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Page => "page",
            Action::Size => "size",
            Action::Sort => "sort",
            Action::Select => "select",
            Action::SelectPage => "select-page",
            Action::BulkSelectAll => "bulk-select-all",
            Action::BulkClear => "bulk-clear",
            Action::BulkAsk => "bulk-ask",
            Action::BulkStart => "bulk-start",
            Action::BulkClose => "bulk-close",
            Action::ResetAsk => "reset-ask",
            Action::ResetConfirm => "reset-confirm",
            Action::ResetCancel => "reset-cancel",
            Action::BulkForgetAsk => "bulk-forget-ask",
            Action::ForgetAsk => "forget-ask",
            Action::ForgetConfirm => "forget-confirm",
            Action::ForgetCancel => "forget-cancel",
            Action::HistoryOlder => "history-older",
        }
    }

    /// The action a `data-action` value names.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back() {
        for a in Action::ALL {
            assert_eq!(Action::parse(&a.to_string()), Some(a));
        }
        assert_eq!(Action::parse("nope"), None);
    }
}
