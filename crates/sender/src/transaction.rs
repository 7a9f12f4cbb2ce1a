//! One federation transaction: its ID (from blocks reserved in the store, so
//! IDs only grow, across restarts too), its body
//! (`{origin, origin_server_ts, pdus, edus}`) built from what the store
//! queued, and what the destination's answer says about each PDU.

use serde_json::{Map, Value};
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

/// The body of `PUT /_matrix/federation/v1/send/{txnId}`. A PDU or EDU
/// whose stored JSON does not parse (a damaged row) is left out and logged;
/// it still counts as sent so that it cannot block the queue.
pub fn body(origin: &str, now_ms: i64, pdus: &[PendingPdu], edus: &[PendingEdu]) -> Value {
    let pdus: Vec<Value> = pdus
        .iter()
        .filter_map(|pdu| match serde_json::from_str(&pdu.pdu_json) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(event_id = %pdu.event_id, error = %e, "stored PDU is not JSON; skipped");
                None
            }
        })
        .collect();
    let edus: Vec<Value> = edus
        .iter()
        .filter_map(|edu| match serde_json::from_str::<Value>(&edu.content_json) {
            Ok(content) => {
                let mut object = Map::new();
                object.insert("edu_type".into(), Value::String(edu.edu_type.clone()));
                object.insert("content".into(), content);
                Some(Value::Object(object))
            }
            Err(e) => {
                tracing::error!(edu_id = edu.id, error = %e, "stored EDU content is not JSON; skipped");
                None
            }
        })
        .collect();
    let mut object = Map::new();
    object.insert("origin".into(), Value::String(origin.to_owned()));
    object.insert("origin_server_ts".into(), Value::from(now_ms));
    object.insert("pdus".into(), Value::Array(pdus));
    object.insert("edus".into(), Value::Array(edus));
    Value::Object(object)
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
            },
            PendingPdu {
                stream_ordering: 2,
                event_id: "$b".into(),
                room_id: "!r:x".into(),
                pdu_json: "not json".into(),
            },
        ];
        let edus = [PendingEdu {
            id: 7,
            edu_type: "m.typing".into(),
            content_json: r#"{"typing":true}"#.into(),
        }];
        let body = body("me.example", 42, &pdus, &edus);
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
