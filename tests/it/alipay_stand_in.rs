//! The Alipay stand-in, driven over HTTP with requests signed here as §11 says
//! (wxsession's own Alipay call is private to the crate): it takes a request
//! signed with the app's key, in either of its files' forms, refuses one it
//! cannot check, and signs its answers with Alipay's key over the exact text of
//! their node.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256},
};
use serde_json::{value::RawValue, Value};

use crate::support::*;

const SUCCESS: &str = "alipay_system_oauth_token_response";
const ERROR: &str = "error_response";

/// How the SPKI of every 2048-bit RSA key begins; the PKCS#1 `RSAPublicKey`
/// ring verifies with follows it.
const SPKI_2048_HEADER: [u8; 24] = [
    0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
    0x01, 0x05, 0x00, 0x03, 0x82, 0x01, 0x0f, 0x00,
];

/// What `openssl args…` writes to stdout, fed `input`.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read_base64(path: &str) -> Vec<u8> {
    STANDARD
        .decode(std::fs::read_to_string(path).unwrap().trim())
        .unwrap()
}

/// Alipay's public key as ring takes it, from the bare SPKI file; the PEM
/// file must hold the same key.
fn alipay_public_key(keys: &AlipayKeyFiles) -> Vec<u8> {
    let spki = read_base64(&keys.alipay_public_key);
    let key = spki
        .strip_prefix(&SPKI_2048_HEADER[..])
        .expect("a 2048-bit RSA SPKI")
        .to_vec();
    let pem = &keys.alipay_public_key_pem;
    let args = [
        "rsa",
        "-pubin",
        "-in",
        pem,
        "-RSAPublicKey_out",
        "-outform",
        "DER",
    ];
    assert_eq!(openssl(&args, b""), key);
    key
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request's parameters but `sign`, for `code` at `unix_secs`.
fn unsigned_params(code: &str, unix_secs: u64) -> Vec<(&'static str, String)> {
    [
        ("app_id", "2021000000000001".to_string()),
        ("method", "alipay.system.oauth.token".into()),
        ("format", "JSON".into()),
        ("charset", "utf-8".into()),
        ("sign_type", "RSA2".into()),
        ("timestamp", alipay_time(unix_secs)),
        ("version", "1.0".into()),
        ("grant_type", "authorization_code".into()),
        ("code", code.into()),
    ]
    .into()
}

/// Sorted by name, `k=v` joined with `&`, values as they are.
fn signing_string(params: &[(&str, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_by_key(|(k, _)| *k);
    let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// Signed with ring, from the bare PKCS#8 file, as wxsession signs.
fn ring_sign(keys: &AlipayKeyFiles, text: &str) -> String {
    let key = RsaKeyPair::from_pkcs8(&read_base64(&keys.app_private_key)).unwrap();
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        text.as_bytes(),
        &mut signature,
    )
    .unwrap();
    STANDARD.encode(signature)
}

/// Signed with `openssl dgst`, from the PKCS#1 PEM file.
fn openssl_sign(keys: &AlipayKeyFiles, text: &str) -> String {
    let args = ["dgst", "-sha256", "-sign", &keys.app_private_key_pem];
    STANDARD.encode(openssl(&args, text.as_bytes()))
}

/// A request whose parameters are signed with ring.
fn signed(keys: &AlipayKeyFiles, code: &str) -> Vec<(&'static str, String)> {
    let mut params = unsigned_params(code, unix_now());
    let sign = ring_sign(keys, &signing_string(&params));
    params.push(("sign", sign));
    params
}

/// An answer: its node's name and exact text, and its `sign`.
struct Answer {
    name: String,
    node: String,
    sign: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.node).unwrap()
    }

    fn signed_by_alipay(&self, alipay: &[u8]) -> bool {
        let signature = STANDARD.decode(self.sign.as_ref().unwrap()).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, alipay)
            .verify(self.node.as_bytes(), &signature)
            .is_ok()
    }

    /// An `error_response`, signed by Alipay, with this sub_code.
    fn assert_error(&self, alipay: &[u8], sub_code: &str) {
        assert_eq!(
            (self.name.as_str(), self.json()["sub_code"].as_str()),
            (ERROR, Some(sub_code))
        );
        assert!(self.signed_by_alipay(alipay), "{}", self.node);
    }
}

