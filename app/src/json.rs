//! Reading the API's JSON answers in the browser: the browser parses the
//! body (`Response.json()`), and [`FromJs`] reads the fields the console
//! uses off the parsed object. This replaces serde_json's deserializer,
//! which cost the WASM module about a tenth of its size. Numbers arrive as
//! JavaScript numbers: exact up to 2^53, well past any millisecond
//! timestamp or stream ordering. Fields the console does not use are
//! ignored; a missing or mistyped one is an error that names it.

use herald_shared::{
    Destination, DestinationDetails, DestinationExtras, DestinationHealth, DestinationHealthPage,
    DestinationHealthRow, DestinationQueue, DestinationRoom, DestinationStatus, DestinationsPage,
    FailureKind, FederationSummary, Forgotten, HistoryEntry, HistoryEvent, HistoryPage,
    InstanceRow, InstancesOverview, LastError, LoginResponse, MatrixError, QueuedDestination,
    RateSample, RoomsPage, SenderOverview, SenderState, SenderStateCounts,
};
use js_sys::{Array, Reflect};

use crate::api::{EVENTS, KINDS, STATUSES};
use wasm_bindgen::JsValue;

/// A value read from parsed JSON.
pub trait FromJs: Sized {
    fn from_js(value: &JsValue) -> Result<Self, String>;
}

/// Answers whose body the console does not read (`{}`).
impl FromJs for () {
    fn from_js(_: &JsValue) -> Result<(), String> {
        Ok(())
    }
}

/// A JSON object's fields.
struct Obj<'a>(&'a JsValue);

impl Obj<'_> {
    fn new(value: &JsValue) -> Result<Obj<'_>, String> {
        if value.is_object() && !Array::is_array(value) {
            Ok(Obj(value))
        } else {
            Err("the answer is not a JSON object".to_owned())
        }
    }

    fn get(&self, key: &str) -> JsValue {
        Reflect::get(self.0, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    fn bad(key: &str, what: &str) -> String {
        format!("field `{key}` is missing or not {what}")
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.get(key)
            .as_string()
            .ok_or_else(|| Obj::bad(key, "a string"))
    }

    fn opt_int(&self, key: &str) -> Result<Option<i64>, String> {
        let v = self.get(key);
        if v.is_null() || v.is_undefined() {
            return Ok(None);
        }
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
            .map(|f| Some(f as i64))
            .ok_or_else(|| Obj::bad(key, "an integer"))
    }

    fn int(&self, key: &str) -> Result<i64, String> {
        self.opt_int(key)?
            .ok_or_else(|| Obj::bad(key, "an integer"))
    }

    fn count(&self, key: &str) -> Result<u64, String> {
        u64::try_from(self.int(key)?).map_err(|_| Obj::bad(key, "a count"))
    }

    fn number(&self, key: &str) -> Result<f64, String> {
        self.get(key)
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Obj::bad(key, "a number"))
    }

    fn opt_string(&self, key: &str) -> Option<String> {
        self.get(key).as_string()
    }

    /// Which of `names` the string at `key` is (its index in an enum's
    /// `ALL`), or `None` when absent or null. Not generic, so that the WASM
    /// holds one copy for every enum.
    fn opt_choice(&self, key: &str, names: &[&str]) -> Result<Option<usize>, String> {
        let v = self.get(key);
        if v.is_null() || v.is_undefined() {
            return Ok(None);
        }
        let text = v.as_string().ok_or_else(|| Obj::bad(key, "a string"))?;
        names
            .iter()
            .position(|n| *n == text)
            .map(Some)
            .ok_or_else(|| format!("field `{key}` has an unknown value {text:?}"))
    }

    fn choice(&self, key: &str, names: &[&str]) -> Result<usize, String> {
        self.opt_choice(key, names)?
            .ok_or_else(|| Obj::bad(key, "a string"))
    }

    fn list<T: FromJs>(&self, key: &str) -> Result<Vec<T>, String> {
        let v = self.get(key);
        if !Array::is_array(&v) {
            return Err(Obj::bad(key, "a list"));
        }
        Array::from(&v)
            .iter()
            .map(|item| T::from_js(&item))
            .collect()
    }
}

