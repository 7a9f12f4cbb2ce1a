//! Query parameters of the federation admin API and their validation.
//!
//! Parsing follows Synapse 1.163 (`synapse/http/servlet.py`): parameters are
//! checked in the order the servlet reads them (`from`, `limit`, then for the
//! list `destination`, `order_by`, `dir`), the first value of a repeated
//! parameter wins, and the error texts and codes are Synapse's. Deliberate
//! deviations: only plain decimal integers are accepted (no `+5`, `1_0` or
//! surrounding spaces), and an integer beyond 2^63−1 is a 400, not a 500.

use std::fmt;

/// The error codes this module produces.
pub const M_INVALID_PARAM: &str = "M_INVALID_PARAM";
pub const M_UNKNOWN: &str = "M_UNKNOWN";

/// Default page size of both lists, as in Synapse.
pub const DEFAULT_LIMIT: u64 = 100;

/// A rejected query parameter: a 400 with this Matrix error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errcode}: {message}")]
pub struct ParamError {
    pub errcode: &'static str,
    pub message: String,
}

/// The column the destinations list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OrderBy {
    #[default]
    Destination,
    RetryLastTs,
    RetryInterval,
    FailureTs,
    LastSuccessfulStreamOrdering,
}

impl OrderBy {
    /// Every order, in Synapse's declaration order (used in its error text).
    pub const ALL: [OrderBy; 5] = [
        OrderBy::Destination,
        OrderBy::RetryLastTs,
        OrderBy::RetryInterval,
        OrderBy::FailureTs,
        OrderBy::LastSuccessfulStreamOrdering,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderBy::Destination => "destination",
            OrderBy::RetryLastTs => "retry_last_ts",
            OrderBy::RetryInterval => "retry_interval",
            OrderBy::FailureTs => "failure_ts",
            OrderBy::LastSuccessfulStreamOrdering => "last_successful_stream_ordering",
        }
    }

    pub fn parse(s: &str) -> Option<OrderBy> {
        OrderBy::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sort direction: `f` (ascending, the default) or `b` (descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    Forwards,
    Backwards,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forwards => "f",
            Direction::Backwards => "b",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "f" => Some(Direction::Forwards),
            "b" => Some(Direction::Backwards),
            _ => None,
        }
    }

    pub fn flip(self) -> Direction {
        match self {
            Direction::Forwards => Direction::Backwards,
            Direction::Backwards => Direction::Forwards,
        }
    }
}

/// Validated query of `GET .../federation/destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationsQuery {
    pub from: u64,
    pub limit: u64,
    /// Case-insensitive substring filter; `None` (or an empty value) lists all.
    pub destination: Option<String>,
    pub order_by: OrderBy,
    pub dir: Direction,
}

impl Default for DestinationsQuery {
    fn default() -> Self {
        DestinationsQuery {
            from: 0,
            limit: DEFAULT_LIMIT,
            destination: None,
            order_by: OrderBy::Destination,
            dir: Direction::Forwards,
        }
    }
}

/// Validated query of `GET .../federation/destinations/<name>/rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomsQuery {
    pub from: u64,
    pub limit: u64,
    pub dir: Direction,
}

impl Default for RoomsQuery {
    fn default() -> Self {
        RoomsQuery {
            from: 0,
            limit: DEFAULT_LIMIT,
            dir: Direction::Forwards,
        }
    }
}