async fn call(stand_in: &AlipayStandIn, params: &[(&str, String)]) -> Answer {
    let response = client()
        .post(format!("{}/gateway.do", stand_in.base))
        .form(params)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut fields: BTreeMap<String, &RawValue> = serde_json::from_str(&text).unwrap();
    let sign = fields
        .remove("sign")
        .map(|sign| serde_json::from_str(sign.get()).unwrap());
    let [(name, node)]: [_; 1] = fields.into_iter().collect::<Vec<_>>().try_into().unwrap();
    Answer {
        name,
        node: node.get().to_string(),
        sign,
    }
}

#[actix_web::test]
async fn signed_requests_get_answers_signed_by_alipay() {
    let keys = AlipayKeyFiles::generate();
    let stand_in = AlipayStandIn::start(&keys);
    let alipay = alipay_public_key(&keys);

    // The bare PKCS#8 file and the PKCS#1 PEM hold one key: they sign alike.
    let params = signed(&keys, "ok:2088000000000001");
    let text = signing_string(&params[..params.len() - 1]);
    assert_eq!(params.last().unwrap().1, openssl_sign(&keys, &text));
    let answer = call(&stand_in, &params).await;
    assert_eq!(answer.name, SUCCESS);
    assert!(answer.signed_by_alipay(&alipay), "{}", answer.node);
    let node = answer.json();
    assert_eq!(node["user_id"], "2088000000000001");
    assert_eq!(node["open_id"], "open-2088000000000001");
    assert!(node["access_token"].is_string() && node.get("union_id").is_none());

    let answer = call(&stand_in, &signed(&keys, "union:2088000000000002~2")).await;
    assert!(answer.signed_by_alipay(&alipay));
    assert_eq!(answer.json()["union_id"], "u-2088000000000002");

    for (code, sub_code) in [
        ("invalid", "isv.code-invalid"),
        ("invalid~2", "isv.code-invalid"),
        ("busy", "isp.unknow-error"),
    ] {
        call(&stand_in, &signed(&keys, code))
            .await
            .assert_error(&alipay, sub_code);
    }
    let answer = call(&stand_in, &signed(&keys, "busy~1")).await;
    assert_eq!(answer.json()["code"], "20000");

    let answer = call(&stand_in, &signed(&keys, "unsigned")).await;
    assert_eq!((answer.name.as_str(), answer.sign), (SUCCESS, None));
    let answer = call(&stand_in, &signed(&keys, "badsign")).await;
    assert_eq!(answer.name, SUCCESS);
    assert!(!answer.signed_by_alipay(&alipay));
    assert_eq!(stand_in.calls(), 8);
}

#[actix_web::test]
async fn requests_it_cannot_check_are_refused() {
    let keys = AlipayKeyFiles::generate();
    let stand_in = AlipayStandIn::start(&keys);
    let alipay = alipay_public_key(&keys);
    let refused = |params: Vec<(&'static str, String)>, sub_code: &'static str| {
        let (stand_in, alipay) = (&stand_in, &alipay);
        async move { call(stand_in, &params).await.assert_error(alipay, sub_code) }
    };

    let mut changed = signed(&keys, "ok:2088000000000001");
    changed[8].1 = "ok:2088000000000002".into();
    refused(changed, "isv.invalid-signature").await;
    let mut unsigned = signed(&keys, "ok:2088000000000001");
    unsigned.pop();
    refused(unsigned, "isv.invalid-signature").await;
    let mut not_base64 = signed(&keys, "ok:2088000000000001");
    not_base64[9].1 = "%%".into();
    refused(not_base64, "isv.invalid-signature").await;

    // Signed over URL-encoded values, which the signing string must not be.
    let mut encoded = unsigned_params("ok:2088000000000001", unix_now());
    let text = signing_string(&encoded).replace(' ', "%20");
    encoded.push(("sign", ring_sign(&keys, &text)));
    refused(encoded, "isv.invalid-signature").await;

    // Signed, but in UTC rather than GMT+8, or not as `yyyy-MM-dd HH:mm:ss`.
    let mut utc = unsigned_params("ok:2088000000000001", unix_now() - 8 * 3600);
    utc.push(("sign", ring_sign(&keys, &signing_string(&utc))));
    refused(utc, "isv.invalid-timestamp").await;
    let mut iso = unsigned_params("ok:2088000000000001", unix_now());
    iso[5].1 = iso[5].1.replace(' ', "T");
    iso.push(("sign", ring_sign(&keys, &signing_string(&iso))));
    refused(iso, "isv.invalid-timestamp").await;

    let mut lower_case = signed(&keys, "ok:2088000000000001");
    lower_case[2].1 = "json".into();
    refused(lower_case, "isv.invalid-format").await;
    assert_eq!(stand_in.calls(), 7);
}