impl FromJs for Destination {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(Destination {
            destination: o.string("destination")?,
            retry_last_ts: o.int("retry_last_ts")?,
            retry_interval: o.int("retry_interval")?,
            failure_ts: o.opt_int("failure_ts")?,
            last_successful_stream_ordering: o.opt_int("last_successful_stream_ordering")?,
        })
    }
}

impl FromJs for DestinationsPage {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationsPage {
            destinations: o.list("destinations")?,
            total: o.count("total")?,
            next_token: o.get("next_token").as_string(),
        })
    }
}

impl FromJs for DestinationDetails {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationDetails {
            destination: o.string("destination")?,
            last_successful_stream_ordering: o.opt_int("last_successful_stream_ordering")?,
            failure_ts: o.opt_int("failure_ts")?,
            retry_last_ts: o.int("retry_last_ts")?,
            retry_interval: o.opt_int("retry_interval")?,
        })
    }
}

impl FromJs for LastError {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(LastError {
            ts: o.int("ts")?,
            kind: FailureKind::ALL[o.choice("kind", &KINDS)?],
            message: o.string("message")?,
            address: o.opt_string("address"),
        })
    }
}

impl FromJs for DestinationExtras {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        let last_error = o.get("last_error");
        Ok(DestinationExtras {
            last_error: if last_error.is_null() || last_error.is_undefined() {
                None
            } else {
                Some(LastError::from_js(&last_error).map_err(|e| format!("last_error: {e}"))?)
            },
            last_delivered_ts: o.opt_int("last_delivered_ts")?,
        })
    }
}

impl FromJs for DestinationHealthRow {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationHealthRow {
            row: Destination::from_js(v)?,
            status: DestinationStatus::ALL[o.choice("status", &STATUSES)?],
            next_retry_ts: o.opt_int("next_retry_ts")?,
            extras: DestinationExtras::from_js(v)?,
        })
    }
}

impl FromJs for DestinationHealthPage {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationHealthPage {
            destinations: o.list("destinations")?,
            total: o.count("total")?,
            next_token: o.opt_string("next_token"),
        })
    }
}

impl FromJs for DestinationHealth {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationHealth {
            details: DestinationDetails::from_js(v)?,
            status: DestinationStatus::ALL[o.choice("status", &STATUSES)?],
            next_retry_ts: o.opt_int("next_retry_ts")?,
            extras: DestinationExtras::from_js(v)?,
            queue: DestinationQueue::from_js(&o.get("queue")).map_err(|e| format!("queue: {e}"))?,
        })
    }
}

impl FromJs for HistoryEntry {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(HistoryEntry {
            id: o.int("id")?,
            ts: o.int("ts")?,
            event: HistoryEvent::ALL[o.choice("event", &EVENTS)?],
            last_ts: o.opt_int("last_ts")?,
            count: o.opt_int("count")?,
            kind: o.opt_choice("kind", &KINDS)?.map(|i| FailureKind::ALL[i]),
            message: o.opt_string("message"),
            outage_ms: o.opt_int("outage_ms")?,
            actor: o.opt_string("actor"),
        })
    }
}

impl FromJs for HistoryPage {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(HistoryPage {
            destination: o.string("destination")?,
            entries: o.list("entries")?,
            next_token: o.opt_string("next_token"),
        })
    }
}

impl FromJs for Forgotten {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(Forgotten {
            destination: o.string("destination")?,
            rooms: o.count("rooms")?,
            queued_pdus: o.count("queued_pdus")?,
            queued_edus: o.count("queued_edus")?,
        })
    }
}

impl FromJs for DestinationQueue {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationQueue {
            destination: o.string("destination")?,
            state: {
                let text = o.string("state")?;
                SenderState::parse(&text).ok_or_else(|| format!("unknown sender state {text:?}"))?
            },
            queued_pdus: o.count("queued_pdus")?,
            queued_edus: o.count("queued_edus")?,
            oldest_queued_ts: o.opt_int("oldest_queued_ts")?,
        })
    }
}