/// A URL query string split into percent-decoded byte pairs, in order.
///
/// Decoding follows Python's `parse_qs(keep_blank_values=True)` as Twisted
/// uses it: pairs split on `&`, `+` means a space, a key without `=` has an
/// empty value, and empty pairs are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawQuery {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawQuery {
    pub fn parse(query: &str) -> RawQuery {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        RawQuery { pairs }
    }

    /// The first value given for `name`, if any.
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Every value given for `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text (Synapse's `parse_string`, whose
    /// default encoding is ASCII; every repeated value must decode).
    pub fn string(&self, name: &str) -> Result<Option<String>, ParamError> {
        let mut first = None;
        for bytes in self.all(name) {
            if !bytes.is_ascii() {
                return Err(ParamError {
                    errcode: M_UNKNOWN,
                    message: format!("Query parameter '{name}' must be ascii"),
                });
            }
            if first.is_none() {
                first = Some(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        Ok(first)
    }

    /// The first value of `name` as a non-negative integer (Synapse's
    /// `parse_integer` with `negative=False`), or `default` when absent.
    pub fn non_negative_integer(&self, name: &str, default: u64) -> Result<u64, ParamError> {
        let Some(bytes) = self.first(name) else {
            return Ok(default);
        };
        let not_integer = || ParamError {
            errcode: M_INVALID_PARAM,
            message: format!("Query parameter {name} must be an integer"),
        };
        let (negative, digits) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(not_integer());
        }
        if negative && digits.iter().any(|&d| d != b'0') {
            return Err(ParamError {
                errcode: M_INVALID_PARAM,
                message: format!("Query parameter {name} must be a positive integer."),
            });
        }
        // Digits only, so the sole failure left is overflow; SQL integers are
        // 64-bit signed, so anything above i64::MAX is refused here.
        let text = std::str::from_utf8(digits).map_err(|_| not_integer())?;
        let value: u64 = text.parse().map_err(|_| too_large(name))?;
        if value > i64::MAX as u64 {
            return Err(too_large(name));
        }
        Ok(value)
    }

    /// The first value of `name`, where every value given must be one of
    /// `allowed` (Synapse's `parse_string(allowed_values=...)`/`parse_enum`).
    pub fn choice<T>(
        &self,
        name: &str,
        allowed: &[&str],
        parse: impl Fn(&str) -> Option<T>,
        default: T,
    ) -> Result<T, ParamError> {
        self.string(name)?;
        let mut first = None;
        for bytes in self.all(name) {
            let value = std::str::from_utf8(bytes).ok().and_then(&parse);
            match value {
                Some(v) => {
                    if first.is_none() {
                        first = Some(v);
                    }
                }
                None => {
                    return Err(ParamError {
                        errcode: M_INVALID_PARAM,
                        message: format!(
                            "Query parameter '{name}' must be one of [{}]",
                            allowed
                                .iter()
                                .map(|v| format!("'{v}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            }
        }
        Ok(first.unwrap_or(default))
    }

    fn direction(&self) -> Result<Direction, ParamError> {
        // Synapse's `Direction` enum declares BACKWARDS first.
        self.choice("dir", &["b", "f"], Direction::parse, Direction::Forwards)
    }
}

fn too_large(name: &str) -> ParamError {
    ParamError {
        errcode: M_INVALID_PARAM,
        message: format!(
            "Query parameter {name} must be an integer no larger than {}",
            i64::MAX
        ),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a query component; `+` is a space; a malformed escape is
/// kept literally (as Python's `unquote` does).
pub fn percent_decode(s: &str) -> Vec<u8> {
    decode(s, true)
}

/// Percent-decodes a path segment (`+` stays `+`), as Python's `unquote`.
pub fn percent_decode_path(s: &str) -> String {
    String::from_utf8_lossy(&decode(s, false)).into_owned()
}

fn decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' && plus_is_space {
            out.push(b' ');
        } else if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
            out.push(b'%');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// Synapse's `next_token`: present iff `from + limit < total`, and then the
/// offset after the rows returned.
pub fn next_token(from: u64, limit: u64, returned: usize, total: u64) -> Option<String> {
    if (from as u128) + (limit as u128) < total as u128 {
        Some((from as u128 + returned as u128).to_string())
    } else {
        None
    }
}

/// `from` and `limit` as query parts, left out when they are the defaults.
fn paging_parts(from: u64, limit: u64) -> Vec<String> {
    let mut parts = Vec::new();
    if from != 0 {
        parts.push(format!("from={from}"));
    }
    if limit != DEFAULT_LIMIT {
        parts.push(format!("limit={limit}"));
    }
    parts
}

impl DestinationsQuery {
    /// Validates a raw query in Synapse's order: `from`, `limit`,
    /// `destination`, `order_by`, `dir`.
    pub fn from_raw(raw: &RawQuery) -> Result<DestinationsQuery, ParamError> {
        let from = raw.non_negative_integer("from", 0)?;
        let limit = raw.non_negative_integer("limit", DEFAULT_LIMIT)?;
        let destination = raw.string("destination")?.filter(|d| !d.is_empty());
        let allowed: Vec<&str> = OrderBy::ALL.iter().map(|o| o.as_str()).collect();
        let order_by = raw.choice("order_by", &allowed, OrderBy::parse, OrderBy::Destination)?;
        let dir = raw.direction()?;
        Ok(DestinationsQuery {
            from,
            limit,
            destination,
            order_by,
            dir,
        })
    }

    pub fn parse(query: &str) -> Result<DestinationsQuery, ParamError> {
        DestinationsQuery::from_raw(&RawQuery::parse(query))
    }

    /// The query string that requests this page (defaults left out).
    pub fn to_query_string(&self) -> String {
        let mut parts = paging_parts(self.from, self.limit);
        if let Some(d) = &self.destination {
            parts.push(format!("destination={}", percent_encode(d)));
        }
        if self.order_by != OrderBy::Destination {
            parts.push(format!("order_by={}", self.order_by));
        }
        if self.dir != Direction::Forwards {
            parts.push(format!("dir={}", self.dir.as_str()));
        }
        parts.join("&")
    }
}

impl RoomsQuery {
    /// Validates a raw query in Synapse's order: `from`, `limit`, `dir`.
    pub fn from_raw(raw: &RawQuery) -> Result<RoomsQuery, ParamError> {
        let from = raw.non_negative_integer("from", 0)?;
        let limit = raw.non_negative_integer("limit", DEFAULT_LIMIT)?;
        let dir = raw.direction()?;
        Ok(RoomsQuery { from, limit, dir })
    }

    pub fn parse(query: &str) -> Result<RoomsQuery, ParamError> {
        RoomsQuery::from_raw(&RawQuery::parse(query))
    }

    pub fn to_query_string(&self) -> String {
        let mut parts = paging_parts(self.from, self.limit);
        if self.dir != Direction::Forwards {
            parts.push(format!("dir={}", self.dir.as_str()));
        }
        parts.join("&")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for
/// query values and path segments (a destination like `[::1]:8448`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(query: &str) -> String {
        DestinationsQuery::parse(query).unwrap_err().message
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(
            DestinationsQuery::parse("").unwrap(),
            DestinationsQuery::default()
        );
        assert_eq!(RoomsQuery::parse("").unwrap(), RoomsQuery::default());
    }

    #[test]
    fn reads_every_parameter() {
        let q = DestinationsQuery::parse(
            "from=5&limit=10&destination=Mat%20rix&order_by=failure_ts&dir=b",
        )
        .unwrap();
        assert_eq!(
            q,
            DestinationsQuery {
                from: 5,
                limit: 10,
                destination: Some("Mat rix".into()),
                order_by: OrderBy::FailureTs,
                dir: Direction::Backwards,
            }
        );
    }

    #[test]
    fn synapse_error_texts() {
        assert_eq!(err("from=abc"), "Query parameter from must be an integer");
        assert_eq!(err("limit=1.5"), "Query parameter limit must be an integer");
        assert_eq!(
            err("from=-1"),
            "Query parameter from must be a positive integer."
        );
        assert_eq!(
            err("limit=-7"),
            "Query parameter limit must be a positive integer."
        );
        assert_eq!(
            err("order_by=bogus"),
            "Query parameter 'order_by' must be one of ['destination', 'retry_last_ts', \
             'retry_interval', 'failure_ts', 'last_successful_stream_ordering']"
        );
        assert_eq!(
            err("dir=x"),
            "Query parameter 'dir' must be one of ['b', 'f']"
        );
        assert_eq!(
            err("dir=F"),
            "Query parameter 'dir' must be one of ['b', 'f']"
        );
        let e = DestinationsQuery::parse("destination=%C3%9C").unwrap_err();
        assert_eq!(e.errcode, M_UNKNOWN);
        assert_eq!(e.message, "Query parameter 'destination' must be ascii");
        assert_eq!(
            DestinationsQuery::parse("from=x").unwrap_err().errcode,
            M_INVALID_PARAM
        );
    }

    #[test]
    fn validation_order_is_synapses() {
        assert!(err("dir=x&order_by=y&limit=z&from=w").starts_with("Query parameter from"));
        assert!(err("dir=x&order_by=y&limit=z").starts_with("Query parameter limit"));
        assert!(err("dir=x&order_by=y").starts_with("Query parameter 'order_by'"));
        assert!(err("dir=x&destination=%FF").starts_with("Query parameter 'destination'"));
        assert!(RoomsQuery::parse("dir=x&limit=-1")
            .unwrap_err()
            .message
            .contains("limit"));
    }

    #[test]
    fn first_value_wins() {
        // Integers: the first value, later ones unread (even invalid ones).
        let q =
            DestinationsQuery::parse("from=1&from=x&order_by=retry_interval&order_by=failure_ts")
                .unwrap();
        assert_eq!(q.from, 1);
        assert_eq!(q.order_by, OrderBy::RetryInterval);
        // Strings: the first value, but every value must be valid.
        assert!(DestinationsQuery::parse("order_by=destination&order_by=x").is_err());
        assert!(DestinationsQuery::parse("dir=b&dir=F").is_err());
        assert!(DestinationsQuery::parse("destination=a&destination=%C3%9C").is_err());
    }

    #[test]
    fn only_plain_decimal_integers() {
        for bad in ["1_0", "%2B5", "+5", "%205", "5%20", "", "0x10", "1e3", "٣"] {
            assert!(
                DestinationsQuery::parse(&format!("from={bad}")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(DestinationsQuery::parse("from=007").unwrap().from, 7);
        assert_eq!(DestinationsQuery::parse("from=-0").unwrap().from, 0);
        assert!(DestinationsQuery::parse("from").is_err());
    }

    #[test]
    fn integers_beyond_i64_are_a_400() {
        assert_eq!(
            DestinationsQuery::parse("limit=9223372036854775807")
                .unwrap()
                .limit,
            i64::MAX as u64
        );
        for big in ["9223372036854775808", "99999999999999999999999"] {
            let e = DestinationsQuery::parse(&format!("limit={big}")).unwrap_err();
            assert_eq!(e.errcode, M_INVALID_PARAM);
        }
        // A huge negative number is still "negative" first, as in Synapse.
        assert_eq!(
            err("from=-99999999999999999999"),
            "Query parameter from must be a positive integer."
        );
    }

    #[test]
    fn empty_filter_means_no_filter() {
        assert_eq!(
            DestinationsQuery::parse("destination=")
                .unwrap()
                .destination,
            None
        );
        assert_eq!(
            DestinationsQuery::parse("destination=a%25_+b")
                .unwrap()
                .destination
                .as_deref(),
            Some("a%_ b")
        );
    }

    #[test]
    fn next_token_exactly_when_more_rows() {
        assert_eq!(next_token(0, 10, 10, 25), Some("10".into()));
        assert_eq!(next_token(20, 10, 5, 25), None);
        assert_eq!(next_token(10, 10, 10, 20), None);
        assert_eq!(next_token(0, 0, 0, 1), Some("0".into()));
        assert_eq!(next_token(i64::MAX as u64, i64::MAX as u64, 0, 3), None);
    }

    #[test]
    fn query_strings_round_trip() {
        let q = DestinationsQuery {
            from: 50,
            limit: 25,
            destination: Some("a b&c%".into()),
            order_by: OrderBy::LastSuccessfulStreamOrdering,
            dir: Direction::Backwards,
        };
        assert_eq!(DestinationsQuery::parse(&q.to_query_string()).unwrap(), q);
        let r = RoomsQuery {
            from: 3,
            limit: 7,
            dir: Direction::Backwards,
        };
        assert_eq!(RoomsQuery::parse(&r.to_query_string()).unwrap(), r);
        assert_eq!(DestinationsQuery::default().to_query_string(), "");
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%zz%41"), b"%zzA");
        assert_eq!(percent_encode("[::1]:8448"), "%5B%3A%3A1%5D%3A8448");
        assert_eq!(percent_decode_path("a+b%3A1%FF"), "a+b:1\u{FFFD}");
    }
}
