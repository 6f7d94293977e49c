//! Contract §9: the fleet's one access_token, phone number by code, and the
//! session-key check, against a stand-in that counts calls per API.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::support::*;

const TOKEN: &str = "admin-token-xyz-0123456789abcdef0123";
const STABLE: &str = "/cgi-bin/stable_token";

fn admin(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("authorization", format!("Bearer {TOKEN}"))
}

async fn phone(server: &impl Instance, id: &str, code: &str) -> (u16, serde_json::Value) {
    server
        .post_as(id, "/session/phone", &json!({ "code": code }))
        .await
}

/// `n` phone numbers by code asked at once, each answer with how long it took.
async fn phones_at_once(
    server: &impl Instance,
    id: &str,
    n: usize,
) -> Vec<(u16, serde_json::Value, Duration)> {
    let calls = (0..n).map(|_| async {
        let started = Instant::now();
        let (status, body) = phone(server, id, "num").await;
        (status, body, started.elapsed())
    });
    futures_util::future::join_all(calls).await
}

async fn check(server: &impl Instance, id: &str) -> (u16, serde_json::Value) {
    send(
        client()
            .get(server.url("/session/check"))
            .header("sessionid", id),
    )
    .await
}

#[actix_web::test]
async fn three_instances_fifty_first_requests_one_token_fetch() {
    let h = Harness::setup()
        .wechat_knobs(|state| state.token_delay_ms.store(200, Ordering::SeqCst))
        .instances(3)
        .start();
    let servers = &h.servers;
    let id = servers[0].login("ok:alice").await;
    let calls = (0..50).map(|i| phone(&servers[i % 3], &id, "num"));
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        h.wechat.calls_to(STABLE),
        1,
        "one stable_token call for the fleet"
    );
    assert_eq!(h.wechat.calls_to("/wxa/business/getuserphonenumber"), 50);
    let body = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.path == STABLE)
        .unwrap()
        .json();
    assert_eq!(body["grant_type"], "client_credential");
    assert_eq!(body["appid"], "wx_test_app");
    assert_eq!(body["secret"], TEST_SECRET);
    assert_eq!(body["force_refresh"], false);
    let ttl: i64 = h.redis.cmd(&["TTL", "wxsess:wechat:access_token"]);
    assert!(
        (7000..=7140).contains(&ttl),
        "cached until 60 s before expiry: {ttl}"
    );
}

#[actix_web::test]
async fn a_short_lived_token_is_refreshed_once_not_per_instance() {
    let h = Harness::setup()
        .wechat_knobs(|state| state.token_expires_in.store(4, Ordering::SeqCst))
        .instances(3)
        .start();
    let servers = &h.servers;
    let id = servers[0].login("ok:bob").await;
    for round in 0..2 {
        let calls = (0..30).map(|i| phone(&servers[i % 3], &id, "str"));
        for (status, _) in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
        assert_eq!(h.wechat.calls_to(STABLE), round + 1);
        // expires_in 4 → shared for half of it (2 s, counted in whole seconds).
        actix_web::rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    }
}

#[actix_web::test]
async fn a_refused_token_is_replaced_once_and_the_call_retried_once() {
    let h = Harness::start();
    let id = h.login("ok:carol").await;
    assert_eq!(phone(&h, &id, "num").await.0, 200);
    assert_eq!(h.wechat.calls_to(STABLE), 1);

    // WeChat now refuses TOKEN-1 (once): one extra fetch, one retry, success.
    h.wechat.state.tokens_valid_from.store(2, Ordering::SeqCst);
    let (status, body) = phone(&h, &id, "num").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.wechat.calls_to(STABLE), 2);
    assert_eq!(h.wechat.calls_to("/wxa/business/getuserphonenumber"), 3);
    let token: String = h
        .redis
        .cmd(&["HGET", "wxsess:wechat:access_token", "access_token"]);
    assert_eq!(token, "TOKEN-2");

    // Every token refused: 502 after exactly one retry, no loop.
    h.wechat
        .state
        .reject_all_tokens
        .store(true, Ordering::SeqCst);
    let (status, body) = check(&h, &id).await;
    assert_eq!(status, 502);
    assert_error(&body, "wechat_error");
    assert_eq!(h.wechat.calls_to(STABLE), 3);
    assert_eq!(h.wechat.calls_to("/wxa/checksession"), 2);
    for r in h.wechat.received().iter().filter(|r| r.path == STABLE) {
        assert_eq!(
            r.json()["force_refresh"],
            false,
            "never force_refresh on its own"
        );
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("wxsession_wechat_token_recoveries_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wxsession_wechat_token_recoveries_total{outcome=\"failed\"} 1"));
    assert!(metrics.contains("wxsession_wechat_token_fetches_total{outcome=\"ok\"} 3"));
}

