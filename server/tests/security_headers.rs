//! The headers that keep the console's token safe from injected scripts and
//! framing (issue 11): every answer carries them, and a console page's policy
//! lets only its own nonce-carrying scripts run. Playwright checks the same
//! policy in Chromium (`end2end/tests/security.spec.ts`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on {}", response.url()))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let server = TestServer::start().await;
    for path in [
        "/_matrix/client/versions",
        "/_synapse/admin/v1/federation/destinations",
        "/_herald/no-such-route",
        "/_herald/openapi.json",
        "/metrics",
        "/",
        "/no-such-page",
    ] {
        let response = server.request("GET", path, None).await;
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        let csp = header(&response, "content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
}

#[tokio::test]
async fn a_console_page_allows_only_its_own_nonce_and_the_wasm() {
    let server = TestServer::start().await;
    for path in ["/", "/destinations", "/no-such-page"] {
        let response = server.request("GET", path, None).await;
        let csp = header(&response, "content-security-policy").to_owned();
        let page = response.text().await.unwrap();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix("script-src "))
            .unwrap_or_else(|| panic!("{path}: no script-src in {csp}"));
        let nonce = script_src
            .split(' ')
            .find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\''))
            .unwrap_or_else(|| panic!("{path}: no nonce in {csp}"));
        assert!(nonce.len() >= 16, "{nonce}");
        let mut sources: Vec<&str> = script_src.split(' ').collect();
        sources.sort_unstable();
        let own_nonce = format!("'nonce-{nonce}'");
        let mut expected = vec!["'self'", own_nonce.as_str(), "'wasm-unsafe-eval'"];
        expected.sort_unstable();
        assert_eq!(sources, expected, "{path}");
        // Every inline script of the page carries that nonce.
        let scripts = page.matches("<script").count();
        assert!(scripts > 0, "{path}: no scripts");
        assert_eq!(
            page.matches(&format!("<script nonce=\"{nonce}\"")).count()
                + page
                    .matches(&format!("<script type=\"module\" nonce=\"{nonce}\""))
                    .count(),
            scripts,
            "{path}: {page}"
        );
        // A fresh nonce per answer.
        let again = server.request("GET", path, None).await;
        assert_ne!(header(&again, "content-security-policy"), csp);
    }
}
