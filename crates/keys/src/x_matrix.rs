//! The `Authorization: X-Matrix …` header of federation requests: the JSON
//! a request's signature covers (`{method, uri, origin, destination,
//! content?}`), signing a request we send, parsing a header we receive, and
//! verifying it against the origin's key (what the demo's simulated
//! homeservers and the tests' receivers do to Herald's requests).
//!
//! Parsing follows RFC 9110's auth-param syntax as the spec asks: the scheme
//! and parameter names are case-insensitive, values are tokens or quoted
//! strings with backslash escapes, unknown parameters are ignored, and a
//! missing `destination` is accepted (older servers omit it).

use serde_json::{json, Map, Value};

use super::canonical::{to_canonical_json, write_canonical_json};
use super::signing::{self, SigningError, VerifyError, VerifyKey};
use super::ServerKeys;

/// The scheme name.
pub const SCHEME: &str = "X-Matrix";

/// A parsed or built `X-Matrix` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    /// Absent in requests from servers older than spec v1.3.
    pub destination: Option<String>,
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded base64 ed25519 signature.
    pub sig: String,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum XMatrixError {
    #[error("the Authorization header is not of scheme X-Matrix")]
    WrongScheme,
    #[error("malformed X-Matrix header: {0}")]
    Malformed(&'static str),
    #[error("X-Matrix parameter `{0}` is given twice")]
    Duplicate(String),
    #[error("X-Matrix parameter `{0}` is missing")]
    Missing(&'static str),
    #[error("the request is for {found}, not for {expected}")]
    WrongDestination { expected: String, found: String },
    #[error("bad X-Matrix signature: {0}")]
    Signature(#[from] VerifyError),
}

/// The JSON object a request's signature covers. `uri` is the path with its
/// query string, exactly as sent.
pub fn request_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Value {
    let mut object = Map::new();
    object.insert("method".into(), json!(method));
    object.insert("uri".into(), json!(uri));
    object.insert("origin".into(), json!(origin));
    object.insert("destination".into(), json!(destination));
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    Value::Object(object)
}

/// The canonical JSON of [`request_json`], built around the body's
/// canonical JSON as it is sent (the members' names are already in code point
/// order: content, destination, method, origin, uri), so that signing does
/// not copy the body or canonicalise it a second time.
pub fn canonical_request(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    canonical_content: Option<&str>,
) -> String {
    let mut out = String::with_capacity(canonical_content.map_or(0, str::len) + 128);
    out.push('{');
    if let Some(content) = canonical_content {
        out.push_str("\"content\":");
        out.push_str(content);
        out.push(',');
    }
    let members = [
        ("destination", destination),
        ("method", method),
        ("origin", origin),
        ("uri", uri),
    ];
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i != 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        // A string is always canonical JSON; only numbers can be refused.
        let _ = write_canonical_json(&Value::String(value.to_owned()), &mut out);
    }
    out.push('}');
    out
}

/// Signs a request from this server to `destination` with the current key.
pub fn sign_request(
    keys: &ServerKeys,
    method: &str,
    uri: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<XMatrix, SigningError> {
    let content = content.map(to_canonical_json).transpose()?;
    Ok(sign_canonical_request(
        keys,
        method,
        uri,
        destination,
        content.as_deref(),
    ))
}

/// [`sign_request`] for a body already in canonical JSON (the bytes the
/// client sends).
pub fn sign_canonical_request(
    keys: &ServerKeys,
    method: &str,
    uri: &str,
    destination: &str,
    canonical_content: Option<&str>,
) -> XMatrix {
    let key = keys.current();
    let signed = canonical_request(
        method,
        uri,
        keys.server_name(),
        destination,
        canonical_content,
    );
    XMatrix {
        origin: keys.server_name().to_owned(),
        destination: Some(destination.to_owned()),
        key_id: key.key_id(),
        sig: key.sign_bytes(signed.as_bytes()),
    }
}

/// Checks a received request's credential: addressed to `our_name` (if it
/// names a destination) and signed by `verify_key`, the origin's key with
/// id `header.key_id`.
pub fn verify_request(
    header: &XMatrix,
    method: &str,
    uri: &str,
    our_name: &str,
    content: Option<&Value>,
    verify_key: &VerifyKey,
) -> Result<(), XMatrixError> {
    if let Some(found) = &header.destination {
        if found != our_name {
            return Err(XMatrixError::WrongDestination {
                expected: our_name.to_owned(),
                found: found.clone(),
            });
        }
    }
    let mut signed = request_json(method, uri, &header.origin, our_name, content);
    if let Value::Object(object) = &mut signed {
        object.insert(
            "signatures".into(),
            json!({ &header.origin: { &header.key_id: &header.sig } }),
        );
    }
    signing::verify_json(&header.origin, &header.key_id, verify_key, &signed)?;
    Ok(())
}

impl XMatrix {
    /// The header value: `X-Matrix origin="…",destination="…",key="…",sig="…"`.
    pub fn to_header(&self) -> String {
        let mut out = format!("{SCHEME} origin={}", quote(&self.origin));
        if let Some(d) = &self.destination {
            out.push_str(",destination=");
            out.push_str(&quote(d));
        }
        out.push_str(",key=");
        out.push_str(&quote(&self.key_id));
        out.push_str(",sig=");
        out.push_str(&quote(&self.sig));
        out
    }

    /// Parses a received header value.
    pub fn parse(header: &str) -> Result<XMatrix, XMatrixError> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once([' ', '\t'])
            .ok_or(XMatrixError::Malformed("no parameters"))?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(XMatrixError::WrongScheme);
        }
        let (mut origin, mut destination, mut key_id, mut sig) = (None, None, None, None);
        let mut params = Params { rest };
        while let Some((name, value)) = params.next_pair()? {
            let slot = match name.to_ascii_lowercase().as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key_id,
                "sig" => &mut sig,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(XMatrixError::Duplicate(name.to_ascii_lowercase()));
            }
        }
        Ok(XMatrix {
            origin: origin.ok_or(XMatrixError::Missing("origin"))?,
            destination,
            key_id: key_id.ok_or(XMatrixError::Missing("key"))?,
            sig: sig.ok_or(XMatrixError::Missing("sig"))?,
        })
    }
}

