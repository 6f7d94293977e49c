//! Limits and trust: what an internet-facing server refuses, and what it lets
//! no cache keep.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn admin(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("authorization", format!("Bearer {ADMIN_TOKEN}"))
}

async fn cache_control(req: reqwest::RequestBuilder) -> (u16, String) {
    let answer = req.send().await.unwrap();
    let value = answer
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (answer.status().as_u16(), value)
}

#[actix_web::test]
async fn answers_with_an_id_user_data_or_a_token_are_no_store() {
    let h = Harness::setup()
        .set(&[("wechat.mock", "true"), ("admin.token", ADMIN_TOKEN)])
        .start();
    let login = client().post(h.url("/login")).json(&json!({"code": "c1"}));
    assert_eq!(cache_control(login).await, (200, "no-store".into()));
    let id = h.login("c2").await;
    let with_id = |req: reqwest::RequestBuilder| req.header("sessionid", id.clone());
    let (_, me) = h.get_session(&id).await;
    let openid = me["openid"].as_str().unwrap().to_string();
    let cases = [
        (with_id(client().get(h.url("/session"))), 200),
        (with_id(client().get(h.url("/auth"))), 204),
        (
            with_id(client().post(h.url("/session/phone"))).json(&json!({"code": "p1"})),
            200,
        ),
        (
            admin(client().get(h.url(&format!("/admin/users/{openid}/sessions")))),
            200,
        ),
        (
            admin(client().get(h.url("/admin/wechat/access-token"))),
            200,
        ),
        // An error names no secret, but one rule for every JSON answer.
        (client().get(h.url("/session")), 401),
    ];
    for (req, status) in cases {
        assert_eq!(cache_control(req).await, (status, "no-store".into()));
    }
}

#[actix_web::test]
async fn a_body_still_arriving_5_s_after_its_headers_is_408() {
    let h = Harness::start();
    let addr = h.base().trim_start_matches("http://").to_string();
    // Headers promise 64 bytes; 10 come, then nothing.
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 64\r\n\r\n{{\"code\": \""
    );
    let started = Instant::now();
    let answer = raw_exchange(h.base(), request.as_bytes(), Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(answer.contains("no-store"), "{answer}");
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(h.wechat.calls(), 0);
    assert!(h
        .metrics()
        .await
        .contains("wxsession_logins_total{outcome=\"request_timeout\"} 1"));
}

#[actix_web::test]
async fn admin_path_ids_outside_the_openid_alphabet_are_400_and_reach_nothing() {
    let h = Harness::with(&[("admin.token", ADMIN_TOKEN)]);
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let long = "o".repeat(129);
    for bad in ["a%0Ab", "a%20b", "a.b", "%C3%A9", long.as_str()] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let url = h.url(&format!("/admin/users/{bad}/sessions"));
            let (status, body) = send(admin(client().request(method.clone(), url))).await;
            assert_eq!(status, 400, "{method} {bad}: {body}");
            assert_error(&body, "invalid_request");
        }
    }
    assert_eq!(h.redis.commands_served(), 0);
    // Without the token it is still 401 first: nothing is said about paths.
    let (status, _) = send(client().get(h.url("/admin/users/a%0Ab/sessions"))).await;
    assert_eq!(status, 401);
    let ok = "oAbC-_0123456789";
    let (status, body) = send(admin(
        client().get(h.url(&format!("/admin/users/{ok}/sessions"))),
    ))
    .await;
    assert_eq!((status, body), (200, json!({"sessions": []})));
}

#[actix_web::test]
async fn a_phone_body_with_both_a_code_and_encrypted_data_is_400() {
    let h = Harness::with(&[("wechat.mock", "true")]);
    let id = h.login("c1").await;
    let both = json!({"code": "p1", "encryptedData": "AAAA", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    let (status, body) = h.post_as(&id, "/session/phone", &both).await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "invalid_request");
    let half = json!({"encryptedData": "AAAA"});
    let (status, _) = h.post_as(&id, "/session/phone", &half).await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post_as(&id, "/session/phone", &json!({"code": "p1"}))
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_redirect_from_wechat_is_not_followed() {
    let h = Harness::start();
    let (status, body) = h.try_login("redirect").await;
    assert_eq!(status, 502, "{body}");
    assert_error(&body, "wechat_error");
    assert_eq!(h.wechat.calls(), 1, "the redirect's target was never asked");
}

#[actix_web::test]
async fn a_session_that_cannot_be_stored_after_code2session_is_recorded_not_retried() {
    let h = Harness::start();
    // Only login-code records may be written: the session's own SET is refused.
    let () = h
        .redis
        .cmd(&["ACL", "SETUSER", "default", "resetkeys", "~wxsess:code:*"]);
    let (status, body) = h.try_login("ok:alice").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "store_unavailable");
    let () = h.redis.cmd(&["ACL", "SETUSER", "default", "allkeys"]);
    // The code is spent at WeChat: the repeat gets the same error, not a second call.
    let (status, body) = h.try_login("ok:alice").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "store_unavailable");
    assert_eq!(h.wechat.calls(), 1);
}

