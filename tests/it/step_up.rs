//! Step-up: `POST /session/elevate` with a fresh code of the session's own user
//! elevates it for `session.elevate_secs` and makes the new `session_key` the
//! user's; another user's code is 403 `identity_mismatch` and changes nothing;
//! the `Elevated` extractor answers 403 `elevation_required` without a step-up
//! holding, on every instance, for one Redis command per request.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use wxsession::{
    config::Config,
    login::{Login, LoginError},
    session::{EndReason, Lookup, SessionId, SessionStore},
    telemetry::Metrics,
    wechat::{Apps, LoginCode},
    Elevated, Session,
};

use crate::support::*;

async fn transfer(Elevated(session): Elevated) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"transfer_by": session.openid()}))
}

async fn balance(session: Session) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"of": session.openid()}))
}

/// An app that embeds the library: the contract's routes, plus `/transfer`
/// behind `Elevated` and `/balance` behind `Session`.
fn embedding_app(config: &Config) -> TestServer {
    TestServer::start_embedding(config, |routes| {
        routes
            .route("/transfer", web::post().to(transfer))
            .route("/balance", web::get().to(balance));
    })
}

async fn post_transfer(app: &TestServer, id: &str) -> (u16, serde_json::Value) {
    send(client().post(app.url("/transfer")).header("sessionid", id)).await
}

