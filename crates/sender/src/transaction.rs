//! One federation transaction: its ID (from blocks reserved in the store, so
//! IDs only grow, across restarts too), its body
//! (`{origin, origin_server_ts, pdus, edus}`) built from what the store
//! queued, and what the destination's answer says about each PDU.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::sync::Mutex;

use herald_store::delivery::{PendingEdu, PendingPdu};
use herald_store::{Store, StoreError};

/// Most PDUs in one transaction (the spec's limit).
pub const MAX_PDUS: u32 = 50;
/// Most EDUs in one transaction (the spec's limit).
pub const MAX_EDUS: u32 = 100;

/// How many IDs one reservation takes.
const TXN_ID_BLOCK: u32 = 1000;

/// Hands out transaction IDs: increasing, never reused.
pub struct TxnIds {
    store: Store,
    /// The next ID and the last one reserved.
    range: Mutex<(i64, i64)>,
}

impl TxnIds {
    pub fn new(store: Store) -> TxnIds {
        TxnIds {
            store,
            range: Mutex::new((1, 0)),
        }
    }

    pub async fn next(&self) -> Result<i64, StoreError> {
        let mut range = self.range.lock().await;
        if range.0 > range.1 {
            let first = self.store.outbox.reserve_txn_ids(TXN_ID_BLOCK).await?;
            *range = (first, first + i64::from(TXN_ID_BLOCK) - 1);
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

/// What a transaction carries, by the store's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub pdus: Vec<i64>,
    pub edus: Vec<i64>,
}

impl Contents {
    /// The highest PDU stream ordering and EDU ID it holds (or below every
    /// key when it holds none): reading the queue up to these gives the
    /// same contents again while they are undelivered.
    pub fn bounds(&self) -> (i64, i64) {
        (
            self.pdus.iter().copied().max().unwrap_or(i64::MIN),
            self.edus.iter().copied().max().unwrap_or(i64::MIN),
        )
    }
}

/// A transaction sent and not yet acknowledged. Sent again with the same ID
/// and timestamp while its contents are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub txn_id: i64,
    pub origin_server_ts: i64,
    pub contents: Contents,
}

/// The body of `PUT /_matrix/federation/v1/send/{txnId}`, as canonical
/// JSON text ready to sign and send. PDUs and EDU contents the intake stored
/// as canonical JSON are spliced in as they are rather than parsed and
/// written again; rows from before it did (`canonical` false) are written
/// canonically here. Keys in canonical order (`edus`, `origin`,
/// `origin_server_ts`, `pdus`; an EDU's `content` before its `edu_type`). A
/// PDU or EDU whose stored text is not JSON, or cannot be canonical JSON (a
/// damaged row), is left out and logged; it still counts as sent so that it
/// cannot block the queue.
pub fn body(origin: &str, now_ms: i64, pdus: &[PendingPdu], edus: &[PendingEdu]) -> String {
    let size = pdus.iter().map(|p| p.pdu_json.len() + 1).sum::<usize>()
        + edus
            .iter()
            .map(|e| e.content_json.len() + 40)
            .sum::<usize>()
        + 128;
    let mut out = String::with_capacity(size);
    out.push_str(r#"{"edus":["#);
    let mut first = true;
    for edu in edus {
        let Some(content) = splice(&edu.content_json, edu.canonical) else {
            tracing::error!(
                edu_id = edu.id,
                "stored EDU content is not JSON that can be sent; skipped"
            );
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(r#"{"content":"#);
        out.push_str(&content);
        out.push_str(r#","edu_type":"#);
        out.push_str(&json_string(&edu.edu_type));
        out.push('}');
    }
    out.push_str(r#"],"origin":"#);
    out.push_str(&json_string(origin));
    out.push_str(r#","origin_server_ts":"#);
    out.push_str(&now_ms.to_string());
    out.push_str(r#","pdus":["#);
    let mut first = true;
    for pdu in pdus {
        let Some(text) = splice(&pdu.pdu_json, pdu.canonical) else {
            tracing::error!(event_id = ?pdu.event_id, "stored PDU is not JSON that can be sent; skipped");
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&text);
    }
    out.push_str("]}");
    out
}

/// The text to splice in: as stored when it is canonical (and JSON at all),
/// written canonically otherwise; `None` when it cannot be.
fn splice(text: &str, stored_canonical: bool) -> Option<Cow<'_, str>> {
    if stored_canonical {
        serde_json::from_str::<IgnoredAny>(text)
            .is_ok()
            .then_some(Cow::Borrowed(text))
    } else {
        let value: Value = serde_json::from_str(text).ok()?;
        herald_keys::to_canonical_json(&value).ok().map(Cow::Owned)
    }
}

/// A string as canonical JSON (quoted, escaped as the spec says).
fn json_string(text: &str) -> String {
    herald_keys::to_canonical_json(&Value::String(text.to_owned()))
        .unwrap_or_else(|_| String::from("\"\""))
}

/// The PDUs a destination answered with an error
/// (`{"pdus": {"$event": {"error": "…"}}}`): `(event_id, error)`.
pub fn pdu_errors(response: &Value) -> Vec<(String, String)> {
    let Some(pdus) = response.get("pdus").and_then(Value::as_object) else {
        return Vec::new();
    };
    pdus.iter()
        .filter_map(|(event_id, result)| {
            let error = result.get("error")?;
            let text = error
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            Some((event_id.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_holds_pdus_and_edus_in_order() {
        let pdus = [
            PendingPdu {
                stream_ordering: 1,
                event_id: "$a".into(),
                room_id: "!r:x".into(),
                pdu_json: r#"{"type":"m.room.message","n":1}"#.into(),
                canonical: false,
            },
            PendingPdu {
                stream_ordering: 2,
                event_id: "$b".into(),
                room_id: "!r:x".into(),
                pdu_json: "not json".into(),
                canonical: true,
            },
        ];
        let edus = [PendingEdu {
            id: 7,
            edu_type: "m.typing".into(),
            content_json: r#"{"typing":true}"#.into(),
            canonical: true,
        }];
        let body: Value = serde_json::from_str(&body("me.example", 42, &pdus, &edus)).unwrap();
        assert_eq!(
            body,
            json!({
                "origin": "me.example",
                "origin_server_ts": 42,
                "pdus": [{"type": "m.room.message", "n": 1}],
                "edus": [{"edu_type": "m.typing", "content": {"typing": true}}],
            })
        );
    }

    /// Spliced from canonical parts, the body is canonical JSON itself:
    /// the very text `to_canonical_json` writes for it, so the signature
    /// over it is the one a receiver checks.
    #[test]
    fn the_spliced_body_is_canonical_json() {
        let pdu = |n: i64, json: Value| PendingPdu {
            stream_ordering: n,
            event_id: format!("${n}"),
            room_id: "!r:x".into(),
            pdu_json: herald_keys::to_canonical_json(&json).unwrap(),
            canonical: true,
        };
        let pdus = [
            pdu(
                1,
                json!({"type": "m.room.message", "content": {"body": "é \"q\" \u{1}"}, "depth": 3}),
            ),
            pdu(
                2,
                json!({"room_id": "!r:x", "auth_events": [], "prev_events": ["$1"]}),
            ),
        ];
        let edus = [
            PendingEdu {
                id: 1,
                edu_type: "m.typing".into(),
                content_json: herald_keys::to_canonical_json(
                    &json!({"user_id": "@a:x", "typing": true}),
                )
                .unwrap(),
                canonical: true,
            },
            PendingEdu {
                id: 2,
                edu_type: "m.direct_to_device".into(),
                content_json: "{}".into(),
                canonical: true,
            },
        ];
        let text = body("me.example:8448", 1_700_000_000_000, &pdus, &edus);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, herald_keys::to_canonical_json(&value).unwrap());
        assert_eq!(value["pdus"].as_array().unwrap().len(), 2);
        // A row stored before the intake wrote canonical JSON (keys out of
        // order, padding, a float) is written canonically before it is sent.
        let old = PendingPdu {
            stream_ordering: 3,
            event_id: "$3".into(),
            room_id: "!r:x".into(),
            pdu_json: r#"{ "type": "m.room.message", "depth": 3.0, "content": {} }"#.into(),
            canonical: false,
        };
        let mixed = body("me.example", 7, &[pdus[0].clone(), old], &[]);
        let value: Value = serde_json::from_str(&mixed).unwrap();
        assert_eq!(mixed, herald_keys::to_canonical_json(&value).unwrap());
        assert_eq!(value["pdus"][1]["depth"], json!(3));
        let empty = body("me.example", 1, &[], &[]);
        assert_eq!(
            empty,
            r#"{"edus":[],"origin":"me.example","origin_server_ts":1,"pdus":[]}"#
        );
    }

    #[test]
    fn pdu_errors_are_read_from_the_answer() {
        let answer = json!({"pdus": {
            "$ok": {},
            "$bad": {"error": "Event failed auth"},
            "$odd": {"error": {"code": 1}},
        }});
        let mut errors = pdu_errors(&answer);
        errors.sort();
        assert_eq!(
            errors,
            vec![
                ("$bad".to_owned(), "Event failed auth".to_owned()),
                ("$odd".to_owned(), r#"{"code":1}"#.to_owned()),
            ]
        );
        assert!(pdu_errors(&json!({})).is_empty());
        assert!(pdu_errors(&json!({"pdus": []})).is_empty());
    }
}
