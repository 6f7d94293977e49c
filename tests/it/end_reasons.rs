//! How a session ended, as its client learns it: `session_replaced` and
//! `session_revoked` for at most `session.ttl_secs` on every instance (local
//! cache on or off), then `invalid_session`, with nothing left in Redis.

use std::time::{Duration, Instant};

use crate::support::*;

const TOKEN: &str = "admin-token-0123456789abcdef01234567";

async fn login_device(base: &str, code: &str, device: &str) -> String {
    let (status, body) = send(
        client()
            .post(format!("{base}/login"))
            .json(&serde_json::json!({ "code": code, "device": device })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["sessionid"].as_str().unwrap().to_string()
}

/// The error `server` answers for `id` once it says anything but 200 (the
/// other instances hear of the end through Redis, within moments).
async fn ended_as(server: &TestServer, id: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = server.get_session(id).await;
        if status != 200 || Instant::now() > deadline {
            return (status, body["error"].as_str().unwrap_or("").to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_instance_is_told(local_cache: &str) {
    let h = Harness::setup()
        .set(&[
            ("session.one_per_device", "true"),
            ("session.local_cache", local_cache),
            ("admin.token", TOKEN),
        ])
        .instances(2)
        .start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    let old = login_device(&a.base, "ok:mona", "phone").await;
    // Both instances have read it (with the cache, both now hold it).
    assert_eq!(a.get_session(&old).await.0, 200);
    assert_eq!(b.get_session(&old).await.0, 200);
    let new = login_device(&b.base, "ok:mona~2", "phone").await;
    for server in [a, b] {
        assert_eq!(
            ended_as(server, &old).await,
            (401, "session_replaced".into())
        );
    }
    assert_eq!(a.get_session(&new).await.0, 200);

    let revoked = send(
        client()
            .delete(a.url("/admin/users/mona/sessions"))
            .header("authorization", format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(revoked.1["revoked"], 1, "{}", revoked.1);
    for server in [a, b] {
        assert_eq!(
            ended_as(server, &new).await,
            (401, "session_revoked".into())
        );
        // Still replaced, not revoked: an ended session is not ended again.
        assert_eq!(
            ended_as(server, &old).await,
            (401, "session_replaced".into())
        );
    }
    let metrics = reqwest::get(b.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"wxsession_guard_checks_total{outcome="session_replaced"} "#)
            && !metrics.contains(r#"wxsession_guard_checks_total{outcome="session_replaced"} 0"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn every_instance_tells_why_a_session_ended_without_the_cache() {
    every_instance_is_told("false").await;
}

#[actix_web::test]
async fn every_instance_tells_why_a_session_ended_with_the_cache() {
    every_instance_is_told("true").await;
}

#[actix_web::test]
async fn the_cli_revokes_as_an_operator_and_a_logout_stays_a_logout() {
    let h = Harness::start();
    let by_cli = h.login("ok:nina").await;
    let logged_out = h.login("ok:nina~2").await;
    let (code, out, err) = run_cli(&h.redis, &[], &["sessions", "revoke", &by_cli]);
    assert_eq!(code, 0, "{out} {err}");
    let (status, body) = h.get_session(&by_cli).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_revoked");
    // Revoking it again finds no live session.
    assert_eq!(
        run_cli(&h.redis, &[], &["sessions", "revoke", &by_cli]).0,
        1
    );
    assert_eq!(h.logout(&logged_out).await.0, 204);
    let (status, body) = h.get_session(&logged_out).await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");
    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "stats"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("sessions: 0"),
        "a tombstone is no live session: {out}"
    );
}

#[actix_web::test]
async fn an_end_is_told_for_at_most_ttl_secs_and_then_nothing_is_left() {
    let h = Harness::with(&[
        ("session.one_per_device", "true"),
        ("session.ttl_secs", "2"),
    ]);
    let base = h.servers[0].base.clone();
    let old = login_device(&base, "ok:olga", "pad").await;
    let ended_at = Instant::now();
    let new = login_device(&base, "ok:olga~2", "pad").await;
    // Asked again and again (each GETEX gives the key a whole idle lifetime,
    // which the guard takes back), the tombstone still ends on time.
    let mut told = Vec::new();
    while ended_at.elapsed() < Duration::from_millis(2600) {
        let (status, body) = h.get_session(&old).await;
        assert_eq!(status, 401);
        told.push((
            ended_at.elapsed(),
            body["error"].as_str().unwrap().to_string(),
        ));
        assert_eq!(h.get_session(&new).await.0, 200, "keeps the new one alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told[0].1, "session_replaced");
    let last_replaced = told
        .iter()
        .rfind(|(_, e)| e == "session_replaced")
        .unwrap()
        .0;
    assert!(last_replaced <= Duration::from_millis(2100), "{told:?}");
    assert_eq!(told.last().unwrap().1, "invalid_session", "{told:?}");
    assert_eq!(h.redis.keys("wxsess:s:*"), [format!("wxsess:s:{new}")]);
}

#[actix_web::test]
async fn a_live_session_costs_the_guard_one_command_an_ended_one_two() {
    let h = Harness::with(&[("session.one_per_device", "true")]);
    let base = h.servers[0].base.clone();
    let old = login_device(&base, "ok:pia", "phone").await;
    let new = login_device(&base, "ok:pia~2", "phone").await;
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    assert_eq!(h.get_session(&new).await.0, 200);
    assert_eq!(h.redis.commands_served(), 1, "GETEX");
    h.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    assert_eq!(h.get_session(&old).await.0, 401);
    assert_eq!(
        h.redis.commands_served(),
        2,
        "GETEX, then PEXPIREAT to keep its end"
    );
}

fn admin(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("authorization", format!("Bearer {TOKEN}"))
}

async fn banned_everywhere(local_cache: &str) {
    let h = Harness::setup()
        .set(&[("session.local_cache", local_cache), ("admin.token", TOKEN)])
        .instances(2)
        .start();
    let (a, b) = (&h.servers[0], &h.servers[1]);
    let first = a.login("ok:quinn").await;
    let second = b.login("ok:quinn~2").await;
    let other = a.login("ok:ruth").await;
    for id in [&first, &second] {
        assert_eq!(a.get_session(id).await.0, 200);
        assert_eq!(b.get_session(id).await.0, 200);
    }
    let (status, body) = send(
        admin(client().put(a.url("/admin/users/quinn/ban")))
            .json(&serde_json::json!({ "for_secs": 3600, "reason": "spam" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], 2);
    assert_eq!(body["reason"], "spam");
    let until = body["until"].as_u64().unwrap();
    assert!((3590..=3610).contains(&(until - now_secs())), "{body}");
    for server in [a, b] {
        for id in [&first, &second] {
            let (status, body) = server.get_session(id).await;
            assert_eq!(status, 403, "{body}");
            assert_error(&body, "user_banned");
            assert_eq!(body["until"], until, "{body}");
        }
        assert_eq!(
            server.get_session(&other).await.0,
            200,
            "others are not banned"
        );
    }
    // A login by that openid: code2Session first (only WeChat knows whose code
    // it is), then refused; no session is made.
    let calls = h.wechat.calls();
    let (status, body) = b.try_login("ok:quinn~3").await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "user_banned");
    assert_eq!(body["until"], until);
    assert_eq!(h.wechat.calls(), calls + 1);
    assert_eq!(h.redis.live_session_keys().len(), 1, "only ruth's");
    // The code is spent: a repeat is invalid_code, without a second call.
    let (status, body) = b.try_login("ok:quinn~3").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_code")),
        "{body}"
    );
    assert_eq!(h.wechat.calls(), calls + 1);

    let (status, body) = send(admin(client().delete(a.url("/admin/users/quinn/ban")))).await;
    assert_eq!((status, &body["unbanned"]), (200, &serde_json::json!(true)));
    assert_eq!(b.try_login("ok:quinn~4").await.0, 200);
    let (_, body) = send(admin(client().delete(a.url("/admin/users/quinn/ban")))).await;
    assert_eq!(body["unbanned"], false);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[actix_web::test]
async fn a_ban_ends_every_session_and_refuses_logins_without_the_cache() {
    banned_everywhere("false").await;
}

#[actix_web::test]
async fn a_ban_ends_every_session_and_refuses_logins_with_the_cache() {
    banned_everywhere("true").await;
}

#[actix_web::test]
async fn a_ban_ends_by_itself_and_one_without_end_says_until_null() {
    let h = Harness::with(&[("admin.token", TOKEN)]);
    let (status, body) = send(
        admin(client().put(h.url("/admin/users/sara/ban")))
            .json(&serde_json::json!({ "for_secs": 1 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.try_login("ok:sara").await.0, 403);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        h.try_login("ok:sara~2").await.0,
        200,
        "the ban ended by itself"
    );
    assert!(h.redis.keys("wxsess:user:{sara}:ban").is_empty());

    let id = h.login("ok:tom").await;
    let (status, body) =
        send(admin(client().put(h.url("/admin/users/tom/ban"))).json(&serde_json::json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["until"], serde_json::Value::Null);
    let (status, body) = h.get_session(&id).await;
    assert_eq!(status, 403);
    assert_eq!(body["until"], serde_json::Value::Null, "{body}");
    assert!(body.as_object().unwrap().contains_key("until"));
    let ttl: i64 = h.redis.cmd(&["TTL", "wxsess:user:{tom}:ban"]);
    assert_eq!(ttl, -1, "a ban without for_secs does not expire");
}

#[actix_web::test]
async fn a_ban_request_outside_its_shape_is_400_and_bans_nobody() {
    let h = Harness::with(&[("admin.token", TOKEN)]);
    let url = h.url("/admin/users/uma/ban");
    for body in [
        serde_json::json!({ "for_secs": 0 }),
        serde_json::json!({ "for_secs": -5 }),
        serde_json::json!({ "for_secs": "1" }),
        serde_json::json!({ "reason": "x".repeat(257) }),
        serde_json::json!({ "until": 5 }),
        serde_json::json!({ "reason": 5 }),
        serde_json::json!([]),
        serde_json::json!([null, null]),
        serde_json::json!(null),
    ] {
        let (status, answer) = send(admin(client().put(&url)).json(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "invalid_request");
    }
    let (status, _) = send(client().put(&url).json(&serde_json::json!({}))).await;
    assert_eq!(status, 401, "no token");
    let (status, _) =
        send(admin(client().put(h.url("/admin/users/a%0Ab/ban"))).json(&serde_json::json!({})))
            .await;
    assert_eq!(status, 400);
    assert!(h.redis.keys("wxsess:user:*").is_empty());
}

#[actix_web::test]
async fn the_cli_bans_and_unbans() {
    let h = Harness::start();
    let id = h.login("ok:vera").await;
    let (code, out, err) = run_cli(
        &h.redis,
        &[],
        &["users", "ban", "vera", "--for", "600", "--reason", "abuse"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("banned until ") && out.contains("ended 1 sessions"),
        "{out}"
    );
    let (status, body) = h.get_session(&id).await;
    assert_eq!(status, 403);
    assert_error(&body, "user_banned");
    let stored: String = h.redis.cmd(&["GET", "wxsess:user:{vera}:ban"]);
    assert!(stored.contains(r#""reason":"abuse""#), "{stored}");
    assert_eq!(run_cli(&h.redis, &[], &["users", "unban", "vera"]).0, 0);
    assert_eq!(
        run_cli(&h.redis, &[], &["users", "unban", "vera"]).0,
        1,
        "not banned"
    );
    assert_eq!(
        run_cli(&h.redis, &[], &["users", "ban", "vera", "--for", "0"]).0,
        2
    );
    assert_eq!(
        run_cli(&h.redis, &[], &["sessions", "stats", "--reason", "x"]).0,
        2
    );
    assert_eq!(h.try_login("ok:vera~2").await.0, 200);
}