fn sender_state(o: &Obj<'_>) -> Result<SenderState, String> {
    let text = o.string("state")?;
    SenderState::parse(&text).ok_or_else(|| format!("unknown sender state {text:?}"))
}

impl FromJs for RateSample {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(RateSample {
            end_ts: o.int("end_ts")?,
            duration_ms: o.count("duration_ms")?,
            transactions_per_sec: o.number("transactions_per_sec")?,
            pdus_per_sec: o.number("pdus_per_sec")?,
            edus_per_sec: o.number("edus_per_sec")?,
        })
    }
}

impl FromJs for QueuedDestination {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(QueuedDestination {
            destination: o.string("destination")?,
            queued_pdus: o.count("queued_pdus")?,
            queued_edus: o.count("queued_edus")?,
            state: sender_state(&o)?,
        })
    }
}

impl FromJs for SenderOverview {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(SenderOverview {
            now_ts: o.int("now_ts")?,
            interval_ms: o.count("interval_ms")?,
            rates: o.list("rates")?,
            queued_pdus: o.count("queued_pdus")?,
            queued_edus: o.count("queued_edus")?,
            destinations: {
                let d = o.get("destinations");
                let d = Obj::new(&d)?;
                SenderStateCounts {
                    idle: d.count("idle")?,
                    sending: d.count("sending")?,
                    backing_off: d.count("backing_off")?,
                    catching_up: d.count("catching_up")?,
                }
            },
            oldest_undelivered_age_secs: o.number("oldest_undelivered_age_secs")?,
            top_destinations: o.list("top_destinations")?,
        })
    }
}

/// A shard number (a list item).
impl FromJs for u16 {
    fn from_js(v: &JsValue) -> Result<u16, String> {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=65_535.0).contains(f))
            .map(|f| f as u16)
            .ok_or_else(|| "a shard is not a small integer".to_owned())
    }
}

impl FromJs for InstanceRow {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(InstanceRow {
            name: o.string("name")?,
            started_ts: o.int("started_ts")?,
            heartbeat_ts: o.int("heartbeat_ts")?,
            live: o
                .get("live")
                .as_bool()
                .ok_or_else(|| Obj::bad("live", "a boolean"))?,
            shard_count: u32::try_from(o.count("shard_count")?)
                .map_err(|_| Obj::bad("shard_count", "a count"))?,
            shards: o.list("shards")?,
        })
    }
}

impl FromJs for InstancesOverview {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(InstancesOverview {
            this_instance: o.string("this_instance")?,
            shards_total: u32::try_from(o.count("shards_total")?)
                .map_err(|_| Obj::bad("shards_total", "a count"))?,
            instances: o.list("instances")?,
        })
    }
}

impl FromJs for DestinationRoom {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(DestinationRoom {
            room_id: o.string("room_id")?,
            stream_ordering: o.int("stream_ordering")?,
        })
    }
}

impl FromJs for RoomsPage {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(RoomsPage {
            rooms: o.list("rooms")?,
            total: o.count("total")?,
            next_token: o.get("next_token").as_string(),
        })
    }
}

impl FromJs for FederationSummary {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(FederationSummary {
            total: o.count("total")?,
            healthy: o.count("healthy")?,
            backing_off: o.count("backing_off")?,
            retry_due: o.count("retry_due")?,
            never_reached: o.count("never_reached")?,
            unknown: o.count("unknown")?,
            now_ts: o.int("now_ts")?,
        })
    }
}

impl FromJs for LoginResponse {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(LoginResponse {
            user_id: o.string("user_id")?,
            access_token: o.string("access_token")?,
            home_server: o.get("home_server").as_string().unwrap_or_default(),
            device_id: o.get("device_id").as_string().unwrap_or_default(),
        })
    }
}

impl FromJs for MatrixError {
    fn from_js(v: &JsValue) -> Result<Self, String> {
        let o = Obj::new(v)?;
        Ok(MatrixError {
            errcode: o.string("errcode")?,
            error: o.get("error").as_string().unwrap_or_default(),
            retry_after_ms: o.opt_int("retry_after_ms")?.and_then(|n| n.try_into().ok()),
        })
    }
}
