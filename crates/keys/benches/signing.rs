//! What signing costs per federation request (issue 4's benchmark, part 1),
//! with criterion:
//!
//! - `canonical_json/transaction_50_pdus`: Matrix canonical JSON of a typical
//!   `PUT /send/{txnId}` body, 50 PDUs of the shape rooms v10 send (auth and
//!   prev events, hashes, signatures, content, unsigned), about 20 KB;
//! - `canonical_json/small_request`: canonical JSON of the small object an
//!   X-Matrix signature covers for a GET (method, uri, origin, destination);
//! - `sign_request/get_no_body` and `sign_request/put_50_pdus`:
//!   `x_matrix::sign_request` with an ed25519 key, i.e. building the signed
//!   object, its canonical JSON and the signature, plus `to_header()` (what
//!   the federation client does before sending);
//! - `verify_request/…`: the receiving side, `XMatrix::parse` of the header
//!   and `x_matrix::verify_request` against the sender's key.
//!
//! Run: `cargo bench -p herald --bench signing` (about 30 s: each case has
//! 1 s of warm-up and 3 s of measurement, 30 samples). Criterion's usual
//! arguments work after `--`, e.g. `-- sign_request` to run only those.
//!
//! Every input is checked once before it is measured (the canonical
//! JSON parses back to the same value and has the expected size, each
//! signature verifies and a changed request does not), so a broken path
//! cannot pass as a fast one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_keys::signing::SigningKey;
use herald_keys::x_matrix::{request_json, sign_request, verify_request, XMatrix};
use herald_keys::{to_canonical_json, ServerKeys};
use serde_json::{json, Value};

const ORIGIN: &str = "origin.test";
const DESTINATION: &str = "remote.example.org:8448";
const GET_URI: &str =
    "/_matrix/federation/v1/query/profile?user_id=%40alice%3Aremote.example.org&field=displayname";
const PUT_URI: &str = "/_matrix/federation/v1/send/1750000000000-42";
const PDUS: usize = 50;

/// A deterministic 43-character unpadded base64 string (a SHA-256 or an
/// event id's hash), different for each `n`.
fn b64(n: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

/// One PDU as a rooms-v10 server sends it in a transaction.
fn pdu(i: u64) -> Value {
    let event_id = |n: u64| format!("${}", b64(n, 43).replace(['+', '/'], "_"));
    json!({
        "auth_events": [event_id(1), event_id(2), event_id(3 + i % 5)],
        "content": {
            "body": format!("Message {i}: see you at the meetup, café at 18:00"),
            "msgtype": "m.text",
        },
        "depth": 10_000 + i,
        "hashes": { "sha256": b64(1_000 + i, 43) },
        "origin": ORIGIN,
        "origin_server_ts": 1_750_000_000_000u64 + i * 1_234,
        "prev_events": [event_id(100 + i)],
        "room_id": format!("!{}:{ORIGIN}", b64(7, 18).replace(['+', '/'], "x")),
        "sender": format!("@user{}:{ORIGIN}", i % 7),
        "signatures": { ORIGIN: { "ed25519:a_1": b64(2_000 + i, 86) } },
        "type": "m.room.message",
        "unsigned": { "age_ts": 1_750_000_000_000u64 + i * 1_234 },
    })
}

/// A `PUT /send/{txnId}` body with 50 PDUs.
fn transaction() -> Value {
    json!({
        "origin": ORIGIN,
        "origin_server_ts": 1_750_000_060_000u64,
        "pdus": (0..PDUS as u64).map(pdu).collect::<Vec<_>>(),
        "edus": [],
    })
}

fn keys() -> ServerKeys {
    ServerKeys::new(
        ORIGIN,
        SigningKey::from_seed("a_1", &[42; 32]).expect("signing key"),
    )
}

fn sign_header(keys: &ServerKeys, method: &str, uri: &str, content: Option<&Value>) -> String {
    sign_request(keys, method, uri, DESTINATION, content)
        .expect("sign")
        .to_header()
}

/// The checks made once before measuring.
fn check_inputs(keys: &ServerKeys, txn: &Value, small: &Value) -> usize {
    let canonical = to_canonical_json(txn).expect("canonical transaction");
    assert_eq!(
        serde_json::from_str::<Value>(&canonical).expect("canonical JSON parses"),
        *txn
    );
    assert!(
        (15_000..40_000).contains(&canonical.len()),
        "the transaction body should be about 20 KB, is {} bytes",
        canonical.len()
    );
    assert_eq!(txn["pdus"].as_array().map(Vec::len), Some(PDUS), "50 PDUs");
    let small_canonical = to_canonical_json(small).expect("canonical small object");
    assert!(small_canonical.starts_with(r#"{"destination":"#));

    let vk = keys.current().verify_key();
    for (method, uri, content) in [("GET", GET_URI, None), ("PUT", PUT_URI, Some(txn))] {
        let header = XMatrix::parse(&sign_header(keys, method, uri, content)).expect("parse");
        verify_request(&header, method, uri, DESTINATION, content, &vk).expect("verifies");
        assert!(
            verify_request(&header, method, "/other", DESTINATION, content, &vk).is_err(),
            "a changed request must not verify"
        );
    }
    canonical.len()
}

fn benches(c: &mut Criterion) {
    let keys = keys();
    let txn = transaction();
    let small = request_json("GET", GET_URI, ORIGIN, DESTINATION, None);
    let txn_bytes = check_inputs(&keys, &txn, &small);
    println!(
        "transaction body: {PDUS} PDUs, {txn_bytes} bytes of canonical JSON; small request object: {} bytes",
        to_canonical_json(&small).expect("canonical").len()
    );

    let mut g = c.benchmark_group("canonical_json");
    g.throughput(Throughput::Bytes(txn_bytes as u64));
    g.bench_function("transaction_50_pdus", |b| {
        b.iter(|| to_canonical_json(black_box(&txn)).expect("canonical"))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("small_request", |b| {
        b.iter(|| to_canonical_json(black_box(&small)).expect("canonical"))
    });
    g.finish();

    let mut g = c.benchmark_group("sign_request");
    g.bench_function("get_no_body", |b| {
        b.iter(|| sign_header(&keys, "GET", black_box(GET_URI), None))
    });
    g.bench_function("put_50_pdus", |b| {
        b.iter(|| sign_header(&keys, "PUT", black_box(PUT_URI), Some(black_box(&txn))))
    });
    g.finish();

    let vk = keys.current().verify_key();
    let get_header = sign_header(&keys, "GET", GET_URI, None);
    let put_header = sign_header(&keys, "PUT", PUT_URI, Some(&txn));
    let mut g = c.benchmark_group("verify_request");
    g.bench_function("get_no_body", |b| {
        b.iter(|| {
            let h = XMatrix::parse(black_box(&get_header)).expect("parse");
            verify_request(&h, "GET", GET_URI, DESTINATION, None, &vk).expect("verifies")
        })
    });
    g.bench_function("put_50_pdus", |b| {
        b.iter(|| {
            let h = XMatrix::parse(black_box(&put_header)).expect("parse");
            verify_request(&h, "PUT", PUT_URI, DESTINATION, Some(&txn), &vk).expect("verifies")
        })
    });
    g.finish();
}

criterion_group! {
    name = signing;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = benches
}
criterion_main!(signing);
