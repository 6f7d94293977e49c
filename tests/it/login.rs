//! POST /login against a real Redis and a WeChat stand-in: success, every error
//! row of the contract, what lands in Redis, and what WeChat receives.

use serde_json::json;

use crate::support::*;

const HEX: &str = "0123456789abcdef";

fn is_session_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| HEX.contains(c))
}

#[actix_web::test]
async fn login_creates_a_session_in_redis_and_answers_only_the_id() {
    let h = Harness::start();

    let resp = client()
        .post(h.url("/login"))
        .json(&json!({"code": "ok:alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let id = body["sessionid"].as_str().unwrap();
    assert!(is_session_id(id), "{id}");
    assert_eq!(body["expires_in"], 7200);
    let key = &h.wechat.issued_keys()[0];
    assert!(
        !text.contains(key.as_str()),
        "session_key leaked in the answer"
    );

    // The session: one readable JSON string, TTL = idle lifetime.
    let raw: String = h.redis.cmd(&["GET", &format!("wxsess:s:{id}")]);
    let stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["openid"], "alice");
    assert_eq!(stored["unionid"], serde_json::Value::Null);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(stored["created_at"].as_u64().unwrap().abs_diff(now) <= 2);
    let ttl: i64 = h.redis.cmd(&["TTL", &format!("wxsess:s:{id}")]);
    assert!((7198..=7200).contains(&ttl), "ttl {ttl}");

    // The user's session_key and index; every key expires.
    let sk: String = h.redis.cmd(&["HGET", "wxsess:user:{alice}", "session_key"]);
    assert_eq!(&sk, key);
    let members: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{alice}:sessions", "0", "-1"]);
    assert_eq!(members, vec![id.to_string()]);
    for k in h.redis.keys("*") {
        assert!(k.starts_with("wxsess:"), "{k}");
        let ttl: i64 = h.redis.cmd(&["TTL", &k]);
        assert!(ttl > 0, "{k} has no TTL");
    }
}

#[actix_web::test]
async fn wechat_receives_one_properly_encoded_call() {
    let h = Harness::start();
    let code = "ok:a&b=c+d%2F#?";
    h.login(code).await;
    let calls = h.wechat.received();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.path, "/sns/jscode2session");
    assert_eq!(call.param("js_code"), Some(code));
    assert_eq!(call.param("appid"), Some("wx_test_app"));
    assert_eq!(call.param("secret"), Some(TEST_SECRET));
    assert_eq!(call.param("grant_type"), Some("authorization_code"));
}

#[actix_web::test]
async fn unionid_and_text_plain_answers() {
    let h = Harness::start();

    let id = h.login("union:bob").await;
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200);
    assert_eq!(me["unionid"], "u-bob");
    let unionid: String = h.redis.cmd(&["HGET", "wxsess:user:{bob}", "unionid"]);
    assert_eq!(unionid, "u-bob");

    // WeChat sometimes labels its JSON text/plain.
    let id = h.login("text:carol").await;
    let (_, me) = h.get_session(&id).await;
    assert_eq!(me["openid"], "carol");
}

#[actix_web::test]
async fn bad_input_is_400_and_reaches_neither_wechat_nor_redis() {
    let h = Harness::start();
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);

    let long = "x".repeat(129);
    let bodies: Vec<String> = vec![
        "".into(),
        "not json".into(),
        "[]".into(),
        // serde alone would take an array for the fields in order.
        r#"["ok:x"]"#.into(),
        r#""ok:x""#.into(),
        "{}".into(),
        r#"{"code": 5}"#.into(),
        r#"{"code": null}"#.into(),
        r#"{"code": ""}"#.into(),
        json!({"code": long}).to_string(),
        json!({"code": "caf\u{e9}"}).to_string(),
        json!({"code": "a\tb"}).to_string(),
        json!({"code": "a b"}).to_string(),
        r#"{"code": "ok:x""#.into(),
    ];
    for body in bodies {
        let (status, answer) = send(
            client()
                .post(h.url("/login"))
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body:?}");
        assert_error(&answer, "invalid_request");
    }
    assert_eq!(h.wechat.calls(), 0);
    assert_eq!(h.redis.commands_served(), 0);

    // 128 bytes is still fine.
    h.login(&format!("ok:{}", "y".repeat(125))).await;
}

