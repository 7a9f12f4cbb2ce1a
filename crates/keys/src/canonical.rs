//! Matrix canonical JSON (spec appendices, "Canonical JSON"), written by hand
//! over `serde_json::Value`: the exact bytes that get signed and sent.
//!
//! The rules, and how this file keeps them:
//! - object keys sorted by Unicode code point. Keys are sorted here, every
//!   time, never taken in the map's order (serde_json's `preserve_order` may be
//!   switched on by any crate in the build). Rust strings are UTF-8, and UTF-8
//!   byte order is code point order, so `str`'s `Ord` is the spec's order;
//! - no insignificant whitespace;
//! - strings as raw UTF-8; only `"` and `\` and the control characters
//!   U+0000..U+001F are escaped, each by its shortest form (`\b \t \n \f \r`,
//!   otherwise `\u00XX` with lowercase hex), as the spec's grammar requires;
//! - numbers are integers in `[-(2^53)+1, 2^53-1]`, without exponent, fraction
//!   or a negative zero. serde_json reads `1e10` and `-0` as floats; a float
//!   holding an exact integer in range is written as that integer (the spec's
//!   own example turns `{"a":-0,"b":1e10}` into `{"a":0,"b":10000000000}`).
//!   Any other float is refused with [`CanonicalJsonError::Float`], and an
//!   integer out of range with [`CanonicalJsonError::OutOfRange`].

use serde_json::{Map, Number, Value};

/// The largest integer canonical JSON allows, `2^53 - 1`; the smallest is its
/// negation.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Why a value has no canonical JSON form. `path` locates the bad number from
/// the root, as `a.b[2]` (`.` alone for the root itself).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CanonicalJsonError {
    #[error("canonical JSON allows integers only, found {value} at {path}")]
    Float { path: String, value: f64 },
    #[error("integer {value} at {path} is outside canonical JSON's range [-(2^53)+1, 2^53-1]")]
    OutOfRange { path: String, value: String },
}

impl CanonicalJsonError {
    /// Where the offending number is.
    pub fn path(&self) -> &str {
        match self {
            Self::Float { path, .. } | Self::OutOfRange { path, .. } => path,
        }
    }

    /// Prefixes the path with the segment of an enclosing container, on the
    /// way out of the recursion (so the happy path never builds paths).
    fn within(mut self, segment: Segment<'_>) -> Self {
        let path = match &mut self {
            Self::Float { path, .. } | Self::OutOfRange { path, .. } => path,
        };
        let rest = std::mem::take(path);
        let mut joined = match segment {
            Segment::Key(key) => key.to_owned(),
            Segment::Index(i) => format!("[{i}]"),
        };
        if !rest.is_empty() {
            if !rest.starts_with('[') {
                joined.push('.');
            }
            joined.push_str(&rest);
        }
        *path = joined;
        self
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The canonical JSON text of `value`.
///
/// ```
/// use herald_keys::canonical::to_canonical_json;
/// let value = serde_json::json!({"b": "2", "a": "1"});
/// assert_eq!(to_canonical_json(&value).unwrap(), r#"{"a":"1","b":"2"}"#);
/// ```
pub fn to_canonical_json(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::with_capacity(128);
    write_value(value, &mut out).map_err(finish_path)?;
    Ok(out)
}

/// The canonical JSON text of an object, leaving out the members named in
/// `skip` (signing leaves out `signatures` and `unsigned`) without copying it.
pub fn to_canonical_json_without(
    object: &Map<String, Value>,
    skip: &[&str],
) -> Result<String, CanonicalJsonError> {
    let mut out = String::with_capacity(128);
    write_object(object, skip, &mut out).map_err(finish_path)?;
    Ok(out)
}

/// Appends the canonical JSON text of `value` to `out`. On error `out` holds
/// a partial text and must be discarded.
pub fn write_canonical_json(value: &Value, out: &mut String) -> Result<(), CanonicalJsonError> {
    write_value(value, out).map_err(finish_path)
}

fn finish_path(mut error: CanonicalJsonError) -> CanonicalJsonError {
    let path = match &mut error {
        CanonicalJsonError::Float { path, .. } | CanonicalJsonError::OutOfRange { path, .. } => {
            path
        }
    };
    if path.is_empty() {
        path.push('.');
    }
    error
}

fn write_value(value: &Value, out: &mut String) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out).map_err(|e| e.within(Segment::Index(i)))?;
            }
            out.push(']');
        }
        Value::Object(object) => write_object(object, &[], out)?,
    }
    Ok(())
}

