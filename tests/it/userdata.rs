//! POST /session/userinfo and /session/phone (contract §6) over HTTP with a real
//! Redis: WeChat's public vectors, our own vectors for every failure, and
//! session_key rotation across a user's live sessions.

use aes::cipher::{block_padding::NoPadding, block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::support::*;

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

const APPID: &str = "wx_test_app";
const KEY_A: &str = "YWFhYWFhYWFhYWFhYWFhYQ=="; // "aaaaaaaaaaaaaaaa"
const KEY_B: &str = "YmJiYmJiYmJiYmJiYmJiYg=="; // "bbbbbbbbbbbbbbbb"
const IV: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // "0123456789abcdef"

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wechat-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// AES-128-CBC + PKCS#7, as WeChat encrypts user data.
fn encrypt(key_b64: &str, iv_b64: &str, plaintext: &[u8]) -> String {
    let key: [u8; 16] = STANDARD.decode(key_b64).unwrap().try_into().unwrap();
    let iv: [u8; 16] = STANDARD.decode(iv_b64).unwrap().try_into().unwrap();
    let mut buf = vec![0u8; plaintext.len() + 16];
    buf[..plaintext.len()].copy_from_slice(plaintext);
    let out = Aes128CbcEnc::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plaintext.len())
        .unwrap();
    STANDARD.encode(out)
}

/// Encrypts `padded` as is (its length a multiple of 16): for bad-padding vectors.
fn encrypt_raw(key_b64: &str, iv_b64: &str, padded: &[u8]) -> String {
    let key: [u8; 16] = STANDARD.decode(key_b64).unwrap().try_into().unwrap();
    let iv: [u8; 16] = STANDARD.decode(iv_b64).unwrap().try_into().unwrap();
    let mut buf = padded.to_vec();
    let out = Aes128CbcEnc::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, padded.len())
        .unwrap();
    STANDARD.encode(out)
}

fn sign(raw_data: &str, key_b64: &str) -> String {
    hex::encode(Sha1::digest(format!("{raw_data}{key_b64}").as_bytes()))
}

fn user_json(appid: &str) -> String {
    json!({
        "openId": "u1", "nickName": "Band", "gender": 1, "language": "zh_CN",
        "city": "Guangzhou", "province": "Guangdong", "country": "CN",
        "avatarUrl": "http://example.invalid/a.png", "unionId": "union-1",
        "extra": "ignored",
        "watermark": {"timestamp": 1477314187, "appid": appid}
    })
    .to_string()
}

fn userinfo_body(raw: &str, key: &str, encrypted: String, iv: &str) -> Value {
    json!({"rawData": raw, "signature": sign(raw, key), "encryptedData": encrypted, "iv": iv})
}

