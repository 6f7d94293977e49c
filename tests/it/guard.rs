//! The guard and the guarded routes: GET/DELETE /session, GET /auth, idle and
//! absolute lifetimes, several instances on one Redis, and the plain routes.

use std::time::Duration;

use crate::support::*;

fn ttl(redis: &RedisServer, id: &str) -> i64 {
    redis.cmd(&["TTL", &format!("wxsess:s:{id}")])
}

async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

#[actix_web::test]
async fn a_live_session_answers_who_am_i_and_auth() {
    let h = Harness::start();
    let id = h.login("union:alice").await;

    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200);
    assert_eq!(me["openid"], "alice");
    assert_eq!(me["unionid"], "u-alice");
    assert!(me["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(me["expires_in"], 7200);
    assert_eq!(me["device"], serde_json::Value::Null);
    assert_eq!(me["elevated_until"], serde_json::Value::Null);
    assert_eq!(me["appid"], "wx_test_app");
    assert_eq!(me["platform"], "wechat");
    assert_eq!(me.as_object().unwrap().len(), 8, "{me}");

    let auth = |id: String| client().get(h.url("/auth")).header("sessionid", id).send();
    let resp = auth(id).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["x-wx-openid"], "alice");
    assert_eq!(resp.headers()["x-wx-appid"], "wx_test_app");
    assert_eq!(resp.headers()["x-wx-unionid"], "u-alice");

    // Without a unionid there is no X-WX-UnionID header.
    let resp = auth(h.login("ok:bob").await).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["x-wx-openid"], "bob");
    assert!(resp.headers().get("x-wx-unionid").is_none());
}

#[actix_web::test]
async fn missing_malformed_and_unknown_ids_are_401_and_malformed_never_reach_redis() {
    let h = Harness::start();

    for path in ["/session", "/auth"] {
        let (status, body) = send(client().get(h.url(path))).await;
        assert_eq!(status, 401);
        assert_error(&body, "session_required");
    }
    let (status, body) = send(client().delete(h.url("/session"))).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_required");

    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let malformed = [
        "",
        "short",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcdef0",
        " 0123456789abcdef0123456789abcdef",
        &"a".repeat(4000),
    ];
    for bad in malformed {
        for path in ["/session", "/auth"] {
            let (status, body) = send(client().get(h.url(path)).header("sessionid", bad)).await;
            assert_eq!(status, 401, "{bad:?}");
            assert_error(&body, "invalid_session");
        }
    }
    // Two session headers: ambiguous, rejected.
    let id = h.login("ok:carol").await;
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    let (status, body) = send(
        client()
            .get(h.url("/session"))
            .header("sessionid", &id)
            .header("sessionid", &id),
    )
    .await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");
    // Only the header: no query string, no cookie.
    let (status, _) = send(client().get(h.url(&format!("/session?sessionid={id}")))).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        client()
            .get(h.url("/session"))
            .header("cookie", format!("sessionid={id}")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        h.redis.commands_served(),
        0,
        "rejected without a Redis round trip"
    );

    // Well-formed but unknown: one lookup, 401.
    let (status, body) = h.get_session("0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");
    assert_eq!(
        h.redis.commands_served(),
        1,
        "one round trip per guard check"
    );
}

#[actix_web::test]
async fn a_guarded_request_costs_one_redis_command() {
    let h = Harness::start();
    let id = h.login("ok:dan").await;
    // Let the pool settle, then count.
    h.get_session(&id).await;
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..10 {
        assert_eq!(h.get_session(&id).await.0, 200);
    }
    let info: String = h.redis.cmd(&["INFO", "commandstats"]);
    let getex = info
        .lines()
        .find(|l| l.starts_with("cmdstat_getex:"))
        .expect("GETEX used");
    assert!(getex.contains("calls=10,"), "{getex}");
}

#[actix_web::test]
async fn logout_kills_the_id_and_cleans_the_index() {
    let h = Harness::start();
    let id = h.login("ok:erin").await;
    let other = h.login("ok:erin~2").await;

    let resp = client()
        .delete(h.url("/session"))
        .header("sessionid", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.text().await.unwrap().is_empty());
    let exists: i64 = h.redis.cmd(&["EXISTS", &format!("wxsess:s:{id}")]);
    assert_eq!(exists, 0);
    let members: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{erin}:sessions", "0", "-1"]);
    assert_eq!(members, vec![other.clone()]);

    let (status, body) = h.get_session(&id).await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");
    let (status, _) = h.logout(&id).await;
    assert_eq!(status, 401);
    // The user's other session is untouched.
    assert_eq!(h.get_session(&other).await.0, 200);
}

#[actix_web::test]
async fn two_instances_share_sessions_and_logouts() {
    let h = Harness::setup().instances(2).start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    let id = a.login("ok:frank").await;
    assert_eq!(b.get_session(&id).await.0, 200);
    let (status, _) = b.logout(&id).await;
    assert_eq!(status, 204);
    let (status, body) = a.get_session(&id).await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");
}

