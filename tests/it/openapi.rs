//! `GET /openapi.json` stays true: every route the code registers is documented,
//! every documented operation exists, and every error code is in the Error schema.

use std::collections::BTreeSet;

use crate::support::*;

fn doc() -> serde_json::Value {
    serde_json::from_str(include_str!("../../src/http/openapi.json")).unwrap()
}

/// The paths registered with `resource("…")` in the HTTP layer's source.
fn registered_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for file in ["src/http/mod.rs", "src/http/admin.rs"] {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + file)
                .unwrap();
        for part in text.split("resource(\"").skip(1) {
            let path = part.split('"').next().unwrap();
            if path.starts_with('/') {
                paths.insert(path.to_string());
            }
        }
    }
    paths
}

#[test]
fn every_registered_route_is_documented() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(registered_paths(), documented);
}

#[test]
fn the_error_schema_lists_every_contract_code() {
    let doc = doc();
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for code in [
        "invalid_request",
        "session_required",
        "invalid_session",
        "invalid_code",
        "user_blocked",
        "payload_too_large",
        "rate_limited",
        "wechat_error",
        "wechat_busy",
        "store_unavailable",
        "wechat_timeout",
        "decrypt_failed",
        "bad_signature",
        "appid_mismatch",
        "invalid_phone_code",
    ] {
        assert!(codes.contains(code), "{code} missing");
    }
}

#[actix_web::test]
async fn the_served_document_matches_and_every_operation_exists() {
    let h = Harness::with(&[("admin.token", ADMIN_TOKEN)]);
    let (status, served) = send(client().get(h.url("/openapi.json"))).await;
    assert_eq!(status, 200);
    assert_eq!(served, doc());
    for (path, ops) in doc()["paths"].as_object().unwrap() {
        let url = h.url(&path.replace("{openid}", "someone"));
        for method in ops.as_object().unwrap().keys() {
            let req = client().request(method.to_uppercase().parse().unwrap(), &url);
            let (status, body) = send(req).await;
            assert!(
                status != 404 && status != 405,
                "{method} {path}: {status} {body}"
            );
            if status >= 400 {
                assert!(body.get("error").is_some(), "{method} {path}: {body}");
            }
        }
    }
}