/// A quoted-string, escaping `"` and `\`.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `name=value` pairs of an auth-param list, values unquoted.
struct Params<'a> {
    rest: &'a str,
}

impl Params<'_> {
    /// The next pair, `None` at the end.
    fn next_pair(&mut self) -> Result<Option<(String, String)>, XMatrixError> {
        let s = self.rest.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return Ok(None);
        }
        let eq = s
            .find('=')
            .ok_or(XMatrixError::Malformed("a parameter without '='"))?;
        let name = s[..eq].trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(XMatrixError::Malformed("a parameter name is not a token"));
        }
        let s = s[eq + 1..].trim_start_matches([' ', '\t']);
        let (value, rest) = if let Some(quoted) = s.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => {
                            return Err(XMatrixError::Malformed("an unterminated quoted value"))
                        }
                    },
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => value.push(c),
                    None => return Err(XMatrixError::Malformed("an unterminated quoted value")),
                }
            };
            (value, &quoted[end..])
        } else {
            let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
            if end == 0 {
                return Err(XMatrixError::Malformed("an empty parameter value"));
            }
            (s[..end].to_owned(), &s[end..])
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return Err(XMatrixError::Malformed(
                "parameters must be separated by ','",
            ));
        }
        self.rest = rest;
        Ok(Some((name.to_owned(), value)))
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn keys() -> ServerKeys {
        ServerKeys::new(
            "origin.test",
            SigningKey::from_seed("a_1", &[7; 32]).expect("key"),
        )
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let keys = keys();
        let body = json!({"pdus": [], "origin": "origin.test"});
        let uri = "/_matrix/federation/v1/send/1?x=%20y";
        let header = sign_request(&keys, "PUT", uri, "dest.test", Some(&body)).expect("sign");
        let parsed = XMatrix::parse(&header.to_header()).expect("parse");
        assert_eq!(parsed, header);
        let vk = keys.current().verify_key();
        verify_request(&parsed, "PUT", uri, "dest.test", Some(&body), &vk).expect("verifies");

        let other = json!({"pdus": [1]});
        assert!(matches!(
            verify_request(&parsed, "PUT", uri, "dest.test", Some(&other), &vk),
            Err(XMatrixError::Signature(_))
        ));
        assert!(verify_request(&parsed, "GET", uri, "dest.test", Some(&body), &vk).is_err());
        assert!(verify_request(&parsed, "PUT", "/other", "dest.test", Some(&body), &vk).is_err());
        assert!(verify_request(&parsed, "PUT", uri, "dest.test", None, &vk).is_err());
        assert_eq!(
            verify_request(&parsed, "PUT", uri, "me.test", Some(&body), &vk),
            Err(XMatrixError::WrongDestination {
                expected: "me.test".into(),
                found: "dest.test".into()
            })
        );
    }

    #[test]
    fn the_canonical_request_is_the_canonical_json_of_the_request_object() {
        let body = json!({"z": [1, {"é": "\u{1}\"\\"}], "a": "日本", "pdus": []});
        let canonical_body = to_canonical_json(&body).expect("canonical");
        for content in [None, Some(&body)] {
            let expected = to_canonical_json(&request_json(
                "PUT",
                "/send/1?x=\"y\"",
                "origin.test",
                "dest:8448",
                content,
            ))
            .expect("canonical");
            let built = canonical_request(
                "PUT",
                "/send/1?x=\"y\"",
                "origin.test",
                "dest:8448",
                content.map(|_| canonical_body.as_str()),
            );
            assert_eq!(built, expected);
        }
    }

    #[test]
    fn headers_are_written_as_the_spec_shows() {
        let h = XMatrix {
            origin: "origin.hs.example.com".into(),
            destination: Some("destination.hs.example.com".into()),
            key_id: "ed25519:key1".into(),
            sig: "ABCDEF".into(),
        };
        assert_eq!(
            h.to_header(),
            r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF""#
        );
    }

    #[test]
    fn parsing_accepts_what_servers_send() {
        // Synapse's order, tokens unquoted, odd case, spaces around commas,
        // an unknown parameter, no destination (pre-v1.3 servers).
        let h = XMatrix::parse(
            r#"x-matrix key="ed25519:a_1" , ORIGIN=origin.test,sig=c2ln,extra="x\"y""#,
        )
        .expect("parse");
        assert_eq!(
            h,
            XMatrix {
                origin: "origin.test".into(),
                destination: None,
                key_id: "ed25519:a_1".into(),
                sig: "c2ln".into()
            }
        );
        let h = XMatrix::parse(r#"X-Matrix origin="a\\b\"c",key="k",sig="s""#).expect("parse");
        assert_eq!(h.origin, r#"a\b"c"#);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for (header, expected) in [
            ("X-Matrix", XMatrixError::Malformed("no parameters")),
            ("Bearer a=b", XMatrixError::WrongScheme),
            ("X-Matrix origin=a,key=k", XMatrixError::Missing("sig")),
            (
                "X-Matrix origin=a,origin=b,key=k,sig=s",
                XMatrixError::Duplicate("origin".into()),
            ),
            (
                "X-Matrix origin=\"a,key=k,sig=s",
                XMatrixError::Malformed("an unterminated quoted value"),
            ),
            (
                "X-Matrix origin",
                XMatrixError::Malformed("a parameter without '='"),
            ),
            (
                "X-Matrix origin=,key=k,sig=s",
                XMatrixError::Malformed("an empty parameter value"),
            ),
            (
                "X-Matrix origin=a b,key=k,sig=s",
                XMatrixError::Malformed("parameters must be separated by ','"),
            ),
            (
                "X-Matrix o(r)=a",
                XMatrixError::Malformed("a parameter name is not a token"),
            ),
            (
                "X-Matrix origin=\"a\\",
                XMatrixError::Malformed("an unterminated quoted value"),
            ),
        ] {
            assert_eq!(XMatrix::parse(header), Err(expected), "{header}");
        }
    }
}