/// While stable_token fails, the callers that need the token share one call
/// and its error; for a second after it (README), callers get that error at
/// once; then the next caller makes a new call.
#[actix_web::test]
async fn callers_share_one_failed_token_fetch_and_its_error_for_a_second() {
    let h = Harness::setup()
        .wechat_knobs(|state| {
            state.token_errcode.store(-1, Ordering::SeqCst);
            // Long enough for all the callers to arrive while the call is out.
            state.token_delay_ms.store(200, Ordering::SeqCst);
        })
        .start();
    let id = h.login("ok:frank").await;
    let answers = phones_at_once(&h, &id, 4).await;
    for (status, body, _) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_error(body, "wechat_busy");
    }
    assert_eq!(h.wechat.calls_to(STABLE), 1, "one call for four callers");

    let started = Instant::now();
    let (status, body) = phone(&h, &id, "num").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "wechat_busy");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "the same error at once: {:?}",
        started.elapsed()
    );
    assert_eq!(h.wechat.calls_to(STABLE), 1, "no call within the second");

    h.wechat.state.token_errcode.store(0, Ordering::SeqCst);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = phone(&h, &id, "num").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.wechat.calls_to(STABLE), 2, "a new call after the second");
    assert_eq!(h.wechat.calls_to("/wxa/business/getuserphonenumber"), 1);
}

/// stable_token never answers: the callers share its one call, and none waits
/// longer than `wechat.timeout_ms` + `redis.timeout_ms` (500 + 300 ms here).
#[actix_web::test]
async fn a_hanging_token_fetch_is_one_call_and_no_caller_waits_past_its_bound() {
    let bound = Duration::from_millis(500 + 300);
    let slack = Duration::from_millis(150);
    let h = Harness::setup()
        .wechat_knobs(|state| state.token_delay_ms.store(10_000, Ordering::SeqCst))
        .start();
    let id = h.login("ok:grace").await;
    let answers = phones_at_once(&h, &id, 4).await;
    let waits: Vec<Duration> = answers.iter().map(|(_, _, waited)| *waited).collect();
    for (status, body, waited) in &answers {
        assert_eq!(*status, 504, "{body}");
        assert_error(body, "wechat_timeout");
        assert!(*waited <= bound + slack, "waits {waits:?}");
    }
    assert_eq!(h.wechat.calls_to(STABLE), 1, "one call for four callers");
}

#[actix_web::test]
async fn phone_numbers_by_code_map_every_outcome() {
    let h = Harness::start();
    let id = h.login("ok:dave").await;
    for code in ["num", "str"] {
        let (status, body) = phone(&h, &id, code).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"phoneNumber": "+86 13912345678", "purePhoneNumber": "13912345678", "countryCode": "86"})
        );
    }
    let sent = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.path == "/wxa/business/getuserphonenumber")
        .unwrap();
    assert_eq!(sent.param("access_token"), Some("TOKEN-1"));
    assert_eq!(sent.json(), json!({"code": "num"}));

    for (code, status, error) in [
        ("err:40029", 422, "invalid_phone_code"),
        ("other-app", 422, "appid_mismatch"),
        ("err:-1", 503, "wechat_busy"),
        ("err:45011", 429, "rate_limited"),
        ("err:40013", 502, "wechat_error"),
        ("garbage", 502, "wechat_error"),
        ("slow", 504, "wechat_timeout"),
    ] {
        let (got, body) = phone(&h, &id, code).await;
        assert_eq!(got, status, "{code}: {body}");
        assert_error(&body, error);
    }
    let (status, body) = phone(&h, &id, "").await;
    assert_eq!(status, 400);
    assert_error(&body, "invalid_request");
    let (status, body) = send(
        client()
            .post(h.url("/session/phone"))
            .json(&json!({"code": "num"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_error(&body, "session_required");
    // Never stored.
    for key in h.redis.keys("*") {
        let kind: String = h.redis.cmd(&["TYPE", &key]);
        if kind == "string" {
            assert!(!h
                .redis
                .cmd::<String>(&["GET", &key])
                .contains("13912345678"));
        }
    }
}

#[actix_web::test]
async fn session_key_check_signs_with_the_key_text() {
    let h = Harness::start();
    let key = "o0q0otL8aEzpcZL/FT9WsQ==";
    let id = h.login(&format!("key:erin:{key}")).await;
    let (status, body) = check(&h, &id).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"valid": true}));
    let sent = h
        .wechat
        .received()
        .into_iter()
        .find(|r| r.path == "/wxa/checksession")
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(b"");
    assert_eq!(
        sent.param("signature"),
        Some(hex::encode(mac.finalize().into_bytes()).as_str())
    );
    assert_eq!(sent.param("sig_method"), Some("hmac_sha256"));
    assert_eq!(sent.param("openid"), Some("erin"));
    assert_eq!(sent.param("access_token"), Some("TOKEN-1"));

    let stale = h.login("ok:stale").await;
    let (status, body) = check(&h, &stale).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"valid": false}));
}