#[actix_web::test]
async fn sliding_sessions_live_while_used_and_expire_when_idle() {
    let h = Harness::with(&[("session.ttl_secs", "2")]);
    let id = h.login("ok:gina").await;
    for _ in 0..3 {
        sleep_ms(1200).await;
        let (status, me) = h.get_session(&id).await;
        assert_eq!(status, 200, "used within the idle lifetime");
        assert_eq!(me["expires_in"], 2);
        assert!(ttl(&h.redis, &id) >= 1, "TTL restarted");
    }
    sleep_ms(2300).await;
    let (status, body) = h.get_session(&id).await;
    assert_eq!(status, 401, "idle past ttl_secs");
    assert_error(&body, "invalid_session");
}

#[actix_web::test]
async fn without_sliding_the_idle_lifetime_is_not_restarted() {
    let h = Harness::with(&[("session.ttl_secs", "2"), ("session.sliding", "false")]);
    let id = h.login("ok:hank").await;
    sleep_ms(1200).await;
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200);
    assert!(me["expires_in"].as_u64().unwrap() <= 1, "{me}");
    assert!(ttl(&h.redis, &id) <= 1, "TTL not restarted");
    sleep_ms(1200).await;
    assert_eq!(h.get_session(&id).await.0, 401);
}

#[actix_web::test]
async fn no_renewal_goes_past_the_absolute_lifetime() {
    let h = Harness::with(&[
        ("session.ttl_secs", "2"),
        ("session.max_lifetime_secs", "4"),
    ]);
    let id = h.login("ok:iris").await;
    let stored: String = h.redis.cmd(&["GET", &format!("wxsess:s:{id}")]);
    let created_at = serde_json::from_str::<serde_json::Value>(&stored).unwrap()["created_at"]
        .as_u64()
        .unwrap();
    // Used every 1.2 s, so the 2 s idle lifetime never runs out; only the 4 s
    // absolute lifetime (counted in whole seconds from created_at) can end it.
    sleep_ms(1200).await;
    assert_eq!(h.get_session(&id).await.0, 200);
    sleep_ms(1200).await;
    let (status, me) = h.get_session(&id).await;
    assert_eq!(status, 200, "2.4 s after login, inside both lifetimes");
    let expiry: i64 = h.redis.cmd(&["EXPIRETIME", &format!("wxsess:s:{id}")]);
    assert!(
        expiry as u64 <= created_at + 4,
        "TTL capped at created_at + max"
    );
    assert!(me["expires_in"].as_u64().unwrap() <= 2, "{me}");
    sleep_ms(1100).await;
    h.get_session(&id).await;
    sleep_ms(1000).await;
    let (status, body) = h.get_session(&id).await;
    assert_eq!(
        status, 401,
        "absolute lifetime over, though used within ttl"
    );
    assert_error(&body, "invalid_session");
}

#[actix_web::test]
async fn a_custom_header_replaces_sessionid() {
    let h = Harness::with(&[("session.header", "X-Session")]);
    let id = h.login("ok:jack").await;
    let (status, _) = send(client().get(h.url("/session")).header("x-session", &id)).await;
    assert_eq!(status, 200);
    let (status, body) = h.get_session(&id).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_required");
}

#[actix_web::test]
async fn plain_routes_health_ready_metrics_and_unknown_paths() {
    let h = Harness::start();
    assert_eq!(send(client().get(h.url("/healthz"))).await.0, 200);
    assert_eq!(send(client().get(h.url("/readyz"))).await.0, 200);

    let (status, body) = send(client().get(h.url("/nope"))).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let resp = client().put(h.url("/session")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, DELETE");
    assert_error(&resp.json().await.unwrap(), "method_not_allowed");

    let id = h.login("ok:kim").await;
    h.try_login("err:40029").await;
    h.get_session(&id).await;
    h.get_session("0123456789abcdef0123456789abcdef").await;
    h.get_session("bad").await;
    send(client().get(h.url("/session"))).await;

    let resp = client().get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "wxsession_logins_total{outcome=\"ok\"} 1",
        "wxsession_logins_total{outcome=\"invalid_code\"} 1",
        "wxsession_guard_checks_total{outcome=\"ok\"} 1",
        "wxsession_guard_checks_total{outcome=\"unknown\"} 1",
        "wxsession_guard_checks_total{outcome=\"malformed\"} 1",
        "wxsession_guard_checks_total{outcome=\"missing\"} 1",
        "# TYPE wxsession_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("wxsession_http_request_duration_seconds_count "))
        .unwrap();
    assert!(count.parse::<u64>().unwrap() >= 10, "{count}");
}

/// The guard's future is handed down (and so copied whole) several times per
/// request: redis-rs's own future for a command (about 2.5 KiB) stays boxed
/// out of it, and so it stays small, with the local cache or without.
#[actix_web::test]
async fn the_guards_future_stays_small() {
    let h = Harness::bare();
    for cache in ["false", "true"] {
        let config = h.config(&[("WXSESSION_SESSION_LOCAL_CACHE", cache)]);
        let store = wxsession::session::SessionStore::new(
            &config,
            std::sync::Arc::new(wxsession::telemetry::Metrics::default()),
        )
        .unwrap();
        let id = wxsession::session::SessionId::generate();
        let touch = store.touch(&id);
        let size = std::mem::size_of_val(&touch);
        assert!(size <= 640, "local cache {cache}: {size} bytes");
        drop(touch);
    }
}
