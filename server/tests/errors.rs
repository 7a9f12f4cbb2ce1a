//! Every error on an API path is a Matrix JSON body, whoever raises it: body
//! limits and broken bodies included (issue 11, finding 3). Requests are
//! written by hand over TCP where a client library would refuse to send them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back for a raw request: status, headers (lower-case names) and
/// the body, read until the server closes (`Connection: close`).
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a Matrix error, after checking it is declared JSON.
    fn matrix_error(&self) -> (String, String) {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "status {}: {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let body: Value = serde_json::from_slice(&self.body).expect("JSON body");
        (
            body["errcode"].as_str().expect("errcode").to_owned(),
            body["error"].as_str().expect("error").to_owned(),
        )
    }
}

async fn raw(server: &TestServer, head: &str, body: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before taking the whole body.
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut bytes),
    )
    .await
    .expect("the server answers within 10 s");
    if let Err(e) = read {
        // A reset after the answer was written still leaves the answer.
        assert!(!bytes.is_empty(), "no answer: {e}");
    }
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

fn post_head(server: &TestServer, path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n",
        server.addr
    )
}

#[tokio::test]
async fn a_login_body_over_the_limit_is_m_too_large_in_json() {
    let server = TestServer::start().await;
    let body = vec![b' '; 3 * 1024 * 1024];
    let head = post_head(
        &server,
        "/_matrix/client/v3/login",
        &format!("Content-Length: {}\r\n", body.len()),
    );
    let answer = raw(&server, &head, &body).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.matrix_error().0, "M_TOO_LARGE");
}

#[tokio::test]
async fn a_broken_chunked_login_body_is_m_not_json_in_json() {
    let server = TestServer::start().await;
    let head = post_head(
        &server,
        "/_matrix/client/v3/login",
        "Transfer-Encoding: chunked\r\n",
    );
    let answer = raw(&server, &head, b"5\r\n{\"typ\r\nzz-not-a-size\r\n").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.matrix_error().0, "M_NOT_JSON");
}

#[tokio::test]
async fn a_broken_chunked_intake_body_is_not_called_too_large() {
    let server = TestServer::start_with(|c| c.sender_api_token = Some("intake-token".into())).await;
    let head = post_head(
        &server,
        "/_herald/v1/send/pdus",
        "Authorization: Bearer intake-token\r\nTransfer-Encoding: chunked\r\n",
    );
    let answer = raw(&server, &head, b"5\r\n{\"eve\r\nqq\r\n").await;
    assert_eq!(answer.status, 400);
    let (errcode, error) = answer.matrix_error();
    assert_eq!(errcode, "M_NOT_JSON");
    assert!(error.contains("Could not read the request body"), "{error}");
}