fn write_object(
    object: &Map<String, Value>,
    skip: &[&str],
    out: &mut String,
) -> Result<(), CanonicalJsonError> {
    let mut members: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .collect();
    // Byte order of UTF-8 is Unicode code point order: the spec's order.
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_value(value, out).map_err(|e| e.within(Segment::Key(key)))?;
    }
    out.push('}');
    Ok(())
}

fn write_number(n: &Number, out: &mut String) -> Result<(), CanonicalJsonError> {
    let integer = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        // Only values above i64::MAX get here: far out of range.
        return Err(CanonicalJsonError::OutOfRange {
            path: String::new(),
            value: n.to_string(),
        });
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(CanonicalJsonError::Float {
                path: String::new(),
                value: f,
            });
        }
        if f.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(CanonicalJsonError::OutOfRange {
                path: String::new(),
                value: n.to_string(),
            });
        }
        // Exact: |f| <= 2^53 - 1 and integral. `-0.0` becomes `0`.
        f as i64
    };
    if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&integer) {
        return Err(CanonicalJsonError::OutOfRange {
            path: String::new(),
            value: integer.to_string(),
        });
    }
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "{integer}");
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            0x08 => Some("\\b"),
            0x09 => Some("\\t"),
            0x0a => Some("\\n"),
            0x0c => Some("\\f"),
            0x0d => Some("\\r"),
            0x00..=0x1f => None,
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `start..i` and the
        // rest of the string stay on character boundaries.
        out.push_str(&s[start..i]);
        match escape {
            Some(short) => out.push_str(short),
            None => {
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses `input` as JSON text and returns its canonical form.
    fn canonical(input: &str) -> Result<String, CanonicalJsonError> {
        let value: Value = serde_json::from_str(input).expect("test input is JSON");
        to_canonical_json(&value)
    }

    #[test]
    fn spec_vectors() {
        // Every example in the spec's "Canonical JSON" section.
        let vectors = [
            ("{}", "{}"),
            (
                r#"{
                    "one": 1,
                    "two": "Two"
                }"#,
                r#"{"one":1,"two":"Two"}"#,
            ),
            (
                r#"{
                    "b": "2",
                    "a": "1"
                }"#,
                r#"{"a":"1","b":"2"}"#,
            ),
            (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
            (
                r#"{
                    "auth": {
                        "success": true,
                        "mxid": "@john.doe:example.com",
                        "profile": {
                            "display_name": "John Doe",
                            "three_pids": [
                                {"medium": "email", "address": "john.doe@example.org"},
                                {"medium": "msisdn", "address": "123456789"}
                            ]
                        }
                    }
                }"#,
                r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#,
            ),
            (r#"{"a": "日本語"}"#, r#"{"a":"日本語"}"#),
            (r#"{"本": 2, "日": 1}"#, r#"{"日":1,"本":2}"#),
            (r#"{"a": "\u65E5"}"#, r#"{"a":"日"}"#),
            (r#"{"a": null}"#, r#"{"a":null}"#),
            (r#"{"a": -0, "b": 1e10}"#, r#"{"a":0,"b":10000000000}"#),
        ];
        for (input, expected) in vectors {
            assert_eq!(canonical(input).unwrap(), expected, "input: {input}");
        }
    }

    #[test]
    fn keys_sort_by_code_point_not_by_insertion() {
        let mut object = Map::new();
        for key in ["z", "a", "é", "Z", "\u{1F600}", "\u{FFFD}", "aa", ""] {
            object.insert(key.to_owned(), json!(1));
        }
        assert_eq!(
            to_canonical_json(&Value::Object(object)).unwrap(),
            "{\"\":1,\"Z\":1,\"a\":1,\"aa\":1,\"z\":1,\"é\":1,\"\u{FFFD}\":1,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn strings_escape_only_what_json_requires_in_the_shortest_form() {
        let value = json!("quote\" backslash\\ slash/ \u{8}\u{9}\u{a}\u{c}\u{d} \u{0}\u{b}\u{1f}\u{7f} \u{2028} é");
        assert_eq!(
            to_canonical_json(&value).unwrap(),
            "\"quote\\\" backslash\\\\ slash/ \\b\\t\\n\\f\\r \\u0000\\u000b\\u001f\u{7f} \u{2028} é\""
        );
    }

    #[test]
    fn no_whitespace_in_nested_arrays_and_objects() {
        let value =
            json!({"list": [1, [2, {"k": [true, false, null]}], "x"], "empty": [], "o": {}});
        assert_eq!(
            to_canonical_json(&value).unwrap(),
            r#"{"empty":[],"list":[1,[2,{"k":[true,false,null]}],"x"],"o":{}}"#
        );
    }

    #[test]
    fn integers_at_the_edges_of_the_range_are_kept() {
        assert_eq!(
            canonical("[9007199254740991, -9007199254740991, 0, -1]").unwrap(),
            "[9007199254740991,-9007199254740991,0,-1]"
        );
        assert_eq!(
            canonical("[1.0, -2e3, 1e15]").unwrap(),
            "[1,-2000,1000000000000000]"
        );
        // Built from f64 directly: serde_json's text parser rounds long
        // decimals (without its `float_roundtrip` feature).
        let edges = json!([9007199254740991.0_f64, -9007199254740991.0_f64, -0.0_f64]);
        assert_eq!(
            to_canonical_json(&edges).unwrap(),
            "[9007199254740991,-9007199254740991,0]"
        );
    }

    #[test]
    fn integers_beyond_the_range_are_refused_with_their_path() {
        let error = canonical(r#"{"a": {"b": [0, 9007199254740992]}}"#).unwrap_err();
        assert_eq!(
            error,
            CanonicalJsonError::OutOfRange {
                path: "a.b[1]".into(),
                value: "9007199254740992".into()
            }
        );
        assert!(matches!(
            canonical("-9007199254740992"),
            Err(CanonicalJsonError::OutOfRange { .. })
        ));
        assert!(matches!(
            canonical("18446744073709551615"),
            Err(CanonicalJsonError::OutOfRange { .. })
        ));
        assert!(matches!(
            canonical("1e300"),
            Err(CanonicalJsonError::OutOfRange { .. })
        ));
    }

    #[test]
    fn fractions_are_refused_as_floats() {
        let error = canonical(r#"{"ratio": 0.5}"#).unwrap_err();
        assert_eq!(
            error,
            CanonicalJsonError::Float {
                path: "ratio".into(),
                value: 0.5
            }
        );
        assert_eq!(
            error.to_string(),
            "canonical JSON allows integers only, found 0.5 at ratio"
        );
        assert_eq!(canonical("1.5").unwrap_err().path(), ".");
        assert_eq!(canonical("[[0, 1e-7]]").unwrap_err().path(), "[0][1]");
    }

    #[test]
    fn members_can_be_left_out_without_copying_the_object() {
        let value = json!({"b": 1, "signatures": {"x": {}}, "unsigned": {"age": 2}, "a": 0});
        let Value::Object(object) = value else {
            unreachable!()
        };
        assert_eq!(
            to_canonical_json_without(&object, &["signatures", "unsigned"]).unwrap(),
            r#"{"a":0,"b":1}"#
        );
    }
}