async fn elevate(server: &impl Instance, id: &str, code: &str) -> (u16, serde_json::Value) {
    server
        .post_as(id, "/session/elevate", &serde_json::json!({ "code": code }))
        .await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[actix_web::test]
async fn a_fresh_code_of_the_same_user_elevates_the_session() {
    let h = Harness::with(&[("session.sliding", "false")]);
    let id = h.login("ok:erin").await;
    let (_, before) = h.get_session(&id).await;
    assert_eq!(
        before["elevated_until"],
        serde_json::Value::Null,
        "{before}"
    );
    let ttl_before: i64 = h.redis.cmd(&["TTL", &format!("wxsess:s:{id}")]);
    let old_key: String = h.redis.cmd(&["HGET", "wxsess:user:{erin}", "session_key"]);

    let (status, body) = elevate(&h, &id, "ok:erin~2").await;
    assert_eq!(status, 200, "{body}");
    let until = body["elevated_until"].as_u64().unwrap();
    assert!((now() + 299..=now() + 301).contains(&until), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");

    let (_, after) = h.get_session(&id).await;
    assert_eq!(after["elevated_until"], until, "{after}");
    assert_eq!(after["openid"], "erin");
    // The user's session_key is the one the step-up's code2Session gave.
    let new_key: String = h.redis.cmd(&["HGET", "wxsess:user:{erin}", "session_key"]);
    assert_ne!(new_key, old_key);
    assert_eq!(h.wechat.issued_keys().last(), Some(&new_key));
    // The rewrite kept the session's lifetime: nothing renewed it.
    let ttl_after: i64 = h.redis.cmd(&["TTL", &format!("wxsess:s:{id}")]);
    assert!(
        ttl_after <= ttl_before && ttl_after > 0,
        "{ttl_before} {ttl_after}"
    );
    let stored: String = h.redis.cmd(&["GET", &format!("wxsess:s:{id}")]);
    assert!(
        stored.contains(&format!("\"elevated_until\":{until}")),
        "{stored}"
    );
    assert!(h
        .metrics()
        .await
        .contains("wxsession_elevations_total{outcome=\"ok\"} 1"));
}

#[actix_web::test]
async fn another_users_code_is_identity_mismatch_and_changes_nothing() {
    let h = Harness::start();
    let id = h.login("ok:erin").await;
    let key = format!("wxsess:s:{id}");
    let stored: String = h.redis.cmd(&["GET", &key]);
    let session_key: String = h.redis.cmd(&["HGET", "wxsess:user:{erin}", "session_key"]);

    let (status, body) = elevate(&h, &id, "ok:mallory").await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "identity_mismatch");
    assert_eq!(h.redis.cmd::<String>(&["GET", &key]), stored);
    assert_eq!(
        h.redis
            .cmd::<String>(&["HGET", "wxsess:user:{erin}", "session_key"]),
        session_key
    );
    assert_eq!(
        h.get_session(&id).await.1["elevated_until"],
        serde_json::Value::Null
    );
    assert!(h
        .metrics()
        .await
        .contains("wxsession_elevations_total{outcome=\"identity_mismatch\"} 1"));
}

#[actix_web::test]
async fn a_bad_step_up_changes_nothing_and_asks_wechat_nothing() {
    let h = Harness::start();
    let id = h.login("ok:erin").await;
    let key = format!("wxsess:s:{id}");
    let stored: String = h.redis.cmd(&["GET", &key]);
    let calls = h.wechat.calls();
    for body in [
        serde_json::json!({}),
        serde_json::json!({"code": null}),
        serde_json::json!({"code": 5}),
        serde_json::json!({"code": ""}),
        serde_json::json!(["ok:erin~2"]),
        serde_json::json!("ok:erin~2"),
    ] {
        let (status, answer) = h.post_as(&id, "/session/elevate", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "invalid_request");
    }
    // No session, or a dead one: the guard answers before any body is read.
    let (status, answer) = send(
        client()
            .post(h.url("/session/elevate"))
            .json(&serde_json::json!({"code": "ok:erin~3"})),
    )
    .await;
    assert_eq!(status, 401);
    assert_error(&answer, "session_required");
    let (status, answer) = elevate(&h, &"ab".repeat(16), "ok:erin~4").await;
    assert_eq!(status, 401);
    assert_error(&answer, "invalid_session");
    assert_eq!(h.wechat.calls(), calls, "no code reached WeChat");
    // WeChat refusing the code: its error, and still nothing changed.
    let (status, answer) = elevate(&h, &id, "err:40163").await;
    assert_eq!(status, 401);
    assert_error(&answer, "invalid_code");
    assert_eq!(h.redis.cmd::<String>(&["GET", &key]), stored);
    // A GET is not a step-up.
    let (status, _) = send(
        client()
            .get(h.url("/session/elevate"))
            .header("sessionid", &id),
    )
    .await;
    assert_eq!(status, 405);
}

async fn elevated_route_holds_on_every_instance(local_cache: &str) {
    let h = Harness::bare();
    let config = h.config(&[("session.local_cache", local_cache)]);
    let (a, b) = (embedding_app(&config), embedding_app(&config));
    let id = a.login("ok:erin").await;
    for app in [&a, &b] {
        let (status, body) = post_transfer(app, &id).await;
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "elevation_required");
    }
    let (status, body) = elevate(&a, &id, "ok:erin~2").await;
    assert_eq!(status, 200, "{body}");
    // The instance that elevated knows at once; the other hears it from Redis.
    assert_eq!(
        post_transfer(&a, &id).await,
        (200, serde_json::json!({"transfer_by": "erin"}))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = post_transfer(&b, &id).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One Redis command per guarded request, elevated or not (none from a
    // warm cache).
    let per_request = if local_cache == "true" { 0 } else { 1 };
    for path in ["/transfer", "/balance"] {
        let before = h.redis.commands_but_pings();
        for _ in 0..10 {
            let request = if path == "/transfer" {
                client().post(b.url(path))
            } else {
                client().get(b.url(path))
            };
            assert_eq!(send(request.header("sessionid", &id)).await.0, 200);
        }
        assert_eq!(
            h.redis.commands_but_pings() - before,
            10 * per_request,
            "{path}, local_cache={local_cache}"
        );
    }
}

#[actix_web::test]
async fn the_elevated_extractor_holds_on_every_instance_without_the_cache() {
    elevated_route_holds_on_every_instance("false").await;
}

#[actix_web::test]
async fn the_elevated_extractor_holds_on_every_instance_with_the_cache() {
    elevated_route_holds_on_every_instance("true").await;
}

#[actix_web::test]
async fn a_step_up_runs_out_after_elevate_secs() {
    let h = Harness::bare();
    let app = embedding_app(&h.config(&[("session.elevate_secs", "1")]));
    let id = app.login("ok:erin").await;
    let (status, body) = elevate(&app, &id, "ok:erin~2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(post_transfer(&app, &id).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = post_transfer(&app, &id).await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "elevation_required");
    let (status, session) = app.get_session(&id).await;
    assert_eq!(status, 200);
    assert_eq!(
        session["elevated_until"],
        serde_json::Value::Null,
        "{session}"
    );
    // Another step-up elevates it again.
    assert_eq!(elevate(&app, &id, "ok:erin~3").await.0, 200);
    assert_eq!(post_transfer(&app, &id).await.0, 200);
}

/// A session that ends while its step-up runs is not brought back by it: a
/// logout leaves nothing, an operator's end leaves its tombstone.
#[actix_web::test]
async fn a_step_up_never_brings_back_an_ended_session() {
    let h = Harness::bare();
    let config = h.config(&[]);
    let store = SessionStore::new(&config, std::sync::Arc::new(Metrics::default())).unwrap();
    let server = TestServer::start(&config);
    let key = wxsession::Secret::new("bmV3LWtleS0xMjM0NTY3OA==".to_string());

    let logged_out = server.login("ok:erin").await;
    let session = live(&store, &logged_out).await;
    assert_eq!(server.logout(&logged_out).await.0, 204);
    assert!(!store
        .elevate(&session, &key, None, now() + 60)
        .await
        .unwrap());
    assert_eq!(
        h.redis
            .cmd::<i64>(&["EXISTS", &format!("wxsess:s:{logged_out}")]),
        0
    );

    let revoked = server.login("ok:erin~2").await;
    let session = live(&store, &revoked).await;
    assert!(store.end_stored_id(&revoked).await.unwrap());
    assert!(!store
        .elevate(&session, &key, None, now() + 60)
        .await
        .unwrap());
    let (status, body) = server.get_session(&revoked).await;
    assert_eq!(status, 401);
    assert_error(&body, "session_revoked");
    // The key WeChat gave is the user's either way.
    assert_eq!(
        h.redis
            .cmd::<String>(&["HGET", "wxsess:user:{erin}", "session_key"]),
        key.expose()
    );
    // Through Login, the step-up of a session ended meanwhile answers why.
    let metrics = std::sync::Arc::new(Metrics::default());
    let apps = Apps::new(&config, store.connection(), metrics).unwrap();
    let login = Login::new(apps, store.clone(), &config);
    let code = LoginCode::parse("ok:erin~5".to_string()).unwrap();
    assert!(matches!(
        login.elevate(&session, &code).await,
        Err(LoginError::SessionEnded(EndReason::Revoked))
    ));
}

async fn live(store: &SessionStore, id: &str) -> Session {
    match store
        .touch(&SessionId::parse(id.as_bytes()).unwrap())
        .await
        .unwrap()
    {
        Lookup::Live(session) => session,
        other => panic!("{other:?}"),
    }
}
