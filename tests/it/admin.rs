//! Operating sessions: the admin HTTP routes, the `wxsession sessions …` CLI,
//! `session.max_per_user` and `session.hash_ids`.

use sha2::{Digest, Sha256};

use crate::support::*;

const TOKEN: &str = "admin-token-0123456789abcdef01234567";

fn admin(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("authorization", format!("Bearer {TOKEN}"))
}

#[actix_web::test]
async fn admin_routes_do_not_exist_without_a_token() {
    let h = Harness::start();
    for req in [
        client().get(h.url("/admin/users/alice/sessions")),
        admin(client().delete(h.url("/admin/users/alice/sessions"))),
    ] {
        let (status, body) = send(req).await;
        assert_eq!(status, 404);
        assert_error(&body, "not_found");
    }
}

#[actix_web::test]
async fn admin_routes_list_and_revoke_a_users_sessions() {
    let h = Harness::with(&[("admin.token", TOKEN)]);
    let a = h.login("ok:alice").await;
    let b = h.login("ok:alice~2").await;
    let other = h.login("ok:bob").await;
    let url = h.url("/admin/users/alice/sessions");

    for auth in [
        None,
        Some("Bearer wrong"),
        Some(TOKEN),
        Some("bearer admin-token-0123456789abcdef01234567"),
    ] {
        let mut req = client().get(&url);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let (status, body) = send(req).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_error(&body, "unauthorized");
    }

    let (status, body) = send(admin(client().get(&url))).await;
    assert_eq!(status, 200);
    let sessions = body["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["sessionid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()], "oldest first");
    for s in sessions {
        assert_eq!(s.as_object().unwrap().len(), 5, "{s}");
        assert_eq!(s["device"], serde_json::Value::Null);
        assert_eq!(s["appid"], "wx_test_app");
        assert!(s["created_at"].as_u64().unwrap() > 1_700_000_000);
        assert!((7190..=7200).contains(&s["expires_in"].as_u64().unwrap()));
    }

    let (status, body) = send(admin(client().delete(&url))).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"revoked": 2}));
    assert_eq!(h.get_session(&a).await.0, 401);
    assert_eq!(h.get_session(&b).await.0, 401);
    assert_eq!(h.get_session(&other).await.0, 200, "other users untouched");
    let (_, body) = send(admin(client().get(&url))).await;
    assert_eq!(body, serde_json::json!({"sessions": []}));
}