#[actix_web::test]
async fn wechat_user_info_vector_decrypts_and_the_profile_is_stored() {
    let v = &vectors()["userinfo"];
    let appid = v["appId"].as_str().unwrap();
    let h = Harness::with(&[("wechat.appid", appid)]);
    let key = v["sessionKey"].as_str().unwrap();
    let id = h
        .login(&format!("key:oGZUI0egBJY1zhBYw2KhdUfwVJJE:{key}"))
        .await;

    let raw = r#"{"nickName":"Band"}"#;
    let (status, user) = h
        .post_as(
            &id,
            "/session/userinfo",
            &json!({"rawData": raw, "signature": sign(raw, key),
               "encryptedData": v["encryptedData"], "iv": v["iv"]}),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    let mut expected: Value = serde_json::from_str(v["plaintext"].as_str().unwrap()).unwrap();
    expected.as_object_mut().unwrap().remove("watermark");
    assert_eq!(user, expected);

    // The profile is in Redis, readable and expiring, and GET /session shows it;
    // the decrypted unionId fills the session's missing unionid.
    let profile_key = "wxsess:user:{oGZUI0egBJY1zhBYw2KhdUfwVJJE}:profile";
    let stored: Value =
        serde_json::from_str(&h.redis.cmd::<String>(&["GET", profile_key])).unwrap();
    assert_eq!(stored["nickName"], "Band");
    assert!(stored.get("openId").is_none() && stored.get("watermark").is_none());
    assert!(h.redis.cmd::<i64>(&["TTL", profile_key]) > 0);
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200);
    assert_eq!(me["profile"]["nickName"], "Band");
    assert_eq!(me["profile"]["gender"], 1);
    assert_eq!(me["unionid"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
    let ttl: i64 = h.redis.cmd(&["TTL", &format!("wxsess:s:{id}")]);
    assert!(
        ttl > 7000,
        "filling the unionid keeps the session's TTL: {ttl}"
    );
}

#[actix_web::test]
async fn the_profile_reaches_every_session_of_the_user_in_one_read() {
    let h = Harness::start();
    let older = h.login(&format!("key:u9:{KEY_A}")).await;
    let id = h.login(&format!("key:u9:{KEY_A}~2")).await;
    let (status, _) = h
        .post_as(
            &id,
            "/session/userinfo",
            &userinfo_body(
                "{}",
                KEY_A,
                encrypt(KEY_A, IV, user_json(APPID).as_bytes()),
                IV,
            ),
        )
        .await;
    assert_eq!(status, 200);
    let later = h.login(&format!("key:u9:{KEY_A}~3")).await;
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for session in [&older, &id, &later] {
        let (status, me) = h.get_session(session).await;
        assert_eq!(status, 200);
        assert_eq!(me["profile"]["nickName"], "Band", "{me}");
        assert_eq!(me["unionid"], "union-1", "{me}");
    }
    assert_eq!(
        h.redis.commands_served(),
        3,
        "GET /session is one command, profile included"
    );
}

#[actix_web::test]
async fn our_own_vectors_answer_the_user_without_watermark() {
    let h = Harness::start();
    let id = h.login(&format!("key:u1:{KEY_A}")).await;
    let raw = "{}";
    let (status, user) = h
        .post_as(
            &id,
            "/session/userinfo",
            &userinfo_body(
                raw,
                KEY_A,
                encrypt(KEY_A, IV, user_json(APPID).as_bytes()),
                IV,
            ),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["nickName"], "Band");
    assert_eq!(user["extra"], "ignored");
    assert!(user.get("watermark").is_none());
    let stored: Value =
        serde_json::from_str(&h.redis.cmd::<String>(&["GET", "wxsess:user:{u1}:profile"])).unwrap();
    assert!(
        stored.get("extra").is_none(),
        "only profile fields are kept: {stored}"
    );
}

#[actix_web::test]
async fn every_failure_is_422_or_400_and_stores_nothing() {
    let h = Harness::start();
    let id = h.login(&format!("key:u2:{KEY_A}")).await;
    let raw = r#"{"nickName":"x"}"#;
    let user = user_json(APPID);
    let good = encrypt(KEY_A, IV, user.as_bytes());
    let good_bytes = STANDARD.decode(&good).unwrap();

    let mut bad_padding = user.as_bytes().to_vec();
    bad_padding.resize(user.len().div_ceil(16) * 16 + 16, 0);
    let mut wrong_pad_value = user.as_bytes().to_vec();
    let n = 16 - user.len() % 16;
    wrong_pad_value.extend(std::iter::repeat_n(n as u8, n));
    *wrong_pad_value.last_mut().unwrap() = 0x11; // padding byte larger than a block

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "bad signature",
            json!({"rawData": raw, "signature": sign(raw, KEY_B), "encryptedData": good, "iv": IV}),
            422,
            "bad_signature",
        ),
        (
            "wrong key",
            userinfo_body(raw, KEY_A, encrypt(KEY_B, IV, user.as_bytes()), IV),
            422,
            "decrypt_failed",
        ),
        (
            "wrong iv",
            userinfo_body(raw, KEY_A, good.clone(), "ZmVkY2JhOTg3NjU0MzIxMA=="),
            422,
            "decrypt_failed",
        ),
        (
            "truncated",
            userinfo_body(
                raw,
                KEY_A,
                STANDARD.encode(&good_bytes[..good_bytes.len() - 5]),
                IV,
            ),
            422,
            "decrypt_failed",
        ),
        (
            "last block cut",
            userinfo_body(
                raw,
                KEY_A,
                STANDARD.encode(&good_bytes[..good_bytes.len() - 16]),
                IV,
            ),
            422,
            "decrypt_failed",
        ),
        (
            "zero padding",
            userinfo_body(raw, KEY_A, encrypt_raw(KEY_A, IV, &bad_padding), IV),
            422,
            "decrypt_failed",
        ),
        (
            "padding > 16",
            userinfo_body(raw, KEY_A, encrypt_raw(KEY_A, IV, &wrong_pad_value), IV),
            422,
            "decrypt_failed",
        ),
        (
            "not JSON inside",
            userinfo_body(raw, KEY_A, encrypt(KEY_A, IV, b"hello, not json"), IV),
            422,
            "decrypt_failed",
        ),
        (
            "other appid",
            userinfo_body(
                raw,
                KEY_A,
                encrypt(KEY_A, IV, user_json("wx_other").as_bytes()),
                IV,
            ),
            422,
            "appid_mismatch",
        ),
        (
            "no watermark",
            userinfo_body(raw, KEY_A, encrypt(KEY_A, IV, br#"{"nickName":"x"}"#), IV),
            422,
            "appid_mismatch",
        ),
        (
            "missing field",
            json!({"rawData": raw, "signature": sign(raw, KEY_A), "encryptedData": good}),
            400,
            "invalid_request",
        ),
        (
            "not base64",
            userinfo_body(raw, KEY_A, "***".into(), IV),
            400,
            "invalid_request",
        ),
        (
            "iv not base64",
            userinfo_body(raw, KEY_A, good.clone(), "@@@@"),
            400,
            "invalid_request",
        ),
        (
            "iv of 8 bytes",
            userinfo_body(raw, KEY_A, good.clone(), "MDEyMzQ1Njc="),
            400,
            "invalid_request",
        ),
        (
            "number field",
            json!({"rawData": 1, "signature": "x", "encryptedData": good, "iv": IV}),
            400,
            "invalid_request",
        ),
    ];
    for (name, body, status, error) in cases {
        let (got, answer) = h.post_as(&id, "/session/userinfo", &body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_error(&answer, error);
        if error == "decrypt_failed" {
            assert!(
                answer["message"].as_str().unwrap().contains("wx.login"),
                "{answer}"
            );
        }
    }
    assert!(
        h.redis.keys("*:profile").is_empty(),
        "nothing stored on failure"
    );
    let (_, me) = h.get_session(&id).await;
    assert!(me.get("profile").is_none());
    assert_eq!(me["unionid"], Value::Null);

    // Unguarded.
    let (status, body) = send(client().post(h.url("/session/userinfo")).json(&json!({}))).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_required");
}

#[actix_web::test]
async fn a_new_login_rotates_the_key_for_every_live_session() {
    let h = Harness::start();
    let first = h.login(&format!("key:u3:{KEY_A}")).await;
    let second = h.login(&format!("key:u3:{KEY_A}~2")).await;
    // wx.login again: WeChat hands out a new session_key.
    let third = h.login(&format!("key:u3:{KEY_B}")).await;
    let raw = "{}";
    let with_new = userinfo_body(
        raw,
        KEY_B,
        encrypt(KEY_B, IV, user_json(APPID).as_bytes()),
        IV,
    );
    for id in [&first, &second, &third] {
        let (status, body) = h.post_as(id, "/session/userinfo", &with_new).await;
        assert_eq!(status, 200, "{body}");
    }
    let with_old = userinfo_body(
        raw,
        KEY_A,
        encrypt(KEY_A, IV, user_json(APPID).as_bytes()),
        IV,
    );
    let (status, body) = h.post_as(&first, "/session/userinfo", &with_old).await;
    assert_eq!(status, 422);
    assert_error(&body, "bad_signature");
    let with_old_key_data = userinfo_body(
        raw,
        KEY_B,
        encrypt(KEY_A, IV, user_json(APPID).as_bytes()),
        IV,
    );
    let (status, body) = h
        .post_as(&first, "/session/userinfo", &with_old_key_data)
        .await;
    assert_eq!(status, 422);
    assert_error(&body, "decrypt_failed");
}

#[actix_web::test]
async fn legacy_phone_payloads_decrypt_and_are_never_stored() {
    let v = &vectors()["phone"];
    let appid = v["appId"].as_str().unwrap();
    let h = Harness::with(&[("wechat.appid", appid)]);
    let key = v["sessionKey"].as_str().unwrap();
    let id = h.login(&format!("key:p1:{key}")).await;
    let (status, phone) = h
        .post_as(
            &id,
            "/session/phone",
            &json!({"encryptedData": v["encryptedData"], "iv": v["iv"]}),
        )
        .await;
    assert_eq!(status, 200, "{phone}");
    assert_eq!(
        phone,
        json!({"phoneNumber": "18017448610", "purePhoneNumber": "18017448610", "countryCode": "86"})
    );

    // countryCode as a number, and as a string.
    let id = h.login(&format!("key:p2:{KEY_A}")).await;
    for country in [json!(86), json!("86")] {
        let plain = json!({"phoneNumber": "+86 13800000000", "purePhoneNumber": "13800000000",
                           "countryCode": country, "watermark": {"appid": appid, "timestamp": 1}});
        let encrypted = encrypt(KEY_A, IV, plain.to_string().as_bytes());
        let (status, phone) = h
            .post_as(
                &id,
                "/session/phone",
                &json!({"encryptedData": encrypted, "iv": IV}),
            )
            .await;
        assert_eq!(status, 200, "{phone}");
        assert_eq!(phone["countryCode"], "86");
        assert_eq!(phone["purePhoneNumber"], "13800000000");
    }
    let other = json!({"phoneNumber": "1", "purePhoneNumber": "1", "countryCode": "86",
                       "watermark": {"appid": "wx_other"}});
    let (status, body) = h
        .post_as(
            &id,
            "/session/phone",
            &json!({"encryptedData": encrypt(KEY_A, IV, other.to_string().as_bytes()), "iv": IV}),
        )
        .await;
    assert_eq!(status, 422);
    assert_error(&body, "appid_mismatch");
    let (status, body) = h.post_as(&id, "/session/phone", &json!({"iv": IV})).await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_request");

    let mut dump = String::new();
    for k in h.redis.keys("*") {
        let kind: String = h.redis.cmd(&["TYPE", &k]);
        let text: String = match kind.as_str() {
            "string" => h.redis.cmd(&["GET", &k]),
            "hash" => h.redis.cmd::<Vec<String>>(&["HGETALL", &k]).join(" "),
            _ => h
                .redis
                .cmd::<Vec<String>>(&["ZRANGE", &k, "0", "-1"])
                .join(" "),
        };
        dump.push_str(&text);
    }
    assert!(
        !dump.contains("18017448610") && !dump.contains("13800000000"),
        "phone stored: {dump}"
    );
}

/// QQ and Douyin apps decrypt user data as WeChat does (their keys, their
/// appids in the watermark); a watermark of another app is refused.
#[actix_web::test]
async fn qq_and_douyin_apps_decrypt_user_data_as_wechat_does() {
    let h = Harness::bare();
    let base = h.wechat.base.clone();
    let env = [
        ("WXSESSION_APPS_QQ_PLATFORM", "qq"),
        ("WXSESSION_APPS_QQ_APPID", "1109000001"),
        ("WXSESSION_APPS_QQ_SECRET", "qq-secret"),
        ("WXSESSION_APPS_QQ_API_BASE", base.as_str()),
        ("WXSESSION_APPS_TT_PLATFORM", "douyin"),
        ("WXSESSION_APPS_TT_APPID", "tt0000001"),
        ("WXSESSION_APPS_TT_SECRET", "tt-secret"),
        ("WXSESSION_APPS_TT_API_BASE", base.as_str()),
    ];
    let server = TestServer::start(&h.config(&env));
    // The stand-in's keys are "SK<n:04><openid>": 16 bytes for a 10-character openid.
    for (appid, code) in [
        ("1109000001", "ok:qquser0001"),
        ("tt0000001", "ok:ttuser0001"),
    ] {
        let (status, body) = send(
            client()
                .post(server.url("/login"))
                .json(&json!({"code": code, "appid": appid})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let id = body["sessionid"].as_str().unwrap();
        let key = h.wechat.issued_keys().last().unwrap().clone();
        let raw = "{}";
        let body = userinfo_body(
            raw,
            &key,
            encrypt(&key, IV, user_json(appid).as_bytes()),
            IV,
        );
        let (status, user) = server.post_as(id, "/session/userinfo", &body).await;
        assert_eq!(status, 200, "{appid}: {user}");
        assert_eq!(user["nickName"], "Band");
        // Another app's watermark (here WeChat's default app's) is not this app's data.
        let body = userinfo_body(
            raw,
            &key,
            encrypt(&key, IV, user_json(APPID).as_bytes()),
            IV,
        );
        let (status, answer) = server.post_as(id, "/session/userinfo", &body).await;
        assert_eq!(status, 422, "{answer}");
        assert_error(&answer, "appid_mismatch");
    }
    // Douyin's legacy phone payload too.
    let (_, body) = send(
        client()
            .post(server.url("/login"))
            .json(&json!({"code": "ok:ttphone001", "appid": "tt0000001"})),
    )
    .await;
    let id = body["sessionid"].as_str().unwrap();
    let key = h.wechat.issued_keys().last().unwrap().clone();
    let plain = json!({"phoneNumber": "13800000000", "purePhoneNumber": "13800000000",
                       "countryCode": "86", "watermark": {"appid": "tt0000001", "timestamp": 1}});
    let encrypted = encrypt(&key, IV, plain.to_string().as_bytes());
    let (status, phone) = server
        .post_as(
            id,
            "/session/phone",
            &json!({"encryptedData": encrypted, "iv": IV}),
        )
        .await;
    assert_eq!(status, 200, "{phone}");
    assert_eq!(phone["purePhoneNumber"], "13800000000");
}
