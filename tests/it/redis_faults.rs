//! A broken Redis: killed, frozen, restarted. Only 503 `store_unavailable`
//! while it is gone, never a 500 or a hang, and service resumes by itself.

use std::time::{Duration, Instant};

use crate::support::*;

async fn sleep_ms(ms: u64) {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
}

async fn wait_ready(server: &TestServer, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if send(client().get(server.url("/readyz"))).await.0 == 200 {
            return started.elapsed();
        }
        sleep_ms(50).await;
    }
    panic!("not ready within {within:?}");
}

#[actix_web::test]
async fn redis_down_is_503_everywhere_and_service_resumes_after_restart() {
    let mut redis = RedisServer::start();
    let wechat = WechatStandIn::start();
    let server = TestServer::start(&config(&redis, &wechat.base, &[]));
    let id = login(&server, "ok:alice").await;

    redis.kill();
    for _ in 0..3 {
        let (status, body) = send(
            client()
                .post(server.url("/login"))
                .json(&serde_json::json!({"code": "ok:bob"})),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_error(&body, "store_unavailable");
        for path in ["/session", "/auth"] {
            let (status, body) =
                send(client().get(server.url(path)).header("sessionid", &id)).await;
            assert_eq!(status, 503, "{path}: {body}");
            assert_error(&body, "store_unavailable");
        }
        let (status, body) = send(
            client()
                .delete(server.url("/session"))
                .header("sessionid", &id),
        )
        .await;
        assert_eq!(status, 503);
        assert_error(&body, "store_unavailable");
        let (status, body) = send(client().get(server.url("/readyz"))).await;
        assert_eq!(status, 503);
        assert_error(&body, "store_unavailable");
        assert_eq!(send(client().get(server.url("/healthz"))).await.0, 200);
    }
    // Malformed ids are still rejected as such, without Redis.
    let (status, body) = send(
        client()
            .get(server.url("/session"))
            .header("sessionid", "nope"),
    )
    .await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_session");

    redis.restart();
    let took = wait_ready(&server, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(2),
        "ready {took:?} after Redis returned"
    );
    let fresh = login(&server, "ok:carol").await;
    let (status, _) = send(
        client()
            .get(server.url("/session"))
            .header("sessionid", &fresh),
    )
    .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_frozen_redis_answers_503_within_the_timeout_then_recovers() {
    let redis = RedisServer::start();
    let wechat = WechatStandIn::start();
    // config() sets redis.timeout_ms = 300.
    let server = TestServer::start(&config(&redis, &wechat.base, &[]));
    let id = login(&server, "ok:dora").await;

    redis.signal("-STOP");
    for path in ["/session", "/readyz"] {
        let started = Instant::now();
        let (status, body) = send(client().get(server.url(path)).header("sessionid", &id)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{path}: {body}");
        assert_error(&body, "store_unavailable");
        assert!(took < Duration::from_millis(1500), "{path} took {took:?}");
    }
    let started = Instant::now();
    let (status, _) = send(
        client()
            .post(server.url("/login"))
            .json(&serde_json::json!({"code": "ok:eve"})),
    )
    .await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_millis(1500));

    redis.signal("-CONT");
    wait_ready(&server, Duration::from_secs(5)).await;
    let (status, _) = send(
        client()
            .get(server.url("/session"))
            .header("sessionid", &id),
    )
    .await;
    assert_eq!(status, 200, "the session outlived the freeze");
}

#[actix_web::test]
async fn with_aof_sessions_survive_a_redis_restart() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let wechat = WechatStandIn::start();
    let server = TestServer::start(&config(&redis, &wechat.base, &[]));
    let id = login(&server, "ok:fay").await;
    redis.restart();
    wait_ready(&server, Duration::from_secs(5)).await;
    let (status, me) = send(
        client()
            .get(server.url("/session"))
            .header("sessionid", &id),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["openid"], "fay");
}