#[actix_web::test]
async fn with_admin_bind_the_admin_routes_listen_apart() {
    let split = [("admin.token", TOKEN), ("admin.bind", "127.0.0.1:1")];
    let public = Harness::with(&split);
    let admin_only = TestServer::start_admin(&public.config(&split));
    public.login("ok:carl").await;
    let (status, _) = send(admin(
        client().get(public.url("/admin/users/carl/sessions")),
    ))
    .await;
    assert_eq!(status, 404, "not on the public listener");
    let (status, body) = send(admin(
        client().get(admin_only.url("/admin/users/carl/sessions")),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    let (status, _) = admin_only.try_login("ok:x").await;
    assert_eq!(status, 404, "no public routes on the admin listener");
}

#[actix_web::test]
async fn max_per_user_revokes_the_oldest_sessions() {
    let h = Harness::with(&[("session.max_per_user", "2")]);
    let first = h.login("ok:dana").await;
    let second = h.login("ok:dana~2").await;
    let third = h.login("ok:dana~3").await;
    assert_eq!(h.get_session(&first).await.0, 401, "oldest revoked");
    assert_eq!(h.get_session(&second).await.0, 200);
    assert_eq!(h.get_session(&third).await.0, 200);
    let fourth = h.login("ok:dana~4").await;
    assert_eq!(h.get_session(&second).await.0, 401);
    assert_eq!(h.get_session(&fourth).await.0, 200);
    let members: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{dana}:sessions", "0", "-1"]);
    assert_eq!(members, vec![third, fourth]);
    // Other users are not counted against dana.
    h.login("ok:eric").await;
    assert_eq!(h.redis.live_session_keys().len(), 3);
    // The two revoked ones tell their clients why, for a while.
    let (status, body) = h.get_session(&first).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_replaced");
}

#[actix_web::test]
async fn hash_ids_keep_bearer_tokens_out_of_redis() {
    let h = Harness::with(&[("session.hash_ids", "true"), ("admin.token", TOKEN)]);
    let id = h.login("union:fred").await;
    let handle = hex::encode(Sha256::digest(id.as_bytes()));
    assert_eq!(h.get_session(&id).await.0, 200);
    assert_eq!(
        h.get_session(&handle).await.0,
        401,
        "the hash is no bearer token"
    );

    let mut everything = h.redis.keys("*").join(" ");
    for key in h.redis.keys("*") {
        let kind: String = h.redis.cmd(&["TYPE", &key]);
        match kind.as_str() {
            "string" => everything.push_str(&h.redis.cmd::<String>(&["GET", &key])),
            "hash" => {
                everything.push_str(&h.redis.cmd::<Vec<String>>(&["HGETALL", &key]).join(" "))
            }
            _ => everything.push_str(
                &h.redis
                    .cmd::<Vec<String>>(&["ZRANGE", &key, "0", "-1"])
                    .join(" "),
            ),
        }
    }
    assert!(!everything.contains(&id), "the id is nowhere in Redis");
    assert!(everything.contains(&format!("wxsess:s:{handle}")));

    let (_, body) = send(admin(client().get(h.url("/admin/users/fred/sessions")))).await;
    assert_eq!(body["sessions"][0]["sessionid"], handle.as_str());

    // The CLI accepts the id or its hash.
    let env = [("WXSESSION_SESSION_HASH_IDS", "true")];
    let (code, out, _) = run_cli(&h.redis, &env, &["sessions", "show", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("openid:     fred"), "{out}");
    let (code, out, _) = run_cli(&h.redis, &env, &["sessions", "revoke", &handle]);
    assert_eq!((code, out.trim()), (0, "revoked"));
    assert_eq!(h.get_session(&id).await.0, 401);
}

#[actix_web::test]
async fn the_sessions_cli_lists_shows_revokes_and_counts() {
    let mut h = Harness::start();
    let a = h.login("union:gail").await;
    let b = h.login("ok:gail~2").await;
    let c = h.login("ok:hugo").await;

    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "list", "gail"]);
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0][0], a);
    assert_eq!(lines[1][0], b);
    assert!(lines[0][1].parse::<u64>().unwrap() > 1_700_000_000);
    assert!(lines[0][2].parse::<u64>().unwrap() > 7000);

    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "show", &a]);
    assert_eq!(code, 0);
    assert!(
        out.contains("openid:     gail") && out.contains("unionid:    u-gail"),
        "{out}"
    );
    assert!(out.contains("ttl:"), "{out}");

    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "stats"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("sessions: 3") && out.contains("users:    2"),
        "{out}"
    );

    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "revoke", &c]);
    assert_eq!((code, out.trim()), (0, "revoked"));
    assert_eq!(h.get_session(&c).await.0, 401);
    let (code, _, err) = run_cli(&h.redis, &[], &["sessions", "revoke", &c]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = run_cli(&h.redis, &[], &["sessions", "show", "not-an-id"]);
    assert_eq!(code, 2);

    let (code, out, _) = run_cli(&h.redis, &[], &["sessions", "revoke-user", "gail"]);
    assert_eq!((code, out.trim()), (0, "revoked 2"));
    assert_eq!(h.get_session(&a).await.0, 401);
    assert_eq!(h.get_session(&b).await.0, 401);
    let (_, out, _) = run_cli(&h.redis, &[], &["sessions", "list", "gail"]);
    assert!(out.is_empty(), "{out}");

    // Redis down: exit 3, one clear line.
    h.servers.clear();
    h.redis.kill();
    let (code, _, err) = run_cli(
        &h.redis,
        &[("WXSESSION_REDIS_TIMEOUT_MS", "300")],
        &["sessions", "stats"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("redis"), "{err}");
}

/// A login landing while `revoke-user` runs for the same openid either stays in
/// the user's index or is revoked: never a live session the index has lost
/// (which no later `list` or `revoke-user` could find).
#[actix_web::test]
async fn revoke_user_racing_logins_never_loses_a_live_session_from_the_index() {
    let h = Harness::setup()
        .set(&[("admin.token", TOKEN)])
        .instances(2)
        .start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let logins = (0..8).map(|task| {
        let base = h.servers[0].base.clone();
        async move {
            let mut n = 0u32;
            while std::time::Instant::now() < deadline {
                let (status, body) = send(
                    client()
                        .post(format!("{base}/login"))
                        .json(&serde_json::json!({ "code": format!("ok:racer~{task}-{n}") })),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                n += 1;
            }
            n
        }
    });
    let revokes = async {
        let url = h.servers[1].base.clone() + "/admin/users/racer/sessions";
        let (mut rounds, mut revoked) = (0u32, 0u64);
        while std::time::Instant::now() < deadline {
            let (status, body) = send(admin(client().delete(&url))).await;
            assert_eq!(status, 200, "{body}");
            revoked += body["revoked"].as_u64().unwrap();
            rounds += 1;
        }
        (rounds, revoked)
    };
    let (logins, (rounds, revoked)) =
        futures_util::future::join(futures_util::future::join_all(logins), revokes).await;
    let logins: u32 = logins.iter().sum();
    assert!(
        logins > 50 && rounds > 10 && revoked > 0,
        "{logins} logins, {rounds} revokes, {revoked} revoked"
    );

    let index: Vec<String> = h
        .redis
        .cmd(&["ZRANGE", "wxsess:user:{racer}:sessions", "0", "-1"]);
    let mut live = 0;
    for key in h.redis.keys("wxsess:s:*") {
        let Some(raw) = h.redis.cmd::<Option<String>>(&["GET", &key]) else {
            continue;
        };
        if raw.starts_with(r#"{"ended":"#) {
            continue; // a revoked session's tombstone
        }
        let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(value["openid"], "racer");
        let stored_id = key.trim_start_matches("wxsess:s:");
        assert!(
            index.iter().any(|m| m == stored_id),
            "live session {stored_id} missing from the index ({logins} logins, {rounds} revokes)"
        );
        live += 1;
    }
    // What survived is still revocable in one call.
    let url = h.url("/admin/users/racer/sessions");
    let (_, body) = send(admin(client().delete(&url))).await;
    assert_eq!(body["revoked"], live);
    assert!(h.redis.live_session_keys().is_empty());
}