/// Milliseconds left on `key`, polled until it exists (at most 2 s).
async fn pttl_once_set(h: &Harness, key: &str) -> i64 {
    for _ in 0..200 {
        let left: i64 = h.redis.cmd(&["PTTL", key]);
        if left > 0 {
            return left;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never appeared");
}

#[actix_web::test]
async fn a_claimed_code_and_the_token_lock_outlive_the_worst_case_of_their_holder() {
    // Test timeouts: WeChat 500 ms, Redis 300 ms; the worst case of a holder is
    // the WeChat call and a Redis timeout on either side of it. Half a second
    // beyond that is the least margin asked for here.
    let worst_ms = 500 + 2 * 300 + 500;
    let h = Harness::setup()
        .wechat_knobs(|state| {
            state
                .token_delay_ms
                .store(400, std::sync::atomic::Ordering::SeqCst)
        })
        .start();
    let code_key = format!(
        "wxsess:code:{}",
        // A code is recorded under its app: the hash of `<appid>:<code>`.
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"wx_test_app:silent"
        ))
    );
    let login = h.try_login("silent");
    let watch = pttl_once_set(&h, &code_key);
    let ((status, _), left) = futures_util::future::join(login, watch).await;
    assert_eq!(status, 504);
    assert!(left > worst_ms, "claim held for {left} ms");

    let id = h.login("ok:bob").await;
    let check = send(
        client()
            .get(h.url("/session/check"))
            .header("sessionid", id),
    );
    let watch = pttl_once_set(&h, "wxsess:wechat:access_token:lock");
    let ((status, body), left) = futures_util::future::join(check, watch).await;
    assert_eq!(status, 200, "{body}");
    assert!(left > worst_ms, "token lock held for {left} ms");
}

#[actix_web::test]
async fn a_repeated_code_gets_its_session_only_within_the_repeat_window() {
    let h = Harness::with(&[("login.repeat_window_secs", "1")]);
    let id = h.login("ok:carol").await;
    assert_eq!(h.login("ok:carol").await, id, "a retry within the window");
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    let (status, body) = h.try_login("ok:carol").await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "invalid_code");
    assert_eq!(
        h.wechat.calls(),
        1,
        "the spent code never went back to WeChat"
    );
    let (status, _) = h.get_session(&id).await;
    assert_eq!(status, 200, "the session itself lives on");
}

#[actix_web::test]
async fn logins_beyond_max_in_flight_are_wechat_busy_at_once_and_keep_their_code() {
    let h = Harness::with(&[("wechat.max_in_flight", "1")]);
    let slow = h.try_login("slow");
    let turned_away = async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let answer = h.try_login("ok:dave").await;
        (answer, started.elapsed())
    };
    let ((slow_status, _), ((status, body), took)) =
        futures_util::future::join(slow, turned_away).await;
    assert_eq!(slow_status, 504);
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "wechat_busy");
    assert!(
        took < Duration::from_millis(200),
        "at once, not queued: {took:?}"
    );
    assert_eq!(h.wechat.calls(), 1, "only the slow login reached WeChat");
    // Turned away before it was claimed: the same code still logs in.
    h.login("ok:dave").await;
}

