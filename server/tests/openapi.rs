//! The OpenAPI document served at `/_herald/openapi.json` names exactly the
//! router's API routes, each with exactly the methods it answers. The
//! router's paths are read from its own route table (`Router`'s `Debug`
//! lists them); the methods are found by asking the running server.
//! Schemathesis (`scripts/api-fuzz.sh`, in `make test`) checks the answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::TestServer;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const INTAKE_TOKEN: &str = "openapi-intake-token";

/// The router's API paths, with Synapse's empty-destination variants
/// (`destinations/`, `destinations//rooms`) folded into the templates they
/// stand beside.
fn router_paths() -> BTreeSet<String> {
    let table = format!("{:?}", herald::http::api_router());
    let start = table.find("paths: {").expect("the route table") + "paths: {".len();
    // The map ends at the first `}` outside a quoted path.
    let mut quoted = false;
    let end = start
        + table[start..]
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                c == '}' && !quoted
            })
            .expect("its end")
            .0;
    let paths: BTreeSet<String> = table[start..end]
        .split('"')
        .filter(|s| s.starts_with('/'))
        .map(|p| {
            let p = p.replace("/destinations//", "/destinations/{destination}/");
            match p.strip_suffix("/destinations/") {
                Some(prefix) => format!("{prefix}/destinations/{{destination}}"),
                None => p,
            }
        })
        .collect();
    assert!(paths.len() > 10, "could not read the route table: {table}");
    paths
}

fn documented(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_uppercase())
                .filter(|m| METHODS.contains(&m.as_str()))
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Whether the server routes `method` on `path`: anything but `405` and
/// `404 M_UNRECOGNIZED` (a handler's own 404 says `M_NOT_FOUND`).
async fn routed(server: &TestServer, token: &str, method: &str, path: &str) -> bool {
    // Logging out ends a token: it gets one of its own.
    let own;
    let token = if path.starts_with("/_herald/v1/send") {
        INTAKE_TOKEN
    } else if path.ends_with("/logout") {
        own = server.admin_token().await;
        &own
    } else {
        token
    };
    let response = server.request(method, path, Some(token)).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    !(status == 405 || (status == 404 && body["errcode"] == "M_UNRECOGNIZED"))
}

#[tokio::test]
async fn the_document_names_every_route_with_its_methods() {
    let server = TestServer::start_with(|c| c.sender_api_token = Some(INTAKE_TOKEN.into())).await;
    let token = server.admin_token().await;
    let (status, doc) = server.get("/_herald/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    let documented = documented(&doc);
    let documented_paths: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(
        documented_paths,
        router_paths(),
        "left: documented, right: routed"
    );

    for (path, methods) in &documented {
        let concrete = path.replace("{destination}", "b.org");
        let mut answered = BTreeSet::new();
        for method in METHODS {
            if routed(&server, &token, method, &concrete).await {
                answered.insert(method.to_owned());
            }
        }
        assert_eq!(&answered, methods, "{path}: left routed, right documented");
    }
}

#[tokio::test]
async fn every_documented_error_is_a_matrix_error() {
    let server = TestServer::start().await;
    let (_, doc) = server.get("/_herald/openapi.json", None).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["$ref"]
                            .as_str()
                            .map(|r| r.starts_with("#/components/responses/E")),
                        Some(true),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let schema = response["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default()
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{name}: {response}"));
        // The Matrix error, or one built on it (`allOf`).
        let built_on_error = schema == "Error"
            || doc["components"]["schemas"][schema]["allOf"][0]["$ref"]
                == "#/components/schemas/Error";
        assert!(built_on_error, "{name}: {schema}");
    }
}