#[actix_web::test]
async fn bodies_over_16_kib_are_413() {
    let h = Harness::start();
    let big = json!({"code": "ok:x", "pad": "p".repeat(17 * 1024)}).to_string();
    let (status, body) = send(client().post(h.url("/login")).body(big.clone())).await;
    assert_eq!(status, 413);
    assert_error(&body, "payload_too_large");

    // Without a Content-Length (chunked), the limit holds while reading.
    let answer = raw_chunked_post(h.base(), "/login", big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(h.wechat.calls(), 0);
}

#[actix_web::test]
async fn every_wechat_outcome_maps_to_the_contract() {
    let h = Harness::start();
    let cases = [
        ("err:40029", 401, "invalid_code"),
        ("err:40163", 401, "invalid_code"),
        ("err:40226", 403, "user_blocked"),
        ("err:45011", 429, "rate_limited"),
        ("err:-1", 503, "wechat_busy"),
        ("err:40013", 502, "wechat_error"),
        ("garbage", 502, "wechat_error"),
        ("http500", 502, "wechat_error"),
        ("noopenid", 502, "wechat_error"),
        ("slow", 504, "wechat_timeout"),
        ("silent", 504, "wechat_timeout"),
    ];
    for (i, (code, status, error)) in cases.iter().enumerate() {
        let started = std::time::Instant::now();
        let (got, body) = h.try_login(code).await;
        assert_eq!(got, *status, "{code}: {body}");
        assert_error(&body, error);
        assert!(started.elapsed().as_millis() < 2000, "{code} took too long");
        assert_eq!(
            h.wechat.calls(),
            i + 1,
            "{code}: exactly one WeChat call, no retry"
        );
    }
    assert!(
        h.redis
            .keys("*")
            .iter()
            .all(|k| k.starts_with("wxsess:code:")),
        "a failed login writes nothing but its code's outcome: {:?}",
        h.redis.keys("*")
    );
}

#[actix_web::test]
async fn unreachable_wechat_is_502() {
    let h = Harness::setup().wechat_unreachable().start();
    let (status, body) = h.try_login("ok:x").await;
    assert_eq!(status, 502);
    assert_error(&body, "wechat_error");
}

#[actix_web::test]
async fn a_thousand_logins_give_a_thousand_distinct_ids() {
    let h = Harness::start();
    let mut ids = std::collections::HashSet::new();
    for chunk in 0..50 {
        let logins = (0..20).map(|i| {
            let code = format!("ok:user{}", chunk * 20 + i);
            let h = &h;
            async move { h.login(&code).await }
        });
        for id in futures_util::future::join_all(logins).await {
            assert!(is_session_id(&id));
            assert!(ids.insert(id), "duplicate session id");
        }
    }
    assert_eq!(ids.len(), 1000);
    assert_eq!(h.redis.keys("wxsess:s:*").len(), 1000);
}

#[actix_web::test]
async fn the_users_index_is_pruned_and_expires() {
    let h = Harness::with(&[("session.max_lifetime_secs", "600")]);
    let first = h.login("ok:dave").await;
    let second = h.login("ok:dave~2").await;
    // An operator deletes one session by hand: the next login drops it from the index.
    h.redis.cmd::<i64>(&["DEL", &format!("wxsess:s:{first}")]);
    let third = h.login("ok:dave~3").await;
    let mut members: Vec<String> =
        h.redis
            .cmd(&["ZRANGE", "wxsess:user:{dave}:sessions", "0", "-1"]);
    members.sort();
    let mut expected = vec![second, third];
    expected.sort();
    assert_eq!(members, expected);
    for key in ["wxsess:user:{dave}:sessions", "wxsess:user:{dave}"] {
        let ttl: i64 = h.redis.cmd(&["TTL", key]);
        assert!((590..=600).contains(&ttl), "{key}: {ttl}");
    }
}

#[actix_web::test]
async fn key_prefix_is_applied_to_every_key() {
    let h = Harness::with(&[("redis.key_prefix", "app1:")]);
    h.login("union:erin").await;
    let keys = h.redis.keys("*");
    assert_eq!(
        keys.len(),
        5,
        "session, user, user index, unionid index, code: {keys:?}"
    );
    assert!(keys.iter().all(|k| k.starts_with("app1:")), "{keys:?}");
}

/// A POST with `Transfer-Encoding: chunked` over a plain socket; returns the raw answer.
fn raw_chunked_post(base: &str, path: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        request.extend(format!("{:x}\r\n", chunk.len()).bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn a_repeated_code_reaches_wechat_once_and_gets_the_same_session() {
    let h = Harness::start();
    let first = h.login("ok:rita").await;
    let again = h.login("ok:rita").await;
    assert_eq!(first, again);
    assert_eq!(h.wechat.calls(), 1);

    // The raw code is nowhere in Redis, nor the session id in clear.
    let code_keys = h.redis.keys("wxsess:code:*");
    assert_eq!(code_keys.len(), 1);
    assert!(!code_keys[0].contains("rita"));
    let record: String = h.redis.cmd(&["GET", &code_keys[0]]);
    assert!(
        !record.contains(&first) && !record.contains("rita"),
        "{record}"
    );
    let ttl: i64 = h.redis.cmd(&["TTL", &code_keys[0]]);
    assert!((1..=300).contains(&ttl));

    // Once that session has ended, the code is spent.
    h.logout(&first).await;
    let (status, body) = h.try_login("ok:rita").await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_code");
    assert_eq!(h.wechat.calls(), 1);
}

#[actix_web::test]
async fn a_repeated_failed_code_gets_the_same_error_without_wechat() {
    let h = Harness::start();
    for (code, status, error) in [
        ("err:40226", 403, "user_blocked"),
        ("err:-1", 503, "wechat_busy"),
        ("garbage", 502, "wechat_error"),
    ] {
        for _ in 0..3 {
            let (got, body) = h.try_login(code).await;
            assert_eq!(got, status, "{code}");
            assert_error(&body, error);
        }
    }
    assert_eq!(h.wechat.calls(), 3, "one WeChat call per code");
}

#[actix_web::test]
async fn concurrent_repeats_on_two_instances_share_one_wechat_call() {
    let h = Harness::setup()
        .set(&[("wechat.timeout_ms", "5000")])
        .instances(2)
        .start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    // `slow` answers after 3 s: every repeat arrives while the first is in flight.
    let attempts = (0..10).map(|i| {
        let server = if i % 2 == 0 { a } else { b };
        async move { server.try_login("slow").await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["sessionid"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every repeat got the same session");
    assert_eq!(h.wechat.calls(), 1);
}