/// `POST /login` with `code`, as forwarded for `client` (`X-Forwarded-For`).
async fn login_for(server: &impl Instance, code: &str, client: &str) -> u16 {
    send(
        crate::support::client()
            .post(server.url("/login"))
            .header("x-forwarded-for", client)
            .json(&json!({ "code": code })),
    )
    .await
    .0
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_login_budget() {
    let h = Harness::with(&[
        ("login.rate_per_minute", "2"),
        ("server.trusted_proxies", "10.0.0.0/8, 127.0.0.1"),
    ]);
    // What the client wrote itself (left of what the proxy appended) proves nothing.
    for (i, forwarded) in ["203.0.113.9, 198.51.100.1", "198.51.100.1"]
        .iter()
        .enumerate()
    {
        assert_eq!(login_for(&h, &format!("ok:tp~{i}"), forwarded).await, 200);
    }
    assert_eq!(
        login_for(&h, "ok:tp~2", "10.1.1.1, 198.51.100.1").await,
        429
    );
    assert_eq!(login_for(&h, "ok:tp~3", "198.51.100.2").await, 200);
    let mut counted = h.redis.keys("wxsess:login_rate:*");
    counted.sort();
    assert_eq!(
        counted,
        [
            "wxsess:login_rate:198.51.100.1",
            "wxsess:login_rate:198.51.100.2"
        ]
    );
}

#[actix_web::test]
async fn from_an_untrusted_peer_x_forwarded_for_is_ignored() {
    let h = Harness::with(&[
        ("login.rate_per_minute", "2"),
        ("server.trusted_proxies", "10.0.0.0/8"),
    ]);
    for i in 0..2 {
        let forwarded = format!("198.51.100.{i}");
        assert_eq!(login_for(&h, &format!("ok:up~{i}"), &forwarded).await, 200);
    }
    assert_eq!(login_for(&h, "ok:up~2", "198.51.100.7").await, 429);
    assert_eq!(
        h.redis.keys("wxsess:login_rate:*"),
        ["wxsess:login_rate:127.0.0.1"]
    );
}

#[actix_web::test]
async fn the_login_rate_is_one_budget_across_the_fleet() {
    let h = Harness::setup()
        .set(&[("login.rate_per_minute", "3")])
        .instances(2)
        .start();
    let [a, b] = [&h.servers[0], &h.servers[1]];
    for (i, server) in [a, b, a].iter().enumerate() {
        server.login(&format!("ok:fleet~{i}")).await;
    }
    let (status, body) = b.try_login("ok:fleet~3").await;
    assert_eq!(status, 429);
    assert_error(&body, "rate_limited");
    assert_eq!(
        h.wechat.calls(),
        3,
        "the limited login never reached WeChat"
    );
    // The count ends with its window: nothing stays in Redis for good.
    let ttl: i64 = h.redis.cmd(&["PTTL", "wxsess:login_rate:127.0.0.1"]);
    assert!((1..=60_000).contains(&ttl), "{ttl}");
}

/// libfaketime, which sets a process's wall clock apart from the host's.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .find(|lib| lib.exists())
        .expect("libfaketime (Debian package faketime; scripts/test.sh installs it)");
    found.to_str().unwrap().to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[actix_web::test]
async fn an_instance_whose_clock_is_5_s_ahead_ends_nothing_early() {
    let lifetime = [
        ("session.max_lifetime_secs", "8"),
        ("session.ttl_secs", "60"),
    ];
    let h = Harness::with(&lifetime);
    let lib = libfaketime();
    let mut env = vec![
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME", "+5"),
        // Timers and timeouts keep the true monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    env.extend(lifetime);
    let ahead = h.start_process(&env);
    // The instance reports its offset once it has measured it against Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = ahead.metrics().await;
        let offset = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wxsession_clock_offset_seconds "))
            .map(|v| v.parse::<f64>().unwrap());
        match offset {
            Some(o) if (-5.5..=-4.5).contains(&o) => break,
            _ if Instant::now() > deadline => panic!("offset never measured: {offset:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        ahead
            .log()
            .contains("this host's clock is 5.0 s ahead of Redis's"),
        "{}",
        ahead.log()
    );

    // A session made on a true clock keeps its whole lifetime on the one ahead.
    let id = h.login("ok:skew").await;
    let (status, me) = ahead.get_session(&id).await;
    assert_eq!(status, 200);
    assert!(me["expires_in"].as_u64().unwrap() >= 7, "{me}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, me) = ahead.get_session(&id).await;
    assert_eq!(status, 200, "ended 4 s into an 8 s lifetime: {me}");
    let ttl: i64 = h.redis.cmd(&["TTL", &format!("wxsess:s:{id}")]);
    assert!(ttl >= 2, "EXPIREAT cut it short: {ttl}");

    // What the instance ahead writes is on the fleet's clock too.
    let id = ahead.login("ok:skew-2").await;
    let (_, me) = h.get_session(&id).await;
    let created_at = me["created_at"].as_u64().unwrap();
    assert!(
        created_at.abs_diff(unix_now()) <= 1,
        "created_at {created_at}"
    );
    let (status, _) = ahead
        .post_as(&id, "/session/phone", &json!({"code": "num"}))
        .await;
    assert_eq!(status, 200);
    let expires_at: u64 = h
        .redis
        .cmd(&["HGET", "wxsess:wechat:access_token", "expires_at"]);
    let expected = unix_now() + 7200;
    assert!(
        expires_at.abs_diff(expected) <= 2,
        "token expires_at {expires_at}"
    );
}
