//! `GET /openapi.json` stays true: every route the code registers is documented,
//! every documented operation exists, every error code is in the Error schema, and
//! the user-data fields' patterns are exactly the server's checks.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::LazyLock,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use proptest::prelude::*;
use sha1::{Digest, Sha1};
use wxsession::{
    wechat::userdata::{verify_signature, EncryptedData},
    Secret,
};

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

/// A user-data field of the document: its pattern (anything when it has none),
/// and a generator of strings it allows. The same field must read the same in
/// `/session/userinfo`'s body and the phone route's legacy body.
fn user_data_field(name: &str) -> (regex::Regex, BoxedStrategy<String>) {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let field = &schemas["UserInfoBody"]["properties"][name];
    if name != "signature" {
        assert_eq!(
            field, &schemas["EncryptedBody"]["properties"][name],
            "{name}"
        );
    }
    match field["pattern"].as_str() {
        Some(pattern) => {
            let inner = pattern
                .strip_prefix('^')
                .and_then(|p| p.strip_suffix('$'))
                .unwrap_or_else(|| panic!("{name}: an anchored pattern, not {pattern}"));
            (
                regex::Regex::new(pattern).unwrap(),
                proptest::string::string_regex(inner).unwrap().boxed(),
            )
        }
        None => (
            regex::Regex::new("(?s)^.*$").unwrap(),
            any::<String>().boxed(),
        ),
    }
}

/// Whether the document allows `value` in the user-data field `name`.
fn allows(name: &str, value: &str) -> bool {
    static PATTERNS: LazyLock<BTreeMap<&str, regex::Regex>> = LazyLock::new(|| {
        ["iv", "encryptedData", "signature"]
            .into_iter()
            .map(|name| (name, user_data_field(name).0))
            .collect()
    });
    PATTERNS[name].is_match(value)
}

/// Whether any session_key decrypts `data` (AES-128-CBC, valid PKCS#7): a
/// whole-block ciphertext meets one among 8192 keys (each has about a 1/256
/// chance), anything else none.
fn some_key_decrypts(data: &EncryptedData) -> bool {
    static KEYS: LazyLock<Vec<Secret>> = LazyLock::new(|| {
        (0u16..8192)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..2].copy_from_slice(&i.to_le_bytes());
                Secret::new(STANDARD.encode(key))
            })
            .collect()
    });
    KEYS.iter().any(|key| data.decrypt(key).is_ok())
}

const SOME_IV: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const SOME_CIPHERTEXT: &str = "AAAAAAAAAAAAAAAAAAAAAA==";

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `iv`: the document allows exactly what the server parses (base64 of 16 bytes).
    #[test]
    fn the_documents_iv_is_the_servers(
        iv in prop_oneof![
            user_data_field("iv").1,
            "[A-Za-z0-9+/=]{0,30}",
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| STANDARD.encode(b)),
        ]
    ) {
        let allowed = allows("iv", &iv);
        let parsed = EncryptedData::parse(SOME_CIPHERTEXT, &iv).is_ok();
        prop_assert_eq!(allowed, parsed, "iv {:?}", iv);
    }

    /// `encryptedData`: the document allows exactly what the server parses and
    /// some key could decrypt (base64 of whole AES blocks, at least one).
    #[test]
    fn the_documents_encrypted_data_is_the_servers(
        data in prop_oneof![
            user_data_field("encryptedData").1,
            "[A-Za-z0-9+/=]{0,90}",
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(|b| STANDARD.encode(b)),
        ]
    ) {
        let allowed = allows("encryptedData", &data);
        let decryptable = EncryptedData::parse(&data, SOME_IV)
            .map(|parsed| some_key_decrypts(&parsed))
            .unwrap_or(false);
        prop_assert_eq!(allowed, decryptable, "encryptedData {:?}", data);
    }

    /// `signature`: every signature the server accepts (hex SHA-1, either case)
    /// is allowed, and every one allowed has the shape of what the server
    /// compares it with.
    #[test]
    fn the_documents_signature_is_the_servers(
        other in prop_oneof![user_data_field("signature").1, "[0-9A-Za-z]{0,45}"],
        raw in any::<String>(),
        key in any::<[u8; 16]>(),
        upper in any::<[bool; 40]>(),
    ) {
        let key = Secret::new(STANDARD.encode(key));
        let digest = hex::encode(Sha1::digest([raw.as_bytes(), key.expose().as_bytes()].concat()));
        let signed: String = digest
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        prop_assert!(verify_signature(&raw, &signed, &key).is_ok());
        prop_assert!(allows("signature", &signed), "accepted, yet refused: {}", signed);
        if allows("signature", &other) {
            let digest_shaped = hex::decode(other.to_ascii_lowercase()).is_ok_and(|b| b.len() == 20);
            prop_assert!(digest_shaped, "allowed, yet never accepted: {:?}", other);
        }
    }
}