#[test]
fn the_hmac_vector_pins_the_key_format() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wechat-vectors.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = &v["hmac_signature"];
    let mut mac = Hmac::<Sha256>::new_from_slice(v["key"].as_str().unwrap().as_bytes()).unwrap();
    mac.update(v["message"].as_str().unwrap().as_bytes());
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        v["hmac_sha256"].as_str().unwrap()
    );
}

#[actix_web::test]
async fn the_token_service_route_needs_the_admin_token() {
    let without = Harness::start();
    let (status, body) = send(admin(
        client().get(without.url("/admin/wechat/access-token")),
    ))
    .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    let server = without.start_server(&[("admin.token", TOKEN)]);
    let (status, body) = send(
        client()
            .get(server.url("/admin/wechat/access-token"))
            .header("authorization", "Bearer nope"),
    )
    .await;
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, body) = send(admin(
        client().get(server.url("/admin/wechat/access-token")),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["access_token"], "TOKEN-1");
    assert!(
        (7000..=7140).contains(&body["expires_in"].as_u64().unwrap()),
        "{body}"
    );
    let (_, again) = send(admin(
        client().get(server.url("/admin/wechat/access-token")),
    ))
    .await;
    assert_eq!(again["access_token"], "TOKEN-1");
    assert_eq!(without.wechat.calls_to(STABLE), 1);
}

#[actix_web::test]
async fn wechat_cli_shows_status_and_force_refreshes() {
    let h = Harness::bare();
    let url = h.redis.url();
    let env = [
        ("WXSESSION_WECHAT_APPID", "wx_test_app"),
        ("WXSESSION_WECHAT_SECRET", TEST_SECRET),
        ("WXSESSION_WECHAT_API_BASE", h.wechat.base.as_str()),
        ("WXSESSION_WECHAT_ALLOW_INSECURE_API_BASE", "true"),
        ("WXSESSION_REDIS_URL", url.as_str()),
    ];
    let run = |args: &[&str]| {
        let (code, out, err) = run_binary(&env, args);
        (code, out + &err)
    };
    let (code, _) = run(&["wechat", "token-status"]);
    assert_eq!(code, 1, "no token yet");
    let (code, out) = run(&["wechat", "refresh-token"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["wechat", "refresh-token", "--force"]);
    assert_eq!(code, 0, "{out}");
    let forces: Vec<bool> = h
        .wechat
        .received()
        .iter()
        .filter(|r| r.path == STABLE)
        .map(|r| r.json()["force_refresh"].as_bool().unwrap())
        .collect();
    assert_eq!(forces, vec![false, true]);
    let (code, out) = run(&["wechat", "token-status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("fetched_at:") && out.contains("expires_at:"),
        "{out}"
    );
    assert!(!out.contains("TOKEN-"), "never the token: {out}");
}

#[actix_web::test]
async fn mock_mode_answers_all_three_locally() {
    let h = Harness::setup()
        .wechat_unreachable()
        .set(&[("wechat.mock", "true"), ("admin.token", TOKEN)])
        .adjust(|cfg| cfg.wechat.secret = wxsession::Secret::default())
        .start();
    let id = h.login("anything").await;
    let (status, body) = phone(&h, &id, "any-code").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["countryCode"], "86");
    assert_eq!(check(&h, &id).await.1, json!({"valid": true}));
    let (status, body) = send(admin(client().get(h.url("/admin/wechat/access-token")))).await;
    assert_eq!(status, 200);
    assert!(body["access_token"].as_str().unwrap().starts_with("mock-"));
}
